"""Property: any line of bytes fed to the JSONL reader either loads, or fails with a :class:`DataError`, and
whatever loads also collates into a batch. Nothing else may escape (no KeyError, TypeError, tokenizer panic)."""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from codiemb.data.collator import Collator
from codiemb.data.readers.unified import read_jsonl
from codiemb.errors import CodiembError, DataError

# Text that stresses tokenizers and validators: whitespace-only, control characters, combining marks, emoji.
tricky = st.sampled_from(["", " ", "\t\n", "\u200b", "e\u0301", "🙂" * 3, "{x}", "a\x00b", "ﬁ", "İ",
                          "caf\ud800"])  # the last is a lone surrogate, written to JSON as "\\ud800"
texts = st.one_of(st.text(max_size=30), tricky)
scalars = st.one_of(st.none(), st.booleans(), st.integers(-10, 10), st.floats(allow_nan=True, allow_infinity=True),
                    texts)
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                       st.dictionaries(st.text(max_size=5), inner, max_size=3)),
                      max_leaves=8)
# Each known field is absent, plausible, or anything at all.
FIELDS = {
    "task": st.sampled_from(["ir", "sts", "IR", "", "mixed"]),
    "query": texts,
    "positives": st.one_of(texts, st.lists(texts, max_size=3)),
    "pos": st.lists(texts, max_size=3),
    "negatives": st.lists(texts, max_size=3),
    "score": st.one_of(st.floats(-1, 6), st.just(math.nan), st.integers(-2, 7)),
    "instruction": texts,
}
rows = st.fixed_dictionaries({}, optional={name: st.one_of(strategy, values) for name, strategy in FIELDS.items()})
# Rows that are valid or one slip away from it: required fields present, mostly plausible values.
words = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cc", "Cs"]), min_size=1, max_size=20)
words = st.one_of(words, words, tricky)
plausible = {"task": st.sampled_from(["ir", "sts"]), "query": words, "positives": st.lists(words, min_size=1, max_size=3),
             "score": st.floats(0, 5)}
near_valid = st.fixed_dictionaries(
    {name: st.one_of(good, good, good, FIELDS[name]) for name, good in plausible.items()},
    optional={"negatives": st.lists(words, max_size=3), "instruction": words})
rows = st.one_of(rows, near_valid)
lines = st.one_of(rows.map(lambda r: json.dumps(r).encode("utf-8")),  # json.dumps writes NaN/Infinity literals
                  values.map(lambda v: json.dumps(v).encode("utf-8")),
                  st.binary(max_size=40),
                  rows.map(lambda r: json.dumps(r, ensure_ascii=False).encode("utf-8", "surrogatepass")[:-3]))  # cut short


@pytest.fixture(scope="module")
def collator():
    from transformers import AutoTokenizer

    from codiemb.models.resolve import bundled_minilm_path

    return Collator(AutoTokenizer.from_pretrained(str(bundled_minilm_path())), query_max_length=16,
                    passage_max_length=16, max_positives=2, num_negatives=1)


def check_load_or_data_error(collator, lines: list[bytes], task: str | None, on_error: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "random.jsonl"
        path.write_bytes(b"\n".join(line.replace(b"\n", b" ") for line in lines) + b"\n")
        try:
            result = read_jsonl(str(path), name="random", task=task, on_error=on_error)
            event("records loaded" if result.records else "nothing loaded")
        except DataError as error:
            assert on_error == "raise" and error.source == str(path) and error.line is not None
            event("DataError")
            return
    for record in result.records:  # what loads is what the schema promises
        assert record.task in ("ir", "sts") and record.query.strip() and record.positives
        if record.task == "sts":
            assert 0.0 <= record.normalized_score <= 1.0 and not math.isnan(record.score)
    for task_name in ("ir", "sts"):  # the sampler never mixes tasks (except task_mix=mixed, covered below)
        same_task = [(i, r) for i, r in enumerate(result.records) if r.task == task_name]
        if same_task:
            batch = collator(same_task)
            assert batch["task"] == task_name and batch["size"] == len(same_task)
            assert batch["query"]["input_ids"].shape[0] == len(same_task)
    if result.records:
        assert collator(list(enumerate(result.records)))["size"] == len(result.records)


PROPERTY = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
TASKS = st.sampled_from([None, "ir", "sts"])
ON_ERROR = st.sampled_from(["raise", "skip"])


@PROPERTY
@given(lines=st.lists(lines, min_size=1, max_size=4), task=TASKS, on_error=ON_ERROR)
def test_any_bytes_load_or_raise_data_error(collator, lines, task, on_error):
    check_load_or_data_error(collator, lines, task, on_error)


@PROPERTY
@given(rows=st.lists(near_valid, min_size=1, max_size=6), task=TASKS, on_error=ON_ERROR)
def test_near_valid_rows_load_and_collate_or_raise_data_error(collator, rows, task, on_error):
    check_load_or_data_error(collator, [json.dumps(row).encode("utf-8") for row in rows], task, on_error)


def test_the_project_error_type_is_what_escapes(tmp_path):
    """The property above is only meaningful if DataError is the project's own type, distinct from ValueError."""
    path = tmp_path / "x.jsonl"
    path.write_bytes(b"\xff\n")
    with pytest.raises(CodiembError) as info:
        read_jsonl(str(path), name="x")
    assert type(info.value) is DataError
