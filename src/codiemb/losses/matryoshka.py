"""Matryoshka embeddings: any task loss applied at several leading sizes of the embedding, weighted and summed.

    trunc_d(x) = x[..., :d] / ||x[..., :d]||                     (first d coordinates, L2-re-normalised)
    loss       = sum_k w_k * L(trunc_{d_k}(e1), trunc_{d_k}(e2), *rest)      (w_k = 1 unless given)

``e1, e2`` are the loss's two embedding arguments: ``(query, passages)`` of the IR signature
``ir_loss(query, passages, positive_mask)`` and ``(a, b)`` of the STS signature
``sts_loss(a, b, scores, a_mid, b_mid)``; everything after them reaches ``L`` unchanged (masks, scores and the
*middle-layer* embeddings, which are not the model's output: their term is computed at every size, so its share of
the total stays what it is without Matryoshka).

Source: Kusupati et al., "Matryoshka Representation Learning", NeurIPS 2022 (arXiv 2205.13147), in the form of
sentence-transformers' ``MatryoshkaLoss`` (v6.3, ``sentence_transformer/losses/matryoshka.py``): the wrapped loss is
evaluated once per size on the shrunk (truncated, re-normalised) output embeddings of one forward pass, weights
default to 1, sizes are taken largest first. Not carried over: ``n_dims_per_step`` (a random subset of sizes per
step); every size is used at every step.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from codiemb.errors import ConfigError

log = logging.getLogger(__name__)


def shrink(embeddings: torch.Tensor, dim: int) -> torch.Tensor:
    """The first ``dim`` coordinates, L2-normalised (sentence-transformers' ``shrink``); half precision is
    normalised in float32."""
    head = embeddings[..., :dim]
    return F.normalize(head.float() if head.dtype in (torch.float16, torch.bfloat16) else head, p=2, dim=-1)


def matryoshka_sizes(dims, weights=None, full_dim: int | None = None) -> tuple[tuple[int, ...], tuple[float, ...]]:
    """Check ``loss.matryoshka_dims`` / ``loss.matryoshka_weights`` and return them largest size first.

    Raises :class:`ConfigError` (one line) for an empty list, a size that is not a positive integer, a repeated
    size, a size above ``full_dim`` (the model's embedding dimension), or weights that are not one finite
    non-negative number per size with a positive sum."""
    if dims is None and weights is not None:
        raise ConfigError(f"loss.matryoshka_weights={weights!r} is set but loss.matryoshka_dims is null; "
                          "give the sizes too (e.g. loss.matryoshka_dims=[384,256,128,64])")
    if isinstance(dims, (str, bytes)) or not isinstance(dims, Sequence) or not len(dims):
        raise ConfigError(f"loss.matryoshka_dims must be a non-empty list of sizes such as [384,256,128,64] "
                          f"(or null), got {dims!r}")
    sizes = list(dims)
    bad = [d for d in sizes if isinstance(d, bool) or not isinstance(d, int) or d < 1]
    if bad:
        raise ConfigError(f"loss.matryoshka_dims={sizes}: sizes must be positive integers, got {bad[0]!r}")
    if len(set(sizes)) != len(sizes):
        raise ConfigError(f"loss.matryoshka_dims={sizes}: a size is listed twice")
    if full_dim is not None and max(sizes) > full_dim:
        raise ConfigError(f"loss.matryoshka_dims={sizes}: size {max(sizes)} is larger than the model's embedding "
                          f"dimension {full_dim}; use sizes <= {full_dim}")
    if weights is None:
        factors = [1.0] * len(sizes)
    else:
        if isinstance(weights, (str, bytes)) or not isinstance(weights, Sequence) or len(weights) != len(sizes):
            raise ConfigError(f"loss.matryoshka_weights={weights!r} must hold one weight per size of "
                              f"loss.matryoshka_dims={sizes}")
        factors = list(weights)
        if any(isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w) or w < 0
               for w in factors) or not sum(factors) > 0:
            raise ConfigError(f"loss.matryoshka_weights={factors}: weights must be finite numbers >= 0 with a "
                              "positive sum")
    if full_dim is not None and full_dim not in sizes:
        log.warning("loss.matryoshka_dims=%s leaves out the model's full dimension %d: the untruncated embedding "
                    "(what SentenceTransformer(dir) returns) is not trained directly", sizes, full_dim)
    pairs = sorted(zip(sizes, factors), key=lambda pair: -pair[0])
    return tuple(int(d) for d, _ in pairs), tuple(float(w) for _, w in pairs)


def matryoshka_loss(loss_fn, first: torch.Tensor, second: torch.Tensor, *rest, dims: Sequence[int],
                    weights: Sequence[float] | None = None, **kwargs) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """``sum_k w_k * loss_fn(shrink(first, d_k), shrink(second, d_k), *rest, **kwargs)[0]``.

    Components: every component of ``loss_fn`` at every size as ``<name>_<d>`` and the size's unweighted loss as
    ``loss_<d>`` (detached)."""
    weights = [1.0] * len(dims) if weights is None else weights
    total, parts = None, {}
    for dim, weight in zip(dims, weights, strict=True):
        loss, components = loss_fn(shrink(first, dim), shrink(second, dim), *rest, **kwargs)
        total = weight * loss if total is None else total + weight * loss
        parts[f"loss_{dim}"] = loss.detach()
        parts.update({f"{name}_{dim}": value for name, value in components.items()})
    return total, parts


class MatryoshkaLoss(nn.Module):
    """Wraps an IR or STS loss (``(loss, components)`` from two embedding tensors first, then anything else) so
    it trains at every size of ``dims``: :func:`matryoshka_loss`. Attributes the LightningModule reads from a loss
    (``cross_device``, ``needs_middle_layer``, ``middle_layer``, ...) are the wrapped loss's."""

    def __init__(self, loss: nn.Module, dims: Sequence[int], weights: Sequence[float] | None = None,
                 full_dim: int | None = None):
        super().__init__()
        self.loss = loss
        self.dims, self.weights = matryoshka_sizes(dims, weights, full_dim)

    def forward(self, first: torch.Tensor, second: torch.Tensor, *rest, **kwargs):
        return matryoshka_loss(self.loss, first, second, *rest, dims=self.dims, weights=self.weights, **kwargs)

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name == "loss":
                raise
            return getattr(super().__getattr__("loss"), name)

    def extra_repr(self) -> str:
        return f"dims={list(self.dims)}, weights={list(self.weights)}"
