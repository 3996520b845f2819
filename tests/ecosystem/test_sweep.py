"""`python train.py -m hparams_search=codiemb_optuna`: a 2-trial Optuna sweep on the tiny model, as a subprocess
(the sweeper only runs inside a Hydra app)."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import yaml

from tests.conftest import ROOT

SEARCHED = {"module.lr", "loss.ir.temperature", "loss.sts.temperature", "loss.sts.pearson_weight",
            "loss.sts.rank_kl_weight", "loss.sts.pro_weight", "task_mix"}


def final_val_mean(trial: Path) -> float:
    with open(trial / "csv" / "metrics.csv") as fh:
        values = [float(row["val/mean"]) for row in csv.DictReader(fh) if row.get("val/mean")]
    return values[-1]


def test_two_trial_optuna_sweep_maximises_val_mean(tmp_path):
    command = [sys.executable, "train.py", "-m", "hparams_search=codiemb_optuna", "model=tiny", "trainer=default",
               "trainer.max_steps=2", "trainer.log_every_n_steps=1", "checkpoint_every_n_steps=2",
               "data.num_workers=0", "merge=none",
               "callbacks.validation.every_n_steps=1", "hydra.sweeper.n_trials=2",
               "hydra.sweeper.sampler.n_startup_trials=2", f"paths.log_dir={tmp_path}"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]

    (sweep,) = (tmp_path / "sweep" / "multiruns").iterdir()  # lightning-hydra-template layout
    trials = sorted(p for p in sweep.iterdir() if p.is_dir())
    assert [t.name for t in trials] == ["0", "1"]
    sampled = []
    for trial in trials:
        overrides = dict(o.split("=", 1) for o in yaml.safe_load((trial / ".hydra" / "overrides.yaml").read_text()))
        assert SEARCHED <= overrides.keys()
        assert 1e-5 <= float(overrides["module.lr"]) <= 1e-4
        assert overrides["task_mix"] in {"balanced", "proportional", "mixed"}
        sampled.append(overrides["module.lr"])
    assert sampled[0] != sampled[1]
    results = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert results["name"] == "optuna"
    assert abs(results["best_value"] - max(final_val_mean(t) for t in trials)) < 1e-4
