"""The user's path, as typed: the README's commands run as subprocesses in a fresh copy of the project (what a
clone holds: tracked and untracked-but-not-ignored files, no logs/), with no path, logger or seed override.
Runs are sized down only through documented options (``model=tiny``, ``trainer.max_steps``,
``hydra.sweeper.n_trials``); outputs are checked where the README says they go.

Each command here once failed while every composed-config test passed (`-m` crashed resolving
``hydra.sweep.dir``; ``model=qwen`` offline was a Hydra-wrapped traceback after data loading)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SIZE = ["model=tiny", "trainer.max_steps=4"]


def copy_project(dest: Path) -> Path:
    """The working tree as a fresh clone has it: ``git ls-files`` (tracked + untracked, not ignored)."""
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                           capture_output=True, check=True).stdout.split(b"\0")
    for name in filter(None, files):
        source = ROOT / name.decode()
        if source.is_file():
            target = dest / name.decode()
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(source.read_bytes())
    return dest


@pytest.fixture(scope="module")
def clone(tmp_path_factory) -> Path:
    return copy_project(tmp_path_factory.mktemp("fresh") / "codiemb")


def run(clone: Path, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    """``python <args>`` in the clone as a user's shell would run it (the clone's own src/ first on the path,
    as ``pip install -e .`` in that clone would give); only the CI environment variables are set."""
    env = {k: v for k, v in os.environ.items() if k not in ("PROJECT_ROOT", "PYTHONPATH", "CODIEMB_DATA_CACHE")}
    env.update(HF_HUB_OFFLINE="1", WANDB_MODE="offline", OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false",
               PYTHONPATH=str(clone / "src"))
    return subprocess.run([sys.executable, *args], cwd=clone, env=env, capture_output=True, text=True,
                          timeout=timeout)


def only_child(path: Path) -> Path:
    children = [p for p in path.iterdir() if p.is_dir()]
    assert len(children) == 1, children
    return children[0]


@pytest.fixture(scope="module")
def trained(clone) -> Path:
    """`python train.py` (the README's Quickstart), sized down."""
    result = run(clone, "train.py", *SIZE)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "codiemb: training finished" in result.stdout
    assert "merge/val/mean" in result.stdout and "precision" in result.stdout
    return only_child(clone / "logs" / "train" / "runs")


def test_train_writes_what_the_readme_lists(trained):
    checkpoints = trained / "checkpoints"
    assert not list(checkpoints.glob("*.ckpt"))  # removed once the run finished (keep_after_finish=false)
    for path in [checkpoints / "initial", checkpoints / "step_000004", checkpoints / "finished.json",
                 trained / "merged" / "model.safetensors", trained / "merged" / "merge_report.json",
                 trained / "csv" / "metrics.csv", trained / ".hydra" / "config.yaml", trained / "train.log"]:
        assert path.exists(), path
    summary = json.loads((trained / "summary.json").read_text())
    assert summary["merged"] == str(trained / "merged")
    assert {"val/mean", "merge/val/mean"} <= set(summary["metrics"])


def test_multirun_gives_each_job_its_directory_and_one_table(clone):
    result = run(clone, "train.py", "-m", "model=tiny", "task_mix=balanced,proportional", "trainer.max_steps=2")
    assert result.returncode == 0, result.stderr[-3000:]
    sweep = only_child(clone / "logs" / "train" / "multiruns")
    for job in ("0", "1"):
        summary = json.loads((sweep / job / "summary.json").read_text())
        assert summary["output_dir"] == str(sweep / job)
        assert (sweep / job / "merged" / "model.safetensors").is_file()
    table = (sweep / "sweep_summary.md").read_text()
    assert "task_mix=balanced" in table and "task_mix=proportional" in table
    assert table in result.stdout


def test_optuna_sweep_as_documented(clone):
    result = run(clone, "train.py", "-m", "hparams_search=codiemb_optuna", "model=tiny", "trainer.max_steps=2",
                 "hydra.sweeper.n_trials=2", timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    sweep = only_child(clone / "logs" / "sweep" / "multiruns")
    best = (sweep / "optimization_results.yaml").read_text()
    assert "best_value" in best and "best_value: null" not in best
    assert len(json.loads((sweep / "sweep_summary.json").read_text())) == 2


def test_eval_and_merge_on_the_outputs(clone, trained):
    result = run(clone, "eval.py", f"model_path={trained / 'merged'}")
    assert result.returncode == 0, result.stderr[-3000:]
    written = [line for line in result.stdout.splitlines() if "results written to" in line]
    assert written and Path(written[-1].split("results written to", 1)[1].strip()).joinpath("results.json").is_file()

    checkpoints = trained / "checkpoints"
    steps = sorted(str(p) for p in checkpoints.glob("step_*") if p.is_dir())
    output = clone / "logs" / "merged_uniform"
    result = run(clone, "merge.py", f"merge.base={checkpoints / 'initial'}", f"merge.checkpoints=[{','.join(steps)}]",
                 "merge.method=uniform", f"merge.output={output}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert (output / "model.safetensors").is_file()


def test_unavailable_model_is_one_line_within_seconds(clone):
    result = run(clone, "train.py", "model=qwen", timeout=120)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("codiemb: error: model Qwen/Qwen3-Embedding-0.6B is not in the local")
    assert "model.name_or_path=" in lines[-1] and "Traceback" not in result.stderr
