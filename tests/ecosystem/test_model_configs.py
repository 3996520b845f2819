"""Every model config, proven without a download: a tiny random model of the same architecture class, built
through the config's own settings (pooling, padding side, prompts, attention), trains two steps, exports, and
reloads identically with Encoder.from_pretrained, SentenceTransformer and AutoModel + the card's pooling recipe."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from codiemb.run.train import train
from tests.ecosystem.helpers import FAST, TINY_BERT

TEXTS = ["how do I reset my password", "billing", "the cat sat on the mat while it rained outside all day"]
# config -> (architecture built, config overrides); minicpm: see test_minicpm_is_built_as_its_native_equivalent.
ARCHITECTURES = {"minilm": ("bert", TINY_BERT), "bge": ("bert", TINY_BERT), "e5": ("bert", TINY_BERT),
                 "gte": ("bert", TINY_BERT), "qwen": ("qwen3", "{intermediate_size:96}"),
                 "minicpm": ("llama", "{intermediate_size:96}")}
BACKBONE_CLASS = {"bert": "BertModel", "qwen3": "Qwen3Model", "llama": "LlamaModel"}


def build_overrides(name: str, decoder_dirs) -> list[str]:
    from codiemb.models.resolve import bundled_minilm_path

    arch, overrides = ARCHITECTURES[name]
    source = bundled_minilm_path() if arch == "bert" else decoder_dirs[arch]
    return [f"model={name}", f"model.name_or_path={source}", "+model.random_init=true",
            f"+model.config_overrides={overrides}"]


def card_pooling(directory: Path, texts: list[str]) -> torch.Tensor:
    """Run the card's own AutoModel recipe (its second python block) on ``texts``."""
    blocks = re.findall(r"```python\n(.*?)```", (directory / "README.md").read_text(), flags=re.S)
    code = blocks[1].replace("path/to/this/dir", str(directory))
    scope = {"texts": texts}
    exec(code, scope)  # noqa: S102 - the documented recipe is what is being tested
    return scope["emb"]


@pytest.mark.parametrize("name", list(ARCHITECTURES))
def test_model_config_trains_exports_and_reloads(compose_cfg, decoder_dirs, name):
    from hydra.utils import instantiate
    from safetensors.torch import load_file
    from sentence_transformers import SentenceTransformer
    from transformers import AutoTokenizer

    from codiemb.models.encoder import Encoder

    cfg = compose_cfg(FAST + build_overrides(name, decoder_dirs) + ["merge=none", "logger=csv"])
    built = instantiate(cfg.model)
    arch = ARCHITECTURES[name][0]
    assert type(built.backbone).__name__ == BACKBONE_CLASS[arch]
    assert built.num_layers == 2
    for key in ("pooling", "query_prompt", "passage_prompt", "max_query_length", "max_passage_length"):
        assert getattr(built, key) == cfg.model.get(key, getattr(built, key)), key
    assert built.tokenizer.padding_side == cfg.model.get("padding_side", "right")

    result = train(cfg)
    initial, final = Path(result["exports"][0]).parent / "initial", Path(result["exports"][-1])
    before, after = load_file(initial / "model.safetensors"), load_file(final / "model.safetensors")
    assert before.keys() == after.keys() and any(not torch.equal(before[k], after[k]) for k in before)

    reloaded = Encoder.from_pretrained(str(final))
    assert reloaded.settings() | {"base_model": ""} == built.settings() | {"base_model": ""}
    assert AutoTokenizer.from_pretrained(final).padding_side == built.tokenizer.padding_side
    ours_q, ours_p = reloaded.encode(TEXTS, kind="query"), reloaded.encode(TEXTS, kind="passage")
    st = SentenceTransformer(str(final), device="cpu")
    # The exported config_sentence_transformers.json names the prompts "query" and "document".
    for kind, ours, prompt in (("query", ours_q, built.query_prompt), ("document", ours_p, built.passage_prompt)):
        theirs = st.encode(TEXTS, prompt_name=kind if prompt else None, convert_to_tensor=True)
        torch.testing.assert_close(theirs, ours, atol=2e-5, rtol=1e-4)
    formatted = reloaded.format(TEXTS, "passage")
    torch.testing.assert_close(card_pooling(final, formatted), ours_p, atol=2e-5, rtol=1e-4)


def test_minicpm_is_built_as_its_native_equivalent(compose_cfg, decoder_dirs):
    """MiniCPM-Embedding-Light ships remote code (model_type "minicpm"); transformers has only `minicpm3`
    (a different, MLA attention). The config keeps trust_remote_code and its pooling/prompts; offline it is
    proven on Llama, whose blocks MiniCPM 1/2 share (RMSNorm, SwiGLU, RoPE, GQA) without its mu-P scalings."""
    cfg = compose_cfg(build_overrides("minicpm", decoder_dirs))
    assert cfg.model.trust_remote_code is True and cfg.model.pooling == "mean"
    assert "Query: " in cfg.model.query_prompt
