"""Merge-room defects: method switches as typed, the merged model's card, file modes, stale temporaries."""

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from codiemb.errors import ConfigError
from codiemb.merge import merge_models

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1"}
DELTA_GROUP = {"method": "delta", "p": 1.0, "granularity": "element", "lam": 1.0, "base": None,
               "checkpoints": [], "runs": [], "select": "last", "output": None, "evaluate": False}


@pytest.mark.parametrize("method,expected", [("uniform", {}), ("ties", {}), ("dare", {}),
                                             ("task_arithmetic", {}), ("delta", {"p": 1.0, "granularity": "element",
                                                                                "lam": 1.0})])
def test_method_switch_drops_the_groups_unset_options(method, expected):
    from codiemb.merge.config import check_merge_config

    cfg = {**DELTA_GROUP, "method": method}
    checked = check_merge_config(cfg, [f"merge.method={method}"], group_method="delta")
    assert {k: v for k, v in checked.items() if k not in DELTA_GROUP or k in ("p", "granularity", "lam")} == expected
    assert checked["method"] == method


def test_user_set_options_that_do_not_apply_are_refused_and_those_that_apply_kept():
    from codiemb.merge.config import check_merge_config

    with pytest.raises(ConfigError, match=r"merge.p do not apply to merge method 'uniform'"):
        check_merge_config({**DELTA_GROUP, "method": "uniform", "p": 2.0}, ["merge.method=uniform", "merge.p=2"])
    kept = check_merge_config({**DELTA_GROUP, "method": "ties", "lam": 0.5}, ["merge.method=ties", "merge.lam=0.5"])
    assert kept["lam"] == 0.5 and "p" not in kept and "granularity" not in kept
    # dare's p is its drop rate: delta's p=1.0 must not leak into it when only the method was switched
    assert "p" not in check_merge_config({**DELTA_GROUP, "method": "dare"}, ["merge.method=dare"])
    # the group chosen with its options (merge=ties): everything in it applies
    ties = {**DELTA_GROUP, "method": "ties", "density": 0.3, "lam": 1.0}
    for key in ("p", "granularity"):
        ties.pop(key)
    assert check_merge_config(ties, ["merge=ties", "merge.density=0.3"])["density"] == 0.3


def run_merge_py(*args, tmp_path):
    command = [sys.executable, str(ROOT / "merge.py"), *args, f"hydra.run.dir={tmp_path / 'hydra'}"]
    return subprocess.run(command, check=False, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)


def test_merge_py_method_switch_works_as_typed_and_refusals_are_one_line(tiny_dirs, tmp_path):
    base, ckpts = tiny_dirs
    common = [f"merge.base={base}", f"merge.checkpoints=[{','.join(map(str, ckpts))}]"]
    result = run_merge_py(*common, "merge.method=uniform", f"merge.output={tmp_path / 'u'}", tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    name = "encoder.layer.0.attention.output.dense.weight"
    expected = sum(load_file(str(c / "model.safetensors"))[name] for c in ckpts) / 3
    torch.testing.assert_close(load_file(str(tmp_path / "u" / "model.safetensors"))[name], expected)
    bad = run_merge_py(*common, "merge.method=uniform", "merge.p=2", f"merge.output={tmp_path / 'x'}",
                       tmp_path=tmp_path)
    assert bad.returncode != 0 and "Traceback" not in bad.stderr
    assert "codiemb: error: merge option(s) merge.p do not apply" in bad.stderr
    assert not (tmp_path / "x").exists()


def test_merged_model_has_its_own_card(tiny_dirs, tmp_path):
    base, ckpts = tiny_dirs
    (ckpts[-1] / "README.md").write_text("# the last checkpoint's card\n")
    try:
        merge_models(base, ckpts, tmp_path / "m", method="delta", granularity="row", p=2.0)
    finally:
        (ckpts[-1] / "README.md").unlink()
    card = (tmp_path / "m" / "README.md").read_text()
    assert "last checkpoint's card" not in card
    assert "Merged embedding model (delta)" in card and "granularity=row" in card and "p=2.0" in card
    assert str(base) in card and all(str(c) in card for c in ckpts)
    assert "this project's reading" in card


def test_merged_files_follow_the_umask(tiny_dirs, tmp_path):
    base, ckpts = tiny_dirs
    old = os.umask(0o022)
    try:
        merge_models(base, ckpts, tmp_path / "m", method="uniform")
    finally:
        os.umask(old)
    for item in (tmp_path / "m").iterdir():
        mode = stat.S_IMODE(item.stat().st_mode)
        assert mode & 0o044 == 0o044, f"{item.name} is {oct(mode)}"


def test_stale_temporaries_of_dead_processes_are_removed(tiny_dirs, tmp_path):
    """A merge killed with SIGKILL leaves `.m.tmp-<host>-<pid>-*`; the next merge into `m` removes it."""
    import hashlib
    import socket

    base, ckpts = tiny_dirs
    out = tmp_path / "m"
    dead = subprocess.Popen([sys.executable, "-c", "import os; print(os.getpid())"], stdout=subprocess.PIPE)
    pid = int(dead.communicate()[0])
    host = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]
    stale = [tmp_path / f".m.tmp-{host}-{pid}-abc", tmp_path / f".m.soup-{host}-{pid}-def",
             tmp_path / f".m.old-{host}-{pid}-ghi"]
    live = tmp_path / f".m.tmp-{host}-{os.getpid()}-mine"  # this (live) process's: kept
    for d in stale + [live]:
        (d / "model").mkdir(parents=True)
    merge_models(base, ckpts, out, method="uniform")
    assert not any(d.exists() for d in stale) and live.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["m", live.name])


def test_train_config_method_switch_reads_the_command_line(compose_cfg):
    """train.py shares the merge node: `merge.method=uniform` over the default delta group works as typed."""
    from codiemb.merge.config import check_merge_config

    cfg = compose_cfg(["merge.method=uniform"])  # sets HydraConfig as the app would
    checked = check_merge_config(cfg.merge)
    assert checked["method"] == "uniform" and not {"p", "granularity", "lam"} & set(checked)
    cfg = compose_cfg(["merge.method=uniform", "merge.lam=0.5"])
    with pytest.raises(ConfigError, match="merge.lam do not apply"):
        check_merge_config(cfg.merge)
    assert check_merge_config(compose_cfg(["merge=ties"]).merge)["density"] == 0.2
