"""A run's lifecycle when something goes wrong: a signal, a kill during the final merge, a damaged or
incomplete checkpoint directory, a resume typed as documented, a sweep whose fusion fails. Each case used to
lose work or report a failure as success."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from codiemb.errors import ConfigError
from codiemb.run.train import train
from tests.conftest import ROOT

FAST = ["model=tiny", "trainer=default", "trainer.max_steps=4", "checkpoint_every_n_steps=2", "data.num_workers=0",
        "~callbacks.validation", "~callbacks.progress_bar", "+trainer.enable_progress_bar=false"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline",
       "TOKENIZERS_PARALLELISM": "false"}


def train_py(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "train.py", *args], cwd=ROOT, env=ENV, capture_output=True, text=True,
                          timeout=timeout, check=False)


def signal_at(step: int, name: str) -> list[str]:
    return ["+callbacks.signal._target_=tests.reliability.helpers.SignalAtStep", f"+callbacks.signal.step={step}",
            f"+callbacks.signal.signal={name}"]


@pytest.mark.slow
@pytest.mark.parametrize(("name", "code"), [("SIGTERM", 143), ("SIGINT", 130)])
def test_a_signal_exits_non_zero_and_the_documented_resume_finishes_the_run(tmp_path, name, code):
    """SIGTERM mid-training exited 0 (Lightning ends the fit with a SystemExit without a code); and
    `resume=auto hydra.run.dir=<run>` composed the defaults instead of the run's own overrides."""
    run = tmp_path / "run"
    stopped = train_py(*FAST, "trainer.max_steps=6", *signal_at(3, name), f"hydra.run.dir={run}")
    assert stopped.returncode == code, stopped.stderr[-3000:]
    line = stopped.stderr.strip().splitlines()[-1]
    assert line.startswith(f"codiemb: interrupted: run {run} stopped by ") and \
        f"continue it with: python train.py resume=auto hydra.run.dir={run}" in line
    assert not (run / "summary.json").exists()
    # exactly as the message says: the run's own overrides (model=tiny, max_steps=6 ...) come back
    resumed = train_py("resume=auto", f"hydra.run.dir={run}", "~callbacks.signal")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert json.loads((run / "checkpoints" / "finished.json").read_text())["global_step"] == 6
    # another model typed on resume is refused by the change check, in one line
    run2 = tmp_path / "run2"
    assert train_py(*FAST, *signal_at(2, "SIGTERM"), f"hydra.run.dir={run2}").returncode == 143
    other = train_py("resume=auto", f"hydra.run.dir={run2}", "~callbacks.signal", "model=minilm")
    assert other.returncode == 1
    assert "was trained with another model" in other.stderr.strip().splitlines()[-1]


def test_a_run_killed_during_its_final_merge_is_finished_by_resume(compose_cfg, monkeypatch):
    """A resume that trains nothing has no final validation: the old card renderer raised TypeError, so the
    run could never be finished."""
    import codiemb.merge.api as api

    overrides = [o for o in FAST if o != "~callbacks.validation"] + ["merge=delta"]
    cfg = compose_cfg(overrides)
    real = api.merge_from_config

    def killed(*args, **kwargs):
        raise KeyboardInterrupt("killed during the merge")
    monkeypatch.setattr(api, "merge_from_config", killed)
    with pytest.raises(KeyboardInterrupt):
        train(cfg)
    run = Path(cfg.paths.output_dir)
    assert not (run / "checkpoints" / "finished.json").exists()
    monkeypatch.setattr(api, "merge_from_config", real)
    result = train(compose_cfg(overrides + ["resume=auto"]))
    assert (Path(result["merged"]) / "model.safetensors").is_file()
    assert json.loads((run / "checkpoints" / "finished.json").read_text())["global_step"] == 4


@pytest.fixture
def finished_run(compose_cfg):
    # as if killed just before the end: its .ckpt files still there (a finished run removes them by default)
    cfg = compose_cfg(FAST + ["merge=delta", "callbacks.model_checkpoint.keep_after_finish=true"])
    train(cfg)
    run = Path(cfg.paths.output_dir)
    (run / "checkpoints" / "finished.json").unlink()  # as if killed before the end: a resume re-merges
    return run


def test_a_missing_export_is_refused_naming_its_step(compose_cfg, finished_run):
    """The resume's merge silently used 1 of 2 exports, delivering another model than the uninterrupted run."""
    import shutil

    shutil.rmtree(finished_run / "checkpoints" / "step_000002")
    with pytest.raises(ConfigError, match=r"lists exports that are gone: step 2 \(.*step_000002\)"):
        train(compose_cfg(FAST + ["merge=delta", "resume=auto"]))


def test_a_damaged_last_ckpt_names_the_newest_readable_one(compose_cfg, finished_run):
    last = finished_run / "checkpoints" / "last.ckpt"
    last.write_bytes(last.read_bytes()[:1000])  # a write cut short
    step = finished_run / "checkpoints" / "step_000004.ckpt"
    with pytest.raises(ConfigError) as info:
        train(compose_cfg(FAST + ["merge=delta", "resume=auto"]))
    assert f"the newest readable checkpoint is {step} (step 4): resume from it with python train.py " \
           f"ckpt_path={step} hydra.run.dir={finished_run}" in str(info.value)


@pytest.mark.slow
def test_a_sweep_whose_fusion_fails_exits_non_zero(tmp_path):
    """Two seeds of a randomly initialised model share no initial weights, so fusing them fails: that failure
    was printed twice and the sweep exited 0."""
    sweep = tmp_path / "sweep"
    result = train_py("-m", *FAST, "trainer.max_steps=2", "seed=1,2", "+fuse=delta", f"hydra.sweep.dir={sweep}",
                      timeout=600)
    assert result.returncode == 1, result.stderr[-3000:]
    errors = [line for line in (result.stdout + result.stderr).splitlines() if "fusing the sweep's runs" in line]
    assert len(errors) == 1 and errors[0].startswith("codiemb: error:")
    assert (sweep / "sweep_summary.md").is_file()  # the other end-of-sweep callbacks still ran


@pytest.mark.slow
def test_the_documented_ddp_cpu_sim_command_finishes_with_its_default_logger_and_merge(tmp_path):
    """`python train.py trainer=ddp_cpu_sim` (README's scaling table) failed after its merge: the launching
    process's CSV logger never saw the ranks' metric names."""
    run = tmp_path / "ddp"
    result = train_py("trainer=ddp_cpu_sim", "model=tiny", "trainer.max_steps=4", "checkpoint_every_n_steps=2",
                      "data.num_workers=0", "trainer.log_every_n_steps=1", f"hydra.run.dir={run}", timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (run / "summary.json").is_file() and (run / "checkpoints" / "finished.json").is_file()
    header = (run / "csv" / "metrics.csv").read_text().splitlines()[0].split(",")
    assert "events/merge" in header and "events/export_step" in header  # the launcher's and the ranks' columns
    assert any(key.startswith("train/") for key in header)


def test_a_refused_resume_gives_its_run_directory_back(compose_cfg, finished_run):
    """A checkpoint refused after the run directory was claimed (damaged, exports gone) kept the lock: an
    in-process sweep or Optuna study could not use that directory again."""
    from codiemb.run import run_dir

    (finished_run / "checkpoints" / "last.ckpt").write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError):
        train(compose_cfg(FAST + ["merge=delta", "resume=auto"]))
    assert str(finished_run.resolve()) not in {str(Path(k).resolve()) for k in run_dir._held_locks}
