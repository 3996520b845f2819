"""A deterministic, content-based train/validation split of queries.

A query is held out when a hash of its text falls in the first ``fraction`` of the hash space. Training
(``exclude``) and validation (``only``) apply the same rule independently, so they never overlap and need
no shared index file, whatever order or subset of rows each side reads.
"""

from __future__ import annotations

import zlib

BUCKETS = 100_000


def is_held_out(query: str, fraction: float) -> bool:
    return zlib.crc32(query.strip().encode("utf-8")) % BUCKETS < fraction * BUCKETS


def apply_holdout(records: list, fraction: float, keep: str):
    """``keep="train"`` drops held-out queries; ``keep="val"`` keeps only them. Records need ``.query``."""
    if keep not in ("train", "val"):
        raise ValueError(f"holdout keep must be 'train' or 'val', got {keep!r}")
    want = keep == "val"
    return [r for r in records if is_held_out(r.query, fraction) == want]
