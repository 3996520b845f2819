"""Shared checks for the loss tests: same value and same gradients as a plainly written reference."""

from __future__ import annotations

import pytest
import torch


def _assert_matches_reference(loss_fn, reference_fn, inputs, rtol=1e-4, atol=1e-5):
    """Evaluate ``loss_fn`` and ``reference_fn`` on float64 leaf copies of ``inputs`` (the tensors that need a
    gradient) and compare the values and ``torch.autograd.grad`` with respect to every input."""
    ours_in = [x.detach().double().requires_grad_() for x in inputs]
    ref_in = [x.detach().double().requires_grad_() for x in inputs]
    ours = loss_fn(*ours_in)
    ref = reference_fn(*ref_in)
    assert ours.dim() == 0 and torch.isfinite(ours)
    torch.testing.assert_close(ours.double(), ref.double(), rtol=rtol, atol=atol)
    ours_grads = torch.autograd.grad(ours, ours_in, allow_unused=True)
    ref_grads = torch.autograd.grad(ref, ref_in, allow_unused=True)
    for leaf, got, want in zip(ours_in, ours_grads, ref_grads):
        got = torch.zeros_like(leaf) if got is None else got
        want = torch.zeros_like(leaf) if want is None else want
        torch.testing.assert_close(got.double(), want.double(), rtol=rtol, atol=atol)
    return ours


@pytest.fixture
def assert_matches_reference():
    return _assert_matches_reference


@pytest.fixture
def generator():
    return torch.Generator().manual_seed(1234)
