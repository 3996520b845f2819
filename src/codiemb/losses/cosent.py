"""CoSENT pairwise ranking loss (Su 2022, https://kexue.fm/archives/8847; sentence-transformers ``CoSENTLoss``)."""

from __future__ import annotations

import torch
from torch import Tensor, nn


def cosent_loss(pred: Tensor, target: Tensor, scale: float = 20.0) -> Tensor:
    """``log(1 + sum_{(i, j): y_i > y_j} exp(scale * (pred_j - pred_i)))``.

    Every pair whose gold order is strict contributes; the ``1`` (a zero logit) keeps the loss >= 0 and
    makes an empty pair set give exactly 0. ``scale = 20`` equals CoDiEmb's ``CoSentLoss(temperature=0.05)``.
    """
    pred, target = pred.float().flatten(), target.float().flatten().to(pred.device)
    higher = target[:, None] > target[None, :]  # higher[i, j]: y_i > y_j
    logits = (scale * (pred[None, :] - pred[:, None])).masked_fill(~higher, float("-inf"))
    zero = logits.new_zeros(1)
    return torch.logsumexp(torch.cat([zero, logits.flatten()]), dim=0)


class PairRankingSTSLoss(nn.Module):
    """Shared STS call signature ``forward(a, b, scores, a_mid=None, b_mid=None) -> (loss, components)``
    for CoSENT-style losses that only look at a per-pair similarity of the final embeddings."""

    needs_middle_layer = False
    middle_layer = None
    component_name = "cosent"

    def __init__(self, scale: float = 20.0):
        super().__init__()
        self.scale = scale

    def similarity(self, a: Tensor, b: Tensor) -> Tensor:
        return nn.functional.cosine_similarity(a.float(), b.float(), dim=-1)

    def forward(self, a: Tensor, b: Tensor, scores: Tensor, a_mid: Tensor | None = None,
                b_mid: Tensor | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        loss = cosent_loss(self.similarity(a, b), scores, self.scale)
        return loss, {self.component_name: loss.detach()}

    def extra_repr(self) -> str:
        return f"scale={self.scale}"


class CoSENTLoss(PairRankingSTSLoss):
    """CoSENT on the cosine similarity of each STS pair ``(a_i, b_i)``; scores in [0, 1] (only their order matters)."""
