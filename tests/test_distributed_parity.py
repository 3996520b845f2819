"""Cross-device negatives: 2 gloo processes holding half a batch each must match 1 process holding all of it."""

import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

from tests import dist_worker


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def distributed(tmp_path_factory):
    """Run the 2-process gloo group once; gradients per (task, cross_device)."""
    if os.path.isdir("/proc/self/fd"):  # past 1024, the spawned gloo ranks sometimes abort ("terminate called")
        assert len(os.listdir("/proc/self/fd")) < 512, "the test process leaks file descriptors: " + ", ".join(
            sorted({os.path.realpath(f"/proc/self/fd/{fd}") for fd in os.listdir("/proc/self/fd")})[:20])
    out = str(tmp_path_factory.mktemp("parity") / "grads.pt")
    mp.spawn(dist_worker.run_rank, args=(2, free_port(), out), nprocs=2, join=True)
    return torch.load(out)


def single_process_grads(task):
    module = dist_worker.build()
    return dist_worker.gradients(module, dist_worker.collate(module, dist_worker.records(task)))


def max_relative_error(a: dict, b: dict) -> float:
    """Per tensor, relative to its norm; tensors whose true gradient is ~0 (attention key biases, which softmax
    cancels) are measured against 1e-3 of the whole gradient's norm instead of their own rounding noise."""
    assert a.keys() == b.keys()
    floor = 1e-3 * float(torch.cat([g.flatten() for g in b.values()]).norm())
    return max(float((a[k] - b[k]).norm()) / max(float(b[k].norm()), floor) for k in a)


@pytest.mark.parametrize("task", ["ir", "sts"])
def test_two_ranks_with_gathering_match_one_process_with_the_whole_batch(distributed, task):
    reference = single_process_grads(task)
    assert max_relative_error(distributed[task, True], reference) < 1e-5


@pytest.mark.parametrize("task", ["ir", "sts"])
def test_without_gathering_the_gradients_differ(distributed, task):
    """If cross-device gathering were silently off while the config says on, the parity test above would fail."""
    reference = single_process_grads(task)
    assert max_relative_error(distributed[task, False], reference) > 1e-3


def test_a_nan_on_one_rank_is_seen_by_every_rank(distributed):
    assert distributed["finite_one_nan"] == [False, False]
    assert distributed["finite_all"] == [True, True]


def test_ir_negatives_are_gathered_by_default_when_the_world_size_is_above_one(distributed):
    """The default IR loss (``cross_device: auto``, as every official script) gathers under DDP ..."""
    assert max_relative_error(distributed["ir", "default"], single_process_grads("ir")) < 1e-5


def test_auto_is_a_no_op_with_one_process_and_only_an_explicit_true_is_refused(compose_cfg):
    """... and leaves one process alone; ``cross_device=false`` switches it off."""
    from hydra.utils import instantiate

    from codiemb.errors import ConfigError
    from codiemb.models.module import gathers
    from codiemb.run.plan import build_plan
    from codiemb.run.train import check_cross_device

    cfg = compose_cfg(["model=tiny"])
    assert cfg.loss.ir.cross_device == "auto" and cfg.loss.sts.cross_device is False
    loss = instantiate(cfg.loss.ir)
    check_cross_device(build_plan(cfg).cross_device, world_size=1)
    assert loss.cross_device == "auto" and not gathers(loss)  # not distributed here
    assert instantiate(compose_cfg(["loss.ir.cross_device=false"]).loss.ir).cross_device is False
    with pytest.raises(ConfigError):
        check_cross_device(build_plan(compose_cfg(["loss.ir.cross_device=true"])).cross_device, world_size=1)
    check_cross_device(build_plan(compose_cfg(["loss.ir.cross_device=true"])).cross_device, world_size=2)
