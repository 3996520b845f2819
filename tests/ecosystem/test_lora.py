"""LoRA through peft: only adapters train, exports are merged plain weights, the merge stage runs on them."""

from __future__ import annotations

from pathlib import Path

import torch

from codiemb.run.train import train
from tests.ecosystem.helpers import FAST

R, ALPHA = 4, 8.0


def test_lora_trains_adapters_and_exports_merged_weights(compose_cfg):
    from safetensors.torch import load_file
    from sentence_transformers import SentenceTransformer

    cfg = compose_cfg(FAST + ["model=tiny", "model.lora.enabled=true", f"model.lora.r={R}",
                              f"model.lora.alpha={ALPHA}", "model.lora.dropout=0.0", "merge=delta", "logger=csv",
                              "callbacks.model_checkpoint.keep_after_finish=true"])  # the .ckpt is read below
    result = train(cfg)
    checkpoints = Path(result["exports"][-1]).parent
    initial = load_file(checkpoints / "initial" / "model.safetensors")
    final = load_file(Path(result["exports"][-1]) / "model.safetensors")
    assert initial.keys() == final.keys() and not any("lora" in k for k in final)

    # Brute force: W_final = W_0 + (alpha / r) * B @ A with A, B from the Lightning checkpoint of the same step.
    state = torch.load(checkpoints / f"step_{len(result['exports']):06d}.ckpt", map_location="cpu",
                       weights_only=False)["state_dict"]
    targeted = set()
    for key in (k for k in state if k.endswith("lora_A.default.weight")):
        prefix = key.removesuffix(".lora_A.default.weight")
        name = prefix.split("base_model.model.", 1)[1] + ".weight"
        expected = initial[name] + (ALPHA / R) * state[prefix + ".lora_B.default.weight"] @ state[key]
        torch.testing.assert_close(final[name], expected, atol=1e-6, rtol=1e-5)
        assert not torch.equal(final[name], initial[name])
        targeted.add(name)
    assert targeted and all(".query." in n or ".value." in n for n in targeted)  # peft's BERT default
    for name in initial.keys() - targeted:  # frozen: bit-identical
        assert torch.equal(initial[name], final[name]), name

    merged = Path(result["merged"])
    assert (merged / "merge_report.json").is_file()
    emb = SentenceTransformer(str(merged), device="cpu").encode(["a query"], convert_to_tensor=True)
    assert emb.shape == (1, 128) and torch.isfinite(emb).all()
    card = (Path(result["exports"][-1]) / "README.md").read_text()
    assert f"r={R}" in card and "alpha=8.0" in card
