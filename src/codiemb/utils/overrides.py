"""Hydra command-line overrides, read as text (``+merge.p=2``, ``~callbacks.x``, ``eval@val=real_dev``)."""

from __future__ import annotations


def override_key(override: str) -> str:
    """The key an override sets, adds or deletes: ``+merge.p=2`` -> ``merge.p``, ``~callbacks.x`` -> ``callbacks.x``."""
    return str(override).split("=", 1)[0].lstrip("+~")
