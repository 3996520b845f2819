"""configs/experiment/official_*.yaml: the CoDiEmb release's recipes compose with the release's settings and
train two steps on a tiny twin of their backbone (same architecture class, pooling, prompts, attention)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from codiemb.run.train import train
from tests.ecosystem.helpers import TINY_BERT, save_tiny_decoder

# recipe -> (twin architecture, lr, epochs, IR batch, max length, pooling, precision)
RECIPES = {"official_bge": ("bert", 5e-5, 5, 64, 512, "cls", "32-true"),
           "official_e5": ("bert", 5e-5, 5, 64, 512, "mean", "32-true"),
           "official_minicpm": ("llama", 4e-5, 4, 28, 1024, "mean", "bf16-mixed"),
           "official_qwen3": ("qwen3", 4e-5, 4, 28, 1024, "mean", "bf16-mixed")}
TWO_STEPS = ["trainer=default", "trainer.max_steps=2", "trainer.log_every_n_steps=1", "data.num_workers=0",
             "data.ir_batch_size=4", "data.sts_batch_size=8", "merge=none", "callbacks.validation.on_train_end=false"]


@pytest.fixture(scope="module")
def decoder_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("official-twins")
    return {kind: save_tiny_decoder(root / kind, kind) for kind in ("qwen3", "llama")}


def twin(arch: str, decoder_dirs) -> list[str]:
    from codiemb.models.resolve import bundled_minilm_path

    source, overrides = ((bundled_minilm_path(), TINY_BERT) if arch == "bert"
                         else (decoder_dirs[arch], "{intermediate_size:96}"))
    return [f"model.name_or_path={source}", "+model.random_init=true", f"+model.config_overrides={overrides}"]


@pytest.mark.parametrize("name", list(RECIPES))
def test_official_recipe_composes_with_the_release_settings(compose_cfg, name):
    arch, lr, epochs, ir_batch, length, pooling, precision = RECIPES[name]
    cfg = compose_cfg([f"experiment={name}"])
    assert (cfg.module.lr, cfg.module.weight_decay, cfg.module.warmup_ratio, cfg.module.schedule) == \
        (lr, 0.0, 0.03, "linear")
    assert (cfg.trainer.max_epochs, cfg.trainer.precision) == (epochs, precision)
    assert "DDPStrategy" in cfg.trainer.strategy._target_ and cfg.trainer.gradient_clip_val is None
    assert (cfg.data.ir_batch_size, cfg.data.sts_batch_size, cfg.data.max_positives, cfg.data.num_negatives) == \
        (ir_batch, 32, 2, 4)
    assert cfg.data.fixed_group_size is True and cfg.task_mix.policy == "proportional"
    assert (cfg.loss.ir.temperature, cfg.loss.ir.cross_device, cfg.loss.ir.candidates) == (0.02, "auto", "slot")
    assert cfg.loss.sts.temperature == 0.02 and cfg.loss.sts_positive_threshold == 1.0
    assert (cfg.model.max_query_length, cfg.model.max_passage_length, cfg.model.pooling) == (length, length, pooling)
    assert cfg.model.query_prompt.startswith("Instruction: ") and cfg.model.query_prompt.endswith(" Query: ")
    assert cfg.model.instruction_template == "Instruction: {instruction} Query: {text}"
    assert cfg.model.pool_prompt is False
    assert cfg.callbacks.model_export.every_n_epochs == 1 and cfg.callbacks.model_export.every_n_steps == 0
    assert cfg.callbacks.model_checkpoint.every_n_epochs == 1 and cfg.checkpoint_every_n_steps == 0
    if arch == "qwen3":
        assert cfg.model.bidirectional is True and cfg.model.padding_side == "right"


@pytest.mark.parametrize("name", list(RECIPES))
def test_official_recipe_trains_two_steps_on_its_tiny_twin(compose_cfg, decoder_dirs, name):
    arch, *_, pooling, _ = RECIPES[name]
    cfg = compose_cfg([f"experiment={name}", *TWO_STEPS, *twin(arch, decoder_dirs)])
    result = train(cfg)
    assert torch.isfinite(torch.tensor(result["metrics"]["train/loss"]))
    final = Path(result["exports"][-1])
    assert final.name == "step_000002"
    settings = json.loads((final / "codiemb.json").read_text())
    assert settings["pooling"] == pooling and settings["pool_prompt"] is False
    assert settings["query_prompt"] == cfg.model.query_prompt
