"""A deterministic, content-based train/validation split of queries.

A query is held out when a hash of its text falls in the first ``fraction`` of the hash space. Training
(``exclude``) and validation (``only``) apply the same rule independently, so they never overlap and need
no shared index file, whatever order or subset of rows each side reads.

``max_held`` caps the slice of a big dataset: :func:`capped_fraction` lowers the fraction to the hash boundary
below which at most ``max_held`` of its rows fall. Both sides compute it from the same rows (the training
table's ``bucket`` column, the validation set's records), so they still agree row for row.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable

BUCKETS = 100_000


def bucket(query: str) -> int:
    """The query's hash bucket (the data store keeps it per row as the ``bucket`` column)."""
    return zlib.crc32(query.strip().encode("utf-8")) % BUCKETS


def is_held_out(query: str, fraction: float) -> bool:
    return bucket(query) < fraction * BUCKETS


def capped_fraction(buckets: Iterable[int], fraction: float, max_held: int | None) -> float:
    """``fraction``, lowered when more than ``max_held`` of these rows (their hash buckets) would be held out:
    then the boundary half a bucket below the first bucket past ``max_held`` rows (rows sharing that bucket,
    the same query, stay together on the training side)."""
    if not max_held or max_held < 1:
        return float(fraction)
    held = sorted(b for b in buckets if b < fraction * BUCKETS)
    if len(held) <= max_held:
        return float(fraction)
    boundary = held[max_held]
    if boundary == held[0]:  # one query fills the cap on its own: hold out that query
        boundary = held[0] + 1
    return (boundary - 0.5) / BUCKETS


def apply_holdout(records: list, fraction: float, keep: str):
    """``keep="train"`` drops held-out queries; ``keep="val"`` keeps only them. Records need ``.query``."""
    if keep not in ("train", "val"):
        raise ValueError(f"holdout keep must be 'train' or 'val', got {keep!r}")
    want = keep == "val"
    return [r for r in records if is_held_out(r.query, fraction) == want]
