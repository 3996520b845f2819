"""info_nce / InfoNCELoss / STSInfoNCELoss against loops over (query, positive) pairs and hand-worked cases."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from codiemb.errors import ConfigError
from codiemb.losses import InfoNCELoss, STSInfoNCELoss, info_nce


def reference_info_nce(query, passages, positive_mask, temperature):
    """One term per (i, j) positive pair: exp(s_ij) against exp(s_ij) + the query's non-positives."""
    terms = []
    for i in range(query.shape[0]):
        for j in range(passages.shape[0]):
            if not positive_mask[i, j]:
                continue
            s_ij = torch.dot(query[i], passages[j]) / temperature
            denominator = torch.exp(s_ij)
            for k in range(passages.shape[0]):
                if not positive_mask[i, k]:
                    denominator = denominator + torch.exp(torch.dot(query[i], passages[k]) / temperature)
            terms.append(-(s_ij - torch.log(denominator)))
    return torch.stack(terms).mean()


def random_batch(generator, queries=4, per_query=5, dim=8):
    query = F.normalize(torch.randn(queries, dim, generator=generator), dim=-1)
    passages = F.normalize(torch.randn(queries * per_query, dim, generator=generator), dim=-1)
    mask = torch.zeros(queries, queries * per_query, dtype=torch.bool)
    for i in range(queries):  # 1..3 positives per query at the start of its group, the rest hard negatives
        mask[i, i * per_query: i * per_query + 1 + i % 3] = True
    return query, passages, mask


@pytest.mark.parametrize("temperature", [0.02, 0.1, 1.0])
def test_matches_loop_reference_values_and_gradients(generator, assert_matches_reference, temperature):
    query, passages, mask = random_batch(generator)
    assert_matches_reference(
        lambda q, p: info_nce(q, p, mask, temperature),
        lambda q, p: reference_info_nce(q, p, mask, temperature),
        [query, passages])


def test_two_positives_hand_worked_other_positive_not_in_denominator():
    # t = 1, s = (1, 0, -1) for (positive p1, positive p2, negative n).
    query = torch.tensor([[1.0, 0.0]])
    passages = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    mask = torch.tensor([[True, True, False]])
    term_p1 = -math.log(math.e / (math.e + math.exp(-1)))
    term_p2 = -math.log(1.0 / (1.0 + math.exp(-1)))
    got = info_nce(query, passages, mask, temperature=1.0)
    assert got.item() == pytest.approx((term_p1 + term_p2) / 2, rel=1e-6)
    # If p2 were (wrongly) a competitor of p1 the value would be larger.
    with_other_positive = -math.log(math.e / (math.e + 1.0 + math.exp(-1)))
    assert got.item() < (with_other_positive + term_p2) / 2


def test_single_positive_equals_cross_entropy(generator):
    query, passages, _ = random_batch(generator, queries=5, per_query=3)
    targets = torch.arange(5) * 3
    mask = F.one_hot(targets, num_classes=15).bool()
    expected = F.cross_entropy(query @ passages.T / 0.05, targets)
    torch.testing.assert_close(info_nce(query, passages, mask, 0.05), expected)


def test_queries_without_positive_contribute_nothing(generator):
    query, passages, mask = random_batch(generator)
    extra_query = F.normalize(torch.randn(1, query.shape[1], generator=generator), dim=-1)
    got = info_nce(torch.cat([query, extra_query]), passages,
                   torch.cat([mask, torch.zeros(1, mask.shape[1], dtype=torch.bool)]), 0.02)
    torch.testing.assert_close(got, info_nce(query, passages, mask, 0.02))


def test_no_positive_at_all_gives_connected_zero(generator):
    query, passages, mask = random_batch(generator)
    query.requires_grad_()
    loss = info_nce(query, passages, torch.zeros_like(mask), 0.02)
    assert loss.item() == 0.0 and loss.grad_fn is not None
    (grad,) = torch.autograd.grad(loss, query)
    assert torch.equal(grad, torch.zeros_like(query))


def test_row_with_only_positives_is_zero_and_finite():
    query = F.normalize(torch.tensor([[1.0, 2.0]]), dim=-1).requires_grad_()
    passages = F.normalize(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), dim=-1)
    loss = info_nce(query, passages, torch.ones(1, 2, dtype=torch.bool), 0.02)
    (grad,) = torch.autograd.grad(loss, query)
    assert loss.item() == 0.0 and torch.isfinite(grad).all()


def test_stable_at_tiny_temperature(generator):
    query, passages, mask = random_batch(generator)
    query.requires_grad_()
    loss = info_nce(query, passages, mask, 1e-4)
    (grad,) = torch.autograd.grad(loss, query)
    assert torch.isfinite(loss) and torch.isfinite(grad).all()


def test_module_returns_loss_and_detached_component(generator):
    query, passages, mask = random_batch(generator)
    module = InfoNCELoss(temperature=0.05, cross_device=True)
    loss, parts = module(query, passages, mask)
    assert module.cross_device is True
    torch.testing.assert_close(loss, info_nce(query, passages, mask, 0.05))
    assert set(parts) == {"infonce"} and not parts["infonce"].requires_grad


def test_bad_temperature_and_mask_shape_are_rejected(generator):
    query, passages, mask = random_batch(generator)
    with pytest.raises(ConfigError):
        InfoNCELoss(temperature=0.0)
    with pytest.raises(ValueError):
        info_nce(query, passages, mask[:, :-1])


def test_sts_infonce_uses_pairs_above_threshold_against_all_b(generator, assert_matches_reference):
    a = torch.randn(6, 8, generator=generator)
    b = torch.randn(6, 8, generator=generator)
    scores = torch.tensor([0.9, 0.1, 0.8, 0.5, 1.0, 0.79])
    anchors = [0, 2, 4]

    def reference(a, b):
        a, b = F.normalize(a, dim=-1), F.normalize(b, dim=-1)
        terms = [-torch.log_softmax(torch.stack([a[i] @ b[k] for k in range(6)]) / 0.02, dim=0)[i]
                 for i in anchors]
        return torch.stack(terms).mean()

    module = STSInfoNCELoss(temperature=0.02, positive_threshold=0.8)
    assert module.needs_middle_layer is False and module.middle_layer is None
    assert_matches_reference(lambda a, b: module(a, b, scores)[0], reference, [a, b])
