"""AnglE: the angle similarity against complex arithmetic and sentence-transformers; the loss against CoSENT."""

from __future__ import annotations

import pytest
import torch

from codiemb.losses import AnglELoss, angle_loss, cosent_loss, pairwise_angle_similarity


def reference_angle_similarity(x, y):
    """Per pair: halves as real / imaginary parts of unit complex vectors; |Re + Im| of sum(z_x * conj(z_y))."""
    values = []
    for i in range(x.shape[0]):
        xi, yi = x[i], y[i]
        if xi.shape[0] % 2:
            xi, yi = torch.cat([xi, xi.new_zeros(1)]), torch.cat([yi, yi.new_zeros(1)])
        half = xi.shape[0] // 2
        zx = torch.complex(xi[:half], xi[half:]) / torch.linalg.vector_norm(xi)
        zy = torch.complex(yi[:half], yi[half:]) / torch.linalg.vector_norm(yi)
        product = (zx * zy.conj()).sum()
        values.append((product.real + product.imag).abs())
    return torch.stack(values)


@pytest.mark.parametrize("dim", [8, 7])
def test_angle_similarity_matches_complex_reference_and_sentence_transformers(generator, dim):
    from sentence_transformers.util import pairwise_angle_sim

    x, y = torch.randn(6, dim, generator=generator), torch.randn(6, dim, generator=generator)
    got = pairwise_angle_similarity(x, y)
    torch.testing.assert_close(got, reference_angle_similarity(x, y))
    torch.testing.assert_close(got, pairwise_angle_sim(x, y))


def test_loss_values_and_gradients_against_reference(generator, assert_matches_reference):
    a, b = torch.randn(8, 6, generator=generator), torch.randn(8, 6, generator=generator)
    target = torch.randint(0, 4, (8,), generator=generator).double()

    def reference(a, b):
        angle = reference_angle_similarity(a, b)
        total = 1.0
        for i in range(8):
            for j in range(8):
                if target[i] > target[j]:
                    total = total + torch.exp(20.0 * (angle[j] - angle[i]))
        return torch.log(total)

    assert_matches_reference(lambda a, b: angle_loss(a, b, target), reference, [a, b], atol=1e-4)


def test_module_matches_sentence_transformers(generator):
    from sentence_transformers.sentence_transformer.losses import AnglELoss as STAnglELoss

    a, b = torch.randn(10, 16, generator=generator), torch.randn(10, 16, generator=generator)
    scores = torch.rand(10, generator=generator)
    loss, parts = AnglELoss()(a, b, scores)
    torch.testing.assert_close(loss, STAnglELoss(None).compute_loss_from_embeddings([a, b], scores))
    torch.testing.assert_close(loss, cosent_loss(pairwise_angle_similarity(a, b), scores, 20.0))
    assert set(parts) == {"angle"} and AnglELoss.needs_middle_layer is False
