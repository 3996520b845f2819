"""Pearson-correlation loss for STS (CoDiEmb's ``PearsonCorrelationLoss``)."""

from __future__ import annotations

import torch
from torch import Tensor, nn


def pearson_loss(pred: Tensor, target: Tensor) -> Tensor:
    """``1 - r(pred, target)`` with Pearson's ``r = sum(x_c * y_c) / (||x_c|| * ||y_c||)``, ``x_c = x - mean(x)``.

    Range [0, 2]: 0 for perfectly linearly related predictions, 2 for perfectly anti-related ones.
    As in the CoDiEmb release (``PearsonCorrelationLoss``), a batch whose gold scores are all equal (or with
    fewer than 2 items) has no correlation to learn and gives 0 (still connected to ``pred``'s graph).
    Pearson's r is the cosine of the centred vectors, so ``torch.nn.functional.cosine_similarity`` (with its
    eps guard against a constant ``pred``) computes it.
    """
    pred, target = pred.float().flatten(), target.float().flatten()
    if pred.numel() < 2:
        return pred.sum() * 0.0
    pred_centred = pred - pred.mean()
    target_centred = target - target.mean()
    correlation = nn.functional.cosine_similarity(pred_centred, target_centred, dim=0)
    target_is_constant = target.max() == target.min()
    # torch.where (not `if`) so no host-device sync is needed on GPU.
    return torch.where(target_is_constant, correlation * 0.0, 1.0 - correlation)


class PearsonLoss(nn.Module):
    """Module wrapper of :func:`pearson_loss`; ``forward(pred, target) -> Tensor``."""

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        return pearson_loss(pred, target)
