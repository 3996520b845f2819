"""Hard-negative mining: retrieve with an embedding model, sample negatives from a rank window.

Semantics follow sentence-transformers' ``mine_hard_negatives``
(``sentence_transformers/util/hard_negatives.py``, v5/v6), exact search only:

1. score every corpus passage by cosine similarity, keep the top ``range_max + P`` (P = the query's number
   of distinct positives; sentence-transformers uses the dataset's largest P) -- computed for ``chunk_size``
   queries against ``corpus_block`` passages at a time with a running top-k (:mod:`codiemb.utils.topk`), so
   memory beyond the embeddings stays bounded whatever the corpus size (1024 x 16384 scores = 64 MB);
2. drop the positives (by text: a duplicate of a positive is a positive);
3. with ``s+`` = the *lowest* positive score of the query, drop candidates with
   ``s + absolute_margin > s+`` and/or ``s > s+ - |s+| * relative_margin`` (likely false negatives),
   and candidates with ``s > max_score``;
4. rank the survivors by score, keep ranks ``[range_min, range_max)`` and take ``num_negatives`` of
   them: the best ones (``sampling="top"``) or a uniform sample (``"random"``, seeded, so a run is
   reproducible), returned best first.

Inputs are unified records (any reader) and a corpus of texts; the output is unified JSONL.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from codiemb.data.schema import Record
from codiemb.errors import ConfigError, DataError
from codiemb.utils.atomic import atomic_write_text
from codiemb.utils.precision import resolve_short_precision
from codiemb.utils.topk import corpus_blocks, running_top_k

log = logging.getLogger(__name__)
SAMPLING = ("random", "top")
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16}


@dataclass
class MiningReport:
    queries: int = 0
    negatives: int = 0
    short: int = 0  # queries that got fewer than num_negatives negatives
    margin_dropped: int = 0
    positive_score_mean: float = float("nan")
    negative_score_mean: float = float("nan")
    seconds: dict = field(default_factory=dict)

    def summary(self) -> str:
        return (f"{self.queries} queries, {self.negatives} negatives ({self.short} queries got fewer than "
                f"asked; "
                f"{self.margin_dropped} candidates dropped by margin/max_score); mean cosine positive "
                f"{self.positive_score_mean:.3f}, negative {self.negative_score_mean:.3f}")


def check_window(range_min: int, range_max: int, num_negatives: int, sampling: str) -> None:
    if range_min < 0 or range_min >= range_max:
        raise ConfigError(f"need 0 <= range_min < range_max, got range_min={range_min}, "
                          f"range_max={range_max}")
    if not 1 <= num_negatives <= range_max - range_min:
        raise ConfigError(f"num_negatives={num_negatives} must be in [1, range_max - range_min = "
                          f"{range_max - range_min}]")
    if sampling not in SAMPLING:
        raise ConfigError(f"sampling must be one of {SAMPLING}, got {sampling!r}")


def mine_from_embeddings(query_embeddings: torch.Tensor, corpus_embeddings: torch.Tensor,
                         positive_ids: Sequence[Sequence[int]], *, range_min: int = 10, range_max: int = 100,
                         num_negatives: int = 3, absolute_margin: float | None = None,
                         relative_margin: float | None = None, max_score: float | None = None,
                         sampling: str = "random", seed: int = 0, chunk_size: int = 1024,
                         corpus_block: int = 16384,
                         show_progress: bool = False, report: MiningReport | None = None,
                         ) -> list[list[tuple[int, float]]]:
    """For each query, ``[(corpus_index, cosine), ...]`` of its mined negatives, best first (see module doc).

    ``positive_ids[q]`` lists the corpus indices of query ``q``'s positives (at least one). Random sampling
    draws from one ``torch.Generator(seed)`` in query order, so the result does not depend on ``chunk_size``.
    """
    check_window(range_min, range_max, num_negatives, sampling)
    for key, value in (("chunk_size", chunk_size), ("corpus_block", corpus_block)):
        if not (isinstance(value, int) and value >= 1):
            raise ConfigError(f"{key} must be a positive integer, got {value!r}")
    if len(positive_ids) != len(query_embeddings):
        raise ValueError(f"{len(positive_ids)} positive lists for {len(query_embeddings)} queries")
    queries = F.normalize(query_embeddings.float(), dim=-1)
    corpus = corpus_embeddings.float()  # normalised one block at a time below: a large corpus is not held twice
    generator = torch.Generator().manual_seed(seed)
    report = report if report is not None else MiningReport()
    results, positive_scores, negative_scores = [], [], []
    for start in tqdm(range(0, len(queries), chunk_size), desc="mining", disable=not show_progress):
        chunk = queries[start:start + chunk_size]
        chunk_positives = positive_ids[start:start + chunk_size]
        most = max(len(p) for p in chunk_positives)
        unit_blocks = (F.normalize(block, dim=-1) for block in corpus_blocks(corpus, corpus_block))
        top_scores, top_ids, _ = running_top_k(chunk, unit_blocks, range_max + most)
        for row, positives in enumerate(chunk_positives):
            positives = torch.as_tensor(sorted(set(positives)), dtype=torch.long)
            positive_min = (chunk[row] @ F.normalize(corpus[positives], dim=-1).T).min()
            positive_scores.append(positive_min.item())
            # the pool is this query's own top range_max + P (sentence-transformers uses the largest P of the
            # dataset), so a query's negatives never depend on which other queries share its chunk
            pool = range_max + len(positives)
            scores, ids = top_scores[row, :pool], top_ids[row, :pool]
            keep = ~torch.isin(ids, positives)
            filtered = torch.zeros_like(keep)
            if absolute_margin is not None:
                filtered |= scores + absolute_margin > positive_min
            if relative_margin is not None:
                filtered |= scores > positive_min - positive_min.abs() * relative_margin
            if max_score is not None:
                filtered |= scores > max_score
            report.margin_dropped += int((keep & filtered).sum())
            keep &= ~filtered
            # topk already sorted the candidates by score, so survivors stay in rank order
            window_ids, window_scores = ids[keep][range_min:range_max], scores[keep][range_min:range_max]
            if sampling == "random" and len(window_ids) > num_negatives:
                pick = torch.randperm(len(window_ids), generator=generator)[:num_negatives].sort().values
            else:
                pick = torch.arange(min(num_negatives, len(window_ids)))
            mined = [(int(window_ids[i]), float(window_scores[i])) for i in pick]
            report.short += len(mined) < num_negatives
            negative_scores.extend(score for _, score in mined)
            results.append(mined)
    report.queries += len(results)
    report.negatives += len(negative_scores)
    if positive_scores:
        report.positive_score_mean = sum(positive_scores) / len(positive_scores)
    if negative_scores:
        report.negative_score_mean = sum(negative_scores) / len(negative_scores)
    return results


def build_corpus(records: Sequence[Record],
                 extra_passages: Sequence[str] = ()) -> tuple[list[str], dict[str, int]]:
    """Unique passages, first seen first: ``extra_passages`` (e.g. a BEIR corpus), then every record's
    positives and negatives. Returns ``(texts, text -> index)``."""
    index: dict[str, int] = {}
    for text in list(extra_passages) + [p for r in records for p in (*r.positives, *r.negatives)]:
        index.setdefault(text, len(index))
    return list(index), index


def mine_records(records: Sequence[Record], encoder, *, corpus: Sequence[str] = (), batch_size: int = 64,
                 keep_existing_negatives: bool = True, show_progress: bool = True,
                 report: MiningReport | None = None, precision: str = "auto", **options) -> list[Record]:
    """Encode queries and corpus with ``encoder`` (a :class:`codiemb.models.encoder.Encoder`), mine, and
    return the records with negatives = existing ones (if kept) followed by the mined ones, de-duplicated.
    ``precision``: auto (bf16 where the CPU/GPU computes it natively, else fp32; codiemb.utils.precision) | bf16 |
    fp32. ``options`` go to :func:`mine_from_embeddings`."""
    device = next(encoder.parameters()).device.type
    precision = resolve_short_precision(precision, "cuda" if device == "cuda" else "cpu", "mining precision")
    # bf16 encodes ~2x faster on CPUs with native bf16 and ~6x slower on the others: hence auto.
    autocast = PRECISIONS[precision]
    report = report if report is not None else MiningReport()
    texts, index = build_corpus(records, corpus)
    started = time.perf_counter()
    corpus_embeddings = encoder.encode(texts, kind="passage", batch_size=batch_size,
                                       show_progress=show_progress, autocast_dtype=autocast)
    query_embeddings = encoder.encode([r.query for r in records], kind="query", batch_size=batch_size,
                                      instructions=[r.instruction for r in records],
                                      show_progress=show_progress, autocast_dtype=autocast)
    report.seconds["encode"] = round(time.perf_counter() - started, 1)
    started = time.perf_counter()
    mined = mine_from_embeddings(query_embeddings, corpus_embeddings,
                                 [[index[p] for p in r.positives] for r in records],
                                 show_progress=show_progress, report=report, **options)
    report.seconds["search"] = round(time.perf_counter() - started, 1)
    out = []
    for record, negatives in zip(records, mined):
        kept = list(record.negatives) if keep_existing_negatives else []
        new = list(dict.fromkeys(kept + [texts[i] for i, _ in negatives]))
        # the negatives changed: teacher scores the input carried no longer line up (score_records sets new ones)
        out.append(replace(record, negatives=tuple(new), pos_scores=None, neg_scores=None,
                           meta={**record.meta, "mined_scores": [s for _, s in negatives]}))
    return out


def write_jsonl(records: Sequence[Record], path, *, with_scores: bool = False) -> None:
    """Unified JSONL (``task``, ``query``, ``positives``, ``negatives`` [, ``instruction``] [, ``pos_scores``,
    ``neg_scores``: teacher scores, when the records have them]), written atomically."""
    lines = []
    for r in records:
        row = {"task": r.task, "query": r.query, "positives": list(r.positives),
               "negatives": list(r.negatives)}
        if r.instruction:
            row["instruction"] = r.instruction
        if r.pos_scores is not None:
            row["pos_scores"], row["neg_scores"] = list(r.pos_scores), list(r.neg_scores or ())
        if with_scores and "mined_scores" in r.meta:
            row["mined_scores"] = [round(s, 5) for s in r.meta["mined_scores"]]
        lines.append(json.dumps(row, ensure_ascii=False))
    atomic_write_text(path, "\n".join(lines) + ("\n" if lines else ""))


def load_corpus(path: str) -> list[str]:
    """Passages of a BEIR folder's ``corpus.jsonl`` (MTEB text: ``title + " " + text``)."""
    from codiemb.data.readers.beir import document_text

    corpus_file = Path(path) / "corpus.jsonl"
    if not corpus_file.is_file():
        raise DataError("file not found", source=str(corpus_file))
    with corpus_file.open(encoding="utf-8") as fh:
        return [document_text(json.loads(line)) for line in fh if line.strip()]


def mine_dataset(*, model_path: str, input_format: str, input_path: str, output: str,
                 split: str | None = None,
                 corpus_path: str | None = None, name: str = "mined", reader_options: dict | None = None,
                 encoder_options: dict | None = None, limit: int | None = None, with_scores: bool = False,
                 teacher: str | None = None, **options) -> MiningReport:
    """Read ``input_path`` with the ``input_format`` reader, mine against its own passages plus the BEIR
    corpus of ``corpus_path`` (default: ``input_path`` itself when the format is ``beir``), and write
    ``output``. With ``teacher`` (a sentence-transformers bi-encoder or cross-encoder directory,
    :mod:`codiemb.models.teacher`), every row also gets ``pos_scores`` / ``neg_scores`` for distillation."""
    from codiemb.data.readers import read_dataset
    from codiemb.models.encoder import Encoder

    batch_size = options.get("batch_size", 64)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size={batch_size!r} must be an integer >= 1 (texts encoded at a time)")
    read = read_dataset(input_format, input_path, name=name, split=split, task="ir", **(reader_options or {}))
    log.info(read.summary(name))
    records = read.records[:limit] if limit else read.records
    if corpus_path is None and input_format == "beir":
        corpus_path = input_path
    corpus = load_corpus(corpus_path) if corpus_path else []
    corpus += build_corpus(read.records)[0]  # with `limit`, the unmined records' passages stay candidates
    encoder = Encoder.from_pretrained(model_path, **(encoder_options or {})).eval()
    report = MiningReport()
    mined = mine_records(records, encoder, corpus=corpus, report=report, **options)
    if teacher:
        from codiemb.models.teacher import load_teacher, score_records

        started = time.perf_counter()
        del encoder  # one model in memory at a time
        mined = score_records(mined, load_teacher(teacher), batch_size=options.get("batch_size", 64),
                              show_progress=options.get("show_progress", True))
        report.seconds["teacher"] = round(time.perf_counter() - started, 1)
    write_jsonl(mined, output, with_scores=with_scores)
    log.info("%s -> %s: %s", input_path, output, report.summary())
    return report
