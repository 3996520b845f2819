"""IR InfoNCE with the official CoDiEmb candidate set: positive slot p competes with slot p of every query.

Source: CoDiEmb release TencentCloudADP/youtu-embedding, ``training/CoDiEmb/train/loss.py``,
``ContrastiveLoss._loss_ir`` with ``ir_mode="all"`` (a loop over positive slots there; one pass here).
"""

from __future__ import annotations

import torch
from torch import Tensor

from codiemb.errors import ConfigError


def check_temperature(temperature: float) -> None:
    if not temperature > 0:
        raise ConfigError(f"temperature must be > 0, got {temperature}")


def passage_slots(positive_mask: Tensor) -> tuple[Tensor, Tensor]:
    """``(slot[M], is_negative[M])``: the position of each positive among its query's positives (0, 1, ... in
    column order), and which passages are positives of no query (the hard negatives). A passage that several
    queries call positive takes the largest of their slots."""
    positive_mask = positive_mask.bool()
    order = positive_mask.long().cumsum(dim=1) - 1  # [B, M]: slot of column k for query i where positive
    slot = torch.where(positive_mask, order, torch.zeros_like(order)).amax(dim=0)
    return slot, ~positive_mask.any(dim=0)


def info_nce_slots(query: Tensor, passages: Tensor, positive_mask: Tensor, temperature: float = 0.02) -> Tensor:
    """InfoNCE in which the candidates of a positive are the positives in the same slot plus all hard negatives.

    With ``s_ik = <q_i, p_k> / t``, ``slot(k)`` the rank of passage ``k`` among its query's positives and
    ``N`` the passages that are no query's positive (every query's hard negatives)::

        C(k)     = {m : slot(m) = slot(k)} U N                 (slot p of every query + all hard negatives)
        term_ik  = -log( e^{s_ik} / sum_{m in C(k)} e^{s_im} )   for k a positive of query i
        loss     = mean over queries with a positive of ( mean over the query's positives of term_ik )

    Every query weighs the same. With the official fixed groups (``P`` positives and ``N`` negatives per query,
    ``data.fixed_group_size=true``) this is exactly ``(1/P) sum_p CrossEntropy(q, [slot p of all queries,
    all negatives])`` of the release. Unlike :func:`~codiemb.losses.infonce.info_nce`, other queries' positives
    in other slots are not negatives, and the query's own positive of the slot is its only positive.
    Per-slot sums use ``scatter`` over the slot index (no loop, no host sync).
    """
    check_temperature(temperature)
    if positive_mask.shape != (query.shape[0], passages.shape[0]):
        raise ValueError(f"positive_mask has shape {tuple(positive_mask.shape)}, "
                         f"expected {(query.shape[0], passages.shape[0])}")
    positive_mask = positive_mask.bool()
    logits = query.float() @ passages.float().T / temperature  # [B, M]
    floor = torch.finfo(logits.dtype).min
    slot, is_negative = passage_slots(positive_mask)
    index = slot.unsqueeze(0).expand_as(logits)
    # log-sum-exp of each row over the positives of each slot, shifted by the slot's (detached) maximum
    positive_logits = logits.masked_fill(is_negative, floor)
    slot_max = torch.full_like(logits, floor).scatter_reduce(1, index, positive_logits.detach(), "amax")
    shift = slot_max.gather(1, index)
    shifted = torch.where(is_negative, torch.zeros_like(logits), torch.exp(positive_logits - shift))
    slot_sum = torch.zeros_like(logits).scatter_add(1, index, shifted)
    slot_lse = torch.log(slot_sum.gather(1, index).clamp_min(1e-30)) + shift  # [B, M]: over column k's slot
    negative_lse = torch.logsumexp(logits.masked_fill(~is_negative, floor), dim=1, keepdim=True)
    terms = torch.logaddexp(slot_lse, negative_lse) - logits
    counts = positive_mask.sum(dim=1, keepdim=True)
    weights = positive_mask.float() / counts.clamp_min(1)
    per_query = torch.where(positive_mask, terms * weights, torch.zeros_like(terms)).sum(dim=1)
    return per_query.sum() / (counts > 0).sum().clamp_min(1)
