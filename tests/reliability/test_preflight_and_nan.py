"""Configs that cannot work fail before the model loads, with what to change; a NaN/inf loss stops the run naming
the step, task and dataset, and leaves only clean checkpoints behind."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf, open_dict

from codiemb.errors import ConfigError, DataError
from codiemb.models.module import NonFiniteGradientError, NonFiniteLossError
from codiemb.run.plan import build_plan
from codiemb.run.resume import resolve_ckpt_path
from codiemb.run.train import train

FAST = ["model=tiny", "trainer=default", "trainer.max_steps=4", "checkpoint_every_n_steps=2", "data.num_workers=0",
        "merge=none", "~callbacks.validation", "~callbacks.progress_bar", "+trainer.enable_progress_bar=false"]


@pytest.fixture
def no_model_load(monkeypatch):
    """Any attempt to load the model fails the test: pre-flight errors must come first."""
    from codiemb.models.encoder import Encoder

    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before the configuration error was raised")
    monkeypatch.setattr(Encoder, "from_pretrained", refuse)


@pytest.mark.parametrize("overrides, message", [
    (["data.sts_batch_size=1000"], "dataset 'sts_general' has 180 rows but one sts step needs 1000 (batch 1000 x 1 "
                                   "ranks x 1 accumulation); lower data.sts_batch_size or add data"),
    (["data.ir_batch_size=50", "trainer.accumulate_grad_batches=2"],
     "dataset 'support' has 96 rows but one ir step needs 100 (batch 50 x 1 ranks x 2 accumulation); lower "
     "data.ir_batch_size or add data"),
    (["loss.ir.cross_device=true"], "loss.ir.cross_device=true gathers negatives across processes but this run has "
     "one process; set loss.ir.cross_device=false or train with a distributed trainer (trainer=ddp, trainer.devices>1)"),
    (["loss.sts.cross_device=true"], "loss.sts.cross_device=true gathers negatives across processes but this run "
     "has one process; set loss.sts.cross_device=false or train with a distributed trainer (trainer=ddp, "
     "trainer.devices>1)"),
    (["resume=yes"], "resume=yes is not understood; use resume=auto (with hydra.run.dir=<run dir>) or "
                     "ckpt_path=<file.ckpt>"),
    (["ckpt_path=/nonexistent/last.ckpt"], "ckpt_path=/nonexistent/last.ckpt is not a file; point it at a checkpoint "
     "such as <run dir>/checkpoints/last.ckpt, or use resume=auto with hydra.run.dir=<run dir>"),
    (["data.on_error=ignore"], "data.on_error must be one of ('raise', 'skip'), got 'ignore'"),
])
def test_impossible_configs_fail_before_the_model_loads(compose_cfg, no_model_load, overrides, message):
    with pytest.raises(ConfigError) as info:
        train(compose_cfg(FAST + overrides))
    assert str(info.value) == message


def test_task_mix_needing_a_task_without_data(compose_cfg, no_model_load):
    cfg = compose_cfg(FAST + ["task_mix=round_robin"])
    cfg.data.datasets = [spec for spec in cfg.data.datasets if spec.task == "ir"]
    with pytest.raises(ConfigError) as info:
        train(cfg)
    assert str(info.value) == ("task_mix=round_robin needs both tasks but there is no sts dataset; add one or use "
                               "task_mix=ir_only")


def test_a_bad_row_stops_the_run_before_the_model_loads(compose_cfg, no_model_load, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"query": "q", "positives": ["p"]}\n{"query": "q", "positives": ["p"], "negatives": [""]}\n')
    cfg = compose_cfg(FAST + ["task_mix=ir_only"])
    cfg.data.datasets = [{"name": "bad", "task": "ir", "format": "jsonl", "path": str(bad)}]
    with pytest.raises(DataError) as info:
        train(cfg)
    assert str(info.value) == f"{bad}, line 2, field 'negatives[0]': empty or whitespace-only text"


def test_resume_auto_finds_last_ckpt_or_starts_fresh(compose_cfg):
    plan = build_plan(compose_cfg(FAST + ["resume=auto"]))
    assert resolve_ckpt_path(plan) is None  # a new run directory: start from the beginning
    last = plan.output_dir / "checkpoints" / "last.ckpt"
    last.parent.mkdir(parents=True)
    last.write_bytes(b"")
    assert resolve_ckpt_path(plan) == str(last)
    assert resolve_ckpt_path(build_plan(compose_cfg(FAST))) is None  # resume defaults to off


# ---------------------------------------------------------------- NaN / inf loss
def with_poisoned_loss(cfg, task: str, call: int, value: float, wrapper: str = "NonFiniteAfter"):
    """Wrap the configured ``task`` loss so its ``call``-th evaluation returns ``value``; record every batch."""
    inner = OmegaConf.to_container(cfg.loss[task], resolve=True)
    with open_dict(cfg):
        cfg.loss[task] = {"_target_": f"tests.reliability.helpers.{wrapper}", "loss": inner, "call": call,
                          "value": value}
        cfg.callbacks.recorder = {"_target_": "tests.reliability.helpers.BatchRecorder",
                                  "path": str(Path(cfg.paths.output_dir) / "batches.jsonl")}
    return cfg


@pytest.mark.parametrize("value", [math.nan, math.inf])
def test_non_finite_loss_stops_naming_step_task_and_dataset(compose_cfg, value):
    cfg = with_poisoned_loss(compose_cfg(FAST + ["task_mix=ir_only"]), "ir", call=3, value=value)
    with pytest.raises(NonFiniteLossError) as info:
        train(cfg)
    out = Path(cfg.paths.output_dir)
    third = [json.loads(line) for line in (out / "batches.jsonl").read_text().splitlines()][2]
    assert str(info.value) == (
        f"loss is {value} at global step 2 (task 'ir', dataset '{third['dataset']}', micro-batch 2); stopped before "
        "the optimizer step, so the last checkpoint is clean: lower module.lr, check that dataset, or resume with "
        "ckpt_path=<last.ckpt>")
    # the step-2 checkpoint is the last one; nothing was saved from the poisoned step
    assert sorted(p.name for p in (out / "checkpoints").glob("*.ckpt")) == ["last.ckpt", "step_000002.ckpt"]
    last = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert last["global_step"] == 2
    assert all(torch.isfinite(t).all() for t in last["state_dict"].values())
    assert sorted(p.name for p in (out / "checkpoints").iterdir() if p.is_dir()) == ["initial", "step_000002"]


def test_non_finite_sts_loss_on_the_first_step_leaves_no_checkpoint(compose_cfg):
    cfg = with_poisoned_loss(compose_cfg(FAST + ["task_mix=sts_only"]), "sts", call=1, value=math.nan)
    with pytest.raises(NonFiniteLossError, match=r"^loss is nan at global step 0 \(task 'sts', dataset "
                                                 r"'sts_general', micro-batch 0\); stopped before"):
        train(cfg)
    assert not list((Path(cfg.paths.output_dir) / "checkpoints").glob("*.ckpt"))


def test_a_failed_run_gives_back_its_lock_and_file_descriptor(compose_cfg):
    """Hydra multirun and Optuna run jobs in one process: a failed job must not keep its run directory locked
    (nor an open descriptor: the test process once passed 1024 of them, and spawned gloo workers then aborted)."""
    from codiemb.run import run_dir

    cfg = with_poisoned_loss(compose_cfg(FAST + ["task_mix=sts_only"]), "sts", call=1, value=math.nan)
    lock_file = str(Path(cfg.paths.output_dir).resolve() / run_dir.LOCK_NAME)
    with pytest.raises(NonFiniteLossError):
        train(cfg)
    assert not run_dir._held_locks
    open_files = [os.readlink(f"/proc/self/fd/{fd}") for fd in os.listdir("/proc/self/fd")
                  if os.path.exists(f"/proc/self/fd/{fd}")]
    assert lock_file not in open_files


@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed"])
def test_nan_gradient_with_a_finite_loss_stops_before_the_step(compose_cfg, precision):
    cfg = with_poisoned_loss(compose_cfg(FAST + ["task_mix=ir_only", f"trainer.precision={precision}"]), "ir",
                             call=3, value=math.nan, wrapper="NanGradientAfter")
    with pytest.raises(NonFiniteGradientError) as info:
        train(cfg)
    out = Path(cfg.paths.output_dir)
    third = [json.loads(line) for line in (out / "batches.jsonl").read_text().splitlines()][2]
    n_params = sum(1 for p in torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu",
                                         weights_only=True)["state_dict"].values())
    message = str(info.value)
    assert message.startswith("gradient is not finite in ")
    assert f"at global step 2 (task 'ir', dataset '{third['dataset']}', micro-batch 2) although the loss is finite" \
        in message
    assert 0 < int(message.split("in ")[1].split(" ")[0]) <= n_params
    last = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert last["global_step"] == 2  # the poisoned step was never applied nor saved
    assert all(torch.isfinite(t).all() for t in last["state_dict"].values())
