"""Pair classification (paraphrase or not) from the cosine of the two embeddings, as MTEB's
``PairClassification`` scores it (``cosine_ap`` is its main score).

* ``ap`` (main): average precision of the cosine as a ranking of the pairs, positives = label 1:
  ``AP = sum_t (R_t - R_{t-1}) * P_t`` over the distinct cosine values ``t`` taken as thresholds from the
  highest down (pairs with equal cosines enter together), ``P_t``/``R_t`` = precision/recall of
  "cosine >= t". This is scikit-learn's ``average_precision_score`` (no interpolation).
* ``max_f1``: the best F1 over those same thresholds.

Both x100. The label is the only gold information, so no score scale is involved: a model whose cosines
rank paraphrases above non-paraphrases scores 100 whatever its similarity range.
"""

from __future__ import annotations

import torch

from codiemb.eval.sts import STS_KIND, encode_pairs, pair_cosines


def _threshold_counts(scores, labels) -> list[tuple[int, int]]:
    """Cumulative (true positives, predicted positives) at each distinct score, highest first."""
    if len(scores) != len(labels) or not len(scores):
        raise ValueError(f"need equally many, and at least one, scores and labels; got {len(scores)}, "
                         f"{len(labels)}")
    pairs = sorted(zip((float(s) for s in scores), (int(bool(y)) for y in labels)), key=lambda p: -p[0])
    out, tp = [], 0
    for i, (score, label) in enumerate(pairs):
        tp += label
        if i + 1 == len(pairs) or pairs[i + 1][0] != score:  # close a group of tied scores
            out.append((tp, i + 1))
    return out


def average_precision(scores, labels) -> float:
    """Non-interpolated average precision in [0, 1] (ties grouped); 0 when there is no positive."""
    counts = _threshold_counts(scores, labels)
    positives = counts[-1][0]
    if positives == 0:
        return 0.0
    ap, previous_tp = 0.0, 0
    for tp, predicted in counts:
        ap += (tp - previous_tp) / positives * (tp / predicted)
        previous_tp = tp
    return ap


def max_f1(scores, labels) -> float:
    """Best F1 in [0, 1] over the thresholds "score >= t" at every distinct score."""
    counts = _threshold_counts(scores, labels)
    positives = counts[-1][0]
    return max((2 * tp / (predicted + positives) for tp, predicted in counts), default=0.0) if positives else 0.0


def pair_scores(cosines, labels) -> dict[str, float]:
    cosines = [float(c) for c in cosines]
    return {"ap": 100.0 * average_precision(cosines, labels), "max_f1": 100.0 * max_f1(cosines, labels)}


def evaluate_pairs(encoder, sentences1, sentences2, labels, *, batch_size: int = 64, kind: str = STS_KIND,
                   return_predictions: bool = False, **encode_kwargs):
    """AP and max F1 (x100) of the cosine against binary labels; both sides get the query-side prompt."""
    if not (len(sentences1) == len(sentences2) == len(labels)) or not labels:
        raise ValueError(f"need equally many, and at least one, pairs and labels; got {len(sentences1)}, "
                         f"{len(sentences2)}, {len(labels)}")
    emb1, emb2 = encode_pairs(encoder, sentences1, sentences2, batch_size=batch_size, kind=kind, **encode_kwargs)
    cosines: torch.Tensor = pair_cosines(emb1, emb2)
    scores = pair_scores(cosines.tolist(), labels)
    return (scores, cosines) if return_predictions else scores
