"""L2-SP: a penalty that keeps fine-tuned weights near their pre-trained starting point.

    Omega(w) = sum_i || w_i - w0_i ||^2

over the weights being trained (``w0``: the same weights before fine-tuning). Source: Li, Grandvalet & Davoine,
"Explicit Inductive Bias for Transfer Learning with Convolutional Networks", ICML 2018, eq. (3) with its
alpha/2 folded into the caller's weight (``module.l2sp_weight * Omega`` is added to the task loss, i.e.
alpha = 2 * l2sp_weight). Unlike weight decay, which pulls every weight towards zero, this pulls towards what the
model knew before: the robust fine-tuning lever issue #19 measures beside WiSE-FT (``merge.lam`` < 1).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch


def l2sp_penalty(weights: Iterable[torch.Tensor], anchors: Iterable[torch.Tensor]) -> torch.Tensor:
    """``sum_i ||w_i - w0_i||^2`` in fp32; ``weights`` and ``anchors`` pair up in order (same shapes)."""
    terms = [(w.float() - a.to(device=w.device, dtype=torch.float32)).pow(2).sum() for w, a in zip(weights, anchors,
                                                                                                    strict=True)]
    if not terms:
        raise ValueError("l2sp_penalty needs at least one weight")
    return torch.stack(terms).sum()
