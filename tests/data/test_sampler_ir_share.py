"""task_mix.ir_share: the fraction of a balanced epoch's optimizer steps that are IR (default 0.5 = as before)."""

import hashlib

import numpy as np
import pytest

from codiemb.data.sampler import Source, TaskBatchSampler
from codiemb.errors import ConfigError

SOURCES = [Source("ir_a", "ir", 50), Source("ir_b", "ir", 37), Source("sts_a", "sts", 300), Source("sts_b", "sts", 64)]
SIZES = {"ir": 4, "sts": 16}
# sha256 of the plans of epochs 0 and 1 drawn by the sampler before ir_share existed (git 3aca1a0), same sources.
OLD_PLANS = {0: "d3ffefa48c776c4ff1fde5569d9b0056b529be8d824d8299af2e14148d37bcdd",
             42: "8b17339c88ebeb5bdc1043edce1093b612af5518cfb0cdc2fa0c5fa3a7db0590"}


def plan_digest(sampler: TaskBatchSampler) -> str:
    digest = hashlib.sha256()
    for epoch in (0, 1):
        for step in sampler.plan(epoch):
            digest.update(step.task.encode() + step.source.encode() + np.asarray(step.rows, dtype=np.int64).tobytes())
    return digest.hexdigest()


@pytest.mark.parametrize("seed", sorted(OLD_PLANS))
def test_default_share_draws_the_old_plan(seed):
    for kwargs in ({}, {"ir_share": 0.5}):
        sampler = TaskBatchSampler(SOURCES, SIZES, policy="balanced", seed=seed, accumulate=2, **kwargs)
        assert plan_digest(sampler) == OLD_PLANS[seed]


@pytest.mark.parametrize("share,ir_steps", [(0.5, 11), (0.75, 16), (0.25, 6), (0.0, 0), (1.0, 22)])
def test_share_sets_the_number_of_ir_steps_and_keeps_the_epoch_length(share, ir_steps):
    sampler = TaskBatchSampler(SOURCES, SIZES, policy="balanced", seed=3, accumulate=2, ir_share=share)
    plan = sampler.plan()
    assert len(plan) == 22  # twice the larger task's steps (STS: 9 + 2), whatever the share
    assert sum(step.task == "ir" for step in plan) == ir_steps == round(share * 22)
    for step in plan:  # still single-task, single-source, full-size steps
        assert len(step.rows) == SIZES[step.task] * 2
        assert {sampler.source_of(r).name for r in step.rows} == {step.source}
    ir_rows = np.concatenate([s.rows for s in plan if s.task == "ir"] or [np.array([], dtype=int)])
    if ir_steps >= 10:  # at least one full pass over the IR data (10 steps) before any reuse
        assert len(set(ir_rows.tolist())) >= 10 * 8


def test_share_out_of_range_or_without_balanced_is_refused():
    with pytest.raises(ConfigError, match="ir_share"):
        TaskBatchSampler(SOURCES, SIZES, policy="balanced", ir_share=1.5)
    with pytest.raises(ConfigError, match="balanced only"):
        TaskBatchSampler(SOURCES, SIZES, policy="proportional", ir_share=0.75)


def test_config_passes_the_share_through(compose_cfg):
    from hydra.utils import instantiate

    cfg = compose_cfg(["task_mix.ir_share=0.75"])
    assert cfg.data.ir_share == 0.75
    assert compose_cfg([]).data.ir_share == 0.5 and compose_cfg(["task_mix=proportional"]).data.ir_share == 0.5
    assert instantiate(cfg.data).ir_share == 0.75
