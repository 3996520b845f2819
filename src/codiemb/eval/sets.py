"""What to evaluate on: an :class:`EvalSet` names a set, its task, file format, path and split.

Config groups under ``configs/eval/`` hold ``sets:`` lists of these, e.g.::

    - {name: stsb_test, task: sts, format: stsb, path: ${paths.shared_data_dir}/stsbenchmark/sts-test.csv}
    - {name: scifact, task: ir, format: beir, path: ${paths.shared_data_dir}/scifact, split: test}

Formats: ``stsb`` (STS-B TSV), ``beir`` (BEIR folder), ``jsonl`` (the unified schema), or any other
reader registered in :mod:`codiemb.data.readers` (its records are turned into pairs or a small corpus).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping

from codiemb.errors import ConfigError

TASKS = ("sts", "ir")


@dataclass(frozen=True)
class EvalSet:
    """One evaluation set.

    ``max_queries``/``max_corpus`` shrink an IR set for fast validation during training: the first
    ``max_queries`` judged queries (seeded shuffle) are kept, and the corpus keeps every document they
    judge plus ``max_corpus`` others. Scores on a shrunk set are not comparable with published ones.
    """

    name: str
    task: str
    format: str
    path: str
    split: str | None = None
    ignore_identical_ids: bool = False
    max_queries: int | None = None
    max_corpus: int | None = None
    seed: int = 0
    # Keep only the queries that codiemb.data.holdout reserves for validation (training drops the same ones).
    holdout_fraction: float | None = None
    options: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        if self.task not in TASKS:
            raise ConfigError(f"eval set {self.name!r}: task must be one of {TASKS}, got {self.task!r}")

    @classmethod
    def from_config(cls, raw: Mapping[str, Any]) -> "EvalSet":
        known = {f.name for f in fields(cls)}
        raw = dict(raw)
        missing = [key for key in ("name", "task", "format", "path") if not raw.get(key)]
        if missing:
            raise ConfigError(f"eval set {raw.get('name', raw)!r} lacks {', '.join(missing)}")
        # Unknown keys are reader options (e.g. score_range for a jsonl set).
        options = dict(raw.pop("options", None) or {})
        options.update({k: raw.pop(k) for k in list(raw) if k not in known})
        return cls(**raw, options=options)


def parse_sets(sets) -> list[EvalSet]:
    """Accept EvalSets, dicts or an OmegaConf list; names must be unique."""
    out = [s if isinstance(s, EvalSet) else EvalSet.from_config(_plain(s)) for s in (sets or [])]
    names = [s.name for s in out]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ConfigError(f"eval set names must be unique; repeated: {', '.join(duplicates)}")
    return out


def _plain(obj):
    try:
        from omegaconf import DictConfig, OmegaConf
        if isinstance(obj, DictConfig):
            return OmegaConf.to_container(obj, resolve=True)
    except ImportError:  # pragma: no cover
        pass
    return obj


@dataclass
class STSData:
    sentences1: list[str]
    sentences2: list[str]
    scores: list[float]


@dataclass
class IRData:
    corpus: dict[str, str]
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]


def load_set(spec: EvalSet) -> STSData | IRData:
    """Read the files of one set into the evaluators' in-memory form."""
    if not Path(spec.path).exists():
        raise ConfigError(f"eval set {spec.name!r}: path {spec.path} does not exist")
    if spec.task == "sts":
        return _load_sts(spec)
    data = _load_ir(spec)
    if spec.holdout_fraction:
        from codiemb.data.holdout import is_held_out
        kept = {q for q, text in data.queries.items() if is_held_out(text, spec.holdout_fraction)}
        data = IRData(data.corpus, {q: data.queries[q] for q in kept},
                      {q: rel for q, rel in data.qrels.items() if q in kept})
    return shrink_ir(data, spec.max_queries, spec.max_corpus, spec.seed)


def _load_sts(spec: EvalSet) -> STSData:
    if spec.format == "stsb":
        from codiemb.data.readers.stsb import load_stsb_pairs
        return STSData(*load_stsb_pairs(spec.path))
    records = _records(spec)
    return STSData([r.query for r in records], [r.positives[0] for r in records],
                   [float(r.score) for r in records])


def _load_ir(spec: EvalSet) -> IRData:
    if spec.format == "beir":
        from codiemb.data.readers.beir import load_beir
        return IRData(*load_beir(spec.path, spec.split or "test"))
    return records_to_ir(_records(spec))


def _records(spec: EvalSet):
    from codiemb.data.readers import read_dataset
    return read_dataset(spec.format, spec.path, name=spec.name, task=spec.task, split=spec.split,
                        **dict(spec.options)).records


def records_to_ir(records) -> IRData:
    """Unified IR records -> a corpus of every distinct positive/negative text, positives judged 1.

    Texts get ids by first appearance, so the same passage shared by two queries is one document.
    """
    corpus: dict[str, str] = {}
    ids: dict[str, str] = {}
    queries, qrels = {}, {}
    for index, record in enumerate(records):
        qid = f"q{index}"
        queries[qid] = record.query
        for text in (*record.positives, *record.negatives):
            if text not in ids:
                ids[text] = f"d{len(ids)}"
                corpus[ids[text]] = text
        qrels[qid] = {ids[text]: 0 for text in record.negatives}
        qrels[qid].update({ids[text]: 1 for text in record.positives})
    return IRData(corpus, queries, qrels)


def shrink_ir(data: IRData, max_queries: int | None, max_corpus: int | None, seed: int = 0) -> IRData:
    """Keep ``max_queries`` queries and their judged docs plus ``max_corpus`` other docs (seeded)."""
    if max_queries is None and max_corpus is None:
        return data
    qids = sorted(data.qrels)
    random.Random(seed).shuffle(qids)
    qids = sorted(qids[:max_queries] if max_queries is not None else qids)
    qrels = {q: data.qrels[q] for q in qids}
    judged = {d for q in qids for d in qrels[q]}
    others = sorted(d for d in data.corpus if d not in judged)
    random.Random(seed + 1).shuffle(others)
    keep = judged | set(others[:max_corpus] if max_corpus is not None else others)
    corpus = {d: t for d, t in data.corpus.items() if d in keep}
    return IRData(corpus, {q: data.queries[q] for q in qids}, qrels)
