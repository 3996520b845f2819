"""Console output of the entry scripts: known third-party noise is gone, what matters still shows.

The noise checks run the real commands in subprocesses (as a user would) and look for the exact lines the
libraries print: W&B's "anonymous setting", Lightning's ``LeafSpec`` FutureWarning and litlogger tip, Optuna's
seven ``setup plugin alembic...`` INFO lines. Also here: the evaluation's progress report, and
``bench/gpu_check.py``'s one-line exit on a machine without CUDA.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ["model=tiny", "trainer.max_steps=2"]
NOISE = {"wandb anonymous": "The anonymous setting has no effect",
         "lightning LeafSpec": "`isinstance(treespec, LeafSpec)` is deprecated",
         "lightning litlogger tip": "Tip: For seamless cloud logging",
         "optuna alembic": "setup plugin alembic"}


def run(args: list[str], tmp_path: Path, timeout: int = 600) -> str:
    env = dict(os.environ, HF_HUB_OFFLINE="1", WANDB_MODE="offline", TOKENIZERS_PARALLELISM="false",
               OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"), PROJECT_ROOT=str(ROOT))
    done = subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout, check=False)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    return output


def noise_in(output: str) -> dict[str, list[str]]:
    return {name: [line for line in output.splitlines() if text in line] for name, text in NOISE.items()
            if text in output}


def test_default_run_prints_no_known_noise(tmp_path):
    output = run(["train.py", *SMOKE, f"hydra.run.dir={tmp_path / 'run'}"], tmp_path)
    assert not noise_in(output)
    assert "codiemb: training finished" in output
    assert "GPU available:" in output  # the same Lightning logger still speaks: only the tip is dropped


@pytest.mark.slow
def test_wandb_run_prints_no_known_noise(tmp_path):
    output = run(["train.py", "logger=wandb", *SMOKE, f"hydra.run.dir={tmp_path / 'run'}"], tmp_path)
    assert not noise_in(output)
    assert "wandb: Run data is saved locally" in output  # W&B's own messages are untouched
    assert list((tmp_path / "run" / "wandb").glob("offline-run-*"))


@pytest.mark.slow
def test_optuna_sweep_prints_no_known_noise(tmp_path):
    output = run(["train.py", "-m", "hparams_search=codiemb_optuna", *SMOKE, "hydra.sweeper.n_trials=1",
                  f"hydra.sweep.dir={tmp_path / 'sweep'}"], tmp_path)
    assert not noise_in(output)
    assert "Best value:" in output


def test_filters_are_targeted():
    """Only the named message / logger is silenced: other FutureWarnings, Lightning INFO lines and alembic
    warnings pass."""
    from codiemb.utils import quiet

    quiet.install()
    quiet.install()  # idempotent: one filter, not two
    lightning = logging.getLogger(quiet.LIGHTNING_INFO_LOGGER)
    assert lightning.filters.count(quiet._not_litlogger_tip) == 1
    tip = logging.LogRecord(lightning.name, logging.INFO, __file__, 1, "💡 Tip: For seamless cloud logging ...",
                            None, None)
    other = logging.LogRecord(lightning.name, logging.INFO, __file__, 1, "GPU available: False", None, None)
    assert not lightning.filter(tip) and lightning.filter(other)
    alembic = logging.getLogger(quiet.ALEMBIC_PLUGIN_LOGGER)
    assert not alembic.isEnabledFor(logging.INFO) and alembic.isEnabledFor(logging.WARNING)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        quiet.install()  # the filter goes in front of "default"
        warnings.warn("`isinstance(treespec, LeafSpec)` is deprecated, use ...", FutureWarning, stacklevel=1)
        warnings.warn("something else is deprecated", FutureWarning, stacklevel=1)
    assert [str(w.message) for w in caught] == ["something else is deprecated"]


def test_wandb_logger_leaves_anonymous_out_unless_asked(tmp_path):
    from lightning.pytorch.loggers.wandb import WandbLogger as LightningWandbLogger

    from codiemb.utils.quiet import WandbLogger

    assert issubclass(WandbLogger, LightningWandbLogger) and WandbLogger.__name__.endswith("WandbLogger")
    assert "anonymous" not in WandbLogger(save_dir=str(tmp_path), offline=True)._wandb_init
    assert WandbLogger(save_dir=str(tmp_path), offline=True, anonymous=True)._wandb_init["anonymous"] == "allow"
    import pickle

    assert pickle.loads(pickle.dumps(WandbLogger)) is WandbLogger  # spawned DDP ranks unpickle it


# ---------------------------------------------------------------- evaluation progress
def example_sets():
    data = ROOT / "data" / "example" / "val"
    return [{"name": "example_sts", "task": "sts", "format": "jsonl", "path": str(data / "sts.jsonl")},
            {"name": "example_ir", "task": "ir", "format": "beir", "path": str(data / "ir"), "split": "dev"}]


def test_eval_progress_bar_on_an_interactive_stderr(tiny, capsys, monkeypatch):
    from codiemb.eval import runner

    monkeypatch.setattr(runner, "_interactive", lambda: True)
    runner.evaluate(tiny, example_sets(), batch_size=8, progress=True)
    err = capsys.readouterr().err
    data = runner.load_set(runner.parse_sets(example_sets())[1])
    total = runner.set_size(runner.parse_sets(example_sets())[1], data)
    assert "eval example_ir: " in err and f"/{total} [" in err and "text/s" in err, err
    assert "eval example_sts: " in err


def test_eval_progress_log_lines_when_not_interactive(tiny, caplog, monkeypatch):
    from codiemb.eval import runner

    monkeypatch.setattr(runner, "_interactive", lambda: False)
    counted, close = {}, runner._Progress.close
    monkeypatch.setattr(runner._Progress, "close", lambda self: (counted.update({self.name: (self.done, self.total)}),
                                                                 close(self)))
    with caplog.at_level(logging.INFO, logger=runner.__name__):
        runner.evaluate(tiny, example_sets(), batch_size=8, progress=True)
    sizes = {spec.name: runner.set_size(spec, runner.load_set(spec)) for spec in runner.parse_sets(example_sets())}
    assert counted == {name: (size, size) for name, size in sizes.items()}  # every text counted, once
    lines = [r.getMessage() for r in caplog.records if "encoded" in r.getMessage()]
    assert any(line.startswith("example_ir: encoded ") and f"/{sizes['example_ir']} texts" in line
               for line in lines), lines
    # at most one line per PROGRESS_LOG_EVERY_S per set: a fast set logs once
    assert sum(line.startswith("example_ir:") for line in lines) == 1


def test_eval_progress_is_quiet_for_small_sets_by_default(tiny, capsys, caplog, monkeypatch):
    from codiemb.eval import runner

    for interactive in (True, False):
        monkeypatch.setattr(runner, "_interactive", lambda interactive=interactive: interactive)
        with caplog.at_level(logging.INFO, logger=runner.__name__):
            with_progress = runner.evaluate(tiny, example_sets(), batch_size=8)
        assert "eval example_ir" not in capsys.readouterr().err
        assert not [r for r in caplog.records if "encoded" in r.getMessage()]
    without = runner.evaluate(tiny, example_sets(), batch_size=8, progress=False)
    for name in without:  # counting batches never changes a score
        assert {k: v for k, v in with_progress[name].items() if k != "wall_s"} == \
            {k: v for k, v in without[name].items() if k != "wall_s"}
    assert not tiny._forward_hooks  # the hook is removed


# ---------------------------------------------------------------- bench/gpu_check.py
def test_gpu_check_without_cuda_exits_2_with_one_line(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the check itself would run")
    env = dict(os.environ, HF_HUB_OFFLINE="1", WANDB_MODE="offline")
    done = subprocess.run([sys.executable, "bench/gpu_check.py"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300, check=False)
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "CUDA" in lines[0], done.stderr
