"""The default run directory's size (only the .ckpt files resume needs are kept) and an explicit
``trainer.max_steps`` that no default epoch count caps, through ``train.py`` as a user runs it."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

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


def test_only_the_ckpt_files_resume_needs_are_kept(tmp_path):
    _, run_dir = train(tmp_path, "trainer.max_steps=20")
    # last.ckpt and the newest step's (resume's fallback when last.ckpt cannot be read)
    assert ckpts(run_dir) == ["last.ckpt", "step_000020.ckpt"]
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir() if p.is_dir()) == [
        "initial", "step_000010", "step_000020"]  # every export is kept: the merge needs them
    assert not list((run_dir / "checkpoints").glob(".*"))  # no temporary left behind


@pytest.mark.slow
def test_max_epochs_given_with_max_steps_still_counts(tmp_path):
    _, run_dir = train(tmp_path, "trainer.max_steps=30", "trainer.max_epochs=1")
    assert steps(run_dir) == 22


@pytest.mark.slow
def test_keeping_every_ckpt_is_one_override(tmp_path):
    _, run_dir = train(tmp_path, "trainer.max_steps=20", "callbacks.model_checkpoint.save_top_k=-1")
    assert ckpts(run_dir) == ["last.ckpt", "step_000010.ckpt", "step_000020.ckpt"]


@pytest.mark.slow
def test_keeping_only_last_ckpt_is_one_override(tmp_path):
    _, run_dir = train(tmp_path, "trainer.max_steps=20", "callbacks.model_checkpoint.save_top_k=0")
    assert ckpts(run_dir) == ["last.ckpt"]
