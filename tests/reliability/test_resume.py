"""A run SIGKILLed mid-epoch and again right after an epoch ended, resumed each time, trains on the same batches
in the same order and ends with the same weights, optimizer and scheduler state as a run that was never killed.

Every run is a real ``python train.py`` subprocess; :class:`~tests.reliability.helpers.KillAtStep` kills it with
SIGKILL (no cleanup, no flush), and :class:`~tests.reliability.helpers.BatchRecorder` logs each batch's rows.
The resumed run also keeps the whole metrics history and the original run's ``.hydra``, merges every export of
the whole run onto the pre-trained weights (also when resumed into a new directory), and running it again once
it finished changes nothing.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from tests.conftest import ROOT

# Example data with these batch sizes: 5 IR + 5 STS steps per balanced epoch, so 12 steps cross an epoch end.
STEPS, EVERY, STEPS_PER_EPOCH = 12, 5, 10
BASE = ["model=tiny", "trainer=default", f"trainer.max_steps={STEPS}", f"checkpoint_every_n_steps={EVERY}",
        "data.num_workers=0", "data.ir_batch_size=32", "data.sts_batch_size=64", "merge=delta",
        "trainer.log_every_n_steps=1", "~callbacks.validation", "~callbacks.progress_bar",
        "+trainer.enable_progress_bar=false",
        "callbacks.model_checkpoint.keep_after_finish=true"]  # the finished runs' .ckpt files are compared


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


# Columns whose every value is a measurement of that row's step. (Lightning re-logs the other task's last loss
# components on every step, so a resumed run, which starts with none, has fewer of those stale copies.) The
# sampler/steps_* counters are among them: they go on from the checkpoint (they used to restart at 0).
HISTORY_COLUMNS = {"step", "epoch", "train/loss", "lr-AdamW/pg1", "lr-AdamW/pg2", "events/export_step",
                   "events/merge", "merge/unchanged_fraction", "sampler/steps_ir", "sampler/steps_sts"}


def metric_rows(run_dir: Path) -> list[tuple]:
    """``metrics.csv`` as a sorted list of rows (each the sorted non-empty ``(column, value)`` pairs)."""
    with open(run_dir / "csv" / "metrics.csv", newline="") as fh:
        rows = [tuple(sorted((k, v) for k, v in row.items() if v and k in HISTORY_COLUMNS))
                for row in csv.DictReader(fh)]
    return sorted(rows)


def merged_weights(run_dir: Path) -> dict:
    return load_file(str(run_dir / "merged" / "model.safetensors"))


def snapshot(run_dir: Path, *parts: str) -> dict[str, tuple[int, int]]:
    """Size and mtime of every file under ``run_dir/<part>`` (a run that "changes nothing" keeps all of them)."""
    return {str(p.relative_to(run_dir)): (p.stat().st_size, p.stat().st_mtime_ns)
            for part in parts for p in sorted((run_dir / part).rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """The uninterrupted run every resumed run is compared with."""
    run_dir = tmp_path_factory.mktemp("resume") / "reference"
    done = train_subprocess(run_dir)
    assert done.returncode == 0, done.stderr[-3000:]
    return run_dir


@pytest.mark.slow  # five train.py processes: about 90 s on the shared 2-core machine
def test_sigkilled_twice_and_resumed_matches_the_uninterrupted_run(reference, tmp_path):
    reference_dir, crash_dir = reference, tmp_path / "crashed"
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
    assert final["CoDiEmbDataModule"] == expected["CoDiEmbDataModule"]

    # The history survives both resumes: every row of the uninterrupted run, once (the rows of the steps
    # redone after each kill are replaced, not repeated), and the original run's command line stays in .hydra.
    assert metric_rows(crash_dir) == metric_rows(reference_dir)
    overrides = yaml.safe_load((crash_dir / ".hydra" / "overrides.yaml").read_text())
    assert "+callbacks.killer.step=7" in overrides and "resume=auto" not in overrides
    # One merge of every export of the whole run, onto the pre-trained weights: the same model as the reference.
    report = json.loads((crash_dir / "merged" / "merge_report.json").read_text())
    assert report["base"] == str(crash_dir / "checkpoints" / "initial")
    assert [Path(p).name for p in report["checkpoints"]] == ["step_000005", "step_000010", "step_000012"]
    assert_tensors_close(merged_weights(crash_dir), merged_weights(reference_dir), "merged")

    # resume=auto on the finished run says so and changes nothing (it used to cut metrics.csv to 2 lines).
    before = snapshot(crash_dir, "checkpoints", "csv", "merged", ".hydra")
    again = train_subprocess(crash_dir, "resume=auto")
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"codiemb: run {crash_dir} already finished (step {STEPS}); nothing to do." in again.stdout
    assert snapshot(crash_dir, "checkpoints", "csv", "merged", ".hydra") == before

    # The checkpoint carries the settings that decide the batch order (a resume with other ones is refused).
    sampler = final["CoDiEmbDataModule"]["sampler"]
    expected_sampler = {"epoch": 1, "consumed": STEPS - STEPS_PER_EPOCH, "seed": 42, "policy": "balanced",
                        "ir_share": 0.5, "batch_size": {"ir": 32, "sts": 64}, "accumulate": 1, "world_size": 1}
    assert {k: sampler.get(k) for k in expected_sampler} == expected_sampler


@pytest.mark.slow  # two train.py processes: about 40 s
def test_resumed_into_a_new_directory_merges_the_whole_run_onto_the_pretrained_weights(reference, tmp_path):
    first, second = tmp_path / "first", tmp_path / "second"
    killed = train_subprocess(first, *kill_at(7))
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    # the README's resume: ckpt_path= into a run directory of its own
    resumed = train_subprocess(second, f"ckpt_path={first / 'checkpoints' / 'last.ckpt'}")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert not (second / "checkpoints" / "initial").exists()  # the resumed weights are not a merge base
    report = json.loads((second / "merged" / "merge_report.json").read_text())
    assert report["base"] == str(first / "checkpoints" / "initial")
    assert report["checkpoints"] == [str(first / "checkpoints" / "step_000005"),
                                     str(second / "checkpoints" / "step_000010"),
                                     str(second / "checkpoints" / "step_000012")]
    assert_tensors_close(merged_weights(second), merged_weights(reference), "merged")
