"""Pooling against brute force, and the export round trip through sentence-transformers."""

import pytest
import torch
import torch.nn.functional as F

from codiemb.models.encoder import Encoder
from codiemb.models.pooling import pool

TEXTS = ["A man is playing a guitar.", "The new movie is awesome, everyone loved it!", "Cats sleep."]


def brute_force_pool(hidden, mask, mode):
    out = []
    for h, m in zip(hidden, mask):
        idx = [i for i, v in enumerate(m.tolist()) if v == 1]
        if mode == "mean":
            out.append(sum(h[i] for i in idx) / len(idx))
        elif mode == "cls":
            out.append(h[idx[0]])
        elif mode == "last_token":
            out.append(h[idx[-1]])
        elif mode == "weighted_mean":
            weights = range(1, len(idx) + 1)
            out.append(sum(w * h[i] for w, i in zip(weights, idx)) / sum(weights))
    return torch.stack(out)


@pytest.mark.parametrize("mode", ["mean", "cls", "last_token", "weighted_mean"])
@pytest.mark.parametrize("side", ["right", "left"])
def test_pooling_matches_brute_force_for_both_padding_sides(mode, side):
    torch.manual_seed(0)
    hidden = torch.randn(3, 6, 4, dtype=torch.float64)
    lengths = [6, 3, 1]
    mask = torch.zeros(3, 6, dtype=torch.long)
    for row, n in enumerate(lengths):
        if side == "right":
            mask[row, :n] = 1
        else:
            mask[row, 6 - n:] = 1
    assert torch.allclose(pool(hidden, mask, mode), brute_force_pool(hidden, mask, mode))


def test_encode_is_order_preserving_and_batch_independent(tiny):
    together = tiny.encode(TEXTS, batch_size=8)
    alone = torch.cat([tiny.encode([t]) for t in TEXTS])
    assert torch.allclose(together, alone, atol=1e-5)
    assert torch.allclose(together.norm(dim=1), torch.ones(3), atol=1e-5)


def test_unused_pooler_is_not_loaded(minilm):
    assert not [name for name, _ in minilm.named_parameters() if "pooler" in name]


def test_export_loads_in_sentence_transformers_with_identical_embeddings(tiny, tmp_path):
    from sentence_transformers import SentenceTransformer

    tiny.query_prompt = "query: "
    try:
        tiny.save(tmp_path / "model")
        st = SentenceTransformer(str(tmp_path / "model"), device="cpu")
        ours = tiny.encode(TEXTS, kind="query")
        theirs = st.encode(TEXTS, prompt_name="query", convert_to_tensor=True)
        assert torch.allclose(ours, theirs, atol=1e-5)
        reloaded = Encoder.from_pretrained(str(tmp_path / "model"))
        assert reloaded.query_prompt == "query: " and reloaded.pooling == tiny.pooling
        assert torch.allclose(reloaded.encode(TEXTS, kind="query"), ours, atol=1e-6)
    finally:
        tiny.query_prompt = ""


def test_real_minilm_export_matches_sentence_transformers(minilm, tmp_path):
    from sentence_transformers import SentenceTransformer

    minilm.save(tmp_path / "minilm")
    theirs = SentenceTransformer(str(tmp_path / "minilm"), device="cpu").encode(TEXTS, convert_to_tensor=True)
    assert torch.allclose(minilm.encode(TEXTS), theirs, atol=1e-5)
    # and the bundled original gives the same vectors: export lost nothing
    from codiemb.models.resolve import bundled_minilm_path
    original = SentenceTransformer(bundled_minilm_path(), device="cpu").encode(TEXTS, convert_to_tensor=True)
    assert torch.allclose(F.normalize(original, dim=-1), theirs, atol=1e-5)


def test_failed_save_leaves_previous_export_intact(tiny, tmp_path, monkeypatch):
    target = tmp_path / "model"
    tiny.save(target)
    before = (target / "model.safetensors").read_bytes()

    def boom(*args, **kwargs):
        raise RuntimeError("disk full")
    monkeypatch.setattr(tiny.tokenizer, "save_pretrained", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        tiny.save(target)
    assert (target / "model.safetensors").read_bytes() == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".model.tmp")]


@pytest.mark.parametrize("layer", [1, 2])
def test_middle_layer_embedding_equals_pooled_hidden_state_even_after_pickling(layer):
    """The STS loss's middle-layer InfoNCE reads one layer; spawned DDP workers get a pickled model."""
    import pickle

    from tests.conftest import tiny_encoder

    encoder = tiny_encoder().eval()
    unpickled = pickle.loads(pickle.dumps(encoder))  # before transformers installs its (unpicklable) hooks
    features = encoder.tokenize(["hello world", "a somewhat longer sentence here"])
    ours = [e(features, hidden_layer=layer)[1] for e in (encoder, unpickled)]
    inputs = {k: features[k] for k in ("input_ids", "attention_mask", "token_type_ids")}
    hidden = encoder.backbone(**inputs, output_hidden_states=True).hidden_states[layer]
    expected = F.normalize(pool(hidden, features["attention_mask"], "mean"), dim=-1)
    for embedding in ours:
        assert torch.allclose(embedding, expected, atol=1e-6)
