"""PRO (Preference Ranking Optimization) listwise loss, as CoDiEmb applies it to STS batches.

Sources: Song et al. 2023, "Preference Ranking Optimization for Human Alignment" (arXiv 2306.17492),
Plackett-Luce decomposition with reward-gap temperatures; CoDiEmb release TencentCloudADP/youtu-embedding,
``training/CoDiEmb/train/loss.py``, class ``PROLoss`` (temperature 0.05, a Python loop there; vectorised here).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from codiemb.losses.infonce_slots import check_temperature


def pro_loss(pred: Tensor, target: Tensor, temperature: float = 0.05, weighted: bool = True,
             eps: float = 1e-8) -> Tensor:
    """Plackett-Luce ranking loss over the batch.

    For every item ``k`` let ``L_k = {j : y_k - y_j > eps}`` (strictly lower gold score; tied items are never in
    each other's sets). With ``s = pred / temperature``::

        term_k = -log( exp(w_kk s_k) / (exp(w_kk s_k) + sum_{j in L_k} exp(w_kj s_j)) )
        loss   = mean of term_k over the k with a non-empty L_k

    ``weighted=True`` (the CoDiEmb / Song et al. form): ``w_kj = y_k - y_j`` and ``w_kk = max_j w_kj`` -- pairs
    far apart in gold score are pushed apart harder. ``weighted=False``: all ``w = 1`` (plain Plackett-Luce).
    Items with no lower-scored item are skipped; if none qualifies the loss is a connected zero.
    Vectorised with an ``[n, n]`` mask and ``logsumexp``.
    """
    check_temperature(temperature)
    pred, target = pred.float().flatten(), target.float().flatten().to(pred.device)
    scaled = pred / temperature
    gaps = target[:, None] - target[None, :]  # gaps[k, j] = y_k - y_j
    lower = gaps > eps  # [n, n]; lower[k, j]: j is a negative of k
    if weighted:
        negative_weights = torch.where(lower, gaps, torch.zeros_like(gaps))
        own_weight = negative_weights.amax(dim=1)
    else:
        negative_weights = lower.float()
        own_weight = torch.ones_like(scaled)
    own_logit = own_weight * scaled  # [n]
    negative_logits = (negative_weights * scaled[None, :]).masked_fill(~lower, float("-inf"))
    all_logits = torch.cat([own_logit[:, None], negative_logits], dim=1)  # [n, 1 + n]
    terms = torch.logsumexp(all_logits, dim=1) - own_logit
    has_negative = lower.any(dim=1)
    # Rows without a negative give term 0 exactly (logsumexp of a single logit); mask them anyway for clarity.
    terms = torch.where(has_negative, terms, torch.zeros_like(terms))
    return terms.sum() / has_negative.sum().clamp_min(1)


class PROLoss(nn.Module):
    """Module wrapper of :func:`pro_loss`; ``forward(pred, target) -> Tensor``."""

    def __init__(self, temperature: float = 0.05, weighted: bool = True):
        super().__init__()
        check_temperature(temperature)
        self.temperature = temperature
        self.weighted = weighted

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        return pro_loss(pred, target, self.temperature, self.weighted)
