"""The whole composed config is checked before data or model load: numbers that must be positive, merge and
evaluation settings, logger options, the model's availability and the extras a setting needs. Each case once
hung (a negative batch size: the sampler's top-up loop never ended), crashed late (zero batch size, merge
options of another method: after every training step) or leaked a traceback."""

from __future__ import annotations

import pytest

from codiemb.errors import ConfigError
from codiemb.run.train import train

FAST = ["model=tiny", "trainer=default", "trainer.max_steps=2", "data.num_workers=0",
        "~callbacks.progress_bar", "+trainer.enable_progress_bar=false"]


@pytest.fixture
def nothing_loads(monkeypatch):
    """Reading data or loading the model fails the test: pre-flight errors must come first."""
    from codiemb.data.datamodule import CoDiEmbDataModule
    from codiemb.models.encoder import Encoder

    def refuse(*args, **kwargs):
        raise AssertionError("data or model loaded before the configuration error was raised")
    monkeypatch.setattr(Encoder, "from_pretrained", refuse)
    monkeypatch.setattr(CoDiEmbDataModule, "load", refuse)


@pytest.mark.parametrize("override, message", [
    ("data.ir_batch_size=-4", "data.ir_batch_size=-4 must be >= 1"),
    ("data.ir_batch_size=0", "data.ir_batch_size=0 must be >= 1"),
    ("data.sts_batch_size=2.5", "data.sts_batch_size=2.5 must be an integer"),
    ("trainer.accumulate_grad_batches=0", "trainer.accumulate_grad_batches=0 must be >= 1"),
    ("model.max_passage_length=0", "model.max_passage_length=0 must be >= 1"),
    ("data.query_max_length=-1", "data.query_max_length=-1 must be >= 1"),
    ("trainer.max_steps=-5", "trainer.max_steps=-5 must be >= 0 (or -1)"),
    ("checkpoint_every_n_steps=-1", "checkpoint_every_n_steps=-1 must be >= 0"),
    ("callbacks.validation.every_n_steps=0", "callbacks.validation.every_n_steps=0 must be >= 1"),
    ("loss.ir.temperature=0", "loss.ir.temperature=0 must be > 0"),
    ("loss.sts.temperature=-0.1", "loss.sts.temperature=-0.1 must be > 0"),
    ("module.lr=0", "module.lr=0 must be > 0"),
    ("data.num_workers=-1", "data.num_workers=-1 must be >= 0"),
    ("module.warmup_ratio=1.5", "module.warmup_ratio=1.5 must lie in [0.0, 1.0]"),
    ("data.ir_batch_size=abc", "data.ir_batch_size='abc' must be an integer"),
])
def test_impossible_numbers_are_refused_before_anything_loads(compose_cfg, nothing_loads, override, message):
    with pytest.raises(ConfigError) as info:
        train(compose_cfg(FAST + [override]))
    assert str(info.value) == message


def test_an_unknown_validation_precision_is_refused_before_anything_loads(compose_cfg, nothing_loads):
    with pytest.raises(ConfigError) as info:
        train(compose_cfg(FAST + ["callbacks.validation.precision=fp16"]))
    assert str(info.value) == "callbacks.validation.precision=fp16 is not one of train, auto, bf16, fp32"


def test_a_negative_batch_size_no_longer_hangs_from_the_command_line(tmp_path):
    """The issue's reproduction, as typed (it exited 124 under `timeout 120`)."""
    import subprocess
    import sys

    from tests.test_user_path import ROOT

    result = subprocess.run([sys.executable, "train.py", "model=tiny", "data.ir_batch_size=-4", "trainer.max_steps=2",
                             f"hydra.run.dir={tmp_path / 'run'}"], cwd=ROOT, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == "codiemb: error: data.ir_batch_size=-4 must be >= 1"


def test_unknown_merge_method_is_refused_before_training(compose_cfg, nothing_loads):
    with pytest.raises(ConfigError, match="unknown merge method 'nonsense'"):
        train(compose_cfg(FAST + ["merge.method=nonsense"]))


def test_options_the_user_set_for_another_method_are_refused_before_training(compose_cfg, nothing_loads):
    with pytest.raises(ConfigError, match="merge.p do not apply to merge method 'ties'|merge.p does not apply"):
        train(compose_cfg(FAST + ["merge.method=ties", "merge.p=2"]))


def test_a_method_switch_alone_passes_preflight(compose_cfg):
    """merge.method=ties on top of the delta group's defaults: the user set none of delta's options."""
    from codiemb.run.plan import build_plan

    plan = build_plan(compose_cfg(FAST + ["merge.method=ties"]))
    assert plan.merge["method"] == "ties" and "p" not in plan.merge


def test_a_missing_validation_set_is_refused_before_training(compose_cfg, nothing_loads, tmp_path):
    missing = tmp_path / "nope.jsonl"
    cfg = compose_cfg(FAST)
    cfg.val.sets[0].path = str(missing)
    with pytest.raises(ConfigError, match=f"validation set 'example_sts': {missing} does not exist"):
        train(cfg)


def test_logger_options_are_checked(compose_cfg, nothing_loads):
    with pytest.raises(ConfigError, match=r"logger.csv: CSVLogger takes no option 'flush_every'"):
        train(compose_cfg(FAST + ["+logger.csv.flush_every=5"]))


def test_callback_targets_must_import(compose_cfg, nothing_loads):
    with pytest.raises(ConfigError, match=r"callbacks.extra: cannot import no_such_package.Callback"):
        train(compose_cfg(FAST + ["+callbacks.extra._target_=no_such_package.Callback"]))


def test_an_unavailable_hub_model_names_the_local_path_fix(compose_cfg, nothing_loads, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ConfigError) as info:
        train(compose_cfg(FAST + ["model.name_or_path=nonexistent-org/nonexistent-model", "~model.random_init"]))
    assert str(info.value).startswith("model nonexistent-org/nonexistent-model is not in the local Hugging Face "
                                      "cache and the hub cannot be reached")
    assert "model.name_or_path=/models/nonexistent-model" in str(info.value)


def test_a_missing_local_model_directory(compose_cfg, nothing_loads, tmp_path):
    with pytest.raises(ConfigError, match="no such model directory"):
        train(compose_cfg(FAST + [f"model.name_or_path={tmp_path}/missing/model"]))


def test_lora_without_peft_names_the_install(compose_cfg, nothing_loads, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "peft" else real(name, *a))
    with pytest.raises(ConfigError, match=r"model.lora.enabled=true needs peft: pip install peft"):
        train(compose_cfg(FAST + ["model.lora.enabled=true"]))


def test_zero_epochs_warns_that_nothing_was_trained(compose_cfg):
    from codiemb.run.plan import build_plan

    warnings = build_plan(compose_cfg(FAST + ["trainer.max_epochs=0", "trainer.max_steps=-1"])).warnings
    assert warnings == ["trainer.max_epochs=0: nothing will be trained; the exports are the initial weights"]
