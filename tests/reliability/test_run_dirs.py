"""One run, one directory: runs started in the same second get their own, a live run's directory is refused, a
fresh run never writes beside an earlier one, multirun job directories work; plus the checks a resume makes
before the model loads (sampler settings, resume=auto starting fresh, nothing trained) and eval.py's refusal
of something that is not a model."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf

from codiemb.errors import ConfigError
from codiemb.run.train import train
from tests.conftest import ROOT

KEEP = "callbacks.model_checkpoint.keep_after_finish=true"
FAST = ["model=tiny", "trainer=default", "trainer.max_steps=2", "checkpoint_every_n_steps=2", "data.num_workers=0",
        "merge=none", "~callbacks.validation", "~callbacks.progress_bar", "+trainer.enable_progress_bar=false"]
TINY_RUN = ["model=tiny", "trainer=default", "trainer.max_steps=3", "checkpoint_every_n_steps=2",
            "data.num_workers=0", "data.ir_batch_size=32", "data.sts_batch_size=64", "~callbacks.validation",
            "~callbacks.progress_bar", "+trainer.enable_progress_bar=false"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline",
       "TOKENIZERS_PARALLELISM": "false"}


def start(script: str, *overrides: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, script, *overrides], cwd=ROOT, env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def finish(process: subprocess.Popen) -> tuple[int, str, str]:
    out, err = process.communicate(timeout=300)
    return process.returncode, out, err


# ---------------------------------------------------------------- unique directories
RESOLVE = "import sys; from codiemb.run.run_dir import unique_dir; print(unique_dir(sys.argv[1]))"


def test_unique_dir_is_atomic_across_processes_and_stable_within_one(tmp_path):
    from codiemb.run.run_dir import unique_dir

    base = str(tmp_path / "runs" / "2026-01-01_00-00-00")
    children = [subprocess.Popen([sys.executable, "-c", RESOLVE, base], cwd=ROOT, env=ENV, stdout=subprocess.PIPE,
                                 text=True) for _ in range(4)]
    got = sorted(child.communicate(timeout=60)[0].strip() for child in children)
    assert got == sorted([base] + [f"{base}-{n}" for n in (1, 2, 3)])
    mine = unique_dir(base)  # this process comes fifth ...
    assert mine == f"{base}-4" and unique_dir(base) == mine  # ... and Hydra's second resolution gets the same


def test_hydra_subdir_keeps_an_existing_runs_config(tmp_path):
    from codiemb.run.run_dir import hydra_subdir

    fresh, used = tmp_path / "fresh", tmp_path / "used"
    assert hydra_subdir(str(fresh)) == ".hydra" and hydra_subdir(str(fresh)) == ".hydra"
    (used / ".hydra").mkdir(parents=True)
    again = hydra_subdir(str(used))
    assert again.startswith(".hydra/rerun_") and (used / again).is_dir() and hydra_subdir(str(used)) == again


def test_the_default_configs_use_the_unique_resolver(compose_cfg):
    hydra_node = compose_cfg(FAST).hydra
    for key in ("run.dir", "sweep.dir"):
        raw = OmegaConf.to_container(hydra_node, resolve=False)
        value = raw[key.split(".")[0]][key.split(".")[1]]
        assert value.startswith("${codiemb_unique_dir:"), value
    assert OmegaConf.to_container(hydra_node, resolve=False)["output_subdir"].startswith("${codiemb_hydra_subdir:")


@pytest.mark.slow  # two train.py processes at once: about 40 s on the shared 2-core machine
def test_two_runs_started_in_the_same_second_get_their_own_directories(tmp_path, compose_cfg):
    # The default run directory with its timestamp frozen: both processes start "in the same second".
    raw = OmegaConf.to_container(compose_cfg(FAST).hydra, resolve=False)["run"]["dir"]
    frozen = raw.replace("${now:%Y-%m-%d}_${now:%H-%M-%S}", "2026-01-01_00-00-00")
    assert frozen != raw
    log_dir = tmp_path / "logs"
    runs = [start("train.py", *TINY_RUN, KEEP, f"paths.log_dir={log_dir}", f"hydra.run.dir='{frozen}'", f"seed={seed}")
            for seed in (1, 2)]
    results = [finish(run) for run in runs]
    for code, _out, err in results:
        assert code == 0, err[-3000:]
    run_dirs = sorted(p for p in (log_dir / "train" / "runs").iterdir())
    assert [p.name for p in run_dirs] == ["2026-01-01_00-00-00", "2026-01-01_00-00-00-1"]
    seeds = set()
    for run_dir in run_dirs:
        assert sorted(p.name for p in (run_dir / "checkpoints").glob("*.ckpt")) == [
            "last.ckpt", "step_000003.ckpt"]  # no step_000003-v1.ckpt; the newest step's kept beside last.ckpt
        overrides = yaml.safe_load((run_dir / ".hydra" / "overrides.yaml").read_text())
        seeds |= {o for o in overrides if o.startswith("seed=")}
        summary = json.loads((run_dir / "summary.json").read_text())
        assert summary["merged"] == str(run_dir / "merged") and summary["output_dir"] == str(run_dir)
    assert seeds == {"seed=1", "seed=2"}  # each directory holds its own run's config


# ---------------------------------------------------------------- live runs and earlier runs
HOLD_LOCK = ("import sys, time; from codiemb.run.run_dir import RunLock; RunLock.acquire(sys.argv[1]); "
             "print('locked', flush=True); time.sleep(120)")


def test_a_run_directory_in_use_by_a_live_run_is_refused_and_a_dead_runs_lock_is_taken_over(tmp_path):
    from codiemb.run.run_dir import RunLock

    run_dir = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(run_dir)], cwd=ROOT, env=ENV,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(ConfigError) as info:
            RunLock(run_dir)._take()
        host = json.loads((run_dir / ".codiemb.lock").read_text())["host"]
        assert str(info.value).startswith(f"run directory {run_dir} is in use by another run (pid {holder.pid} on "
                                          f"{host}, started ")
        assert str(info.value).endswith("wait for it to finish, or start this run in its own directory (drop "
                                        "hydra.run.dir, or give another one)")
        refused = start("train.py", *FAST, f"hydra.run.dir={run_dir}")
        code, _out, err = finish(refused)
        assert code == 1 and err.strip().splitlines()[-1].startswith(
            f"codiemb: error: run directory {run_dir} is in use by another run (pid {holder.pid}")
        assert not (run_dir / "checkpoints").exists() and not (run_dir / ".hydra").exists()  # nothing written
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    lock = RunLock.acquire(run_dir)  # the holder died: its lock is taken over
    try:
        assert json.loads((run_dir / ".codiemb.lock").read_text())["pid"] == os.getpid()
    finally:
        lock.release()


def test_a_fresh_run_in_a_directory_holding_a_run_is_refused(compose_cfg, tmp_path):
    train(compose_cfg(FAST))
    before = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    with pytest.raises(ConfigError) as info:
        train(compose_cfg(FAST + ["seed=7"]))
    assert str(info.value) == (f"run directory {tmp_path} already holds a run ({tmp_path / 'checkpoints'}); "
                               f"continue it with resume=auto hydra.run.dir={tmp_path}, or start this run in its "
                               "own directory (drop hydra.run.dir, or give another one)")
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == before  # no -v1 files


@pytest.mark.slow  # one multirun of two jobs: about 30 s
def test_multirun_jobs_get_their_own_directories(tmp_path):
    code, _out, err = finish(start("train.py", "-m", *FAST, KEEP, "seed=1,2", f"paths.log_dir={tmp_path}"))
    assert code == 0, err[-3000:]
    (sweep,) = (tmp_path / "train" / "multiruns").iterdir()
    assert not (tmp_path / "train" / "runs").exists()  # no stray single-run directory
    for job in ("0", "1"):
        assert (sweep / job / "checkpoints" / "last.ckpt").is_file()
        assert (sweep / job / ".hydra" / "overrides.yaml").is_file()


# ---------------------------------------------------------------- resume checks before the model loads
def test_a_resume_with_other_batch_settings_is_refused_unless_allowed(compose_cfg, tmp_path, monkeypatch):
    train(compose_cfg(FAST + [KEEP]))  # its .ckpt files outlive the run
    resumed = FAST + ["resume=auto", "trainer.max_steps=3"]
    from codiemb.models.encoder import Encoder
    real = Encoder.from_pretrained

    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before the configuration error was raised")
    monkeypatch.setattr(Encoder, "from_pretrained", refuse)
    with pytest.raises(ConfigError) as info:
        train(compose_cfg(resumed + ["data.ir_batch_size=8", "task_mix=round_robin"]))
    assert str(info.value) == (
        f"ckpt_path={tmp_path / 'checkpoints' / 'last.ckpt'} was trained with other data settings (task_mix "
        "balanced -> round_robin; batch sizes ir 16, sts 32 -> ir 8, sts 32), so its sampler position would "
        "point into different batches; resume with the checkpoint's settings, or add resume_allow_changes=true "
        "to continue with the new ones")
    monkeypatch.setattr(Encoder, "from_pretrained", real)
    result = train(compose_cfg(resumed + ["data.ir_batch_size=8", "resume_allow_changes=true"]))
    assert any(w.startswith("resume_allow_changes=true: continuing") for w in result["warnings"])
    assert [Path(p).name for p in result["exports"]] == ["step_000002", "step_000003"]


def test_resume_auto_without_a_checkpoint_says_it_started_fresh(compose_cfg, tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        result = train(compose_cfg(FAST + ["resume=auto"]))
    expected = (f"resume=auto found no checkpoint ({tmp_path / 'checkpoints' / 'last.ckpt'} does not exist), so "
                "this run started fresh; to continue a run, pass hydra.run.dir=<its run directory>")
    assert expected in caplog.messages and expected in result["warnings"]


def test_max_epochs_zero_warns_that_nothing_was_trained(compose_cfg, caplog):
    with caplog.at_level(logging.WARNING):
        result = train(compose_cfg(FAST + ["trainer.max_steps=-1", "trainer.max_epochs=0"]))
    said = [w for w in result["warnings"] if "trainer.max_epochs=0" in w and "nothing" in w and "trained" in w]
    assert len(said) == 1 and said[0] in caplog.messages  # once, in the log and in the summary
    assert not list((Path(result["output_dir"]) / "checkpoints").glob("*.ckpt"))


def test_a_checkpoint_already_at_the_end_warns_that_nothing_was_trained(compose_cfg, tmp_path, caplog):
    train(compose_cfg(FAST + [KEEP]))  # its .ckpt files outlive the run
    (tmp_path / "checkpoints" / "finished.json").unlink()  # as if killed during the merge: resumable
    with caplog.at_level(logging.WARNING):
        result = train(compose_cfg(FAST + ["resume=auto"]))
    expected = (f"nothing was trained: the checkpoint {tmp_path / 'checkpoints' / 'last.ckpt'} is already at "
                "step 2, the end of training; only the run's last export and merge were completed")
    assert expected in caplog.messages and expected in result["warnings"]
    assert (tmp_path / "checkpoints" / "finished.json").is_file()


def test_a_resume_keeps_the_csv_history_up_to_the_checkpoint_and_purges_tensorboard(tmp_path):
    from lightning.pytorch.loggers import TensorBoardLogger

    from codiemb.run.loggers import CSVLogger
    from codiemb.run.resume import RunSession

    (tmp_path / "csv").mkdir()
    (tmp_path / "csv" / "metrics.csv").write_text(
        "epoch,events/export_step,lr-AdamW/pg1,step,train/loss\n"
        "0,,,4,1.0\n"     # optimizer step 5: in the checkpoint
        ",5.0,,5,\n"      # the export after step 5: in the checkpoint
        ",,0.1,5,\n"      # the LR of step 6: lost, logged again
        "0,,,5,2.0\n"     # the loss of step 6: lost, logged again
        "0,,,6,3.0\n")    # step 7: lost
    csv_logger = CSVLogger(save_dir=str(tmp_path), name="csv", version="")
    tensorboard = TensorBoardLogger(save_dir=str(tmp_path / "tb"), name=None, version="")
    RunSession(output_dir=tmp_path, checkpoint_dir=tmp_path / "checkpoints", ckpt_path="last.ckpt",
               checkpoint={"global_step": 5}).prepare(
        [], [csv_logger, tensorboard])
    csv_logger.log_metrics({"train/loss": 2.5}, step=5)
    csv_logger.save()
    lines = (tmp_path / "csv" / "metrics.csv").read_text().splitlines()
    assert lines == ["epoch,events/export_step,lr-AdamW/pg1,step,train/loss", "0,,,4,1.0", ",5.0,,5,", ",,,5,2.5"]
    assert tensorboard._kwargs["purge_step"] == 5


def test_wandb_keeps_the_run_id_of_its_directory(tmp_path):
    from codiemb.run.run_dir import wandb_run_id

    (tmp_path / "wandb" / "offline-run-20260101_000000-abc123xy").mkdir(parents=True)
    assert wandb_run_id(str(tmp_path)) == "abc123xy"
    fresh = wandb_run_id(str(tmp_path / "new"))
    assert len(fresh) == 8 and wandb_run_id(str(tmp_path / "new")) == fresh


# ---------------------------------------------------------------- eval.py on something that is not a model
@pytest.mark.parametrize("make, message", [
    (lambda d: d / "nope", "does not exist; point it at an exported model directory such as <run dir>/merged or "
                           "<run dir>/checkpoints/step_XXXXXX, or a hub name"),
    (lambda d: (d / "last.ckpt").write_bytes(b"x") and d / "last.ckpt",
     "is a Lightning training checkpoint, not a model; point it at an exported model directory such as "
     "<run dir>/merged or <run dir>/checkpoints/step_XXXXXX, or a hub name"),
    (lambda d: (d / "empty").mkdir() or d / "empty",
     "is a directory without a model (no config.json); point it at an exported model directory such as "
     "<run dir>/merged or <run dir>/checkpoints/step_XXXXXX, or a hub name"),
])
def test_eval_on_something_that_is_not_a_model_says_so(tmp_path, make, message):
    from codiemb.eval.app import check_model_path

    target = make(tmp_path)
    with pytest.raises(ConfigError) as info:
        check_model_path(str(target))
    assert str(info.value) == f"model_path={target} {message}"


def test_eval_py_on_a_checkpoint_file_prints_one_line(tmp_path):
    ckpt = tmp_path / "last.ckpt"
    ckpt.write_bytes(b"not a model")
    code, _out, err = finish(start("eval.py", f"model_path={ckpt}", f"hydra.run.dir={tmp_path / 'eval'}"))
    assert code == 1
    assert err.strip().splitlines()[-1] == (
        f"codiemb: error: model_path={ckpt} is a Lightning training checkpoint, not a model; point it at an "
        "exported model directory such as <run dir>/merged or <run dir>/checkpoints/step_XXXXXX, or a hub name")
    assert "Traceback" not in err
