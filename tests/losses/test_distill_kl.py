"""distill_kl against a hand computation, a loop-written KL and sentence-transformers' DistillKLDivLoss."""

from __future__ import annotations

import math

import pytest
import torch

from codiemb.errors import ConfigError
from codiemb.losses import DistillKLLoss, distill_kl

LN2, LN3, LN4 = math.log(2), math.log(3), math.log(4)
# Row 0: teacher P = (1/4, 1/2, 1/4), student Q = (1/3, 1/3, 1/3).
# Row 1: teacher P = (1/8, 3/8, 1/2), student Q = (1/4, 1/4, 1/2).
TEACHER_LOGITS = torch.tensor([[0.0, LN2, 0.0], [0.0, LN3, LN4]])
STUDENT_LOGITS = torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.0, LN2]])
ROW0 = 0.25 * math.log(0.75) + 0.5 * math.log(1.5) + 0.25 * math.log(0.75)  # = ln(9/8) / 2
ROW1 = 0.125 * math.log(0.5) + 0.375 * math.log(1.5) + 0.5 * math.log(1.0)
HAND = (ROW0 + ROW1) / 2


def reference_distill_kl(student, teacher, temperature, teacher_temperature, valid):
    """Row by row, candidate by candidate: softmax over the real candidates only, KL(P || Q), mean over rows
    that have a real candidate."""
    total, rows = 0.0, 0
    for i in range(student.shape[0]):
        keep = [j for j in range(student.shape[1]) if valid[i][j]]
        if not keep:
            continue
        t_norm = sum(math.exp(teacher[i, j].item() / teacher_temperature) for j in keep)
        s_norm = sum(torch.exp(student[i, j] / temperature) for j in keep)
        for j in keep:
            p = math.exp(teacher[i, j].item() / teacher_temperature) / t_norm
            q = torch.exp(student[i, j] / temperature) / s_norm
            total = total + p * (math.log(p) - torch.log(q))
        rows += 1
    return total / rows


def test_hand_worked_two_rows_of_three():
    got = distill_kl(STUDENT_LOGITS, TEACHER_LOGITS)
    assert got.item() == pytest.approx(HAND, rel=1e-6)
    # The direction matters: KL(Q || P) is a different number.
    reverse = (1 / 3 * math.log(4 / 3) * 2 + 1 / 3 * math.log(2 / 3) + 0.25 * math.log(2) + 0.25 * math.log(2 / 3)) / 2
    assert abs(HAND - reverse) > 1e-3  # 0.0621 vs 0.0643
    assert distill_kl(TEACHER_LOGITS, STUDENT_LOGITS).item() == pytest.approx(reverse, rel=1e-6)


def test_hand_worked_with_separate_temperatures():
    # scores / T recover the same logits: T = 0.5 on the student, T_t = 2 on the teacher
    got = distill_kl(STUDENT_LOGITS * 0.5, TEACHER_LOGITS * 2.0, temperature=0.5, teacher_temperature=2.0)
    assert got.item() == pytest.approx(HAND, rel=1e-6)
    # teacher_temperature defaults to temperature
    shared = distill_kl(STUDENT_LOGITS * 0.5, TEACHER_LOGITS * 0.5, temperature=0.5)
    assert shared.item() == pytest.approx(HAND, rel=1e-6)


@pytest.mark.parametrize(("temperature", "teacher_temperature"), [(1.0, None), (0.05, 0.1), (2.0, 0.5)])
def test_matches_sentence_transformers_distill_kl_div(generator, temperature, teacher_temperature):
    """ST's compute_loss_from_embeddings on the same embeddings and teacher labels: its value is ours times the
    student temperature squared (its Hinton rescaling); gradients w.r.t. every embedding agree likewise."""
    from sentence_transformers.sentence_transformer.losses import DistillKLDivLoss

    batch, dim, candidates = 5, 8, 4
    query = torch.nn.functional.normalize(torch.randn(batch, dim, generator=generator), dim=-1)
    columns = [torch.nn.functional.normalize(torch.randn(batch, dim, generator=generator), dim=-1)
               for _ in range(candidates)]
    labels = torch.randn(batch, candidates, generator=generator)

    ours_in = [t.clone().requires_grad_() for t in [query, *columns]]
    student_scores = torch.stack([(ours_in[0] * c).sum(-1) for c in ours_in[1:]], dim=1)
    ours = distill_kl(student_scores, labels, temperature, teacher_temperature)

    st_in = [t.clone().requires_grad_() for t in [query, *columns]]
    st_loss = DistillKLDivLoss(None, temperature=temperature, teacher_temperature=teacher_temperature)
    theirs = st_loss.compute_loss_from_embeddings(st_in, labels)

    torch.testing.assert_close(ours * temperature ** 2, theirs)
    ours_grads = torch.autograd.grad(ours * temperature ** 2, ours_in)
    st_grads = torch.autograd.grad(theirs, st_in)
    for got, want in zip(ours_grads, st_grads):
        torch.testing.assert_close(got, want)


def test_padding_equals_sentence_transformers_on_each_unpadded_row(generator):
    """Row 0 has 4 candidates, row 1 only 2 (+2 padding, by mask or by -inf teacher score): the masked loss is
    the mean of ST's loss on each row alone (ST needs no padding there)."""
    from sentence_transformers.sentence_transformer.losses import DistillKLDivLoss

    student = torch.randn(2, 4, generator=generator)
    teacher = torch.randn(2, 4, generator=generator)
    mask = torch.tensor([[True, True, True, True], [True, False, True, False]])

    def st_row(scores, labels):  # 1-dimensional "embeddings": the dot product of 1 and s is s
        st = DistillKLDivLoss(None)
        return st.compute_loss_from_embeddings([torch.ones(1, 1), *scores.reshape(1, -1, 1).unbind(1)],
                                               labels.reshape(1, -1))

    expected = (st_row(student[0], teacher[0]) + st_row(student[1, [0, 2]], teacher[1, [0, 2]])) / 2
    torch.testing.assert_close(distill_kl(student, teacher, mask=mask), expected)
    as_inf = teacher.masked_fill(~mask, float("-inf"))
    torch.testing.assert_close(distill_kl(student, as_inf), expected)
    # What sits in a padded slot does not matter, and it gets no gradient; nothing is NaN.
    wild = student.masked_fill(~mask, 1e4).requires_grad_()
    loss = distill_kl(wild, as_inf.masked_fill(~mask, float("-inf")), mask=mask)
    torch.testing.assert_close(loss, expected)
    (grad,) = torch.autograd.grad(loss, wild)
    assert torch.isfinite(grad).all() and (grad[~mask] == 0).all() and (grad[mask] != 0).all()


def test_matches_loop_reference_values_and_gradients_with_padding(generator, assert_matches_reference):
    student = torch.randn(4, 5, generator=generator)
    teacher = torch.randn(4, 5, generator=generator)
    mask = torch.rand(4, 5, generator=generator) > 0.3
    mask[0] = True
    mask[3] = False  # a row of padding only: left out of the mean
    assert_matches_reference(lambda s: distill_kl(s, teacher, 0.3, 0.7, mask=mask),
                             lambda s: reference_distill_kl(s, teacher, 0.3, 0.7, mask.tolist()), [student])


def test_in_batch_matrix_and_leading_dimensions(generator):
    student, teacher = torch.randn(2, 3, 6, generator=generator), torch.randn(2, 3, 6, generator=generator)
    torch.testing.assert_close(distill_kl(student, teacher, 0.5), distill_kl(student.reshape(6, 6),
                                                                             teacher.reshape(6, 6), 0.5))


def test_zero_cases():
    scores = torch.tensor([[0.3, -1.0, 2.0], [0.0, 0.5, 0.1]])
    # same distribution: student scores / T = teacher scores / T_t
    assert distill_kl(scores * 0.1, scores * 3.0, 0.1, 3.0).abs().item() < 1e-6
    # one real candidate per row: both distributions are one-hot on it
    one = torch.tensor([[True, False, False], [False, True, False]])
    assert distill_kl(scores, -scores, mask=one).item() == 0.0
    # no real candidate at all: zero, still connected to the graph
    student = scores.clone().requires_grad_()
    loss = distill_kl(student, torch.full_like(scores, float("-inf")))
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    assert (student.grad == 0).all()


def test_teacher_is_detached_and_module_wraps_the_function(generator):
    student = torch.randn(3, 4, generator=generator, requires_grad=True)
    teacher = torch.randn(3, 4, generator=generator, requires_grad=True)
    loss = DistillKLLoss(temperature=0.5, teacher_temperature=0.25)(student, teacher)
    torch.testing.assert_close(loss, distill_kl(student, teacher, 0.5, 0.25))
    loss.backward()
    assert teacher.grad is None and student.grad is not None


def test_bad_arguments():
    with pytest.raises(ConfigError):
        distill_kl(STUDENT_LOGITS, TEACHER_LOGITS, temperature=0.0)
    with pytest.raises(ConfigError):
        DistillKLLoss(teacher_temperature=-1.0)
    with pytest.raises(ValueError, match="shape"):
        distill_kl(STUDENT_LOGITS, TEACHER_LOGITS[:, :2])
    with pytest.raises(ValueError, match="mask"):
        distill_kl(STUDENT_LOGITS, TEACHER_LOGITS, mask=torch.ones(2, 2, dtype=torch.bool))
