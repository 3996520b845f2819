"""Worker for the gradient-parity tests, importable by spawned processes (see test_distributed_parity.py)."""

from __future__ import annotations

import contextlib
import os
import sys

import torch
import torch.distributed as dist

from codiemb.losses.gather import all_ranks_finite


def build(seed: int = 0, default_cross_device: bool = False):
    """The same tiny model and losses in every process (``default_cross_device``: the losses' own default)."""
    from codiemb.losses import CoDiEmbSTSLoss, InfoNCELoss
    from codiemb.models.module import CoDiEmbModule
    from tests.conftest import tiny_encoder

    torch.manual_seed(seed)
    options = {} if default_cross_device else {"cross_device": True}
    module = CoDiEmbModule(tiny_encoder(), InfoNCELoss(temperature=0.05, **options),
                           CoDiEmbSTSLoss(temperature=0.05, **options))
    return module.train(False)  # no dropout: the two runs must compute the same function


def records(task: str):
    from codiemb.data.schema import Record

    words = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu".split()
    out = []
    for i in range(8):
        text = " ".join(words[(i + k) % len(words)] for k in range(3 + i % 4))
        if task == "ir":  # a variable number of positives and negatives per query
            positives = tuple(f"{text} answer {j}" for j in range(1 + i % 2))
            negatives = tuple(f"{words[(i * 3 + j) % 12]} wrong {j}" for j in range(i % 3 + 1))
            out.append(Record("ir", text, positives, negatives, dataset="d"))
        else:
            out.append(Record("sts", text, (f"{text} again {i}",), score=float(i % 6), dataset="s"))
    return out


def gradients(module, batch) -> dict[str, torch.Tensor]:
    module.zero_grad()
    loss, _ = module.compute_loss(batch)
    loss.backward()
    return {n: p.grad.detach().clone() for n, p in module.named_parameters() if p.grad is not None}


def collate(module, recs):
    from codiemb.data.collator import Collator

    return Collator(module.encoder.tokenizer, max_positives=2, num_negatives=3)(list(enumerate(recs)))


def ddp_gradients(module, batch, world: int) -> dict[str, torch.Tensor]:
    """This rank's gradients averaged over the ranks: exactly what DDP does to gradients."""
    grads = gradients(module, batch)
    for g in grads.values():
        dist.all_reduce(g)
        g /= world
    return grads


def shard(module, task: str, rank: int, world: int):
    """This rank's share of ``records(task)``, collated."""
    half = len(records(task)) // world
    return collate(module, records(task)[rank * half:(rank + 1) * half])


@contextlib.contextmanager
def gloo_rank(rank: int, world: int, port: int):
    """One rank of a local gloo process group (one thread) for the body of the ``with``; the process then leaves
    without finalizing the interpreter: a gloo worker thread may drop the last collective's tensors only after
    Python has begun to finalize; it then cannot take the GIL and the process aborts ("terminate called without an
    active exception", seen in up to 1 run in 2 under load: ~AsyncAllgatherWork -> decref_pyobject -> take_gil ->
    pthread_exit). Nothing is left to do by then."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        torch.set_num_threads(1)
        yield
    finally:
        dist.destroy_process_group()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def run_rank(rank: int, world: int, port: int, out: str) -> None:
    """Gradients for every (task, cross_device) case in one process group (spawning costs ~10 s each)."""
    with gloo_rank(rank, world, port):
        results = {}
        for task in ("ir", "sts"):
            for cross_device in (True, False):
                module = build()
                module.ir_loss.cross_device = module.sts_loss.cross_device = cross_device
                results[task, cross_device] = ddp_gradients(module, shard(module, task, rank, world), world)
        # the IR loss as configured by default (cross_device "auto"): must gather because the world size is 2
        module = build(default_cross_device=True)
        results["ir", "default"] = ddp_gradients(module, shard(module, "ir", rank, world), world)
        # NaN on rank 0 only: every rank must see it, or rank 1 would wait in backward's all-reduce forever
        for case, value in (("finite_one_nan", float("nan") if rank == 0 else 1.0), ("finite_all", 1.0)):
            answers = [None] * world
            dist.all_gather_object(answers, all_ranks_finite(torch.tensor(value)))
            results[case] = answers
        if rank == 0:
            torch.save(results, out)
