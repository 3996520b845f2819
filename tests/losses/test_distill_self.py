"""self_distill_kl: a hand-worked 2 x 2 case, a loop-written reference, zero at the teacher, gradients otherwise."""

from __future__ import annotations

import math

import pytest
import torch

from codiemb.errors import ConfigError
from codiemb.losses import SelfDistillKLLoss, distill_kl, self_distill_kl


def reference_self_distill(sa, sb, ta, tb, temperature, teacher_temperature):
    """Every row of the in-batch matrices written out: KL(teacher row || student row), averaged over rows."""
    total = 0.0
    for i in range(sa.shape[0]):
        s_logits = [torch.dot(sa[i], sb[j]) / temperature for j in range(sb.shape[0])]
        t_logits = [torch.dot(ta[i], tb[j]).item() / teacher_temperature for j in range(tb.shape[0])]
        s_norm = sum(torch.exp(x) for x in s_logits)
        t_norm = sum(math.exp(x) for x in t_logits)
        for s, t in zip(s_logits, t_logits):
            p = math.exp(t) / t_norm
            total = total + p * (math.log(p) - torch.log(torch.exp(s) / s_norm))
    return total / sa.shape[0]


@pytest.mark.parametrize("temperature", [1.0, 0.5])
def test_hand_worked_two_by_two(temperature):
    # student: a = b = I -> rows of a b^T / T are (1/T, 0) and (0, 1/T); teacher (another dimension): all zeros ->
    # uniform rows. KL(uniform || softmax(x, 0)) = log(1 + e^x) - x / 2 - log 2 for both rows, x = 1 / T.
    eye = torch.eye(2)
    teacher_a = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    teacher_b = torch.tensor([[0.0, 0.0, 1.0], [0.0, 0.0, 1.0]])
    x = 1 / temperature
    expected = math.log(1 + math.exp(x)) - x / 2 - math.log(2)
    got = self_distill_kl(eye, eye, teacher_a, teacher_b, temperature)
    assert got.item() == pytest.approx(expected, rel=1e-6)


def test_matches_loop_reference_values_and_gradients(generator, assert_matches_reference):
    def unit(*shape):
        return torch.nn.functional.normalize(torch.randn(*shape, generator=generator), dim=-1)
    sa, sb, ta, tb = unit(3, 6), unit(5, 6), unit(3, 4), unit(5, 4)
    assert_matches_reference(lambda a, b: self_distill_kl(a, b, ta, tb, 0.2, 0.1),
                             lambda a, b: reference_self_distill(a, b, ta, tb, 0.2, 0.1), [sa, sb])


def test_is_distill_kl_of_the_similarity_matrices(generator):
    sa, sb = torch.randn(4, 5, generator=generator), torch.randn(6, 5, generator=generator)
    ta, tb = torch.randn(4, 3, generator=generator), torch.randn(6, 3, generator=generator)
    torch.testing.assert_close(self_distill_kl(sa, sb, ta, tb, 0.05),
                               distill_kl(sa @ sb.T, ta @ tb.T, 0.05))
    torch.testing.assert_close(SelfDistillKLLoss(0.05, 0.1)(sa, sb, ta, tb),
                               distill_kl(sa @ sb.T, ta @ tb.T, 0.05, 0.1))


def test_zero_at_the_teacher_and_a_gradient_elsewhere(generator):
    a = torch.nn.functional.normalize(torch.randn(4, 8, generator=generator), dim=-1)
    b = torch.nn.functional.normalize(torch.randn(4, 8, generator=generator), dim=-1)
    student_a, student_b = a.clone().requires_grad_(), b.clone().requires_grad_()
    at_teacher = self_distill_kl(student_a, student_b, a, b, 0.05)
    assert at_teacher.abs().item() < 1e-6
    grads = torch.autograd.grad(at_teacher, [student_a, student_b])
    assert all(g.abs().max() < 1e-4 for g in grads)  # a minimum: the gradient vanishes there

    moved_a = (a + 0.1 * torch.randn(4, 8, generator=generator)).requires_grad_()
    teacher_a = a.clone().requires_grad_()
    loss = self_distill_kl(moved_a, student_b, teacher_a, b, 0.05)
    assert loss.item() > 1e-3
    loss.backward()
    assert moved_a.grad.abs().sum() > 0 and student_b.grad.abs().sum() > 0
    assert teacher_a.grad is None  # the teacher is a target


def test_bad_arguments():
    with pytest.raises(ValueError, match="same texts"):
        self_distill_kl(torch.randn(3, 4), torch.randn(5, 4), torch.randn(2, 4), torch.randn(5, 4), 0.05)
    with pytest.raises(ConfigError):
        SelfDistillKLLoss(temperature=0.0)
