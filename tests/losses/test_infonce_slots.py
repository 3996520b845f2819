"""The official IR candidate set (``candidates="slot"``) against a direct re-implementation of the release's
``ContrastiveLoss._loss_ir`` (``ir_mode="all"``), hand-worked cases, and where it differs from ``"all"``."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from codiemb.errors import ConfigError
from codiemb.losses import InfoNCELoss, info_nce, info_nce_slots


def official_ir_loss(q, p, positive_group_size, negative_group_size, temperature):
    """The release's formula, written out: passages come in groups of P positives then N negatives per query;
    for each positive slot, cross-entropy over [slot p of every query, every query's negatives]."""
    batch, group = q.shape[0], positive_group_size + negative_group_size
    base = torch.arange(batch) * group
    negatives = base[:, None] + torch.arange(positive_group_size, group)  # [B, N]
    total = 0.0
    for slot in range(positive_group_size):
        index = torch.cat([(base + slot)[:, None], negatives], dim=1).view(-1)
        scores = q @ p[index].T / temperature
        total = total + F.cross_entropy(scores, torch.arange(batch) * (1 + negative_group_size))
    return total / positive_group_size


def grouped_batch(generator, batch=4, positives=2, negatives=3, dim=8, dtype=torch.float64):
    q = F.normalize(torch.randn(batch, dim, generator=generator, dtype=dtype), dim=-1)
    p = F.normalize(torch.randn(batch * (positives + negatives), dim, generator=generator, dtype=dtype), dim=-1)
    mask = torch.zeros(batch, p.shape[0], dtype=torch.bool)
    for i in range(batch):
        start = i * (positives + negatives)
        mask[i, start:start + positives] = True
    return q, p, mask


@pytest.mark.parametrize("positives,negatives", [(2, 4), (3, 1), (1, 3), (2, 0)])
@pytest.mark.parametrize("temperature", [0.02, 0.5])
def test_matches_the_release_formula_values_and_gradients(generator, assert_matches_reference, positives, negatives,
                                                           temperature):
    q, p, mask = grouped_batch(generator, positives=positives, negatives=negatives)
    assert_matches_reference(lambda q, p: info_nce_slots(q, p, mask, temperature),
                             lambda q, p: official_ir_loss(q, p, positives, negatives, temperature), [q, p])


def test_column_order_does_not_matter_only_each_querys_positive_order(generator):
    q, p, mask = grouped_batch(generator, positives=2, negatives=2, dtype=torch.float32)
    negatives = [k for k in range(p.shape[0]) if not mask[:, k].any()]
    positives = [k for i in reversed(range(q.shape[0])) for k in range(p.shape[0]) if mask[i, k]]
    perm = torch.tensor(negatives[::-1] + positives)
    torch.testing.assert_close(info_nce_slots(q, p[perm], mask[:, perm], 0.05), info_nce_slots(q, p, mask, 0.05))


def test_hand_worked_two_queries_two_positives_no_negatives():
    # q0 = e0, q1 = e1; positives in slot order: q0 -> (a, b), q1 -> (c, d); no hard negatives.
    e = torch.eye(2)
    q = e.clone()
    a, b, c, d = e[0], 0.6 * e[0] + 0.8 * e[1], e[1], 0.8 * e[0] + 0.6 * e[1]
    p = torch.stack([a, b, c, d])
    mask = torch.tensor([[True, True, False, False], [False, False, True, True]])
    t = 1.0
    s = q @ p.T  # slot 0 = {a, c}, slot 1 = {b, d}
    expected = 0.5 * (0.5 * (-s[0, 0] + math.log(math.exp(s[0, 0]) + math.exp(s[0, 2])))
                      + 0.5 * (-s[0, 1] + math.log(math.exp(s[0, 1]) + math.exp(s[0, 3])))) \
        + 0.5 * (0.5 * (-s[1, 2] + math.log(math.exp(s[1, 0]) + math.exp(s[1, 2])))
                 + 0.5 * (-s[1, 3] + math.log(math.exp(s[1, 1]) + math.exp(s[1, 3]))))
    torch.testing.assert_close(info_nce_slots(q, p, mask, t), torch.tensor(float(expected)))
    # the project's default candidate set also counts the other slot of the other query: a different number
    assert not torch.allclose(info_nce(q, p, mask, t), info_nce_slots(q, p, mask, t))


def test_one_positive_per_query_equals_the_default_candidate_set(generator):
    q, p, mask = grouped_batch(generator, positives=1, negatives=3, dtype=torch.float32)
    torch.testing.assert_close(info_nce_slots(q, p, mask, 0.02), info_nce(q, p, mask, 0.02))


def test_every_query_weighs_the_same_with_uneven_positives(generator):
    """Query 0 has 3 positives, query 1 has 1: each query's terms are averaged first, then the queries."""
    q = F.normalize(torch.randn(2, 6, generator=generator, dtype=torch.float64), dim=-1)
    p = F.normalize(torch.randn(6, 6, generator=generator, dtype=torch.float64), dim=-1)
    mask = torch.tensor([[1, 1, 1, 0, 0, 0], [0, 0, 0, 1, 0, 0]], dtype=torch.bool)  # 4, 5: negatives
    s, negatives, slot = q @ p.T / 0.1, [4, 5], {0: 0, 1: 1, 2: 2, 3: 0}

    def term(i, k):
        candidates = [m for m in range(4) if slot[m] == slot[k]] + negatives
        return torch.logsumexp(s[i, candidates], 0) - s[i, k]
    expected = 0.5 * ((term(0, 0) + term(0, 1) + term(0, 2)) / 3 + term(1, 3))
    torch.testing.assert_close(info_nce_slots(q, p, mask, 0.1), expected.float())


def test_stable_at_tiny_temperature_and_connected_zero_without_positives(generator):
    q, p, mask = grouped_batch(generator, dtype=torch.float32)
    q.requires_grad_(True)
    loss = info_nce_slots(q, p, mask, 1e-4)
    (grad,) = torch.autograd.grad(loss, q)
    assert torch.isfinite(loss) and torch.isfinite(grad).all()
    zero = info_nce_slots(q, p, torch.zeros_like(mask), 0.02)
    assert zero.item() == 0.0 and zero.requires_grad


def test_module_dispatches_and_rejects_unknown_candidate_sets(generator):
    q, p, mask = grouped_batch(generator, dtype=torch.float32)
    loss, _ = InfoNCELoss(temperature=0.05, candidates="slot")(q, p, mask)
    torch.testing.assert_close(loss, info_nce_slots(q, p, mask, 0.05))
    assert InfoNCELoss().candidates == "all" and InfoNCELoss().cross_device == "auto"
    with pytest.raises(ConfigError):
        InfoNCELoss(candidates="everything")
    with pytest.raises(ConfigError):
        InfoNCELoss(cross_device="sometimes")
