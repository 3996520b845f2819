"""``eval.py``'s preflight: options and sets that cannot give a meaningful score are refused in one line before the
model loads, and a score that is undefined (NaN) is written as ``null`` with a warning, never as a bare ``NaN``.

* :func:`check_eval_options`: ``batch_size``, ``precision``, ``device``, ``report.geometry``,
  ``report.max_pairs`` (``ConfigError``: ``batch_size=-3 must be an integer >= 1``).
* :func:`positive_int`: the per-set limits (``max_pairs``, ``max_queries``, ``max_corpus``) use it too.
* :func:`check_loaded_set`: an empty set, an STS / pairs set with fewer than 2 pairs (a correlation of one pair
  is undefined) or a retrieval set without a judged query (``DataError`` naming the set and its file).
* :func:`nan_to_null`: NaN / inf anywhere in a result payload -> ``None``, each one reported.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from codiemb.errors import ConfigError, DataError

PRECISIONS = ("auto", "bf16", "fp32")
MIN_PAIRS = 2


def positive_int(key: str, value: Any, minimum: int = 1) -> int:
    """``value`` as an int >= ``minimum``; anything else (``-3``, ``0``, ``abc``, ``1.5``, ``true``) is refused."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{key}={value} must be an integer >= {minimum}")
    return int(value)


def check_device(device: Any) -> str | None:
    """``None`` (cuda if available, else cpu), ``cpu``, ``cuda``, ``cuda:<index>`` of a present GPU, or ``mps``."""
    if device is None:
        return None
    import torch

    hint = "use cpu, cuda or cuda:<index> (or leave device out: cuda if available, else cpu)"
    try:
        parsed = torch.device(device) if isinstance(device, str) else None
    except (RuntimeError, ValueError):
        parsed = None
    if parsed is None or parsed.type not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"device={device} is not a device; {hint}")
    if parsed.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ConfigError(f"device={device} but no CUDA device is available; use device=cpu")
        if parsed.index is not None and parsed.index >= count:
            raise ConfigError(f"device={device} but there are only {count} CUDA device(s) (cuda:0..cuda:{count - 1})")
    if parsed.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"device={device} but MPS is not available; use device=cpu")
    return str(device)


def check_eval_options(*, batch_size: Any, precision: Any = "auto", device: Any = None, geometry: Any = False,
                       geometry_max_pairs: Any = 2000) -> None:
    """Refuse, in one line and before anything loads, evaluation options that cannot work."""
    positive_int("batch_size", batch_size)
    if precision is not None and str(precision) not in PRECISIONS:
        raise ConfigError(f"precision={precision} must be one of {', '.join(PRECISIONS)}")
    check_device(device)
    if not isinstance(geometry, bool):
        raise ConfigError(f"report.geometry={geometry} must be true or false")
    if geometry:
        positive_int("report.max_pairs", geometry_max_pairs, minimum=MIN_PAIRS)


def set_file(spec) -> str:
    """The file a set's problem is most likely in (a BEIR folder's qrels of the split; else the path)."""
    if spec.format == "beir" and spec.task == "ir":
        return str(Path(spec.path) / "qrels" / f"{spec.split or 'test'}.tsv")
    return str(spec.path)


def _shrunk(spec) -> str:
    limits = {k: getattr(spec, k) for k in ("max_pairs", "max_queries", "holdout_fraction") if getattr(spec, k)}
    return f" after {', '.join(f'{k}={v}' for k, v in limits.items())}" if limits else ""


def check_loaded_set(spec, data) -> None:
    """Refuse a loaded set whose main score would be undefined or meaningless (see the module docstring)."""
    where = set_file(spec)
    if hasattr(data, "scores"):  # sts / pairs
        count = len(data.scores)
        if count < MIN_PAIRS:
            what = "is empty (no pairs)" if count == 0 else "has 1 pair"
            raise DataError(f"eval set '{spec.name}' {what}{_shrunk(spec)}; task {spec.task} needs at least "
                            f"{MIN_PAIRS} pairs (a correlation of fewer is undefined)", source=where)
        return
    if not data.corpus:
        raise DataError(f"eval set '{spec.name}' has an empty corpus", source=str(spec.path))
    judged = [q for q in data.queries if any(int(g) >= 1 for g in data.qrels.get(q, {}).values())]
    if not judged:
        what = "has no queries" if not data.queries else "has no judged query (none has a relevant document)"
        raise DataError(f"eval set '{spec.name}' {what}{_shrunk(spec)}; a retrieval set needs queries with at "
                        "least one judgement of grade >= 1", source=where)


def nan_to_null(value: Any, warnings: list[str], where: str = "") -> Any:
    """A copy of ``value`` (nested dicts / lists) with NaN and +-inf replaced by ``None``; ``warnings`` gets
    ``'<where>: nan'`` for each."""
    if isinstance(value, float) and not math.isfinite(value):
        warnings.append(f"{where}: {value}")
        return None
    if isinstance(value, dict):
        return {k: nan_to_null(v, warnings, f"{where}.{k}" if where else str(k)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [nan_to_null(v, warnings, f"{where}[{i}]") for i, v in enumerate(value)]
    return value
