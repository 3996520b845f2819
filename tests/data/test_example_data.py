"""Checks on the hand-written example data in ``data/example`` (see data/example/README.md).

Every row must pass the project's own validator (``parse_record``), and the files must keep the
properties the default ``python train.py`` run and its validation rely on: enough rows, hard negatives
on every IR row, STS scores spread over the whole 0-5 SemEval scale, and no leakage between the
training files and the held-out validation sets.
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

import pytest

from codiemb.data.schema import parse_record

EXAMPLE = Path(__file__).resolve().parents[2] / "data" / "example"
VAL_IR = EXAMPLE / "val" / "ir"

# file -> (declared task, minimum number of rows)
TRAIN_FILES = {
    "ir_support.jsonl": ("ir", 90),
    "ir_knowledge.jsonl": ("ir", 80),
    "sts_general.jsonl": ("sts", 170),
}


def load(relative: str, task: str):
    path = EXAMPLE / relative
    with path.open(encoding="utf-8") as fh:
        return [parse_record(json.loads(raw), dataset=path.stem, source=str(path), line=n, task=task,
                             score_range=(0, 5))
                for n, raw in enumerate(fh, start=1) if raw.strip()]


def load_jsonl(path: Path) -> list[dict]:
    with path.open(encoding="utf-8") as fh:
        return [json.loads(raw) for raw in fh if raw.strip()]


def bucket(score: float) -> int:
    """SemEval integer bucket: [0,1) -> 0, ..., [3,4) -> 3, and [4,5] -> 4 (5.0 joins the top bucket)."""
    return min(int(score), 4)


@pytest.mark.parametrize("name", sorted(TRAIN_FILES))
def test_training_file_is_valid_and_large_enough(name):
    task, minimum = TRAIN_FILES[name]
    records = load(name, task)
    assert len(records) >= minimum
    queries = [r.query for r in records]
    duplicated = [q for q, n in Counter(queries).items() if n > 1]
    assert not duplicated, f"{name}: duplicate queries {duplicated}"


@pytest.mark.parametrize("name", ["ir_support.jsonl", "ir_knowledge.jsonl"])
def test_ir_rows_have_hard_negatives_and_mostly_two_positives(name):
    records = load(name, "ir")
    few = [r.query for r in records if len(r.negatives) < 3]
    assert not few, f"{name}: rows with fewer than 3 negatives: {few}"
    two_positive_share = sum(len(r.positives) >= 2 for r in records) / len(records)
    assert two_positive_share >= 0.8
    for r in records:  # a passage can never be both relevant and a negative for the same query
        assert not set(r.positives) & set(r.negatives), r.query
        assert r.query not in r.positives + r.negatives


@pytest.mark.parametrize("name,per_bucket", [("sts_general.jsonl", 25), ("val/sts.jsonl", 6)])
def test_sts_scores_cover_every_bucket(name, per_bucket):
    records = load(name, "sts")
    counts = Counter(bucket(r.score) for r in records)
    thin = {b: counts[b] for b in range(5) if counts[b] < per_bucket}
    assert not thin, f"{name}: buckets with fewer than {per_bucket} rows: {thin}"
    # one decimal, as in the SemEval gold files
    assert all(round(r.score, 1) == r.score for r in records)


def test_validation_sts_is_disjoint_from_training():
    val = load("val/sts.jsonl", "sts")
    assert len(val) == 40
    train = load("sts_general.jsonl", "sts")
    sentences = lambda records: {r.query for r in records} | {r.positives[0] for r in records}  # noqa: E731
    assert not sentences(val) & sentences(train)


def test_beir_validation_is_consistent():
    corpus = load_jsonl(VAL_IR / "corpus.jsonl")
    queries = load_jsonl(VAL_IR / "queries.jsonl")
    assert all(set(d) == {"_id", "title", "text"} and d["text"].strip() for d in corpus)
    assert all(set(q) == {"_id", "text"} and q["text"].strip() for q in queries)
    corpus_ids, query_ids = [d["_id"] for d in corpus], [q["_id"] for q in queries]
    assert len(set(corpus_ids)) == len(corpus_ids) and len(set(query_ids)) == len(query_ids)
    assert len(queries) == 30 and 110 <= len(corpus) <= 130

    with (VAL_IR / "qrels" / "dev.tsv").open(encoding="utf-8", newline="") as fh:
        rows = list(csv.reader(fh, delimiter="\t"))
    assert rows[0] == ["query-id", "corpus-id", "score"]
    judged = rows[1:]
    assert all(len(row) == 3 for row in judged)
    assert {q for q, _, _ in judged} <= set(query_ids)
    assert {d for _, d, _ in judged} <= set(corpus_ids)
    assert {int(s) for _, _, s in judged} <= {1, 2}
    per_query = Counter(q for q, _, _ in judged)
    assert set(per_query) == set(query_ids), "every query needs at least one relevant document"
    assert max(per_query.values()) <= 2
    # distractors: most documents are relevant to no query
    assert len(corpus) - len({d for _, d, _ in judged}) >= len(corpus) // 2


def test_validation_ir_is_disjoint_from_training():
    train = load("ir_support.jsonl", "ir") + load("ir_knowledge.jsonl", "ir")
    train_queries = {r.query.casefold() for r in train}
    train_passages = {p for r in train for p in r.positives + r.negatives}
    val_queries = {q["text"].casefold() for q in load_jsonl(VAL_IR / "queries.jsonl")}
    assert not val_queries & train_queries
    assert not {d["text"] for d in load_jsonl(VAL_IR / "corpus.jsonl")} & train_passages


def test_project_readers_accept_the_files_as_configured():
    """configs/data/example.yaml and configs/eval/example.yaml read these files with these readers."""
    from codiemb.data.readers import read_dataset

    for name, (task, minimum) in TRAIN_FILES.items():
        result = read_dataset("jsonl", str(EXAMPLE / name), name=name, task=task, score_range=(0, 5))
        assert len(result.records) >= minimum and not result.skipped
    beir = read_dataset("beir", str(VAL_IR), name="example_ir", task="ir", split="dev")
    assert len(beir.records) == 30 and not beir.skipped
