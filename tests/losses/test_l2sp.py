"""L2-SP penalty: sum of squared distances to the pre-trained weights, by hand."""

import pytest
import torch

from codiemb.losses import l2sp_penalty


def test_penalty_by_hand():
    w = [torch.tensor([1.0, 2.0]), torch.tensor([[0.5, -1.0]])]
    w0 = [torch.tensor([0.0, 0.0]), torch.tensor([[0.5, 1.0]])]
    # (1 + 4) + (0 + 4)
    assert float(l2sp_penalty(w, w0)) == pytest.approx(9.0)


def test_zero_at_the_anchor_and_gradient_is_twice_the_distance():
    w = torch.tensor([0.3, -0.2, 1.5], requires_grad=True)
    w0 = torch.tensor([0.1, -0.2, 1.0])
    assert float(l2sp_penalty([w0.clone()], [w0])) == 0.0
    l2sp_penalty([w], [w0]).backward()
    torch.testing.assert_close(w.grad, 2 * (w.detach() - w0))


def test_bf16_weights_are_measured_in_fp32():
    w, w0 = torch.tensor([1.0 + 2 ** -7], dtype=torch.bfloat16), torch.tensor([1.0])
    assert l2sp_penalty([w], [w0]).dtype == torch.float32
    assert float(l2sp_penalty([w], [w0])) == pytest.approx(2 ** -14)


def test_mismatched_lists_are_refused():
    with pytest.raises(ValueError):
        l2sp_penalty([torch.zeros(2)], [])
    with pytest.raises(ValueError):
        l2sp_penalty([], [])
