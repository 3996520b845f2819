"""CoDiEmbSTSLoss equals the weighted sum of its parts; its middle-layer InfoNCE against a loop."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from codiemb.errors import ConfigError
from codiemb.losses import CoDiEmbSTSLoss, pearson_loss, pro_loss, rank_kl_loss


def batch(generator, n=10, dim=12):
    a, b = torch.randn(n, dim, generator=generator), torch.randn(n, dim, generator=generator)
    a_mid, b_mid = torch.randn(n, dim, generator=generator), torch.randn(n, dim, generator=generator)
    scores = torch.tensor([1.0, 0.9, 0.8, 0.79, 0.6, 0.6, 0.4, 0.2, 0.0, 0.85])[:n]
    return a, b, a_mid, b_mid, scores


def reference_middle_infonce(a_mid, b_mid, scores, threshold, temperature):
    a_mid, b_mid = F.normalize(a_mid, dim=-1), F.normalize(b_mid, dim=-1)
    terms = []
    for i in range(len(scores)):
        if scores[i] >= threshold:
            logits = torch.stack([a_mid[i] @ b_mid[k] for k in range(len(scores))]) / temperature
            terms.append(torch.logsumexp(logits, dim=0) - logits[i])
    return torch.stack(terms).mean()


def test_total_is_weighted_sum_of_parts_and_parts_match_the_pure_functions(generator):
    a, b, a_mid, b_mid, scores = batch(generator)
    module = CoDiEmbSTSLoss()
    loss, parts = module(a, b, scores, a_mid, b_mid)
    assert set(parts) == {"pearson", "rank_kl", "pro", "middle_infonce"}
    assert all(not value.requires_grad for value in parts.values())
    expected = 2.0 * parts["pearson"] + 5.0 * parts["rank_kl"] + 0.5 * parts["pro"] + parts["middle_infonce"]
    torch.testing.assert_close(loss, expected)
    cos = F.cosine_similarity(a, b)
    torch.testing.assert_close(parts["pearson"], pearson_loss(cos, scores))
    torch.testing.assert_close(parts["rank_kl"], rank_kl_loss(cos, scores, 0.05, 0.05))
    torch.testing.assert_close(parts["pro"], pro_loss(cos, scores, 0.05))
    torch.testing.assert_close(parts["middle_infonce"],
                               reference_middle_infonce(a_mid, b_mid, scores, 0.8, 0.02).float())


def test_gradients_equal_weighted_sum_of_part_gradients(generator, assert_matches_reference):
    a, b, a_mid, b_mid, scores = batch(generator)
    module = CoDiEmbSTSLoss(pearson_weight=1.5, rank_kl_weight=3.0, pro_weight=0.25, middle_infonce_weight=0.7)

    def reference(a, b, a_mid, b_mid):
        cos = F.cosine_similarity(a, b)
        return (1.5 * pearson_loss(cos, scores) + 3.0 * rank_kl_loss(cos, scores) + 0.25 * pro_loss(cos, scores)
                + 0.7 * reference_middle_infonce(a_mid, b_mid, scores, 0.8, 0.02))

    assert_matches_reference(lambda *x: module(x[0], x[1], scores, x[2], x[3])[0], reference,
                             [a, b, a_mid, b_mid])


def test_without_middle_layer_the_term_is_skipped(generator):
    a, b, _, _, scores = batch(generator)
    loss, parts = CoDiEmbSTSLoss()(a, b, scores)
    assert set(parts) == {"pearson", "rank_kl", "pro"}
    torch.testing.assert_close(loss, 2.0 * parts["pearson"] + 5.0 * parts["rank_kl"] + 0.5 * parts["pro"])


def test_middle_layer_attributes_and_validation():
    assert CoDiEmbSTSLoss().needs_middle_layer is True and CoDiEmbSTSLoss().middle_layer is None
    assert CoDiEmbSTSLoss(middle_infonce_weight=0.0, middle_layer=3).needs_middle_layer is False
    assert CoDiEmbSTSLoss(middle_layer=3).middle_layer == 3
    with pytest.raises(ConfigError):
        CoDiEmbSTSLoss(pro_weight=-1.0)
    with pytest.raises(ConfigError):
        CoDiEmbSTSLoss(pro_temperature=0.0)


def test_gradient_reaches_embeddings_in_half_precision(generator):
    a, b, a_mid, b_mid, scores = batch(generator)
    a = a.bfloat16().requires_grad_()
    loss, _ = CoDiEmbSTSLoss()(a, b.bfloat16(), scores, a_mid.bfloat16(), b_mid.bfloat16())
    (grad,) = torch.autograd.grad(loss, a)
    assert loss.dtype == torch.float32 and torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_score_scale_multiplies_only_what_pro_sees(generator):
    """PRO weights logits by gold gaps, so 0-5 scores and [0, 1] scores give different losses on the same batch;
    Pearson and rank-KL are scale-free; the middle-layer threshold stays on [0, 1]."""
    a, b = torch.randn(16, 8, generator=generator), torch.randn(16, 8, generator=generator)
    a_mid, b_mid = torch.randn(16, 8, generator=generator), torch.randn(16, 8, generator=generator)
    y = torch.randint(0, 6, (16,), generator=generator).float() / 5
    cos = F.cosine_similarity(a, b, dim=-1)
    _, unit = CoDiEmbSTSLoss(score_scale=1.0)(a, b, y, a_mid, b_mid)
    _, raw = CoDiEmbSTSLoss(score_scale=5.0)(a, b, y, a_mid, b_mid)
    torch.testing.assert_close(raw["pro"], pro_loss(cos, 5 * y))
    torch.testing.assert_close(unit["pro"], pro_loss(cos, y))
    assert not torch.allclose(raw["pro"], unit["pro"], rtol=0.05)
    for name in ("pearson", "rank_kl", "middle_infonce"):
        torch.testing.assert_close(raw[name], unit[name])
    with pytest.raises(ConfigError):
        CoDiEmbSTSLoss(score_scale=0.0)
