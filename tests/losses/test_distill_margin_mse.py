"""margin_mse against a hand computation, a loop-written reference and sentence-transformers' MarginMSELoss."""

from __future__ import annotations

import pytest
import torch

from codiemb.losses import MarginMSELoss, margin_mse


def reference_margin_mse(s_pos, s_neg, t_pos, t_neg, valid):
    """Query by query, negative by negative: the squared error of the margins, averaged over the real pairs."""
    total, count = 0.0, 0
    for i in range(s_neg.shape[0]):
        for j in range(s_neg.shape[1]):
            if valid[i][j]:
                total = total + ((s_pos[i] - s_neg[i, j]) - (t_pos[i] - t_neg[i, j])) ** 2
                count += 1
    return total / count


def test_hand_worked_one_negative():
    # margins: student (0.9 - 0.1, 0.5 - 0.6) = (0.8, -0.1); teacher (5 - 2, 1 - 3) = (3, -2)
    # errors: (0.8 - 3)^2 = 4.84, (-0.1 + 2)^2 = 3.61 -> mean 4.225
    got = margin_mse(torch.tensor([0.9, 0.5]), torch.tensor([0.1, 0.6]), torch.tensor([5.0, 1.0]),
                     torch.tensor([2.0, 3.0]))
    assert got.item() == pytest.approx(4.225, rel=1e-6)


def test_hand_worked_several_negatives_broadcast():
    # one query, positive 1.0 (student) / 4.0 (teacher), negatives (0.5, 0.0, 1.5) / (3.0, 1.0, 4.0)
    # student margins (0.5, 1.0, -0.5), teacher margins (1.0, 3.0, 0.0): errors 0.25, 4, 0.25 -> 1.5
    s_pos, s_neg = torch.tensor([1.0]), torch.tensor([[0.5, 0.0, 1.5]])
    t_pos, t_neg = torch.tensor([4.0]), torch.tensor([[3.0, 1.0, 4.0]])
    assert margin_mse(s_pos, s_neg, t_pos, t_neg).item() == pytest.approx(1.5, rel=1e-6)
    # [B] and [B, 1] positives are the same thing
    assert margin_mse(s_pos[:, None], s_neg, t_pos[:, None], t_neg).item() == pytest.approx(1.5, rel=1e-6)
    # padding the third negative out: (0.25 + 4) / 2
    mask = torch.tensor([[True, True, False]])
    assert margin_mse(s_pos, s_neg, t_pos, t_neg, mask=mask).item() == pytest.approx(2.125, rel=1e-6)


@pytest.mark.parametrize("negatives", [1, 3])
def test_matches_sentence_transformers_margin_mse(generator, negatives):
    """ST's compute_loss_from_embeddings (dot product) on the same embeddings, with its labels given as
    teacher margins [B, N] and, for N > 1, as raw teacher scores [B, 1 + N]; values and gradients agree."""
    from sentence_transformers.sentence_transformer.losses import MarginMSELoss as STMarginMSELoss

    batch, dim = 6, 8
    embeddings = [torch.randn(batch, dim, generator=generator) for _ in range(2 + negatives)]
    teacher = torch.randn(batch, 1 + negatives, generator=generator) * 3

    ours_in = [e.clone().requires_grad_() for e in embeddings]
    q, pos, negs = ours_in[0], ours_in[1], ours_in[2:]
    s_pos = (q * pos).sum(-1)
    s_neg = torch.stack([(q * n).sum(-1) for n in negs], dim=1)
    ours = margin_mse(s_pos, s_neg, teacher[:, 0], teacher[:, 1:])

    label_forms = [teacher[:, :1] - teacher[:, 1:]]
    if negatives == 1:
        label_forms.append(teacher[:, 0] - teacher[:, 1])  # ST's single-negative [B] label
    else:
        label_forms.append(teacher)  # ST's [B, 1 + N] raw-score label
    ours_grads = torch.autograd.grad(ours, ours_in, retain_graph=True)
    for labels in label_forms:
        st_in = [e.clone().requires_grad_() for e in embeddings]
        theirs = STMarginMSELoss(None).compute_loss_from_embeddings(st_in, labels)
        torch.testing.assert_close(ours, theirs)
        for got, want in zip(ours_grads, torch.autograd.grad(theirs, st_in)):
            torch.testing.assert_close(got, want)


def test_matches_loop_reference_with_padding(generator, assert_matches_reference):
    s_pos, s_neg = torch.randn(4, generator=generator), torch.randn(4, 5, generator=generator)
    t_pos, t_neg = torch.randn(4, generator=generator), torch.randn(4, 5, generator=generator)
    mask = torch.rand(4, 5, generator=generator) > 0.4
    mask[0, 0] = True
    assert_matches_reference(lambda p, n: margin_mse(p, n, t_pos, t_neg, mask=mask),
                             lambda p, n: reference_margin_mse(p, n, t_pos, t_neg, mask.tolist()), [s_pos, s_neg])


def test_every_positive_against_every_negative_by_broadcasting(generator):
    s_pos, t_pos = torch.randn(3, 2, generator=generator), torch.randn(3, 2, generator=generator)
    s_neg, t_neg = torch.randn(3, 4, generator=generator), torch.randn(3, 4, generator=generator)
    got = margin_mse(s_pos[:, :, None], s_neg[:, None, :], t_pos[:, :, None], t_neg[:, None, :])
    per_positive = [margin_mse(s_pos[:, p], s_neg, t_pos[:, p], t_neg) for p in range(2)]
    torch.testing.assert_close(got, torch.stack(per_positive).mean())


def test_padding_with_non_finite_teacher_scores_stays_out():
    s_pos = torch.tensor([1.0, 2.0], requires_grad=True)
    s_neg = torch.tensor([[0.0, 5.0], [1.0, 1.0]], requires_grad=True)
    t_pos, t_neg = torch.tensor([2.0, 2.0]), torch.tensor([[1.0, float("-inf")], [float("nan"), 0.0]])
    mask = torch.tensor([[True, False], [False, True]])
    loss = margin_mse(s_pos, s_neg, t_pos, t_neg, mask)
    # real pairs: (1 - 0) - (2 - 1) = 0 and (2 - 1) - (2 - 0) = -1 -> mean 0.5
    assert loss.item() == pytest.approx(0.5)
    loss.backward()
    assert torch.isfinite(s_pos.grad).all() and torch.isfinite(s_neg.grad).all()
    assert s_neg.grad[0, 1] == 0 and s_neg.grad[1, 0] == 0


def test_zero_when_margins_agree_teacher_detached_and_module():
    s_pos = torch.tensor([0.7, 0.2], requires_grad=True)
    s_neg = torch.tensor([[0.1, 0.3], [0.0, 0.5]])
    t_pos = torch.tensor([10.7, -3.8], requires_grad=True)  # same margins, shifted scale
    t_neg = s_neg + torch.tensor([[10.0], [-4.0]])
    assert margin_mse(s_pos, s_neg, t_pos, t_neg).item() == pytest.approx(0.0, abs=1e-10)
    loss = MarginMSELoss()(s_pos, s_neg, t_pos + 1.0, t_neg)
    torch.testing.assert_close(loss, torch.tensor(1.0))
    loss.backward()
    assert t_pos.grad is None and s_pos.grad is not None
    empty = margin_mse(s_pos, s_neg, t_pos, t_neg, mask=torch.zeros(2, 2, dtype=torch.bool))
    assert empty.item() == 0.0 and empty.requires_grad
