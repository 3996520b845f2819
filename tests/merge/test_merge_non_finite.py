"""A merge never delivers NaN or inf: options are checked when the config is read, inputs while they are read,
and the merged tensors before the output is renamed into place (a previous output stays as it was)."""

import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from codiemb.errors import CodiembError, ConfigError, MergeError
from codiemb.merge import merge_models
from codiemb.merge.config import check_merge_config
from codiemb.merge.methods import make_rule

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1"}
NAME = "encoder.layer.0.output.dense.bias"
NAN, INF = math.nan, math.inf

BAD_OPTIONS = [
    ("delta", "lam", NAN), ("delta", "lam", INF), ("delta", "lam", -INF), ("delta", "lam", 1e39),
    ("delta", "p", NAN), ("delta", "p", INF), ("delta", "p", -1.0), ("delta", "lam", "big"),
    ("task_arithmetic", "lam", NAN), ("task_arithmetic", "lam", 1e39), ("ties", "lam", INF),
    ("ties", "density", NAN), ("dare", "p", NAN), ("dare", "lam", 1e39), ("dare", "seed", 1.5),
    ("dare", "lam", True),
]


@pytest.mark.parametrize("method,key,value", BAD_OPTIONS)
def test_non_finite_or_out_of_range_options_are_refused(method, key, value):
    with pytest.raises(ConfigError, match=rf"merge\.{key}"):
        make_rule(method, **{key: value})
    with pytest.raises(ConfigError, match=rf"merge\.{key}"):  # when the config is read, before any work
        check_merge_config({"method": method, key: value}, [f"merge={method}", f"merge.{key}={value}"])


@pytest.mark.parametrize("method,options", [("delta", {"lam": 100.0, "p": 0.0}), ("delta", {"lam": -1.0}),
                                            ("task_arithmetic", {"lam": -0.5}), ("ties", {"density": 1.0}),
                                            ("dare", {"p": 0.0, "seed": 7, "lam": 2})])
def test_sensible_options_are_accepted(method, options):
    assert make_rule(method, **options).options.items() >= options.items()


def test_lambda_alias_is_checked_too():
    with pytest.raises(ConfigError, match=r"merge\.lam"):
        make_rule("delta", **{"lambda": NAN})


def with_tensor(source: Path, target: Path, name: str, tensor: torch.Tensor) -> Path:
    """A copy of the model directory ``source`` whose tensor ``name`` is replaced by ``tensor``."""
    import shutil

    shutil.copytree(source, target)
    tensors = load_file(str(source / "model.safetensors"))
    tensors[name] = tensor
    save_file(tensors, str(target / "model.safetensors"), metadata={"format": "pt"})
    return target


@pytest.mark.parametrize("bad_value", [NAN, INF])
def test_an_input_holding_nan_or_inf_is_refused_naming_file_and_tensor(tiny_dirs, tmp_path, bad_value):
    base, ckpts = tiny_dirs
    values = load_file(str(ckpts[1] / "model.safetensors"))[NAME].clone()
    values[77] = bad_value
    bad = with_tensor(ckpts[1], tmp_path / "diverged", NAME, values)
    with pytest.raises(MergeError, match=re.escape(f"{bad / 'model.safetensors'}: tensor '{NAME}'")):
        merge_models(base, [ckpts[0], bad, ckpts[2]], tmp_path / "m")
    assert not (tmp_path / "m").exists()


def test_a_base_holding_nan_is_refused(tiny_dirs, tmp_path):
    base, ckpts = tiny_dirs
    values = load_file(str(base / "model.safetensors"))[NAME].clone()
    values[0] = NAN
    bad = with_tensor(base, tmp_path / "base", NAME, values)
    with pytest.raises(MergeError, match=re.escape(f"{bad / 'model.safetensors'}: tensor '{NAME}'")):
        merge_models(bad, ckpts, tmp_path / "m", method="uniform")


def test_a_non_finite_result_is_refused_and_the_previous_output_kept(tiny_dirs, tmp_path):
    """Finite inputs, sensible options, and still inf: fp16 checkpoints whose task-arithmetic sum overflows.

    Base 0, three checkpoints at 30000 (fp16): w0 + 1 * (3 * 30000) = 90000 > 65504, the fp16 maximum -> inf."""
    base, _ = tiny_dirs
    zero = with_tensor(base, tmp_path / "b0", NAME, torch.zeros(128))
    big = [with_tensor(zero, tmp_path / f"c{i}", NAME, torch.full((128,), 30000.0, dtype=torch.float16))
           for i in range(3)]
    out = tmp_path / "m"
    merge_models(zero, big, out, method="uniform")  # the mean, 30000, is fine
    torch.testing.assert_close(load_file(str(out / "model.safetensors"))[NAME],
                               torch.full((128,), 30000.0, dtype=torch.float16))
    before = (out / "model.safetensors").read_bytes()
    with pytest.raises(CodiembError, match=rf"merged tensor '{re.escape(NAME)}' is not finite"):
        merge_models(zero, big, out, method="task_arithmetic", lam=1.0)
    assert (out / "model.safetensors").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_merge_py_refuses_lam_nan_in_one_line(tiny_dirs, tmp_path):
    base, ckpts = tiny_dirs
    out = tmp_path / "m"
    command = [sys.executable, str(ROOT / "merge.py"), f"merge.base={base}",
               f"merge.checkpoints=[{','.join(map(str, ckpts))}]", "merge.lam=nan", f"merge.output={out}",
               f"hydra.run.dir={tmp_path / 'hydra'}"]
    result = subprocess.run(command, check=False, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert "codiemb: error: merge.lam must be a finite number" in result.stderr, result.stderr[-3000:]
    assert not out.exists()
