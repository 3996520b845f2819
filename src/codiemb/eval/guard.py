"""The out-of-distribution guard (``eval=guard``): does a trained model stay at or above the base model on
similarity and retrieval data of other domains?

Built only from ``../shared/data`` and never reported as a result (it is for choosing recipes and for
validation during training: ``val=guard``). ``configs/eval/guard.yaml`` lists its sets:

* STS, one set per *source*: the three SemEval 2012 train sources (MSRpar, MSRvid, SMTeuroparl) and the
  three STS-B genres of the dev split (news, captions, forum). A source set is out-of-distribution for a
  run that did not train on it: for ``experiment=real_cpu`` (STS-B train + STS12 train) none of them is,
  so leave-one-source-out runs (:func:`loso_splits`, ``bench/studies/guard_factors.py --loso``) train without one
  source and read that source only. STS-B train contains most of STS12's MSRpar and MSRvid pairs, so
  only SMTeuroparl is unseen by a run that trains on STS-B.
* SNLI test read as graded relatedness (Spearman) and MRPC test as a paraphrase check (task ``pairs``:
  average precision of the cosine): no recipe trains on either.
* Retrieval sets no recipe trains on: WikiQA test (pooled candidates), NovelEval, XQuAD-en, SNLI test
  (premise -> entailed hypotheses, pooled).

:func:`compare_with_base` turns two result dicts into the guard's verdict: per-set delta, mean delta,
the sets below the base and the worst one.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from statistics import mean

from codiemb.eval.runner import MAIN_METRIC
from codiemb.eval.sets import parse_sets


def loso_splits(sources: Sequence[str]) -> list[tuple[str, list[str]]]:
    """Leave-one-source-out: ``[(held_out, [the other sources in their order]), ...]``, one per source."""
    sources = list(sources)
    if len(set(sources)) != len(sources):
        raise ValueError(f"sources must be distinct, got {sources}")
    if len(sources) < 2:
        raise ValueError("leave-one-source-out needs at least two sources")
    return [(held, [s for s in sources if s != held]) for held in sources]


def compare_with_base(results: dict[str, dict[str, float]], base: dict[str, dict[str, float]], sets,
                      *, only: Iterable[str] | None = None, tolerance: float = 0.0) -> dict:
    """Guard verdict of ``results`` against the base model's ``base`` (both ``{set: metrics}``, x100).

    ``only`` restricts the verdict to those set names (e.g. the sets a run did not train on). A set is
    *below* the base when its main score is lower by more than ``tolerance``.
    Returns ``{"delta": {set: d}, "mean": guard mean of the model, "base_mean": ..., "mean_delta": ...,
    "below": [sets], "worst": (set, d)}``; main score = Spearman (sts), nDCG@10 (ir), AP (pairs).
    """
    specs = [s for s in parse_sets(sets) if only is None or s.name in set(only)]
    names = [s.name for s in specs if s.name in results and s.name in base]
    if not names:
        raise ValueError("no set scored for both the model and the base")
    metric = {s.name: MAIN_METRIC[s.task] for s in specs}
    delta = {n: results[n][metric[n]] - base[n][metric[n]] for n in names}
    worst = min(delta, key=delta.get)
    return {"delta": delta,
            "mean": mean(results[n][metric[n]] for n in names),
            "base_mean": mean(base[n][metric[n]] for n in names),
            "mean_delta": mean(delta.values()),
            "below": [n for n in names if delta[n] < -tolerance],
            "worst": (worst, delta[worst])}
