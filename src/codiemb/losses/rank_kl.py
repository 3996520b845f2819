"""CoDiEmb's rank-KL loss for STS: match the batch's softmax over predictions to a softmax over gold *ranks*.

Source: CoDiEmb (Zhang et al. 2025, arXiv 2508.11442), official release TencentCloudADP/youtu-embedding,
``training/CoDiEmb/train/loss.py``, class ``RankKLDivergenceLoss`` (temperature 0.05 for both sides).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from codiemb.losses.infonce_slots import check_temperature


def normalised_average_ranks(target: Tensor) -> Tensor:
    """Gold scores -> ranks in [0, 1]: the lowest score maps to 0, the highest to 1, ties share their
    average rank (scipy's ``rankdata(method="average")``), i.e. ``(#{j: y_j < y_i} + (#{j: y_j = y_i} - 1) / 2)
    / (n - 1)``. Vectorised with an ``[n, n]`` comparison so it stays on the device."""
    target = target.float().flatten()
    n = target.numel()
    if n < 2:
        return torch.zeros_like(target)
    lower = (target[None, :] < target[:, None]).sum(dim=1)
    tied = (target[None, :] == target[:, None]).sum(dim=1)  # counts the item itself
    return (lower + (tied - 1) / 2).float() / (n - 1)


def rank_kl_loss(pred: Tensor, target: Tensor, pred_temperature: float = 0.05,
                 target_temperature: float = 0.05) -> Tensor:
    """``KL(P || Q) / n`` over the ``n`` pairs of the batch, with

        P = softmax(rank01(target) / target_temperature)     (rank01: :func:`normalised_average_ranks`)
        Q = softmax(pred / pred_temperature)                 (pred: cosine similarities)

    The ``/ n`` is what ``F.kl_div(..., reduction="batchmean")`` does to a 1-D list in the official code;
    CoDiEmb's weight 5 was tuned with it, so it is kept. Using ranks instead of raw scores makes the target
    distribution independent of the score scale and aligned with Spearman correlation (the STS metric).
    """
    check_temperature(pred_temperature)
    check_temperature(target_temperature)
    pred = pred.float().flatten()
    n = pred.numel()
    if n < 2:
        return pred.sum() * 0.0
    log_target = torch.log_softmax(normalised_average_ranks(target).to(pred.device) / target_temperature, dim=0)
    log_pred = torch.log_softmax(pred / pred_temperature, dim=0)
    return nn.functional.kl_div(log_pred, log_target, reduction="sum", log_target=True) / n


class RankKLLoss(nn.Module):
    """Module wrapper of :func:`rank_kl_loss`; ``forward(pred, target) -> Tensor``."""

    def __init__(self, pred_temperature: float = 0.05, target_temperature: float = 0.05):
        super().__init__()
        check_temperature(pred_temperature)
        check_temperature(target_temperature)
        self.pred_temperature = pred_temperature
        self.target_temperature = target_temperature

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        return rank_kl_loss(pred, target, self.pred_temperature, self.target_temperature)
