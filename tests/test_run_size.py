"""The run directory's size (the .ckpt files only while resume needs them) and an explicit ``trainer.max_steps``
that no default epoch count caps, through ``train.py`` as a user runs it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.test_best_export import ENV
from tests.test_best_export import train as train_py

ROOT = Path(__file__).resolve().parents[1]
SIZE = ["model=tiny", "data.num_workers=0", "checkpoint_every_n_steps=10", "merge=none", "~callbacks.validation"]


def train(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess, Path]:
    result, run_dir = train_py(tmp_path, *args, size=SIZE)
    assert result.returncode == 0, result.stderr[-3000:]
    return result, run_dir


def steps(run_dir: Path) -> int:
    return json.loads((run_dir / "checkpoints" / "finished.json").read_text())["global_step"]


def ckpts(run_dir: Path) -> list[str]:
    return sorted(p.name for p in (run_dir / "checkpoints").glob("*.ckpt"))


def test_an_explicit_max_steps_is_not_capped_by_the_default_epoch_count(tmp_path):
    # trainer=cpu (the default) sets max_epochs: 1, which is 22 steps of the example data
    _, run_dir = train(tmp_path, "trainer.max_steps=30")
    assert steps(run_dir) == 30


KEEP = "callbacks.model_checkpoint.keep_after_finish=true"


def resume(run_dir: Path, *args: str) -> subprocess.CompletedProcess:
    """The documented resume command (the run's own overrides come back from its directory)."""
    return subprocess.run([sys.executable, "train.py", "resume=auto", f"hydra.run.dir={run_dir}", *args], cwd=ROOT,
                          env=ENV, capture_output=True, text=True, timeout=600)


def test_a_finished_run_keeps_its_exports_and_removes_its_ckpt_files(tmp_path):
    result, run_dir = train(tmp_path, "trainer.max_steps=20")
    assert ckpts(run_dir) == []  # the run finished: nothing left to resume
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir() if p.is_dir()) == [
        "initial", "step_000010", "step_000020"]  # every export is kept: each is a model, the merge needs them
    assert json.loads((run_dir / "checkpoints" / "finished.json").read_text())["checkpoints_removed"] is True
    assert "keep_after_finish=true keeps them" in result.stdout
    assert not list((run_dir / "checkpoints").glob(".*"))  # no temporary left behind
    # the same command again: nothing to do, nothing changed
    again = resume(run_dir)
    assert again.returncode == 0 and "already finished (step 20); nothing to do" in again.stdout
    # asked to train further: one line saying why it cannot and how to (nothing written, nothing removed)
    before = sorted(p.name for p in run_dir.rglob("*"))
    further = resume(run_dir, "trainer.max_steps=30")
    assert further.returncode == 1
    line = further.stderr.strip().splitlines()[-1]
    assert line.startswith("codiemb: error:") and "keep_after_finish=true" in line
    assert f"model.name_or_path={run_dir / 'checkpoints' / 'step_000020'}" in line
    assert sorted(p.name for p in run_dir.rglob("*")) == before
    # and a fresh run into the finished run's directory is refused as before
    fresh = subprocess.run(result.args, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=600)
    assert fresh.returncode == 1 and "already holds a run" in fresh.stderr.strip().splitlines()[-1]


def test_keep_after_finish_keeps_what_resume_needs_and_trains_further(tmp_path):
    result, run_dir = train(tmp_path, "trainer.max_steps=20", KEEP)
    # last.ckpt and the newest step's (resume's fallback when last.ckpt cannot be read)
    assert ckpts(run_dir) == ["last.ckpt", "step_000020.ckpt"]
    further = resume(run_dir, "trainer.max_steps=24")
    assert further.returncode == 0, further.stderr[-3000:]
    assert steps(run_dir) == 24 and "last.ckpt" in ckpts(run_dir)  # kept again: the resume kept the override
    assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == 24


@pytest.mark.slow
def test_max_epochs_given_with_max_steps_still_counts(tmp_path):
    _, run_dir = train(tmp_path, "trainer.max_steps=30", "trainer.max_epochs=1")
    assert steps(run_dir) == 22


@pytest.mark.slow
def test_keeping_every_ckpt_is_one_override(tmp_path):
    _, run_dir = train(tmp_path, "trainer.max_steps=20", "callbacks.model_checkpoint.save_top_k=-1", KEEP)
    assert ckpts(run_dir) == ["last.ckpt", "step_000010.ckpt", "step_000020.ckpt"]


@pytest.mark.slow
def test_keeping_only_last_ckpt_is_one_override(tmp_path):
    _, run_dir = train(tmp_path, "trainer.max_steps=20", "callbacks.model_checkpoint.save_top_k=0", KEEP)
    assert ckpts(run_dir) == ["last.ckpt"]


@pytest.mark.slow
def test_the_default_run_directory_is_under_500_mb(tmp_path):
    """`python train.py` as typed (only its log and run directories moved under tmp_path): MiniLM, 22 steps,
    four model folders (initial, two exports, merged). It was 906 MB with two 259 MB .ckpt files kept (1.1 GB
    with three before save_top_k=1)."""
    result, run_dir = train_py(tmp_path, size=[])
    assert result.returncode == 0, result.stderr[-3000:]
    size = sum(p.stat().st_size for p in run_dir.rglob("*") if p.is_file())
    assert size < 500e6, f"{size / 1e6:.0f} MB"
    assert (run_dir / "merged" / "model.safetensors").is_file() and ckpts(run_dir) == []
