"""``model.pool_prompt``: mean pooling leaves the prompt / instruction tokens out by default (the official
CoDiEmb code), the same in training, evaluation and sentence-transformers exports; CLS pooling is unaffected."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from codiemb.models.encoder import Encoder
from codiemb.models.pooling import exclude_prompt, pool

TEXTS = ["A man is playing a guitar.", "The new movie is awesome, everyone loved it!", "Cats sleep."]
TINY_BERT = "{hidden_size:64,num_hidden_layers:2,num_attention_heads:2,intermediate_size:128}"


def twin(compose_cfg, name: str, *overrides: str) -> Encoder:
    """The model config ``name`` (its pooling and prompts) on a tiny random BERT."""
    from hydra.utils import instantiate

    from codiemb.models.resolve import bundled_minilm_path

    torch.manual_seed(0)
    cfg = compose_cfg([f"model={name}", f"model.name_or_path={bundled_minilm_path()}", "+model.random_init=true",
                       f"+model.config_overrides={TINY_BERT}", *overrides])
    return instantiate(cfg.model).eval()


@pytest.mark.parametrize("side", ["right", "left"])
def test_exclude_prompt_drops_the_first_attended_tokens_on_either_padding_side(side):
    lengths, prompts = [6, 4, 2, 3], torch.tensor([2, 1, 0, 3])
    mask = torch.zeros(4, 6, dtype=torch.long)
    for row, n in enumerate(lengths):
        mask[row, :n] = 1
    if side == "left":
        mask = mask.flip(1)
    out = exclude_prompt(mask, prompts)
    for row, (_n, k) in enumerate(zip(lengths, prompts.tolist())):
        attended = [i for i in range(6) if mask[row, i]]
        kept = attended[k:] or attended  # a row that is all prompt keeps its mask (no division by zero)
        assert [i for i in range(6) if out[row, i]] == kept
    assert out.dtype == mask.dtype


def test_mean_pooling_leaves_the_prompt_out_by_default_and_pools_it_on_request(compose_cfg):
    encoder = twin(compose_cfg, "e5")
    assert encoder.pool_prompt is False and encoder.query_prompt == "query: "
    features = encoder.tokenize(encoder.format(TEXTS, "query"), "query", encoder.prompt_lengths("query", [None] * 3))
    assert features["prompt_length"].tolist() == [3, 3, 3]  # [CLS] query :
    inputs = {k: features[k] for k in ("input_ids", "attention_mask", "token_type_ids")}
    with torch.no_grad():
        hidden = encoder.backbone(**inputs).last_hidden_state
        text_only = features["attention_mask"].clone()
        text_only[:, :3] = 0
        expected = F.normalize(pool(hidden, text_only, "mean"), dim=-1)
        torch.testing.assert_close(encoder(features), expected)
        torch.testing.assert_close(encoder.encode(TEXTS, kind="query"), expected, atol=1e-6, rtol=1e-5)
        encoder.pool_prompt = True
        everything = F.normalize(pool(hidden, features["attention_mask"], "mean"), dim=-1)
        torch.testing.assert_close(encoder(features), everything)
        assert not torch.allclose(expected, everything, atol=1e-3)


def test_the_middle_layer_leaves_the_prompt_out_too(compose_cfg):
    encoder = twin(compose_cfg, "e5")
    features = encoder.tokenize(encoder.format(TEXTS, "query"), "query", encoder.prompt_lengths("query", [None] * 3))
    inputs = {k: features[k] for k in ("input_ids", "attention_mask", "token_type_ids")}
    with torch.no_grad():
        hidden = encoder.backbone(**inputs, output_hidden_states=True).hidden_states[1]
        _, middle = encoder(features, hidden_layer=1)
    expected = F.normalize(pool(hidden, exclude_prompt(features["attention_mask"], features["prompt_length"]),
                                "mean"), dim=-1)
    torch.testing.assert_close(middle, expected)


def test_cls_pooling_is_unaffected(compose_cfg):
    encoder = twin(compose_cfg, "bge")
    on = encoder.encode(TEXTS, kind="query")
    encoder.pool_prompt = True
    torch.testing.assert_close(encoder.encode(TEXTS, kind="query"), on)


@pytest.mark.parametrize("name,pool_prompt", [("e5", False), ("e5", True), ("bge", False)])
def test_sentence_transformers_export_reproduces_the_encoder_with_prompts(compose_cfg, tmp_path, name, pool_prompt):
    from sentence_transformers import SentenceTransformer

    encoder = twin(compose_cfg, name, f"model.pool_prompt={str(pool_prompt).lower()}")
    encoder.save(tmp_path / "model")
    pooling = json.loads((tmp_path / "model" / "1_Pooling" / "config.json").read_text())
    assert pooling["include_prompt"] is (pool_prompt or encoder.pooling == "cls")
    st = SentenceTransformer(str(tmp_path / "model"), device="cpu")
    for kind, prompt_name, prompt in (("query", "query", encoder.query_prompt),
                                      ("passage", "document", encoder.passage_prompt)):
        ours = encoder.encode(TEXTS, kind=kind)
        theirs = st.encode(TEXTS, prompt_name=prompt_name if prompt else None, convert_to_tensor=True)
        torch.testing.assert_close(theirs, ours, atol=1e-5, rtol=0)
    reloaded = Encoder.from_pretrained(str(tmp_path / "model"))
    assert reloaded.pool_prompt is pool_prompt
    torch.testing.assert_close(reloaded.encode(TEXTS, kind="query"), encoder.encode(TEXTS, kind="query"))


def test_exports_made_before_the_option_keep_pooling_the_prompt(compose_cfg, tmp_path):
    encoder = twin(compose_cfg, "e5", "model.pool_prompt=true")
    encoder.save(tmp_path / "old")
    settings = json.loads((tmp_path / "old" / "codiemb.json").read_text())
    del settings["pool_prompt"]
    (tmp_path / "old" / "codiemb.json").write_text(json.dumps(settings))
    assert Encoder.from_pretrained(str(tmp_path / "old")).pool_prompt is True
    assert Encoder.from_pretrained(str(tmp_path / "old"), pool_prompt=False).pool_prompt is False
