"""Best export, early stopping and delivering the best export, through ``train.py`` as a user runs it.

Every periodic export is validated (the validation callback runs whenever a model is exported), so the summary
and ``summary.json`` name the best export (its step and ``val/mean``) beside the last step and the merged model;
``callbacks.early_stopping.patience=N`` stops after N validations without a better ``val/mean``;
``deliver=best`` delivers the best export instead of merging."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SIZE = ["model=tiny", "checkpoint_every_n_steps=2", "data.num_workers=0"]
ENV = {**{k: v for k, v in os.environ.items() if k != "PROJECT_ROOT"}, "HF_HUB_OFFLINE": "1",
       "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}


def train(tmp_path: Path, *args: str, size: list[str] = SIZE) -> tuple[subprocess.CompletedProcess, Path]:
    """``python train.py <size> <args>`` as a user runs it, logs and run directory under ``tmp_path``."""
    run_dir = tmp_path / "run"
    result = subprocess.run([sys.executable, "train.py", *size, *args, f"paths.log_dir={tmp_path / 'logs'}",
                             f"hydra.run.dir={run_dir}"], cwd=ROOT, env=ENV, capture_output=True, text=True,
                            timeout=600)
    return result, run_dir


def summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


@pytest.fixture(scope="module")
def default_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("best")
    result, run_dir = train(tmp, "trainer.max_steps=6")
    assert result.returncode == 0, result.stderr[-3000:]
    return result, run_dir


def test_every_export_has_a_validation_score_and_the_summary_names_the_best(default_run):
    result, run_dir = default_run
    info = summary(run_dir)
    scores = info["export_scores"]
    assert [s["step"] for s in scores] == [2, 4, 6]
    assert all(isinstance(s["val/mean"], float) for s in scores)
    best = max(scores, key=lambda s: s["val/mean"])
    assert info["best_export"] == best
    assert best["path"] == str(run_dir / "checkpoints" / f"step_{best['step']:06d}")
    assert info["delivered"] == {"model": str(run_dir / "merged"), "kind": "merged"}
    assert "best export" in result.stdout and f"step_{best['step']:06d}" in result.stdout
    # the last step's val/mean is the last export's
    assert info["metrics"]["val/mean"] == pytest.approx(scores[-1]["val/mean"])


@pytest.mark.slow
def test_exports_at_epoch_ends_are_scored_too(tmp_path):
    """The official recipes export once per epoch (checkpoint_every_n_steps=0, every_n_epochs=1)."""
    result, run_dir = train(tmp_path, "checkpoint_every_n_steps=0", "callbacks.model_export.every_n_epochs=1",
                            "trainer.max_epochs=2", "merge=none")
    assert result.returncode == 0, result.stderr[-3000:]
    assert [s["step"] for s in summary(run_dir)["export_scores"]] == [22, 44]


def test_early_stopping_stops_after_patience_validations_without_a_better_val_mean(tmp_path):
    # a learning rate too small to change a float32 weight: val/mean never improves after the first validation
    result, run_dir = train(tmp_path, "trainer.max_steps=10", "module.lr=1e-12", "callbacks.early_stopping.patience=2",
                            "merge=none")
    assert result.returncode == 0, result.stderr[-3000:]
    finished = json.loads((run_dir / "checkpoints" / "finished.json").read_text())
    assert finished["global_step"] == 6  # validations at 2 (best), 4 and 6 (no better): stopped
    info = summary(run_dir)
    assert [s["step"] for s in info["export_scores"]] == [2, 4, 6]
    assert info["best_export"]["step"] == 2
    assert "early stopping" in result.stdout


def test_deliver_best_delivers_the_best_export_instead_of_the_merge(tmp_path):
    result, run_dir = train(tmp_path, "trainer.max_steps=6", "deliver=best")
    assert result.returncode == 0, result.stderr[-3000:]
    info = summary(run_dir)
    assert not (run_dir / "merged").exists() and info.get("merged") is None
    best = max(info["export_scores"], key=lambda s: s["val/mean"])
    assert info["delivered"] == {"model": best["path"], "kind": "best export"}
    assert info["metrics"]["best/val/mean"] == pytest.approx(best["val/mean"])


def test_deliver_best_without_validation_is_refused_in_one_line(tmp_path):
    result, _ = train(tmp_path, "trainer.max_steps=2", "deliver=best", "~callbacks.validation")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith("codiemb: error: deliver=best")
