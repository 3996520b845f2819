"""Self-distillation against a frozen copy of the starting model ("learning without forgetting").

Source: Li & Hoiem, "Learning without Forgetting" (ECCV 2016 / TPAMI 2018): keep the new model's outputs on the
training inputs close to those of the original model by a distillation term. For an embedding model the
"outputs" are its in-batch similarity distributions: each row of ``a @ b.T / T`` is a softmax over the batch's
``b`` texts, and the student is kept near the teacher's (the frozen original's) rows by :func:`distill_kl`.
Unlike L2-SP (:mod:`codiemb.losses.l2sp`) this constrains what the model computes, not where its weights are.
"""

from __future__ import annotations

from torch import Tensor, nn

from codiemb.losses.distill_kl import distill_kl
from codiemb.losses.infonce_slots import check_temperature


def self_distill_kl(student_emb_a: Tensor, student_emb_b: Tensor, teacher_emb_a: Tensor, teacher_emb_b: Tensor,
                    temperature: float, teacher_temperature: float | None = None) -> Tensor:
    """``mean_i KL(softmax(A'_i B'^T / T_t) || softmax(A_i B^T / T))`` over the ``n`` rows of ``a``:
    :func:`distill_kl` of the student's ``[n, m]`` similarity matrix against the teacher's.

    ``student_emb_a`` ``[n, d]`` / ``student_emb_b`` ``[m, d]`` are the student's embeddings of two lists of
    texts (queries and passages, or the two sides of STS pairs), ``teacher_emb_*`` the teacher's of the *same*
    texts in the same order (its dimension may differ). Pass them L2-normalised to distil cosine similarities
    (as the other losses take them); nothing is normalised here. ``T_t`` defaults to ``T``. The teacher side is
    detached. Zero when the student's similarities equal the teacher's (times ``T / T_t``).
    """
    if student_emb_a.shape[0] != teacher_emb_a.shape[0] or student_emb_b.shape[0] != teacher_emb_b.shape[0]:
        raise ValueError(f"student and teacher must embed the same texts: student {student_emb_a.shape[0]} x "
                         f"{student_emb_b.shape[0]}, teacher {teacher_emb_a.shape[0]} x {teacher_emb_b.shape[0]}")
    student_scores = student_emb_a.float() @ student_emb_b.float().T
    teacher_scores = teacher_emb_a.detach().float() @ teacher_emb_b.detach().float().T
    return distill_kl(student_scores, teacher_scores.to(student_scores.device), temperature, teacher_temperature)


class SelfDistillKLLoss(nn.Module):
    """Module wrapper of :func:`self_distill_kl`; ``forward(student_a, student_b, teacher_a, teacher_b) -> Tensor``."""

    def __init__(self, temperature: float, teacher_temperature: float | None = None):
        super().__init__()
        check_temperature(temperature)
        if teacher_temperature is not None:
            check_temperature(teacher_temperature)
        self.temperature, self.teacher_temperature = temperature, teacher_temperature

    def forward(self, student_emb_a: Tensor, student_emb_b: Tensor, teacher_emb_a: Tensor,
                teacher_emb_b: Tensor) -> Tensor:
        return self_distill_kl(student_emb_a, student_emb_b, teacher_emb_a, teacher_emb_b, self.temperature,
                               self.teacher_temperature)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}, teacher_temperature={self.teacher_temperature}"
