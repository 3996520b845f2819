"""rank_kl_loss against scipy ranks and a loop-written KL divergence."""

from __future__ import annotations

import math

import pytest
import torch
from scipy.stats import rankdata

from codiemb.errors import ConfigError
from codiemb.losses import RankKLLoss, normalised_average_ranks, rank_kl_loss


def reference_rank_kl(pred, target, pred_temperature, target_temperature):
    """The official recipe written out: average ranks (scipy), ideal = (n-1-rank)/(n-1), KL summed / n."""
    n = len(pred)
    ranks_desc = torch.tensor(rankdata(-target.detach().numpy(), method="average") - 1, dtype=torch.float64)
    ideal = (n - 1 - ranks_desc) / (n - 1)
    target_weights = [math.exp(ideal[i].item() / target_temperature) for i in range(n)]
    p = [w / sum(target_weights) for w in target_weights]
    pred_normaliser = sum(torch.exp(pred[i] / pred_temperature) for i in range(n))
    total = 0.0
    for i in range(n):
        q_i = torch.exp(pred[i] / pred_temperature) / pred_normaliser
        total = total + p[i] * (math.log(p[i]) - torch.log(q_i))
    return total / n


def test_ranks_match_scipy_with_ties():
    target = torch.tensor([0.2, 0.8, 0.2, 1.0, 0.5, 0.2])
    expected = (rankdata(target.numpy(), method="average") - 1) / (len(target) - 1)
    torch.testing.assert_close(normalised_average_ranks(target), torch.tensor(expected, dtype=torch.float32))


@pytest.mark.parametrize(("pred_t", "target_t"), [(0.05, 0.05), (0.1, 0.02)])
def test_matches_loop_reference_values_and_gradients(generator, assert_matches_reference, pred_t, target_t):
    pred = torch.rand(12, generator=generator) * 2 - 1
    target = torch.randint(0, 6, (12,), generator=generator).double() / 5  # has ties
    assert_matches_reference(lambda p: rank_kl_loss(p, target, pred_t, target_t),
                             lambda p: reference_rank_kl(p, target, pred_t, target_t), [pred])


def test_hand_worked_two_items():
    # ranks01 = (0, 1); with T = 1: P = softmax(0, 1), Q = softmax(pred) = P when pred = (0, 1) -> KL = 0.
    target = torch.tensor([0.1, 0.7])
    assert rank_kl_loss(torch.tensor([0.0, 1.0]), target, 1.0, 1.0).item() == pytest.approx(0.0, abs=1e-7)
    p = torch.softmax(torch.tensor([0.0, 1.0]), 0)
    q = torch.softmax(torch.tensor([1.0, 0.0]), 0)
    expected = (p * (p.log() - q.log())).sum().item() / 2
    assert rank_kl_loss(torch.tensor([1.0, 0.0]), target, 1.0, 1.0).item() == pytest.approx(expected, rel=1e-6)


def test_correct_order_beats_reversed_and_only_ranks_matter():
    target = torch.tensor([0.0, 0.3, 0.4, 0.9])
    ordered = torch.tensor([0.1, 0.2, 0.3, 0.4])
    assert rank_kl_loss(ordered, target) < rank_kl_loss(ordered.flip(0), target)
    # Same ranks, different gold scale -> same loss.
    torch.testing.assert_close(rank_kl_loss(ordered, target), rank_kl_loss(ordered, target ** 3 * 5))


def test_single_item_and_bad_temperature():
    assert rank_kl_loss(torch.tensor([0.4]), torch.tensor([1.0])).item() == 0.0
    with pytest.raises(ConfigError):
        RankKLLoss(pred_temperature=-1.0)
