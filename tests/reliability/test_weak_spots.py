"""Settings that used to give a traceback after the data had loaded, a misleading message, or a silent
surprise: each is now one line before any work, or says what really ran."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from codiemb.errors import ConfigError
from tests.conftest import ROOT
from tests.reliability.test_config_preflight import FAST, nothing_loads  # noqa: F401  (fixture)

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline"}


def run(script: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, script, *args], cwd=ROOT, env=ENV, capture_output=True, text=True,
                          timeout=300, check=False)


@pytest.mark.parametrize(("override", "message"), [
    ("seed=abc", "seed='abc' must be an integer from 0 to 4294967295"),
    ("seed=-1", "seed=-1 must be an integer from 0 to 4294967295"),
    ("seed=99999999999", "seed=99999999999 must be an integer"),
    ("+module.bogus=1", "module: CoDiEmbModule takes no option 'bogus'"),
    ("+trainer.bogus=1", "trainer: Trainer takes no option 'bogus'"),
])
def test_bad_seeds_and_unknown_keys_are_refused_before_anything_loads(compose_cfg, nothing_loads, override,  # noqa: F811
                                                                      message):
    from codiemb.run.train import train

    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        train(compose_cfg(FAST + [override]))


def test_fp16_on_a_cpu_is_reported_as_the_bf16_that_runs(compose_cfg):
    from codiemb.run.plan import build_plan

    plan = build_plan(compose_cfg(FAST + ["trainer.precision=16-mixed"]))
    assert plan.precision == "bf16-mixed" and plan.precision_line.startswith("bf16-mixed (trainer.precision=16-mixed")


def test_an_overflowing_gradient_norm_in_one_process_is_not_blamed_on_another_rank(compose_cfg):
    from codiemb.models.module import NonFiniteGradientError, NonFiniteLossError
    from codiemb.run.train import train

    cfg = compose_cfg(FAST + ["task_mix=ir_only", "loss.ir.temperature=1e-30", "trainer.max_steps=2"])
    with pytest.raises((NonFiniteGradientError, NonFiniteLossError)) as info:
        train(cfg)
    assert "another rank" not in str(info.value)


def test_a_refused_run_writes_its_error_into_train_log(tmp_path):
    result = run("train.py", "model=tiny", "seed=abc", f"hydra.run.dir={tmp_path}")
    assert result.returncode == 1 and result.stderr.strip().splitlines()[-1].startswith("codiemb: error: seed=")
    assert "codiemb: error: seed='abc' must be an integer" in (tmp_path / "train.log").read_text()


@pytest.mark.parametrize(("override", "message"), [
    ("batch_size=0", "codiemb: error: batch_size=0 must be an integer >= 1"),
    ("range_min=50", "codiemb: error: "),  # range_max 10 < range_min: a ConfigError, once a traceback
])
def test_mine_py_refusals_are_one_line(tmp_path, override, message):
    result = run("mine.py", "input.format=jsonl", f"input.path={ROOT / 'data/example/ir_support.jsonl'}",
                 f"output={tmp_path / 'out.jsonl'}", "range_max=10", override, f"hydra.run.dir={tmp_path / 'h'}")
    assert result.returncode == 1, result.stderr[-2000:]
    assert result.stderr.strip().splitlines()[-1].startswith(message) and "Traceback" not in result.stderr
