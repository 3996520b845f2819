"""What to evaluate on: an :class:`EvalSet` names a set, its task, file format, path and split.

Config groups under ``configs/eval/`` hold ``sets:`` lists of these, e.g.::

    - {name: stsb_test, task: sts, format: stsb, path: ${paths.shared_data_dir}/stsbenchmark/sts-test.csv}
    - {name: scifact, task: ir, format: beir, path: ${paths.shared_data_dir}/scifact, split: test}

Formats: ``stsb`` (STS-B TSV), ``beir`` (BEIR folder), ``jsonl`` (the unified schema), or any other
reader registered in :mod:`codiemb.data.readers` (its records are turned into pairs or a small corpus).

Tasks: ``sts`` (graded pairs, Spearman), ``ir`` (retrieval, nDCG@10) and ``pairs`` (binary pairs such as
MRPC: average precision of the cosine, :mod:`codiemb.eval.pairs`). Options read here rather than by a
reader: ``genres`` (STS-B rows of those genres only: ``news``, ``captions``, ``forum``) and
``positive_min`` (``pairs``: a pair is positive when its score >= this, default 0.5 of MRPC's 0/1).
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from codiemb.errors import ConfigError
from codiemb.eval.checks import positive_int

TASKS = ("sts", "ir", "pairs")
PAIR_TASKS = ("sts", "pairs")  # tasks whose data is a list of sentence pairs
# options this module reads itself (never passed to a reader)
EVAL_OPTIONS = ("genres", "positive_min")


@dataclass(frozen=True)
class EvalSet:
    """One evaluation set.

    ``max_queries``/``max_corpus`` shrink an IR set for fast validation during training: the first
    ``max_queries`` judged queries (seeded shuffle) are kept, and the corpus keeps every document they
    judge plus ``max_corpus`` others. ``max_pairs`` keeps that many pairs of an STS or pairs set (seeded,
    file order kept). Scores on a shrunk set are not comparable with published ones.
    """

    name: str
    task: str
    format: str
    path: str
    split: str | None = None
    ignore_identical_ids: bool = False
    max_queries: int | None = None
    max_corpus: int | None = None
    max_pairs: int | None = None
    seed: int = 0
    # Keep only the queries that codiemb.data.holdout reserves for validation (training drops the same ones);
    # holdout_max caps them as training does (codiemb.data.holdout.capped_fraction over the same rows).
    holdout_fraction: float | None = None
    holdout_max: int | None = None
    options: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        if self.task not in TASKS:
            raise ConfigError(f"eval set {self.name!r}: task must be one of {TASKS}, got {self.task!r}")
        for key, minimum in (("max_pairs", 2), ("max_queries", 1), ("max_corpus", 0)):
            if getattr(self, key) is not None:
                try:
                    positive_int(key, getattr(self, key), minimum)
                except ConfigError as exc:
                    raise ConfigError(f"eval set {self.name!r}: {exc}") from None

    @classmethod
    def from_config(cls, raw: Mapping[str, Any]) -> EvalSet:
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
    """Read the files of one set into the evaluators' in-memory form (``eval.py`` then refuses one that cannot
    be scored: :func:`codiemb.eval.checks.check_loaded_set`)."""
    if spec.format != "hf" and not Path(spec.path).exists():  # hf: a hub name or a builder (parquet, json ...)
        raise ConfigError(f"eval set {spec.name!r}: path {spec.path} does not exist")
    if spec.task in PAIR_TASKS:
        data = _load_sts(spec)
        if spec.holdout_fraction:  # the pairs whose first sentence training holds back (codiemb.data.holdout)
            from codiemb.data.holdout import bucket, capped_fraction, is_held_out
            fraction = capped_fraction([bucket(t) for t in data.sentences1], spec.holdout_fraction, spec.holdout_max)
            kept = [i for i, text in enumerate(data.sentences1) if is_held_out(text, fraction)]
            data = STSData([data.sentences1[i] for i in kept], [data.sentences2[i] for i in kept],
                           [data.scores[i] for i in kept])
        data = shrink_pairs(data, spec.max_pairs, spec.seed)
        if spec.task == "pairs":
            threshold = float(spec.options.get("positive_min", 0.5))
            data = STSData(data.sentences1, data.sentences2, [1.0 if s >= threshold else 0.0 for s in data.scores])
        return data
    data = _load_ir(spec)
    if spec.holdout_fraction:
        from codiemb.data.holdout import bucket, capped_fraction, is_held_out
        fraction = capped_fraction([bucket(t) for t in data.queries.values()], spec.holdout_fraction, spec.holdout_max)
        kept = {q for q, text in data.queries.items() if is_held_out(text, fraction)}
        data = IRData(data.corpus, {q: data.queries[q] for q in kept},
                      {q: rel for q, rel in data.qrels.items() if q in kept})
    return shrink_ir(data, spec.max_queries, spec.max_corpus, spec.seed)


def _load_sts(spec: EvalSet) -> STSData:
    if spec.format == "snli":
        return STSData(*load_snli_graded_pairs(spec.path, spec.split or "test"))
    if spec.format == "stsb" and spec.options.get("genres"):
        return STSData(*load_stsb_genre_pairs(spec.path, spec.options["genres"]))
    if spec.options.get("genres"):
        raise ConfigError(f"eval set {spec.name!r}: the genres option needs format stsb, not {spec.format!r}")
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
    options = {k: v for k, v in spec.options.items() if k not in EVAL_OPTIONS}
    task = "sts" if spec.task == "pairs" else spec.task  # a pairs set is read as (binary-scored) STS pairs
    return read_dataset(spec.format, spec.path, name=spec.name, task=task, split=spec.split, **options).records


def stsb_genre(raw: str) -> str:
    """``main-news`` -> ``news``, ``main-forums`` (dev/test spelling) and ``main-forum`` (train) -> ``forum``."""
    genre = raw.strip().lower().removeprefix("main-")
    return {"forums": "forum"}.get(genre, genre)


def load_stsb_genre_pairs(path: str, genres) -> tuple[list[str], list[str], list[float]]:
    """The pairs of an STS-B file whose genre (column 0) is one of ``genres``, in file order.

    Same parsing as :mod:`codiemb.data.readers.stsb` (tabs, ``csv.QUOTE_NONE``, columns 4-6)."""
    import csv

    wanted = {stsb_genre(g) for g in ([genres] if isinstance(genres, str) else genres)}
    s1, s2, scores, seen = [], [], [], set()
    with open(path, encoding="utf-8", newline="") as fh:
        for line, fields in enumerate(csv.reader(fh, delimiter="\t", quoting=csv.QUOTE_NONE), start=1):
            if not any(f.strip() for f in fields):
                continue
            if len(fields) < 7:
                raise ConfigError(f"{path}:{line}: expected at least 7 tab-separated columns, got {len(fields)}")
            seen.add(stsb_genre(fields[0]))
            if stsb_genre(fields[0]) in wanted:
                s1.append(fields[5])
                s2.append(fields[6])
                scores.append(float(fields[4]))
    if wanted - seen:
        raise ConfigError(f"{path}: no rows of genre(s) {sorted(wanted - seen)}; genres present: {sorted(seen)}")
    return s1, s2, scores


SNLI_GRADES = {"entailment": 2.0, "neutral": 1.0, "contradiction": 0.0}


def load_snli_graded_pairs(path: str, split: str) -> tuple[list[str], list[str], list[float]]:
    """SNLI (SentEval layout: line-aligned ``s1.<split>``, ``s2.<split>``, ``labels.<split>``) as graded STS
    pairs: entailment 2, neutral 1, contradiction 0 (the SICK-style reading of NLI labels as relatedness).
    Text is kept as in the file apart from outer whitespace (SentEval's copy is tokenised)."""
    root = Path(path)
    def read(name):
        return (root / f"{name}.{split}").read_text(encoding="utf-8").rstrip("\n").split("\n")
    s1, s2, labels = read("s1"), read("s2"), read("labels")
    if not len(s1) == len(s2) == len(labels):
        raise ConfigError(f"{path}: s1/s2/labels.{split} have {len(s1)}/{len(s2)}/{len(labels)} lines")
    unknown = sorted({label.strip() for label in labels} - set(SNLI_GRADES))
    if unknown:
        raise ConfigError(f"{path}: unknown SNLI labels {unknown}")
    return ([a.strip() for a in s1], [b.strip() for b in s2], [SNLI_GRADES[label.strip()] for label in labels])


def shrink_pairs(data: STSData, max_pairs: int | None, seed: int = 0) -> STSData:
    """Keep ``max_pairs`` pairs (seeded choice, file order kept); the whole set when it is smaller."""
    if max_pairs is None or max_pairs >= len(data.scores):
        return data
    keep = sorted(random.Random(seed).sample(range(len(data.scores)), max_pairs))
    return STSData([data.sentences1[i] for i in keep], [data.sentences2[i] for i in keep],
                   [data.scores[i] for i in keep])


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
