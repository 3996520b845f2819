"""Matryoshka wrapper: values and gradients equal the wrapped loss computed by hand at every size, summed."""

from __future__ import annotations

import pytest
import torch

from codiemb.errors import ConfigError
from codiemb.losses import (
    CoDiEmbSTSLoss,
    CoSENTLoss,
    InfoNCELoss,
    MatryoshkaLoss,
    info_nce,
    matryoshka_loss,
    matryoshka_sizes,
)

DIMS, WEIGHTS = [32, 16, 8, 4], [1.0, 0.5, 2.0, 0.25]


def by_hand(x: torch.Tensor, d: int) -> torch.Tensor:
    """Truncate and re-normalise, written out (not the module's shrink)."""
    head = x[:, :d]
    return head / head.pow(2).sum(-1, keepdim=True).sqrt()


def unit(*shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(*shape, generator=g, dtype=torch.float64)
    return x / x.norm(dim=-1, keepdim=True)


def ir_inputs():
    query, passages = unit(6, 32, seed=1), unit(14, 32, seed=2)
    mask = torch.zeros(6, 14, dtype=torch.bool)
    for i in range(6):  # query i: passages 2i (and 2i + 1 for even i) are positives; 12, 13 hard negatives
        mask[i, 2 * i] = True
        mask[i, 2 * i + 1] = i % 2 == 0
    return query, passages, mask


def test_ir_loss_value_and_gradient_are_the_weighted_sum_over_sizes(assert_matches_reference):
    query, passages, mask = ir_inputs()
    wrapped = MatryoshkaLoss(InfoNCELoss(temperature=0.05), DIMS, WEIGHTS)

    def reference(q, p):
        return sum(w * info_nce(by_hand(q, d), by_hand(p, d), mask, 0.05) for d, w in zip(DIMS, WEIGHTS))

    assert_matches_reference(lambda q, p: wrapped(q, p, mask)[0], reference, [query, passages])


def test_sts_composite_with_middle_layer_is_the_weighted_sum_and_the_middle_layer_is_not_truncated(
        assert_matches_reference):
    a, b, a_mid, b_mid = unit(10, 32, seed=3), unit(10, 32, seed=4), unit(10, 32, seed=5), unit(10, 32, seed=6)
    scores = torch.tensor([0.0, 0.1, 0.9, 0.3, 1.0, 0.5, 0.85, 0.2, 0.6, 0.95], dtype=torch.float64)
    inner = CoDiEmbSTSLoss(temperature=0.05)
    wrapped = MatryoshkaLoss(inner, DIMS, WEIGHTS)

    def reference(a, b, a_mid, b_mid):
        return sum(w * inner(by_hand(a, d), by_hand(b, d), scores, a_mid, b_mid)[0] for d, w in zip(DIMS, WEIGHTS))

    assert_matches_reference(lambda *x: wrapped(x[0], x[1], scores, x[2], x[3])[0], reference, [a, b, a_mid, b_mid])
    # the middle-layer term is the same at every size: its share of the total is what it is without Matryoshka
    _, parts = wrapped(a, b, scores, a_mid, b_mid)
    assert len({round(float(parts[f"middle_infonce_{d}"]), 10) for d in DIMS}) == 1


def test_gradient_reaches_only_the_largest_listed_size():
    """Coordinates beyond the largest size get no gradient; every listed prefix does."""
    a = unit(8, 32, seed=7).requires_grad_()
    b = unit(8, 32, seed=8)
    scores = torch.linspace(0, 1, 8, dtype=torch.float64)
    loss, _ = MatryoshkaLoss(CoSENTLoss(), [16, 8])(a, b, scores)
    (grad,) = torch.autograd.grad(loss, a)
    assert grad[:, 16:].abs().max() == 0 and grad[:, :16].abs().max() > 0


def test_full_size_alone_is_the_plain_loss_on_normalised_embeddings():
    query, passages, mask = ir_inputs()
    plain = InfoNCELoss(temperature=0.05)
    got, parts = MatryoshkaLoss(plain, [32])(query, passages, mask)
    want, want_parts = plain(query, passages, mask)
    torch.testing.assert_close(got, want)
    assert set(parts) == {"loss_32", "infonce_32"}
    torch.testing.assert_close(parts["infonce_32"], want_parts["infonce"])


def test_components_per_size_and_unweighted_size_losses():
    query, passages, mask = ir_inputs()
    total, parts = MatryoshkaLoss(InfoNCELoss(temperature=0.05), DIMS, WEIGHTS)(query, passages, mask)
    assert set(parts) == {f"{name}_{d}" for d in DIMS for name in ("loss", "infonce")}
    torch.testing.assert_close(total, sum(w * parts[f"loss_{d}"] for d, w in zip(DIMS, WEIGHTS)))
    assert not any(p.requires_grad for p in parts.values())


def test_bf16_embeddings_are_normalised_in_float32():
    query, passages, mask = ir_inputs()
    loss, _ = matryoshka_loss(InfoNCELoss(temperature=0.05), query.bfloat16(), passages.bfloat16(), mask, dims=[8])
    assert loss.dtype == torch.float32 and torch.isfinite(loss)


def test_the_wrapped_loss_answers_for_its_settings():
    from codiemb.models.module import gathers

    ir = MatryoshkaLoss(InfoNCELoss(cross_device="auto"), [8])
    sts = MatryoshkaLoss(CoDiEmbSTSLoss(middle_layer=1), [8])
    assert ir.cross_device == "auto" and not gathers(ir)
    assert sts.needs_middle_layer and sts.middle_layer == 1
    assert not MatryoshkaLoss(CoSENTLoss(), [8]).needs_middle_layer
    with pytest.raises(AttributeError):
        _ = ir.no_such_setting


def test_sizes_are_sorted_largest_first_with_their_weights():
    assert matryoshka_sizes([64, 384, 128], [0.5, 1, 2]) == ((384, 128, 64), (1.0, 2.0, 0.5))
    assert matryoshka_sizes([64, 128]) == ((128, 64), (1.0, 1.0))


@pytest.mark.parametrize("dims, weights, full, words", [
    ([512, 128], None, 384, "size 512 is larger than the model's embedding dimension 384"),
    ([], None, None, "non-empty list"),
    (128, None, None, "non-empty list"),
    ([128, 0], None, None, "positive integers"),
    ([128, 64.5], None, None, "positive integers"),
    ([128, 128], None, None, "listed twice"),
    ([128, 64], [1.0], None, "one weight per size"),
    ([128, 64], [1.0, -1.0], None, ">= 0"),
    ([128, 64], [0, 0], None, "positive sum"),
    ([128, 64], [1.0, float("nan")], None, "finite"),
    (None, [1.0, 0.5], None, "loss.matryoshka_dims is null"),
])
def test_bad_settings_are_refused_in_one_line(dims, weights, full, words):
    with pytest.raises(ConfigError) as info:
        matryoshka_sizes(dims, weights, full)
    assert words in str(info.value) and "\n" not in str(info.value)


def test_leaving_out_the_full_size_warns(caplog):
    with caplog.at_level("WARNING"):
        matryoshka_sizes([128, 64], None, 384)
    assert "leaves out the model's full dimension 384" in caplog.text
