"""cosent_loss / CoSENTLoss against a loop over ordered pairs and sentence-transformers' CoSENTLoss."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from codiemb.losses import CoSENTLoss, cosent_loss


def reference_cosent(pred, target, scale):
    total = torch.tensor(1.0, dtype=pred.dtype)
    for i in range(len(pred)):
        for j in range(len(pred)):
            if target[i] > target[j]:
                total = total + torch.exp(scale * (pred[j] - pred[i]))
    return torch.log(total)


def test_matches_loop_reference_values_and_gradients(generator, assert_matches_reference):
    pred = torch.rand(10, generator=generator) * 2 - 1
    target = torch.randint(0, 5, (10,), generator=generator).double()
    assert_matches_reference(lambda p: cosent_loss(p, target, 20.0), lambda p: reference_cosent(p, target, 20.0),
                             [pred], rtol=1e-4, atol=1e-4)


def test_hand_worked_pair():
    # one ordered pair, cos = (0.9, 0.5) with gold (1, 0): log(1 + exp(20 * (0.5 - 0.9))).
    got = cosent_loss(torch.tensor([0.9, 0.5]), torch.tensor([1.0, 0.0]))
    assert got.item() == pytest.approx(math.log1p(math.exp(-8.0)), abs=1e-7)  # float32 inputs
    assert cosent_loss(torch.tensor([0.9, 0.5]), torch.tensor([0.3, 0.3])).item() == 0.0


def test_module_matches_sentence_transformers(generator):
    from sentence_transformers.sentence_transformer.losses import CoSENTLoss as STCoSENTLoss

    a, b = torch.randn(12, 16, generator=generator), torch.randn(12, 16, generator=generator)
    scores = torch.randint(0, 6, (12,), generator=generator).float() / 5
    module = CoSENTLoss(scale=20.0)
    loss, parts = module(a, b, scores)
    assert module.needs_middle_layer is False and module.middle_layer is None
    torch.testing.assert_close(loss, STCoSENTLoss(None, scale=20.0).compute_loss_from_embeddings([a, b], scores))
    torch.testing.assert_close(loss, cosent_loss(F.cosine_similarity(a, b), scores))
    assert set(parts) == {"cosent"}
