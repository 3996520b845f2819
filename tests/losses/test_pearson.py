"""pearson_loss against scipy.stats.pearsonr and a loop-written Pearson formula."""

from __future__ import annotations

import pytest
import torch
from scipy.stats import pearsonr

from codiemb.losses import PearsonLoss, pearson_loss


def reference_pearson_loss(x, y):
    n = len(x)
    mean_x = sum(x[i] for i in range(n)) / n
    mean_y = sum(y[i] for i in range(n)) / n
    covariance = sum((x[i] - mean_x) * (y[i] - mean_y) for i in range(n))
    var_x = sum((x[i] - mean_x) ** 2 for i in range(n))
    var_y = sum((y[i] - mean_y) ** 2 for i in range(n))
    return 1 - covariance / torch.sqrt(var_x * var_y)


def test_matches_loop_reference_and_scipy(generator, assert_matches_reference):
    pred = torch.rand(16, generator=generator) * 2 - 1
    target = torch.rand(16, generator=generator)
    got = assert_matches_reference(pearson_loss, reference_pearson_loss, [pred, target])
    assert got.item() == pytest.approx(1 - pearsonr(pred.numpy(), target.numpy()).statistic, abs=1e-6)


@pytest.mark.parametrize(("slope", "expected"), [(3.0, 0.0), (-0.5, 2.0)])
def test_perfect_linear_relations(slope, expected):
    target = torch.tensor([0.0, 0.2, 0.5, 0.9, 1.0])
    assert pearson_loss(slope * target + 0.1, target).item() == pytest.approx(expected, abs=1e-6)


def test_constant_target_gives_connected_zero_without_nan():
    pred = torch.tensor([0.1, 0.5, 0.3], requires_grad=True)
    loss = pearson_loss(pred, torch.full((3,), 0.7))
    (grad,) = torch.autograd.grad(loss, pred)
    assert loss.item() == 0.0 and torch.equal(grad, torch.zeros(3))


def test_constant_prediction_stays_finite():
    pred = torch.full((4,), 0.3, requires_grad=True)
    loss = pearson_loss(pred, torch.tensor([0.0, 0.1, 0.5, 1.0]))
    (grad,) = torch.autograd.grad(loss, pred)
    assert loss.item() == pytest.approx(1.0) and torch.isfinite(grad).all()


def test_single_item_batch_is_zero():
    assert PearsonLoss()(torch.tensor([0.3]), torch.tensor([0.9])).item() == 0.0
