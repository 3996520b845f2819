"""Margin-MSE distillation (Hofstätter et al. 2020, "Improving Efficient Neural Ranking Models with
Cross-Architecture Knowledge Distillation", arXiv 2010.02666; sentence-transformers ``MarginMSELoss``).

The student learns the teacher's score *margins* between a query's positive and its negatives, not the scores
themselves, so teacher and student may score on different scales (a cross-encoder's logits, cosines).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def margin_mse(student_pos: Tensor, student_neg: Tensor, teacher_pos: Tensor, teacher_neg: Tensor,
               mask: Tensor | None = None) -> Tensor:
    """``mean_{i, j} ((s+_i - s-_ij) - (t+_i - t-_ij))^2`` over queries ``i`` and their negatives ``j``.

    Shapes: ``*_pos`` ``[B]`` or ``[B, 1]``, ``*_neg`` ``[B, N]`` for ``N`` negatives per query, or ``[B]`` for
    one. Every 1-D argument is read as a column ``[B, 1]``, then everything broadcasts (so ``pos[:, :, None]``
    against ``neg[:, None, :]`` scores every positive-negative pair of a query). ``mask`` (bool, the shape of
    the margins, True = real negative) leaves padded negatives out of the mean; no real pair gives a zero still
    connected to the graph. The teacher side is detached. Without a mask this is sentence-transformers
    ``MarginMSELoss`` (``nn.MSELoss`` of the ``[B, N]`` margins: a mean over all query-negative pairs).
    """
    student_pos, student_neg = _column(student_pos.float()), _column(student_neg.float())
    teacher_pos, teacher_neg = _column(teacher_pos.detach().float()), _column(teacher_neg.detach().float())
    student_margin = student_pos - student_neg
    teacher_margin = (teacher_pos - teacher_neg).to(student_margin.device)
    if mask is None:
        return (student_margin - teacher_margin).pow(2).mean()
    student_margin, teacher_margin, mask = torch.broadcast_tensors(
        student_margin, teacher_margin, _column(mask.to(device=student_margin.device, dtype=torch.bool)))
    # masked_fill before squaring: an inf / NaN teacher score in a padded slot reaches neither value nor gradient
    error = (student_margin - teacher_margin.masked_fill(~mask, 0.0)).pow(2)
    return error.masked_fill(~mask, 0.0).sum() / mask.sum().clamp(min=1)


def _column(x: Tensor) -> Tensor:
    return x.unsqueeze(-1) if x.dim() == 1 else x


class MarginMSELoss(nn.Module):
    """Module wrapper of :func:`margin_mse`; ``forward(student_pos, student_neg, teacher_pos, teacher_neg,
    mask=None) -> Tensor``."""

    def forward(self, student_pos: Tensor, student_neg: Tensor, teacher_pos: Tensor, teacher_neg: Tensor,
                mask: Tensor | None = None) -> Tensor:
        return margin_mse(student_pos, student_neg, teacher_pos, teacher_neg, mask)
