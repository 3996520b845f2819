"""Run a model over a list of :class:`~codiemb.eval.sets.EvalSet` and collect scores (x100) and wall times."""

from __future__ import annotations

import logging
import time
from statistics import mean

from codiemb.eval.pairs import evaluate_pairs
from codiemb.eval.retrieval import evaluate_retrieval
from codiemb.eval.sets import EvalSet, IRData, STSData, load_set, parse_sets
from codiemb.eval.sts import evaluate_sts

log = logging.getLogger(__name__)
MAIN_METRIC = {"sts": "spearman", "ir": "ndcg@10", "pairs": "ap"}
# summary key per task: the mean of that task's main metric over its sets
SUMMARY_KEY = {"sts": "sts_spearman", "ir": "ir_ndcg@10", "pairs": "pairs_ap"}


def evaluate_set(encoder, spec: EvalSet, data: STSData | IRData | None = None, *, batch_size: int = 64,
                 **encode_kwargs) -> dict[str, float]:
    """Scores of one set plus ``main_score`` (Spearman, nDCG@10 or AP) and ``wall_s`` (reading included)."""
    start = time.perf_counter()
    data = data if data is not None else load_set(spec)
    if spec.task == "sts":
        scores = evaluate_sts(encoder, data.sentences1, data.sentences2, data.scores, batch_size=batch_size,
                              **encode_kwargs)
        size = {"pairs": float(len(data.scores))}
    elif spec.task == "pairs":
        scores = evaluate_pairs(encoder, data.sentences1, data.sentences2, data.scores, batch_size=batch_size,
                                **encode_kwargs)
        size = {"pairs": float(len(data.scores))}
    else:
        scores = evaluate_retrieval(encoder, data.corpus, data.queries, data.qrels, batch_size=batch_size,
                                    ignore_identical_ids=spec.ignore_identical_ids, **encode_kwargs)
        size = {"queries": float(len(data.qrels)), "docs": float(len(data.corpus))}
    return {"main_score": scores[MAIN_METRIC[spec.task]], **scores, **size,
            "wall_s": time.perf_counter() - start}


def evaluate(encoder, sets, *, batch_size: int = 64, cache: dict | None = None,
             **encode_kwargs) -> dict[str, dict[str, float]]:
    """``{set name: {metric: value}}`` for every set, in order. ``cache`` (name -> loaded data) lets a
    caller that evaluates repeatedly (the validation callback) read the files once."""
    results = {}
    for spec in parse_sets(sets):
        data = None
        if cache is not None:
            data = cache.get(spec.name) or cache.setdefault(spec.name, load_set(spec))
        results[spec.name] = evaluate_set(encoder, spec, data, batch_size=batch_size, **encode_kwargs)
        log.info("%s: %s = %.2f (%.1f s)", spec.name, MAIN_METRIC[spec.task], results[spec.name]["main_score"],
                 results[spec.name]["wall_s"])
    return results


def summarize(results: dict[str, dict[str, float]], sets) -> dict[str, float]:
    """``sts_spearman`` (mean over STS sets), ``ir_ndcg@10`` (mean over IR sets), ``pairs_ap`` (mean over
    pair-classification sets) and ``mean`` of those present."""
    tasks = {spec.name: spec.task for spec in parse_sets(sets)}
    summary = {}
    for task, key in SUMMARY_KEY.items():
        values = [r[MAIN_METRIC[task]] for name, r in results.items() if tasks.get(name) == task]
        if values:
            summary[key] = mean(values)
    if summary:
        summary["mean"] = mean(summary.values())
    return summary


def evaluate_model_dir(model_dir: str, sets, *, batch_size: int = 64, device: str | None = None,
                       **encode_kwargs) -> dict:
    """Load an exported model (or hub name / ``bundled:`` alias) and evaluate it: the merge stage's
    ``merge.evaluate`` hook and the greedy soup call this. Returns ``{"sets": ..., "summary": ...}``;
    ``summary["mean"]`` is the single number to maximise."""
    import torch

    from codiemb.models.encoder import Encoder

    encoder = Encoder.from_pretrained(str(model_dir))
    encoder.to(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    specs = parse_sets(sets)
    results = evaluate(encoder, specs, batch_size=batch_size, **encode_kwargs)
    return {"sets": results, "summary": summarize(results, specs)}
