"""Teacher scores (``pos_scores`` / ``neg_scores``) from JSONL through the record store to the batch."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pytest
import torch
from transformers import AutoTokenizer

from codiemb.data.collator import Collator
from codiemb.data.datamodule import CoDiEmbDataModule
from codiemb.data.fastjsonl import jsonl_chunks
from codiemb.data.readers.base import RowPolicy
from codiemb.data.readers.unified import read_jsonl
from codiemb.data.schema import Record
from codiemb.errors import DataError
from codiemb.models.resolve import bundled_minilm_path

TOKENIZER = AutoTokenizer.from_pretrained(bundled_minilm_path())
NEG_INF = float("-inf")

# Hand-built: every passage's teacher score is unique, so a batch's scores show which passage they belong to.
ROWS = [
    {"query": "q0", "positives": ["p0a", "p0b", "p0c"], "negatives": ["n0a", "n0b", "n0c", "n0d"],
     "pos_scores": [10.0, 11.0, 12.0], "neg_scores": [1.0, 2.0, 3.0, 4.0]},
    {"query": "q1", "positives": ["p1a"], "negatives": ["n1a", "n1b"], "pos_scores": [20], "neg_scores": [5, -6]},
    {"query": "q2", "positives": ["p2a"], "negatives": ["n2a"]},  # no teacher scores
    {"query": "q3", "positives": ["p3a"], "pos_scores": [30.5]},  # no negatives: neg_scores may be left out
    {"query": "q4", "positives": ["p4a"], "negatives": ["n4a"], "pos_scores": None, "neg_scores": None},
]
SCORE_OF = {"p0a": 10.0, "p0b": 11.0, "p0c": 12.0, "n0a": 1.0, "n0b": 2.0, "n0c": 3.0, "n0d": 4.0,
            "p1a": 20.0, "n1a": 5.0, "n1b": -6.0, "p3a": 30.5}


def write_rows(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def datamodule(tmp_path: Path, path: Path, **options) -> CoDiEmbDataModule:
    dm = CoDiEmbDataModule([{"name": "d", "task": "ir", "path": str(path)}],
                           **{"num_workers": 0, "ir_batch_size": 2, "sts_batch_size": 2,
                              "cache_dir": str(tmp_path / "cache"), **options})
    dm.load()
    return dm


def decode(tokens) -> list[str]:
    return [TOKENIZER.decode(ids, skip_special_tokens=True) for ids in tokens["input_ids"]]


def test_store_records_carry_the_scores_the_row_reader_gives(tmp_path):
    # line 1 always goes to the row-by-row reader; the rows after it take the vectorised path
    path = write_rows(tmp_path / "a.jsonl", ROWS + ROWS)
    expected = read_jsonl(str(path), name="d", task="ir").records
    assert expected[0].pos_scores == (10.0, 11.0, 12.0) and expected[3].neg_scores == ()
    assert list(datamodule(tmp_path, path).dataset.records()) == expected
    got = list(datamodule(tmp_path, path).dataset.records())
    assert [r.pos_scores for r in got[5:]] == [(10.0, 11.0, 12.0), (20.0,), None, (30.5,), None]
    assert [r.neg_scores for r in got[5:]] == [(1.0, 2.0, 3.0, 4.0), (5.0, -6.0), None, (), None]
    assert all(type(s) is float for r in got if r.pos_scores for s in r.pos_scores + r.neg_scores)


def test_the_fast_path_accepts_rows_with_scores(tmp_path):
    """Not everything routed to Python: the score columns come out of pyarrow's tables."""
    path = write_rows(tmp_path / "a.jsonl", ROWS * 3)
    tables = [c for c in jsonl_chunks(str(path), name="d", policy=RowPolicy("raise"), task="ir")
              if isinstance(c, pa.Table)]
    assert sum(t.num_rows for t in tables) == len(ROWS) * 3 - 1
    assert {"pos_scores", "neg_scores"} <= set(tables[0].column_names)


def teacher_matrix_expected(batch, records: list[Record]) -> torch.Tensor:
    """The collator lays passages out record by record: walk them, giving each its owner's teacher score."""
    passages = decode(batch["passages"])
    expected = torch.full((len(records), len(passages)), NEG_INF)
    column = 0
    for i, record in enumerate(records):
        own = set(record.positives) | set(record.negatives)
        while column < len(passages) and passages[column] in own:
            if record.pos_scores is not None:
                expected[i, column] = SCORE_OF[passages[column]]
            column += 1
    assert column == len(passages)
    return expected


@pytest.mark.parametrize("fixed_group_size", [False, True])
def test_the_batch_carries_each_sampled_passages_own_score(tmp_path, fixed_group_size):
    path = write_rows(tmp_path / "a.jsonl", ROWS)
    records = list(datamodule(tmp_path, path).dataset.records())
    collate = Collator(TOKENIZER, max_positives=2, num_negatives=3, seed=3, fixed_group_size=fixed_group_size)
    for position in range(5):  # several draws: positives and negatives are sampled
        batch = collate([(position, r) for r in records])
        scores = batch["teacher_scores"]
        assert scores.dtype == torch.float32 and scores.shape == batch["positive_mask"].shape
        assert torch.equal(scores, teacher_matrix_expected(batch, records))
        # the hand-built view: every finite score is the passage's own, in its owner's row only
        passages = decode(batch["passages"])
        for i, j in (scores > NEG_INF).nonzero().tolist():
            assert passages[j] in records[i].positives + records[i].negatives
            assert scores[i, j].item() == SCORE_OF[passages[j]]
        assert (scores[2] == NEG_INF).all() and (scores[4] == NEG_INF).all()  # rows without teacher scores


def test_sampled_passages_are_unchanged_by_the_scores():
    """The collator draws indices now; the passages drawn for a seed are the ones it drew before (texts)."""
    record = Record("ir", "q", ("a", "b", "c"), tuple(f"n{i}" for i in range(10)), dataset="d")
    scored = Record("ir", "q", ("a", "b", "c"), tuple(f"n{i}" for i in range(10)), dataset="d",
                    pos_scores=(1.0, 2.0, 3.0), neg_scores=tuple(float(i) for i in range(10)))
    collate = Collator(TOKENIZER, num_negatives=3, max_positives=2, seed=1)
    first, second = collate([(4, record)]), collate([(4, scored)])
    assert decode(first["passages"]) == decode(second["passages"])
    assert "teacher_scores" not in first


def test_a_batch_without_any_teacher_score_has_no_teacher_scores():
    records = [Record("ir", "q", ("a",), ("b",), dataset="d")]
    assert "teacher_scores" not in Collator(TOKENIZER)([(0, r) for r in records])


# ---------------------------------------------------------------- wrong rows: the same error on both paths
BAD = [
    ({"neg_scores": [1.0]}, "field 'neg_scores': expected 2 numbers (one per negative), got 1"),
    ({"pos_scores": [1.0, 2.0]}, "field 'pos_scores': expected 1 number (one per positive), got 2"),
    ({"pos_scores": None}, "field 'pos_scores': missing, but 'neg_scores' is given"),
    ({"neg_scores": None}, "field 'neg_scores': missing, but 'pos_scores' is given"),
    ({"neg_scores": [1.0, None]}, "field 'neg_scores[1]': expected a number, got NoneType"),
    ({"pos_scores": "9"}, "field 'pos_scores': expected a list of numbers, got str"),
]
GOOD = {"query": "q", "positives": ["p"], "negatives": ["n1", "n2"], "pos_scores": [1.0], "neg_scores": [0.5, 0.25]}


@pytest.mark.parametrize(("change", "message"), BAD)
@pytest.mark.parametrize("route", ["fast", "python"])
def test_a_wrong_score_row_names_file_line_and_field(tmp_path, change, message, route):
    bad = {**GOOD, **change}
    if route == "python":  # a \u escape sends the line to the row-by-row reader
        bad["query"] = "caf\u00e9"
        line = json.dumps(bad, ensure_ascii=True)
        assert "\\u00e9" in line
    else:
        line = json.dumps(bad)
    rows = [GOOD, GOOD, GOOD, line, GOOD]
    path = write_rows(tmp_path / "a.jsonl", rows)
    with pytest.raises(DataError) as info:
        datamodule(tmp_path, path)
    assert str(info.value).startswith(f"{path}, line 4, {message}")
    with pytest.raises(DataError) as reader:  # the row-by-row reader says the same
        read_jsonl(str(path), name="d", task="ir")
    assert str(reader.value) == str(info.value)
    dm = datamodule(tmp_path, path, on_error="skip")
    assert [r.pos_scores for r in dm.dataset.records()] == [(1.0,)] * 4


def test_non_finite_scores_are_refused(tmp_path):
    # Python's json reads NaN / Infinity; schema.py refuses them (pyarrow refuses the block: Python decides)
    rows = [GOOD, GOOD, '{"query": "q", "positives": ["p"], "pos_scores": [NaN]}']
    path = write_rows(tmp_path / "a.jsonl", rows)
    with pytest.raises(DataError, match=r"line 3, field 'pos_scores\[0\]': expected a finite number, got nan"):
        datamodule(tmp_path, path)
