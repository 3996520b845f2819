"""``merge.output`` replaces only what codiemb wrote: an empty directory or a model directory carrying the marker.

A user's folder, a training run or a plain file at ``merge.output`` is refused with one line naming the path,
before any tensor is read; a train run's ``<run>/merged`` carries the marker, so a resumed run re-merges.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from safetensors.torch import load_file

import codiemb.merge.api as merge_api
from codiemb.errors import ConfigError
from codiemb.merge import merge_from_config, merge_models

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1"}
MARKER = ".codiemb_model"
NAME = "encoder.layer.0.attention.output.dense.weight"


def refused(path: Path) -> str:
    return rf"^merge\.output={re.escape(str(path))} exists and is not a model codiemb wrote"


def snapshot(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


@pytest.fixture
def no_merging(monkeypatch):
    """Reading or merging a tensor fails the test: the refusal must come before any merging work."""
    def fail(*args, **kwargs):
        raise AssertionError("merging started although merge.output should have been refused")

    monkeypatch.setattr(merge_api, "TensorReader", fail)
    monkeypatch.setattr(merge_api, "merge_tensor", fail)


def test_a_users_directory_is_refused_and_kept(tiny_dirs, tmp_path, no_merging):
    base, ckpts = tiny_dirs
    thesis = tmp_path / "thesis"
    thesis.mkdir()
    (thesis / "thesis.txt").write_text("four years of work\n")
    (thesis / "figures").mkdir()
    (thesis / "figures" / "fig1.svg").write_text("<svg/>")
    before = snapshot(thesis)
    with pytest.raises(ConfigError, match=refused(thesis)):
        merge_models(base, ckpts, thesis)
    assert snapshot(thesis) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["thesis"]  # no temporary left beside it


def test_a_training_run_directory_is_refused_and_kept(tiny_dirs, tmp_path, no_merging):
    base, ckpts = tiny_dirs
    run = tmp_path / "run"
    (run / "checkpoints" / "step_000002").mkdir(parents=True)
    (run / "checkpoints" / "step_000002" / "model.safetensors").write_bytes(b"weights")
    (run / "checkpoints" / "last.ckpt").write_bytes(b"lightning")
    (run / ".hydra").mkdir()
    (run / ".hydra" / "config.yaml").write_text("seed: 1\n")
    (run / "train.log").write_text("step 2\n")
    before = snapshot(run)
    cfg = {"method": "uniform", "base": str(base), "checkpoints": [str(c) for c in ckpts], "output": str(run)}
    with pytest.raises(ConfigError, match=refused(run)):
        merge_from_config(cfg)
    assert snapshot(run) == before


def test_a_file_is_refused_and_kept(tiny_dirs, tmp_path, no_merging):
    base, ckpts = tiny_dirs
    notes = tmp_path / "notes.txt"
    notes.write_text("keep me\n")
    with pytest.raises(ConfigError, match=refused(notes)):
        merge_models(base, ckpts, notes, method="uniform")
    assert notes.read_text() == "keep me\n"


def test_an_empty_directory_and_codiembs_own_output_are_replaced(tiny_dirs, tmp_path):
    base, ckpts = tiny_dirs
    out = tmp_path / "out"
    out.mkdir()
    merge_models(base, ckpts, out, method="uniform")
    assert (out / MARKER).is_file()
    ws = [load_file(str(c / "model.safetensors"))[NAME] for c in ckpts]
    torch.testing.assert_close(load_file(str(out / "model.safetensors"))[NAME], sum(ws) / 3)
    merge_models(base, ckpts[:1], out, method="uniform")  # replaces the model it wrote
    torch.testing.assert_close(load_file(str(out / "model.safetensors"))[NAME], ws[0])
    assert (out / MARKER).is_file()


def test_a_model_directory_without_the_marker_is_refused(tiny_dirs, tmp_path, no_merging):
    """An exported (or downloaded) model is the user's, even though it looks like a merge output."""
    base, ckpts = tiny_dirs
    with pytest.raises(ConfigError, match=refused(ckpts[0])):
        merge_models(base, ckpts[1:], ckpts[0], method="uniform")


def test_a_resumed_train_run_re_merges_into_its_own_merged_dir(tiny_dirs, tmp_path):
    """train.py's merge stage (``run_merge_stage``) calls ``merge_from_config`` with the run's exports and
    ``output=<run>/merged``; that directory carries the marker, so a resumed run merges there again."""
    base, ckpts = tiny_dirs
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "train.log").write_text("step 2\n")
    group = {"base": None, "checkpoints": [], "runs": [], "select": "last", "output": None, "evaluate": False}
    first = OmegaConf.create({**group, "method": "task_arithmetic", "lam": 1.0})
    merge_from_config(first, base=base, checkpoints=ckpts[:2], output=run / "merged", user_overrides=[])
    assert (run / "merged" / MARKER).is_file()
    again = OmegaConf.create({**group, "method": "uniform"})  # the resume (here with another method)
    merge_from_config(again, base=base, checkpoints=ckpts, output=run / "merged", user_overrides=[])
    ws = [load_file(str(c / "model.safetensors"))[NAME] for c in ckpts]
    torch.testing.assert_close(load_file(str(run / "merged" / "model.safetensors"))[NAME], sum(ws) / 3)
    assert (run / "train.log").read_text() == "step 2\n" and (run / "merged" / MARKER).is_file()


def test_merge_py_refuses_a_users_directory_in_one_line(tiny_dirs, tmp_path):
    base, ckpts = tiny_dirs
    thesis = tmp_path / "X"
    thesis.mkdir()
    (thesis / "thesis.txt").write_text("thesis\n")
    command = [sys.executable, str(ROOT / "merge.py"), f"merge.base={base}",
               f"merge.checkpoints=[{','.join(map(str, ckpts))}]", f"merge.output={thesis}",
               f"hydra.run.dir={tmp_path / 'hydra'}"]
    result = subprocess.run(command, check=False, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1, result.stderr[-3000:]
    lines = [line for line in result.stderr.splitlines() if line.startswith("codiemb: error:")]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert re.match(f"codiemb: error: {refused(thesis)[1:]}", lines[0]), lines[0]
    assert sorted(p.name for p in thesis.iterdir()) == ["thesis.txt"]
    assert (thesis / "thesis.txt").read_text() == "thesis\n"
