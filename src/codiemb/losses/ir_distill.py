"""Distillation term of one IR batch from teacher scores in the data (``loss.ir.distill``)."""

from __future__ import annotations

import torch

from codiemb.losses.distill_kl import distill_kl
from codiemb.losses.margin_mse import margin_mse

DISTILL_KINDS = ("kl", "margin_mse")


def ir_distill_term(kind: str, student: torch.Tensor, teacher: torch.Tensor, positive_mask: torch.Tensor,
                    temperature: float) -> torch.Tensor:
    """The distillation term of one IR batch. ``student`` [B, M]: the student's score of every query with every
    passage; ``teacher`` [B, M]: the teacher's score of each query's *own* sampled passages, ``-inf`` elsewhere
    (the collator's ``teacher_scores``); ``positive_mask`` [B, M]: each query's own positives.

    * ``kl``: :func:`~codiemb.losses.distill_kl.distill_kl` over each query's own candidates, both sides divided
      by ``temperature``: ``mean_i KL(softmax(t_i / T) || softmax(s_i / T))`` (RocketQAv2, FlagEmbedding).
    * ``margin_mse``: :func:`~codiemb.losses.margin_mse.margin_mse` over every (own positive, own negative) pair
      of each query, ``mean ((s+ - s-) - (t+ - t-))^2`` on the raw scores (Hofstätter et al. 2020;
      ``temperature`` unused): the teacher's scores should be on the student's (cosine) scale.
    """
    if kind == "kl":
        return distill_kl(student, teacher, temperature)
    if kind != "margin_mse":
        raise ValueError(f"unknown distillation kind {kind!r}; use one of {DISTILL_KINDS}")
    own = teacher > float("-inf")
    # each query's own columns first (stable: in batch order), then [B, K, K] pairs with K = most own columns
    order = torch.sort((~own).to(torch.uint8), dim=1, stable=True).indices[:, :max(1, int(own.sum(1).max()))]
    s, t = student.gather(1, order), teacher.masked_fill(~own, 0.0).gather(1, order)
    valid, positive = own.gather(1, order), positive_mask.to(torch.bool).gather(1, order)
    pairs = (valid & positive)[:, :, None] & (valid & ~positive)[:, None, :]
    return margin_mse(s[:, :, None], s[:, None, :], t[:, :, None], t[:, None, :], pairs)
