"""The merge methods: one registry entry per method, with its coefficient function, defaults and checks.

Every method is linear in the checkpoint deltas ``d_k = w_k - w0`` with per-element coefficients ``c_k``
(``merged = w0 + sum_k c_k * d_k``), so an entry is::

    MergeMethod(name, coefficients, defaults, check, formula, ...)

``coefficients(deltas [K, *chunk], options, ctx) -> c`` (``c`` broadcasts against ``deltas``) is called on row
chunks of each tensor by the streaming merger (:mod:`codiemb.merge.stream`); ``defaults`` are the options the
method takes (``configs/merge/<name>.yaml`` documents the same values); ``check(options)`` raises
``ConfigError`` for values the method cannot use. Every numeric option is first checked to be a finite number
(``lam`` also within ``|lam| <= LAM_MAX``), whatever the method. The built-in methods are registered in
:mod:`codiemb.merge.methods` with :func:`merge_method`; a test can add one and remove it with
:func:`unregister`.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field

import torch

from codiemb.errors import ConfigError

LAM_MAX = 100.0  # |lam| above this scales the merged delta past anything useful (and toward float overflow)


@dataclass
class ChunkContext:
    """Where a chunk sits: the streaming merger fills it, coefficient functions read what they need."""

    name: str = ""
    start: int = 0
    norms: torch.Tensor | None = None        # [K] whole-tensor L2 norms of the deltas (when needs_norms)
    thresholds: torch.Tensor | None = None   # [K] TIES cut-offs over the whole tensor (when needs_thresholds)


CoefficientFn = Callable[[torch.Tensor, dict, ChunkContext], torch.Tensor]


@dataclass(frozen=True)
class MergeMethod:
    """One merge method. ``needs_norms(options)``: the merger computes ``ctx.norms`` first;
    ``needs_thresholds``: it computes ``ctx.thresholds`` from ``options["density"]``; ``internal`` options are
    set by codiemb itself (greedy soup's ``members``), never by a config."""

    name: str
    coefficients: CoefficientFn
    defaults: dict = field(default_factory=dict)
    check: Callable[[dict], None] | None = None
    formula: str = ""
    needs_norms: Callable[[dict], bool] = lambda options: False
    needs_thresholds: bool = False
    internal: tuple[str, ...] = ()

    def validate(self, options: Mapping) -> dict:
        """Defaults + ``options`` (``lambda`` read as ``lam``), checked; raises ConfigError (one line)."""
        options = dict(options)
        if "lambda" in options:  # `lambda` is the name; `lam` is the Python-safe spelling
            options["lam"] = options.pop("lambda")
        allowed = set(self.defaults) | set(self.internal)
        unknown = set(options) - allowed
        if unknown:
            raise ConfigError(f"options {sorted(unknown)} do not apply to merge method {self.name!r} (it takes "
                              f"{sorted(self.defaults) or 'no options'}); pick the method with "
                              f"`merge={self.name}`, not only `merge.method=...`, so its own options come with it")
        merged = {**self.defaults, **options}
        for key, default in self.defaults.items():
            check_number(key, merged[key], default)
            if isinstance(default, int) and not isinstance(default, bool):
                merged[key] = int(merged[key])  # seed=3.0 and seed=3 give the same merge
        if self.check is not None:
            self.check(merged)
        return merged


def check_number(key: str, value, default) -> None:
    """A numeric option (its default is a number) must be a finite real number, an integer where the default
    is one; ``lam`` must also satisfy ``|lam| <= LAM_MAX``."""
    if isinstance(default, bool) or not isinstance(default, numbers.Real):
        return
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ConfigError(f"merge.{key} must be a finite number, got {value!r}")
    if isinstance(default, numbers.Integral) and not float(value).is_integer():
        raise ConfigError(f"merge.{key} must be an integer, got {value!r}")
    if key == "lam" and abs(value) > LAM_MAX:
        raise ConfigError(f"merge.lam must be within [-{LAM_MAX:g}, {LAM_MAX:g}] (it scales the merged delta), "
                          f"got {value!r}")


METHODS: dict[str, MergeMethod] = {}


def register(method: MergeMethod, *, replace: bool = False) -> MergeMethod:
    """Add ``method`` to :data:`METHODS`; a taken name raises ValueError unless ``replace``."""
    if method.name in METHODS and not replace:
        raise ValueError(f"merge method {method.name!r} is already registered")
    if method.name in ("none", ""):
        raise ValueError(f"{method.name!r} cannot name a merge method")
    METHODS[method.name] = method
    return method


def unregister(name: str) -> None:
    METHODS.pop(name, None)


def merge_method(name: str, *, defaults: Mapping | None = None, check: Callable[[dict], None] | None = None,
                 formula: str = "", **extra) -> Callable[[CoefficientFn], CoefficientFn]:
    """Decorator: register the decorated ``coefficients(deltas, options, ctx)`` function as method ``name``."""
    def decorate(fn: CoefficientFn) -> CoefficientFn:
        register(MergeMethod(name, fn, dict(defaults or {}), check, formula, **extra))
        return fn
    return decorate


def get_method(name) -> MergeMethod:
    """The registered method ``name``; ConfigError listing the registered ones otherwise."""
    try:
        return METHODS[name]
    except (KeyError, TypeError):
        raise ConfigError(f"unknown merge method {name!r}; choose one of {sorted(METHODS)} or none") from None


class DefaultOptions(Mapping):
    """Read-only ``{method: default options}`` over the registry (the former ``DEFAULT_OPTIONS`` dict)."""

    def __getitem__(self, name: str) -> dict:
        return dict(METHODS[name].defaults)

    def __iter__(self) -> Iterator[str]:
        return iter(METHODS)

    def __len__(self) -> int:
        return len(METHODS)
