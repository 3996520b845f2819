"""Rows that load but are suspicious: kept, counted and reported once per dataset.

* exact duplicate rows (same task, query, positives, negatives, score and instruction): they weigh double
  and, in an IR batch, each copy's positives become in-batch negatives of the other: false negatives;
* a hard negative equal to one of its row's own positives: the same passage is then both the target and a
  negative of that query.

Counted on the Arrow batches the record store writes (vectorised; memory is 8 bytes per row for the hashes).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

DUPLICATE = "duplicate rows"
NEGATIVE_IS_POSITIVE = "negative equal to a positive"
_SEP, _ITEM = "\x1e", "\x1f"


def _keyed(lists: pa.Array) -> pa.Array:
    """``"<row>\\x1f<text>"`` for every element of a list column (so equality means same row, same text)."""
    parents = pc.cast(pc.list_parent_indices(lists), pa.string())
    return pc.binary_join_element_wise(parents, pc.list_flatten(lists), _ITEM)


class QualityCounter:
    """Feed tables with columns task, query, positives, negatives, score, instruction; :meth:`counts` sums up."""

    def __init__(self):
        self._hashes: list[np.ndarray] = []
        self._negative_is_positive = 0

    def add(self, table: pa.Table) -> None:
        if not table.num_rows:
            return
        cols = {name: table.column(name).combine_chunks() for name in
                ("task", "query", "positives", "negatives", "score", "instruction")}
        keys = pc.binary_join_element_wise(
            cols["task"], cols["query"], pc.binary_join(cols["positives"], _ITEM),
            pc.binary_join(cols["negatives"], _ITEM), pc.cast(cols["score"], pa.string()).fill_null(""),
            cols["instruction"].fill_null(""), _SEP)
        self._hashes.append(np.fromiter(map(hash, keys.to_pylist()), dtype=np.int64, count=table.num_rows))
        if len(pc.list_flatten(cols["negatives"])):
            negatives = _keyed(cols["negatives"])
            hit = pc.is_in(negatives, value_set=_keyed(cols["positives"])).to_numpy(zero_copy_only=False)
            rows = pc.list_parent_indices(cols["negatives"]).to_numpy(zero_copy_only=False)[hit]
            self._negative_is_positive += len(np.unique(rows))

    def counts(self) -> dict[str, int]:
        counts = {}
        if self._hashes:
            hashes = np.concatenate(self._hashes)
            counts[DUPLICATE] = len(hashes) - len(np.unique(hashes))
        counts[NEGATIVE_IS_POSITIVE] = self._negative_is_positive
        return {key: value for key, value in counts.items() if value}


def format_warnings(report: dict[str, dict[str, int]]) -> str:
    """``name: reason: n, reason: n; name: ...`` for the datasets that have any."""
    return "; ".join(f"{name}: {', '.join(f'{k}: {v}' for k, v in counts.items())}"
                     for name, counts in report.items() if counts)
