"""pro_loss (vectorised) against the official loop (sort, per-item tail, log_softmax) written plainly."""

from __future__ import annotations

import math

import pytest
import torch

from codiemb.losses import PROLoss, pro_loss


def reference_pro(pred, target, temperature, weighted, eps=1e-8):
    order = sorted(range(len(pred)), key=lambda i: -target[i].item())
    terms = []
    for position, k in enumerate(order):
        negatives = [j for j in order[position + 1:] if target[k] - target[j] > eps]
        if not negatives:
            continue
        weights = [(target[k] - target[j]).item() if weighted else 1.0 for j in negatives]
        own = pred[k] / temperature * (max(weights) if weighted else 1.0)
        logits = [own] + [pred[j] / temperature * w for j, w in zip(negatives, weights)]
        terms.append(-torch.log_softmax(torch.stack(logits), dim=0)[0])
    return torch.stack(terms).mean()


@pytest.mark.parametrize("weighted", [True, False])
@pytest.mark.parametrize("temperature", [0.05, 1.0])
def test_matches_loop_reference_with_ties(generator, assert_matches_reference, weighted, temperature):
    pred = torch.rand(10, generator=generator) * 2 - 1
    target = torch.randint(0, 4, (10,), generator=generator).double() / 3  # many ties
    assert_matches_reference(lambda p: pro_loss(p, target, temperature, weighted),
                             lambda p: reference_pro(p, target, temperature, weighted), [pred])


def test_hand_worked_three_items_with_a_tie():
    # gold (1, 1, 0), t = 1, unweighted: items 0 and 1 each compete with item 2 only (not with each other).
    pred = torch.tensor([0.5, 0.2, 0.1])
    expected = (-math.log(math.exp(0.5) / (math.exp(0.5) + math.exp(0.1)))
                - math.log(math.exp(0.2) / (math.exp(0.2) + math.exp(0.1)))) / 2
    got = pro_loss(pred, torch.tensor([1.0, 1.0, 0.0]), temperature=1.0, weighted=False)
    assert got.item() == pytest.approx(expected, rel=1e-6)


def test_weighted_hand_worked():
    # gold (1, 0.5, 0), t = 1: k=0 -> gaps (0.5, 1), own weight 1; k=1 -> gap 0.5, own weight 0.5.
    s = [0.3, 0.2, 0.1]
    term0 = -(1.0 * s[0] - math.log(math.exp(1.0 * s[0]) + math.exp(0.5 * s[1]) + math.exp(1.0 * s[2])))
    term1 = -(0.5 * s[1] - math.log(math.exp(0.5 * s[1]) + math.exp(0.5 * s[2])))
    got = pro_loss(torch.tensor(s), torch.tensor([1.0, 0.5, 0.0]), temperature=1.0, weighted=True)
    assert got.item() == pytest.approx((term0 + term1) / 2, rel=1e-6)


@pytest.mark.parametrize("weighted", [True, False])
def test_correct_ranking_scores_lower_than_reversed(weighted):
    target = torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0])
    correct = torch.tensor([-0.2, 0.1, 0.3, 0.6, 0.9])
    assert pro_loss(correct, target, weighted=weighted) < pro_loss(correct.flip(0), target, weighted=weighted)


def test_all_tied_gives_connected_zero():
    pred = torch.tensor([0.1, 0.4, 0.2], requires_grad=True)
    loss = PROLoss()(pred, torch.full((3,), 0.6))
    (grad,) = torch.autograd.grad(loss, pred)
    assert loss.item() == 0.0 and torch.equal(grad, torch.zeros(3))
