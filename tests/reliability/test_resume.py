"""A run SIGKILLed mid-epoch and again right after an epoch ended, resumed each time, trains on the same batches
in the same order and ends with the same weights, optimizer and scheduler state as a run that was never killed.

Every run is a real ``python train.py`` subprocess; :class:`~tests.reliability.helpers.KillAtStep` kills it with
SIGKILL (no cleanup, no flush), and :class:`~tests.reliability.helpers.BatchRecorder` logs each batch's rows.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.conftest import ROOT

# Example data with these batch sizes: 5 IR + 5 STS steps per balanced epoch, so 12 steps cross an epoch end.
STEPS, EVERY, STEPS_PER_EPOCH = 12, 5, 10
BASE = ["model=tiny", "trainer=default", f"trainer.max_steps={STEPS}", f"checkpoint_every_n_steps={EVERY}",
        "data.num_workers=0", "data.ir_batch_size=32", "data.sts_batch_size=64", "merge=none",
        "~callbacks.validation", "~callbacks.progress_bar", "+trainer.enable_progress_bar=false"]


def train_subprocess(run_dir: Path, *overrides: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline",
           "TOKENIZERS_PARALLELISM": "false"}
    command = [sys.executable, "train.py", *BASE, f"hydra.run.dir={run_dir}",
               "+callbacks.recorder._target_=tests.reliability.helpers.BatchRecorder",
               f"+callbacks.recorder.path={run_dir / 'batches.jsonl'}", *overrides]
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def kill_at(step: int) -> list[str]:
    return ["+callbacks.killer._target_=tests.reliability.helpers.KillAtStep", f"+callbacks.killer.step={step}"]


def batches(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "batches.jsonl").read_text().splitlines()]


def load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def assert_tensors_close(a, b, where: str = "") -> None:
    """Nested dicts/lists of tensors and numbers, equal to 1e-6."""
    if isinstance(a, torch.Tensor):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0, msg=lambda m: f"{where}: {m}")
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            assert_tensors_close(a[key], b[key], f"{where}/{key}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_tensors_close(x, y, f"{where}[{i}]")
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


@pytest.mark.slow  # five train.py processes: about 55 s on the shared 2-core machine
def test_sigkilled_twice_and_resumed_matches_the_uninterrupted_run(tmp_path):
    reference_dir, crash_dir = tmp_path / "reference", tmp_path / "crashed"
    done = train_subprocess(reference_dir)
    assert done.returncode == 0, done.stderr[-3000:]
    reference = batches(reference_dir)
    assert len(reference) == STEPS and [b["epoch"] for b in reference] == [0] * 10 + [1] * 2
    assert {b["task"] for b in reference} == {"ir", "sts"}

    # 1) killed after step 7, mid-epoch: the last checkpoint is step 5, steps 6-7 are lost and must be redone
    killed = train_subprocess(crash_dir, *kill_at(7))
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert sorted(p.name for p in (crash_dir / "checkpoints").glob("*.ckpt")) == ["last.ckpt", "step_000005.ckpt"]
    # 2) resumed from that file, then killed after step 11: the last checkpoint (step 10) ended epoch 0
    resumed = train_subprocess(crash_dir, f"ckpt_path={crash_dir / 'checkpoints' / 'last.ckpt'}", *kill_at(11))
    assert resumed.returncode == -signal.SIGKILL, resumed.stderr[-3000:]
    # 3) resume=auto in the same run directory finds last.ckpt by itself and finishes
    finished = train_subprocess(crash_dir, "resume=auto")
    assert finished.returncode == 0, finished.stderr[-3000:]

    seen = batches(crash_dir)  # every batch any of the three processes started on, in order
    assert len(seen) == 7 + (11 - 5) + (STEPS - 10)
    first, second, third = seen[:7], seen[7:13], seen[13:]
    assert first == reference[:7]
    assert second == reference[5:11]  # restarted at step 5, sampler position and rows as in the reference
    assert third == reference[10:]  # restarted at the epoch boundary: epoch 1 from its first batch

    final, expected = load(crash_dir / "checkpoints" / "last.ckpt"), load(reference_dir / "checkpoints" / "last.ckpt")
    assert final["global_step"] == expected["global_step"] == STEPS
    assert_tensors_close(final["state_dict"], expected["state_dict"], "weights")
    assert_tensors_close(final["optimizer_states"], expected["optimizer_states"], "optimizer")
    assert_tensors_close(final["lr_schedulers"], expected["lr_schedulers"], "scheduler")
    assert final["CoDiEmbDataModule"] == expected["CoDiEmbDataModule"] == {
        "sampler": {"epoch": 1, "consumed": STEPS - STEPS_PER_EPOCH, "seed": 42, "policy": "balanced"}}
