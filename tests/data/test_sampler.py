"""The sampler's guarantees, checked by enumerating its batches."""

from collections import Counter

import numpy as np
import pytest

from codiemb.data.sampler import POLICIES, Source, TaskBatchSampler
from codiemb.errors import ConfigError

SOURCES = [Source("ir_a", "ir", 70), Source("ir_b", "ir", 45), Source("sts_a", "sts", 100)]
SIZES = {"ir": 8, "sts": 16}


def source_of(row):
    offsets = np.cumsum([0] + [s.size for s in SOURCES])
    for source, lo, hi in zip(SOURCES, offsets[:-1], offsets[1:]):
        if lo <= row < hi:
            return source


def steps(sampler):
    """Group the sampler's micro-batches into optimizer steps (accumulate micro-batches each)."""
    batches = [[row for _, row in batch] for batch in sampler]
    return [batches[i:i + sampler.accumulate] for i in range(0, len(batches), sampler.accumulate)]


@pytest.mark.parametrize("policy", POLICIES)
def test_every_step_is_single_task_single_source_with_task_batch_size(policy):
    sampler = TaskBatchSampler(SOURCES, SIZES, policy=policy, seed=3, accumulate=2)
    plan = steps(sampler)
    assert plan and len(plan) * 2 == len(sampler)
    for step in plan:
        owners = {source_of(row) for micro in step for row in micro}
        if policy == "mixed":
            assert all(len(micro) == SIZES["ir"] for micro in step)
            continue
        assert len(owners) == 1, f"{policy}: a step mixes sources {owners}"
        task = owners.pop().task
        assert all(len(micro) == SIZES[task] for micro in step)
        if policy == "ir_only":
            assert task == "ir"
        if policy == "sts_only":
            assert task == "sts"


def test_balanced_gives_equal_steps_and_reuses_the_smaller_task():
    sampler = TaskBatchSampler(SOURCES, SIZES, policy="balanced", seed=0)
    tasks = Counter(source_of(step[0][0]).task for step in steps(sampler))
    # IR: 70//8 + 45//8 = 8 + 5 = 13 steps; STS: 100//16 = 6, topped up to 13 by reshuffled passes.
    assert tasks == {"ir": 13, "sts": 13}
    sts_rows = [row for step in steps(sampler) for micro in step for row in micro if source_of(row).task == "sts"]
    assert len(sts_rows) == 13 * 16 and len(set(sts_rows)) == 100


def test_proportional_sees_each_dataset_once():
    sampler = TaskBatchSampler(SOURCES, SIZES, policy="proportional", seed=0)
    per_source = Counter(source_of(step[0][0]).name for step in steps(sampler))
    assert per_source == {"ir_a": 70 // 8, "ir_b": 45 // 8, "sts_a": 100 // 16}
    rows = [row for step in steps(sampler) for micro in step for row in micro]
    assert len(rows) == len(set(rows))  # no row twice within an epoch


def test_round_robin_alternates_and_stops_with_the_smaller_task():
    sampler = TaskBatchSampler(SOURCES, SIZES, policy="round_robin", seed=0)
    tasks = [source_of(step[0][0]).task for step in steps(sampler)]
    assert tasks == ["ir", "sts"] * 6


def test_mixed_batches_mix_tasks():
    sampler = TaskBatchSampler(SOURCES, SIZES, policy="mixed", seed=0)
    mixes = [len({source_of(r).task for r in step[0]}) for step in steps(sampler)]
    assert max(mixes) == 2


def test_deterministic_for_a_seed_and_reshuffled_by_set_epoch():
    a = TaskBatchSampler(SOURCES, SIZES, seed=7)
    b = TaskBatchSampler(SOURCES, SIZES, seed=7)
    assert list(a) == list(b)
    first = list(a)
    a.set_epoch(1)
    assert list(a) != first
    assert list(TaskBatchSampler(SOURCES, SIZES, seed=8)) != first


def test_ranks_take_disjoint_slices_of_the_same_global_batch():
    single = TaskBatchSampler(SOURCES, {"ir": 8, "sts": 16}, seed=1, world_size=1)
    ranks = [TaskBatchSampler(SOURCES, {"ir": 4, "sts": 8}, seed=1, world_size=2, rank=r) for r in (0, 1)]
    global_batches = [[row for _, row in batch] for batch in single]
    per_rank = [[[row for _, row in batch] for batch in sampler] for sampler in ranks]
    assert len(per_rank[0]) == len(per_rank[1]) == len(global_batches)
    for k, batch in enumerate(global_batches):
        assert per_rank[0][k] + per_rank[1][k] == batch  # same task and source on both ranks, by construction


def test_resume_continues_with_the_same_batches():
    sampler = TaskBatchSampler(SOURCES, SIZES, seed=5)
    sampler.set_epoch(2)
    full = list(sampler)
    sampler.mark_consumed(full[6][0][0])  # the 7th micro-batch was the last one trained on
    state = sampler.state_dict()
    resumed = TaskBatchSampler(SOURCES, SIZES, seed=5)
    resumed.load_state_dict(state)
    resumed.set_epoch(2)  # Lightning calls this again on restart: it must keep the position
    assert list(resumed) == full[7:]


def test_impossible_configs_fail_with_what_to_change():
    with pytest.raises(ConfigError, match="dataset 'ir_b' has 45 rows but one ir step needs 64"):
        TaskBatchSampler(SOURCES, {"ir": 32, "sts": 16}, world_size=2)
    with pytest.raises(ConfigError, match="needs both tasks but there is no sts dataset"):
        TaskBatchSampler(SOURCES[:2], SIZES, policy="balanced")
    with pytest.raises(ConfigError, match="task_mix must be one of"):
        TaskBatchSampler(SOURCES, SIZES, policy="random")


@pytest.mark.parametrize("sizes, accumulate, message", [
    ({"ir": -4, "sts": 16}, 1, r"^data.ir_batch_size must be a positive integer, got -4$"),
    ({"ir": 8, "sts": 0}, 1, r"^data.sts_batch_size must be a positive integer, got 0$"),
    (SIZES, 0, r"^accumulate_grad_batches must be a positive integer, got 0$"),
    (SIZES, -2, r"^accumulate_grad_batches must be a positive integer, got -2$"),
])
def test_non_positive_batch_size_or_accumulation_is_a_config_error(sizes, accumulate, message):
    # -4 used to make the balanced top-up loop spin forever, 0 a ZeroDivisionError
    with pytest.raises(ConfigError, match=message):
        TaskBatchSampler(SOURCES, sizes, policy="balanced", accumulate=accumulate)
