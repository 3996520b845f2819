"""STS evaluation as MTEB does it (``mteb/abstasks/sts.py``): cosine similarity of the two embeddings of
each pair, correlated with the gold scores.

``cosine_spearman = 100 * spearman(cos(e1_i, e2_i), gold_i)`` (MTEB's main STS score), and the same with
Pearson. Both correlations come from :mod:`scipy.stats`; rank correlation ignores the gold scale, so no
normalisation of the 0-5 scores is needed.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from scipy.stats import pearsonr, spearmanr

STS_KIND = "query"  # both sentences of a symmetric pair get the same (query-side) prompt


def pair_cosines(emb1: torch.Tensor, emb2: torch.Tensor) -> torch.Tensor:
    """Row-wise cosine similarity (embeddings need not be normalised)."""
    return F.cosine_similarity(emb1.float(), emb2.float(), dim=-1)


def sts_scores(predicted, gold) -> dict[str, float]:
    predicted = [float(x) for x in predicted]
    gold = [float(x) for x in gold]
    return {"spearman": 100.0 * float(spearmanr(predicted, gold).statistic),
            "pearson": 100.0 * float(pearsonr(predicted, gold).statistic)}


def encode_pairs(encoder, sentences1, sentences2, *, batch_size: int = 64, kind: str = STS_KIND,
                 **encode_kwargs) -> tuple[torch.Tensor, torch.Tensor]:
    """Encode both sides in one call, so the length sort packs batches over all sentences."""
    embeddings = encoder.encode(list(sentences1) + list(sentences2), kind=kind, batch_size=batch_size,
                                **encode_kwargs)
    return embeddings[:len(sentences1)], embeddings[len(sentences1):]


def evaluate_sts(encoder, sentences1, sentences2, gold, *, batch_size: int = 64, kind: str = STS_KIND,
                 return_predictions: bool = False, **encode_kwargs):
    """Spearman and Pearson (x100) of cosine similarity vs gold; optionally also the cosines."""
    if not (len(sentences1) == len(sentences2) == len(gold)) or not gold:
        raise ValueError(f"need equally many, and at least one, pairs and scores; got {len(sentences1)}, "
                         f"{len(sentences2)}, {len(gold)}")
    emb1, emb2 = encode_pairs(encoder, sentences1, sentences2, batch_size=batch_size, kind=kind,
                              **encode_kwargs)
    cosines = pair_cosines(emb1, emb2)
    scores = sts_scores(cosines.tolist(), gold)
    return (scores, cosines) if return_predictions else scores
