"""Cross-device gathering for the losses (tensors only).

Semantics: every rank gathers the embeddings of all ranks with a *differentiable* all-gather (:class:`_AllGather`:
``all_gather`` forward; backward all-reduces the gradients with SUM and keeps this rank's slice, the same as a
reduce-scatter) and computes the loss of the whole global batch. All ranks then hold the same loss; each rank's local embeddings receive
``world_size x`` their share of the gradient, and DDP's gradient averaging divides by ``world_size`` again, so
parameter gradients equal those of one process holding the whole global batch (tested in
``tests/test_distributed_parity.py``). Every query therefore sees every rank's passages as negatives.

Ranks may hold different numbers of rows (e.g. a variable number of passages per query): sizes are
exchanged first and tensors padded to the largest, then trimmed after the gather.
"""

from __future__ import annotations

import zlib

import torch
import torch.distributed as dist
from torch import Tensor


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _sizes(n: int, device: torch.device) -> list[int]:
    local = torch.tensor([n], device=device, dtype=torch.long)
    sizes = [torch.zeros_like(local) for _ in range(dist.get_world_size())]
    dist.all_gather(sizes, local)
    return [int(s) for s in sizes]


def _pad(t: Tensor, rows: int) -> Tensor:
    if t.shape[0] == rows:
        return t
    return torch.cat([t, t.new_zeros((rows - t.shape[0], *t.shape[1:]))])


class _AllGather(torch.autograd.Function):
    """All ranks' ``t`` (same shape on every rank), differentiable. Written here rather than taken from
    ``torch.distributed.nn.functional.all_gather`` (deprecated in torch 2.13): in a two-rank gloo script whose
    backward went through that function, a rank aborted at interpreter exit ("terminate called without an active
    exception": a gloo thread releasing tensors while Python finalizes) in 3 of 8 runs, against 0 of 10 with
    this Function. The race itself is gloo's and not gone (tests/dist_worker.py exits without finalizing)."""

    @staticmethod
    def forward(ctx, t: Tensor) -> tuple[Tensor, ...]:
        gathered = [torch.empty_like(t) for _ in range(dist.get_world_size())]
        dist.all_gather(gathered, t.contiguous())
        return tuple(gathered)

    @staticmethod
    def backward(ctx, *grads: Tensor) -> Tensor:
        # every rank's loss depends on every rank's rows: sum the gradients of all ranks, keep this rank's slice
        total = torch.stack(grads).contiguous()
        dist.all_reduce(total)
        return total[dist.get_rank()]


def all_gather_with_grad(t: Tensor) -> Tensor:
    """Concatenate ``t`` of every rank along dim 0, keeping the autograd graph (sizes may differ)."""
    if not is_distributed():
        return t
    sizes = _sizes(t.shape[0], t.device)
    gathered = _AllGather.apply(_pad(t, max(sizes)))
    return torch.cat([g[:n] for g, n in zip(gathered, sizes)])


def all_gather_no_grad(t: Tensor) -> Tensor:
    """Concatenate ``t`` of every rank along dim 0 (labels, scores: no gradient needed)."""
    if not is_distributed():
        return t
    sizes = _sizes(t.shape[0], t.device)
    padded = _pad(t, max(sizes))
    gathered = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(gathered, padded.contiguous())
    return torch.cat([g[:n] for g, n in zip(gathered, sizes)])


def gather_positive_mask(mask: Tensor) -> Tensor:
    """Global ``[sum B_r, sum M_r]`` mask from each rank's local ``[B_r, M_r]`` mask.

    Rank ``r``'s queries index passages from column ``offset_r = sum_{s<r} M_s``: without that offset a query
    would be told that another rank's passages are its positives.
    """
    if not is_distributed():
        return mask
    rows, cols = _sizes(mask.shape[0], mask.device), _sizes(mask.shape[1], mask.device)
    padded = torch.zeros(max(rows), max(cols), dtype=torch.uint8, device=mask.device)
    padded[:mask.shape[0], :mask.shape[1]] = mask.to(torch.uint8)
    gathered = [torch.empty_like(padded) for _ in rows]
    dist.all_gather(gathered, padded)
    out = torch.zeros(sum(rows), sum(cols), dtype=torch.bool, device=mask.device)
    row0 = col0 = 0
    for block, b, m in zip(gathered, rows, cols):
        out[row0:row0 + b, col0:col0 + m] = block[:b, :m].bool()
        row0, col0 = row0 + b, col0 + m
    return out


def assert_lockstep(key: str, device: torch.device | None = None) -> None:
    """Fail loudly (instead of hanging or mixing tasks in a gather) if ranks disagree on ``key``.

    One all-reduce of two integers: max(h) and max(-h) agree only if every rank holds the same ``h``.
    """
    if not is_distributed():
        return
    h = zlib.crc32(key.encode())
    t = torch.tensor([h, -h], dtype=torch.long, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    if int(t[0]) != -int(t[1]):
        raise RuntimeError(f"rank {dist.get_rank()} is on '{key}' but another rank is on a different task/dataset "
                           "in the same step; the sampler must give every rank the same step plan "
                           "(same seed, same data, use_distributed_sampler=False)")


def all_ranks_finite(value: torch.Tensor, device: torch.device | None = None) -> bool:
    """True when ``value`` is finite on every rank: one all-reduce (MIN) under DDP, so all ranks decide alike."""
    ok = torch.isfinite(value.detach()).all().to(device=device, dtype=torch.int32).reshape(1)
    if is_distributed():
        dist.all_reduce(ok, op=dist.ReduceOp.MIN)
    return bool(ok.item())
