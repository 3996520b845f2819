"""Run a model over a list of :class:`~codiemb.eval.sets.EvalSet` and collect scores (x100) and wall times.

Progress: encoding a large set (SciFact's 5k documents) takes minutes, so :func:`evaluate` reports how many of a
set's texts are encoded so far, counted by a forward hook on the encoder (one call per batch; the embeddings
are untouched). On an interactive stderr that is a tqdm bar which appears only once a set has run for
:data:`PROGRESS_DELAY_S` and is erased when it ends (small sets, e.g. the validation during training, show
nothing); otherwise (a log file, a pipe) a log line at most every :data:`PROGRESS_LOG_EVERY_S`. Only rank 0 of a
distributed job reports.
"""

from __future__ import annotations

import contextlib
import logging
import sys
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
PROGRESS_DELAY_S = 5.0  # a set's progress shows once it has run this long (progress=True: at once)
PROGRESS_LOG_EVERY_S = 30.0  # non-interactive output: one progress line at most this often


def _interactive() -> bool:
    return sys.stderr.isatty()


def _rank_zero() -> bool:
    import torch.distributed as dist

    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def set_size(spec: EvalSet, data) -> int:
    """How many texts evaluating ``data`` encodes: both sides of every pair, or the judged queries + corpus."""
    if spec.task in ("sts", "pairs"):
        return len(data.sentences1) + len(data.sentences2)
    return sum(q in data.qrels for q in data.queries) + len(data.corpus)


class _Progress:
    """Texts encoded so far out of ``total``: a delayed, self-erasing tqdm bar, or a log line every so often."""

    def __init__(self, name: str, total: int, delay: float, interactive: bool):
        self.name, self.total, self.done, self.delay = name, total, 0, delay
        self.start, self.last_log = time.perf_counter(), None
        self.bar = None
        if interactive:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, desc=f"eval {name}", unit="text", delay=delay, leave=False,
                            file=sys.stderr, dynamic_ncols=True)

    def update(self, count: int) -> None:
        self.done += count
        if self.bar is not None:
            self.bar.update(count)
            return
        now = time.perf_counter()
        if now - self.start >= self.delay and (self.last_log is None or now - self.last_log >= PROGRESS_LOG_EVERY_S):
            self.last_log = now
            log.info("%s: encoded %d/%d texts (%.0f%%, %.0f s)", self.name, self.done, self.total,
                     100.0 * self.done / max(self.total, 1), now - self.start)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


@contextlib.contextmanager
def _encode_progress(encoder, name: str, total: int, progress: bool | None):
    """Count the texts ``encoder`` embeds inside the block (a forward hook: one call per encoded batch)."""
    import torch

    if progress is False or not isinstance(encoder, torch.nn.Module) or not _rank_zero():
        yield
        return
    reporter = _Progress(name, total, 0.0 if progress else PROGRESS_DELAY_S, _interactive())

    def count(module, args, output) -> None:
        features = args[0] if args else None
        mask = features.get("attention_mask") if isinstance(features, dict) else None
        if mask is not None:
            reporter.update(int(mask.shape[0]))

    handle = encoder.register_forward_hook(count)
    try:
        yield
    finally:
        handle.remove()
        reporter.close()


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


def evaluate(encoder, sets, *, batch_size: int = 64, cache: dict | None = None, progress: bool | None = None,
             **encode_kwargs) -> dict[str, dict[str, float]]:
    """``{set name: {metric: value}}`` for every set, in order. ``cache`` (name -> loaded data) lets a
    caller that evaluates repeatedly (the validation callback) read the files once. ``progress``: None (default)
    reports a set's encoding progress once it has run :data:`PROGRESS_DELAY_S`, True from its start, False
    never (see the module docstring)."""
    results = {}
    for spec in parse_sets(sets):
        data = None
        if cache is not None:
            data = cache.get(spec.name) or cache.setdefault(spec.name, load_set(spec))
        read_s = time.perf_counter()
        data = data if data is not None else load_set(spec)
        read_s = time.perf_counter() - read_s
        with _encode_progress(encoder, spec.name, set_size(spec, data), progress):
            results[spec.name] = evaluate_set(encoder, spec, data, batch_size=batch_size, **encode_kwargs)
        results[spec.name]["wall_s"] += read_s  # reading included, as evaluate_set counts it
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
