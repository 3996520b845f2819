"""Teacher scores in the data (FlagEmbedding layout): ``pos_scores`` / ``neg_scores`` beside the passages."""

from __future__ import annotations

import json
import math

import pytest

from codiemb.data.readers.unified import read_jsonl
from codiemb.data.schema import parse_record
from codiemb.errors import DataError

ROW = {"query": "what is dna", "positives": ["dna is a molecule"],
       "negatives": ["rna is a molecule", "dna tests", "a helix"],
       "pos_scores": [9.5], "neg_scores": [3, 1.25, -2.0]}
BOTH = "teacher scores need one number per positive and per negative"


def parse(row, **kwargs):
    return parse_record(row, dataset="d", source="train.jsonl", line=7, task="ir", **kwargs)


def error_of(row) -> str:
    with pytest.raises(DataError) as info:
        parse(row)
    return str(info.value)


def test_scores_are_kept_as_floats_one_per_passage():
    record = parse(ROW)
    assert record.pos_scores == (9.5,) and record.neg_scores == (3.0, 1.25, -2.0)
    assert all(type(s) is float for s in record.pos_scores + record.neg_scores)


def test_flagembedding_keys_pos_neg_and_scores():
    row = {"query": "q", "pos": ["p1", "p2"], "neg": ["n1"], "pos_scores": [0.9, 0.8], "neg_scores": [0.1],
           "prompt": "ignored", "type": "normal"}
    record = parse(row)
    assert record.positives == ("p1", "p2") and record.pos_scores == (0.9, 0.8) and record.neg_scores == (0.1,)


def test_absent_or_null_scores_are_none():
    row = {k: v for k, v in ROW.items() if not k.endswith("_scores")}
    assert parse(row).pos_scores is None and parse(row).neg_scores is None
    assert parse({**row, "pos_scores": None, "neg_scores": None}).neg_scores is None


def test_no_negatives_needs_no_negative_scores():
    row = {"query": "q", "positives": ["p"], "pos_scores": [1.0]}
    assert parse(row).neg_scores == ()
    assert parse({**row, "negatives": [], "neg_scores": []}).neg_scores == ()


@pytest.mark.parametrize(("change", "message"), [
    ({"neg_scores": [3, 1.25]}, "field 'neg_scores': expected 3 numbers (one per negative), got 2"),
    ({"pos_scores": [1.0, 2.0]}, "field 'pos_scores': expected 1 number (one per positive), got 2"),
    ({"pos_scores": []}, "field 'pos_scores': expected 1 number (one per positive), got 0"),
    ({"neg_scores": "3, 1, 2"}, "field 'neg_scores': expected a list of numbers, got str"),
    ({"pos_scores": 9.5}, "field 'pos_scores': expected a list of numbers, got float"),
    ({"neg_scores": {"a": 1}}, "field 'neg_scores': expected a list of numbers, got dict"),
    ({"neg_scores": [3, "1.25", 2]}, "field 'neg_scores[1]': expected a number, got str"),
    ({"neg_scores": [3, True, 2]}, "field 'neg_scores[1]': expected a number, got bool"),
    ({"neg_scores": [3, None, 2]}, "field 'neg_scores[1]': expected a number, got NoneType"),
    ({"pos_scores": [[9.5]]}, "field 'pos_scores[0]': expected a number, got list"),
    ({"neg_scores": [3, 1, math.nan]}, "field 'neg_scores[2]': expected a finite number, got nan"),
    ({"neg_scores": [math.inf, 1, 2]}, "field 'neg_scores[0]': expected a finite number, got inf"),
    ({"pos_scores": [-math.inf]}, "field 'pos_scores[0]': expected a finite number, got -inf"),
    ({"pos_scores": [10 ** 400]}, "field 'pos_scores[0]': expected a finite number, got 1000000000...(401 digits)"),
    ({"neg_scores": None}, f"field 'neg_scores': missing, but 'pos_scores' is given: {BOTH}"),
    ({"pos_scores": None}, f"field 'pos_scores': missing, but 'neg_scores' is given: {BOTH}"),
    ({"negatives": [], "neg_scores": [1.0]}, "field 'neg_scores': expected 0 numbers (one per negative), got 1"),
])
def test_bad_scores_name_file_line_and_field(change, message):
    row = {k: v for k, v in {**ROW, **change}.items() if v is not None}
    assert error_of(row) == f"train.jsonl, line 7, {message}"


def test_through_the_jsonl_reader_raise_and_skip(tmp_path):
    bad = {**ROW, "neg_scores": [1.0, 2.0]}
    path = tmp_path / "kd.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in [ROW, bad, ROW]))
    with pytest.raises(DataError) as info:
        read_jsonl(str(path), name="kd", task="ir")
    assert str(info.value) == f"{path}, line 2, field 'neg_scores': expected 3 numbers (one per negative), got 2"
    result = read_jsonl(str(path), name="kd", task="ir", on_error="skip")
    assert [r.neg_scores for r in result.records] == [(3.0, 1.25, -2.0)] * 2
    assert dict(result.skipped) == {"bad neg_scores": 1}


def test_json_nan_and_infinity_literals_are_refused(tmp_path):
    path = tmp_path / "kd.jsonl"
    path.write_text('{"query": "q", "positives": ["p"], "negatives": ["n"], "pos_scores": [1], '
                    '"neg_scores": [NaN]}\n')
    with pytest.raises(DataError, match=r"line 1, field 'neg_scores\[0\]': expected a finite number, got nan$"):
        read_jsonl(str(path), name="kd", task="ir")
