"""Listwise distillation: match the student's softmax over each query's candidates to a teacher's.

Sources: RocketQAv2 (Ren et al. 2021, "RocketQAv2: A Joint Training Method for Dense Passage Retrieval and
Passage Re-ranking", arXiv 2110.07367, the KL between the re-ranker's and the retriever's distributions over one
query's candidate list); FlagEmbedding's ``kd_loss_type="kl_div"`` (FlagOpen/FlagEmbedding,
``FlagEmbedding/abc/finetune/embedder/AbsModeling.py``, ``distill_loss``: the teacher's softmax over a row's
``pos_scores`` / ``neg_scores`` against the student's log-softmax); sentence-transformers ``DistillKLDivLoss``
(Lin et al. 2020, arXiv 2010.11386). How this differs from the last two: see :func:`distill_kl`.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from codiemb.losses.infonce_slots import check_temperature


def distill_kl(student_scores: Tensor, teacher_scores: Tensor, temperature: float = 1.0,
               teacher_temperature: float | None = None, mask: Tensor | None = None) -> Tensor:
    """``mean_i KL(P_i || Q_i)`` over the rows ``i`` of a ``[R, C]`` score matrix (or ``[..., C]``: every
    leading index is a row), with, over the row's real candidates ``V_i``::

        P_ij = softmax_{k in V_i}(t_ik / T_t)_j        (teacher; T_t = teacher_temperature, default temperature)
        Q_ij = softmax_{k in V_i}(s_ik / T)_j          (student; T = temperature)
        KL(P_i || Q_i) = sum_{j in V_i} P_ij (log P_ij - log Q_ij)

    A row is one query's candidates (its positives then its hard negatives, FlagEmbedding's group), or one row
    of an in-batch similarity matrix. ``V_i`` leaves out padding: the columns where ``mask`` (bool, same shape,
    True = real candidate) is False and those whose teacher score is ``-inf``; they are dropped from *both*
    softmaxes. The mean runs over the rows with at least one real candidate (a row with one candidate adds 0);
    no such row gives a zero still connected to the graph. The teacher side is detached (a target). Teacher
    scores must be finite or ``-inf`` (NaN gives NaN; nothing here syncs with the host to check).

    Against the sources, on the same tensors:

    * sentence-transformers ``DistillKLDivLoss(temperature=T, teacher_temperature=T_t)`` returns this times
      ``T ** 2`` (Hinton's rescaling; not applied here, so the loss weight alone sets the scale). It treats a
      ``-inf`` teacher score as probability 0 but keeps the candidate in the student's softmax.
    * FlagEmbedding's ``kl_div`` is the cross-entropy ``-sum_j P_ij log Q_ij`` with ``T_t = 1`` and the
      student's scores divided by its training temperature: this plus the teacher's entropy, which has no
      gradient, so both train alike.
    """
    check_temperature(temperature)
    teacher_temperature = temperature if teacher_temperature is None else teacher_temperature
    check_temperature(teacher_temperature)
    if student_scores.shape != teacher_scores.shape:
        raise ValueError(f"student_scores has shape {tuple(student_scores.shape)} but teacher_scores has "
                         f"{tuple(teacher_scores.shape)}; both need one score per candidate")
    student = student_scores.float()
    teacher = teacher_scores.detach().to(device=student.device, dtype=torch.float32)
    valid = teacher != float("-inf")
    if mask is not None:
        if mask.shape != student.shape:
            raise ValueError(f"mask has shape {tuple(mask.shape)}, expected {tuple(student.shape)}")
        valid = valid & mask.to(device=student.device, dtype=torch.bool)
    has_candidate = valid.any(dim=-1, keepdim=True)
    # A row without any real candidate softmaxes over all of them (finite, never NaN) and is then left out.
    in_softmax = valid | ~has_candidate
    teacher = teacher.masked_fill(~valid, 0.0)  # -inf padding, then re-masked below: no NaN from an all -inf row
    log_p = torch.log_softmax((teacher / teacher_temperature).masked_fill(~in_softmax, float("-inf")), dim=-1)
    log_q = torch.log_softmax((student / temperature).masked_fill(~in_softmax, float("-inf")), dim=-1)
    # Zero the padding before subtracting: (-inf) - (-inf) would be NaN there, in the value or the gradient.
    log_p, log_q = log_p.masked_fill(~valid, 0.0), log_q.masked_fill(~valid, 0.0)
    per_row = (log_p.exp() * (log_p - log_q)).masked_fill(~valid, 0.0).sum(dim=-1)  # [...]
    rows = has_candidate.squeeze(-1)
    return (per_row * rows).sum() / rows.sum().clamp(min=1)


class DistillKLLoss(nn.Module):
    """Module wrapper of :func:`distill_kl`; ``forward(student_scores, teacher_scores, mask=None) -> Tensor``."""

    def __init__(self, temperature: float = 1.0, teacher_temperature: float | None = None):
        super().__init__()
        check_temperature(temperature)
        if teacher_temperature is not None:
            check_temperature(teacher_temperature)
        self.temperature, self.teacher_temperature = temperature, teacher_temperature

    def forward(self, student_scores: Tensor, teacher_scores: Tensor, mask: Tensor | None = None) -> Tensor:
        return distill_kl(student_scores, teacher_scores, self.temperature, self.teacher_temperature, mask)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}, teacher_temperature={self.teacher_temperature}"
