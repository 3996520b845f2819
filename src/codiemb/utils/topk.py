"""Exact top-k search by dot product over a corpus too large to score at once.

The corpus arrives as a tensor or as chunks in corpus order; each chunk's scores are cut to their top k and
merged into a running top-k per query (``torch.topk`` over ``[running top-k | chunk top-k]``), so at most
``queries x chunk`` scores exist at a time, never ``queries x corpus``. Used by retrieval evaluation and hard-negative mining.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch


def corpus_blocks(corpus: torch.Tensor, size: int) -> Iterable[torch.Tensor]:
    """Views of ``size`` consecutive rows (no copies)."""
    return (corpus[start:start + size] for start in range(0, len(corpus), size))


def running_top_k(queries: torch.Tensor, corpus: torch.Tensor | Iterable[torch.Tensor], k: int, *,
                  query_block: int = 1024) -> tuple[torch.Tensor, torch.Tensor, int]:
    """``(scores, indices, corpus rows seen)``: each query's ``k`` best corpus rows by ``query . row``, best
    first (fewer when the corpus is smaller). ``query_block`` queries are multiplied at a time."""
    chunks = [corpus] if isinstance(corpus, torch.Tensor) else corpus
    best_scores = torch.full((len(queries), 0), float("-inf"))
    best_index = torch.empty((len(queries), 0), dtype=torch.long)
    offset = 0
    for chunk in chunks:
        scores = torch.cat([queries[i:i + query_block] @ chunk.T for i in range(0, len(queries), query_block)]) \
            if len(queries) else chunk.new_empty(0, len(chunk))
        # the chunk's own top k first, so the merge below holds 2k columns (no queries x chunk index matrix)
        scores, position = torch.topk(scores, min(k, scores.size(1)), dim=1)
        merged_scores = torch.cat([best_scores, scores], dim=1)
        merged_index = torch.cat([best_index, position + offset], dim=1)
        best_scores, position = torch.topk(merged_scores, min(k, merged_scores.size(1)), dim=1)
        best_index = torch.gather(merged_index, 1, position)
        offset += len(chunk)
    return best_scores, best_index, offset
