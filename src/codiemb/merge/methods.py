"""Per-tensor merge rules. Pure torch: no files, no models.

Every rule here is linear in the checkpoint deltas ``d_k = w_k - w0`` with per-element coefficients ``c_k``::

    merged = w0 + sum_k c_k * d_k

so each method is a *coefficient function* ``deltas [K, *shape] -> c`` (``c`` broadcasts against ``deltas``),
registered with its default options and checks in :mod:`codiemb.merge.registry` (the entries are below).
The streaming merger (:mod:`codiemb.merge.stream`) calls these on row chunks of a tensor; the report reads the
same coefficients. The plain functions at the bottom (``delta_merge``, ``uniform``, ...) merge whole small
tensors and are what the hand-worked tests exercise.

Methods
-------
* ``delta`` (CoDiEmb's delta-guided fusion, arXiv 2508.11442; the paper gives the principle, weighting each
  checkpoint's update by its magnitude, and the exact formula here is this project's reading of it):
  ``a_k = n_k^p / sum_j n_j^p`` with ``n_k = |d_k|`` per element,
  the L2 norm of the row of ``d_k`` (``granularity="row"``: dim 0 indexes rows, a 1-D tensor has one element
  per row) or of the whole tensor (``"tensor"``); ``c_k = lam * a_k``; where every ``n_k`` is 0 the element
  keeps w0.
* ``uniform`` (Model Soup, Wortsman et al. 2022): ``c_k = 1/K`` (over the chosen members, for greedy soup).
* ``task_arithmetic`` (Ilharco et al. 2023): ``c_k = lam``.
* ``ties`` (Yadav et al. 2023): keep the top-``density`` magnitudes of each ``d_k`` (per tensor), elect the
  sign ``s = sign(sum_k trimmed_k)``, average the kept deltas whose sign agrees with ``s`` (disjoint mean),
  times lam.
* ``dare`` (Yu et al. 2024): drop each delta element with probability ``p``, rescale survivors by ``1/(1-p)``,
  then combine linearly (``w0 + lam * sum_k d~_k``) or with TIES sign election + disjoint mean (no trim).
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from codiemb.errors import ConfigError
from codiemb.merge.registry import ChunkContext, DefaultOptions, MergeMethod, get_method, merge_method

GRANULARITIES = ("element", "row", "tensor")


# ---------------------------------------------------------------------------------- coefficient functions
def delta_coefficients(deltas: torch.Tensor, p: float = 1.0, granularity: str = "element", lam: float = 1.0,
                       norms: torch.Tensor | None = None) -> torch.Tensor:
    """``lam * a_k`` with ``a_k = n_k^p / sum_j n_j^p``; 0 where all ``n_k`` are 0 (the element keeps w0).

    ``norms`` ([K], optional) are whole-tensor delta norms for ``granularity="tensor"`` when ``deltas`` is
    only a chunk of the tensor.
    """
    magnitude = _magnitudes(deltas, granularity, norms)
    tiny = torch.finfo(magnitude.dtype).tiny
    if p != 1:
        top = magnitude.amax(dim=0, keepdim=True)
        # Divide by the largest magnitude before the power so a large p cannot overflow; a_k is unchanged.
        magnitude = (magnitude / top.clamp_min(tiny)).pow_(p)
        if p == 0:  # 0^0 = 1 would give weight to all-zero elements; they must keep w0
            magnitude *= top > 0
    # Where every magnitude is 0 the numerators are 0 too, so clamping the sum gives a_k = 0: w0 is kept.
    weights = magnitude / magnitude.sum(dim=0, keepdim=True).clamp_min_(tiny)
    return weights if lam == 1 else weights.mul_(lam)


def uniform_coefficients(deltas: torch.Tensor, members: Sequence[bool] | None = None) -> torch.Tensor:
    """``1/|S|`` for the members ``S`` of the soup (all checkpoints by default), 0 for the others."""
    mask = torch.ones(deltas.shape[0]) if members is None else torch.tensor(members, dtype=torch.float64)
    if mask.sum() == 0:
        raise ConfigError("a soup needs at least one member")
    return _per_checkpoint(mask / mask.sum(), deltas)


def task_arithmetic_coefficients(deltas: torch.Tensor, lam: float = 1.0) -> torch.Tensor:
    return _per_checkpoint(torch.full((deltas.shape[0],), float(lam)), deltas)


def ties_coefficients(deltas: torch.Tensor, density: float = 0.2, lam: float = 1.0,
                      thresholds: torch.Tensor | None = None) -> torch.Tensor:
    """TIES: trim to the top-``density`` magnitudes, elect signs, disjoint mean (Yadav et al., NeurIPS 2023).

    ``thresholds`` ([K]) are the per-checkpoint magnitude cut-offs over the whole tensor (see
    :func:`ties_thresholds`); computed from ``deltas`` when not given. Elements equal to the cut-off are kept.
    """
    if thresholds is None:
        thresholds = ties_thresholds(deltas, density)
    cut = thresholds.to(deltas.dtype).reshape(-1, *([1] * (deltas.dim() - 1)))
    keep = (deltas.abs() >= cut) & (deltas != 0)
    return _disjoint_mean(deltas, keep.to(deltas.dtype)) * lam


def ties_thresholds(deltas: torch.Tensor, density: float) -> torch.Tensor:
    """Per checkpoint, the ``ceil(density * n)``-th largest ``|d_k|`` of the tensor (``n`` elements)."""
    flat = deltas.reshape(deltas.shape[0], -1).abs()
    n = flat.shape[1]
    keep = min(n, max(1, math.ceil(density * n)))
    return torch.kthvalue(flat, n - keep + 1, dim=1).values


def dare_coefficients(deltas: torch.Tensor, p: float = 0.5, combine: str = "linear", lam: float = 1.0,
                      generator: torch.Generator | None = None,
                      keep_masks: torch.Tensor | None = None) -> torch.Tensor:
    """DARE (Yu et al., ICML 2024): keep each element with probability ``1-p`` and rescale it by ``1/(1-p)``.

    ``keep_masks`` ([K, *shape] of 0/1) replaces the random draw (for hand-worked tests).
    """
    if keep_masks is None:
        keep_masks = torch.rand(deltas.shape, generator=generator) >= p
    rescale = keep_masks.to(deltas.dtype) / (1.0 - p)
    if combine == "linear":
        return rescale * lam
    return _disjoint_mean(deltas * rescale, (keep_masks != 0).to(deltas.dtype)) * rescale * lam


# ------------------------------------------------------------------------------------------ registry entries
# One entry per method (see codiemb.merge.registry): coefficients(deltas, options, ctx), defaults, checks.
def _check_delta(o: dict) -> None:
    if o["granularity"] not in GRANULARITIES:
        raise ConfigError(f"merge.granularity must be one of {GRANULARITIES}, got {o['granularity']!r}")
    if o["p"] < 0:
        raise ConfigError(f"merge.p (delta's exponent) must be >= 0, got {o['p']}")


@merge_method("delta", defaults={"p": 1.0, "granularity": "element", "lam": 1.0}, check=_check_delta,
              needs_norms=lambda o: o["granularity"] == "tensor",
              formula="w = w0 + lam * sum_k a_k d_k, a_k = n_k^p / sum_j n_j^p, n_k = |d_k| per {granularity} "
                      "(this project's reading of CoDiEmb's delta-guided fusion; the paper states the principle "
                      "only)")
def _delta(deltas: torch.Tensor, o: dict, ctx: ChunkContext) -> torch.Tensor:
    return delta_coefficients(deltas, o["p"], o["granularity"], o["lam"], ctx.norms)


@merge_method("uniform", formula="w = mean_k w_k (Model Soup)")
def _uniform(deltas: torch.Tensor, o: dict, ctx: ChunkContext) -> torch.Tensor:
    return uniform_coefficients(deltas)


@merge_method("greedy_soup", internal=("members",),
              formula="w = mean of the greedily chosen w_k (Model Soup, greedy recipe)")
def _greedy_soup(deltas: torch.Tensor, o: dict, ctx: ChunkContext) -> torch.Tensor:
    return uniform_coefficients(deltas, o.get("members"))


@merge_method("task_arithmetic", defaults={"lam": 1.0}, formula="w = w0 + lam * sum_k d_k")
def _task_arithmetic(deltas: torch.Tensor, o: dict, ctx: ChunkContext) -> torch.Tensor:
    return task_arithmetic_coefficients(deltas, o["lam"])


def _check_ties(o: dict) -> None:
    if not 0 < o["density"] <= 1:
        raise ConfigError(f"merge.density (ties) must be in (0, 1], got {o['density']}")


@merge_method("ties", defaults={"density": 0.2, "lam": 1.0}, check=_check_ties, needs_thresholds=True,
              formula="TIES: trim each d_k to its top-density magnitudes, elect signs, disjoint mean; "
                      "w = w0 + lam * mean")
def _ties(deltas: torch.Tensor, o: dict, ctx: ChunkContext) -> torch.Tensor:
    return ties_coefficients(deltas, o["density"], o["lam"], ctx.thresholds)


def _check_dare(o: dict) -> None:
    if not 0 <= o["p"] < 1:
        raise ConfigError(f"merge.p (dare's drop rate) must be in [0, 1), got {o['p']}")
    if o["combine"] not in ("linear", "ties"):
        raise ConfigError(f"merge.combine (dare) must be 'linear' or 'ties', got {o['combine']!r}")


@merge_method("dare", defaults={"p": 0.5, "combine": "linear", "lam": 1.0, "seed": 0}, check=_check_dare,
              formula="DARE: drop delta elements with probability p, rescale by 1/(1-p), combine {combine}")
def _dare(deltas: torch.Tensor, o: dict, ctx: ChunkContext) -> torch.Tensor:
    generator = torch.Generator().manual_seed(_chunk_seed(o["seed"], ctx.name, ctx.start))
    return dare_coefficients(deltas, o["p"], o["combine"], o["lam"], generator)


# ------------------------------------------------------------------------------------------------- rules
@dataclass
class MergeRule:
    """A method with validated options; ``coefficients(deltas, ctx)`` gives ``c`` for one chunk through the
    method's registry entry (an unregistered method raises ConfigError)."""

    method: str
    options: dict = field(default_factory=dict)

    @property
    def spec(self) -> MergeMethod:
        return get_method(self.method)

    @property
    def needs_norms(self) -> bool:
        return bool(self.spec.needs_norms(self.options))

    @property
    def needs_thresholds(self) -> bool:
        return self.spec.needs_thresholds

    def coefficients(self, deltas: torch.Tensor, ctx: ChunkContext | None = None) -> torch.Tensor:
        return self.spec.coefficients(deltas, self.options, ctx or ChunkContext())


DEFAULT_OPTIONS = DefaultOptions()  # {method: its default options}, read from the registry


def make_rule(method: str, **options) -> MergeRule:
    """Validate ``options`` for ``method`` (unknown or out-of-range values raise ConfigError)."""
    return MergeRule(method, get_method(method).validate(options))


# ------------------------------------------------------------------------------------ whole-tensor merges
def apply_coefficients(w0: torch.Tensor, ws: Sequence[torch.Tensor], coefficient_fn) -> torch.Tensor:
    """``w0 + sum_k c_k d_k`` computed in float32 (float64 if an input is), returned in ``ws[-1]``'s dtype."""
    compute = torch.float64 if any(t.dtype == torch.float64 for t in (w0, *ws)) else torch.float32
    base = w0.to(compute)
    deltas = torch.stack([w.to(compute) for w in ws]) - base
    merged = base + (coefficient_fn(deltas) * deltas).sum(dim=0)
    return merged.to(ws[-1].dtype)


def delta_merge(w0, ws, p: float = 1.0, granularity: str = "element", lam: float = 1.0) -> torch.Tensor:
    rule = make_rule("delta", p=p, granularity=granularity, lam=lam)
    return apply_coefficients(w0, ws, rule.coefficients)


def uniform(w0, ws) -> torch.Tensor:
    return apply_coefficients(w0, ws, make_rule("uniform").coefficients)


def task_arithmetic(w0, ws, lam: float = 1.0) -> torch.Tensor:
    return apply_coefficients(w0, ws, make_rule("task_arithmetic", lam=lam).coefficients)


def ties(w0, ws, density: float = 0.2, lam: float = 1.0) -> torch.Tensor:
    return apply_coefficients(w0, ws, make_rule("ties", density=density, lam=lam).coefficients)


def dare(w0, ws, p: float = 0.5, combine: str = "linear", lam: float = 1.0, seed: int = 0,
         keep_masks: torch.Tensor | None = None) -> torch.Tensor:
    make_rule("dare", p=p, combine=combine, lam=lam, seed=seed)  # validation only
    generator = torch.Generator().manual_seed(seed)
    return apply_coefficients(w0, ws, lambda d: dare_coefficients(d, p, combine, lam, generator, keep_masks))


# -------------------------------------------------------------------------------------------------- helpers
def _magnitudes(deltas: torch.Tensor, granularity: str, norms: torch.Tensor | None) -> torch.Tensor:
    if granularity == "element" or (granularity == "row" and deltas.dim() <= 2):
        return deltas.abs()  # a 1-D tensor's rows are its elements
    if granularity == "row":
        return torch.linalg.vector_norm(deltas, dim=tuple(range(2, deltas.dim())), keepdim=True)
    if norms is None:
        norms = torch.linalg.vector_norm(deltas.reshape(deltas.shape[0], -1), dim=1)
    return _per_checkpoint(norms.to(deltas.dtype), deltas)


def _per_checkpoint(values: torch.Tensor, deltas: torch.Tensor) -> torch.Tensor:
    """Shape a [K] vector so it broadcasts over ``deltas`` [K, *shape]."""
    return values.to(deltas.dtype).reshape(-1, *([1] * (deltas.dim() - 1)))


def _disjoint_mean(values: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Coefficients (0 or 1/count) of the TIES disjoint mean: kept entries agreeing with the elected sign."""
    elected = torch.sign((values * keep).sum(dim=0, keepdim=True))
    agree = keep * (torch.sign(values) == elected) * (elected != 0)
    return agree / agree.sum(dim=0, keepdim=True).clamp_min(1)


def _chunk_seed(seed: int, name: str, start: int) -> int:
    """A reproducible seed per (tensor, chunk): DARE's masks do not depend on the order tensors stream in."""
    return zlib.crc32(f"{seed}:{name}:{start}".encode())
