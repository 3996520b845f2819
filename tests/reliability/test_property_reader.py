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
# Lines that break Python itself rather than the schema: deep nesting (RecursionError), integers past
# sys.get_int_max_str_digits() (ValueError), scores too big for a float (OverflowError), a byte-order mark.
extreme = st.sampled_from([b"[" * 100_000, b'{"x": ' + b"[" * 5_000 + b"]" * 5_000 + b"}",
                           b'{"query": "a", "positives": ["b"], "score": 1' + b"0" * 400 + b"}",
                           b'{"query": "a", "positives": ["b"], "id": 1' + b"0" * 5_000 + b"}",
                           b'{"query": "a", "positives": ["b"], "score": -1e400}', b'{"query": 1' + b"0" * 400 + b"}",
                           b"\xef\xbb\xbf" + b'{"query": "a", "positives": ["b"]}', b'{"query": "\\u0000\\u200b"}'])
lines = st.one_of(rows.map(lambda r: json.dumps(r).encode("utf-8")),  # json.dumps writes NaN/Infinity literals
                  values.map(lambda v: json.dumps(v).encode("utf-8")),
                  st.binary(max_size=40), extreme,
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
            assert error.source == str(path)
            assert (on_error == "raise" and error.line is not None) or file_level(error)
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


def file_level(error: DataError) -> bool:
    """Errors about the whole file (a UTF-16/32 byte-order mark at its start) raise under both policies."""
    return error.line is None and "not UTF-8; convert it" in str(error)


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


# ---------------------------------------------------------------- the BEIR and query/pos/neg readers
ids = st.one_of(st.sampled_from(["d1", "d2", "q1", 7]), values)


def beir_row(text_key: str):
    return st.fixed_dictionaries({}, optional={"_id": ids, text_key: st.one_of(texts, values), "title": st.one_of(texts, values)})


beir_lines = st.one_of(beir_row("text").map(lambda r: json.dumps(r).encode("utf-8")), lines)
qrels_lines = st.one_of(st.sampled_from([b"q1\td1\t1", b"q1\td2\t0", b"q1\td1\t1e400", b"q1\td1\tnan", b"q1\td1",
                                         b"q1\td1\t" + b"9" * 5000, b"\xff\t\t"]), st.binary(max_size=20))


@PROPERTY
@given(corpus=st.lists(beir_lines, min_size=1, max_size=4), queries=st.lists(beir_lines, min_size=1, max_size=3),
       qrels=st.lists(qrels_lines, min_size=1, max_size=3), on_error=ON_ERROR)
def test_beir_folder_loads_or_raises_data_error(corpus, queries, qrels, on_error):
    from codiemb.data.readers.beir import read_beir

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "qrels").mkdir()
        for name, content in (("corpus.jsonl", corpus), ("queries.jsonl", queries)):
            (root / name).write_bytes(b"\n".join(line.replace(b"\n", b" ") for line in content) + b"\n")
        (root / "qrels" / "train.tsv").write_bytes(b"query-id\tcorpus-id\tscore\n" + b"\n".join(
            line.replace(b"\n", b" ") for line in qrels) + b"\n")
        try:
            result = read_beir(str(root), name="b", on_error=on_error)
        except DataError as error:
            assert error.source is not None and error.source.startswith(tmp)
            event("DataError")
            return
    event("records loaded" if result.records else "nothing loaded")
    assert all(r.task == "ir" and r.query.strip() and r.positives for r in result.records)


qpn_rows = st.fixed_dictionaries({}, optional={"query": st.one_of(words, values), "pos": st.one_of(st.lists(words, max_size=2), values),
                                               "neg": st.one_of(st.lists(words, max_size=2), values),
                                               "qid": st.one_of(st.sampled_from(["a", "b", 1]), values),
                                               "neg_qids": st.one_of(st.lists(st.sampled_from(["a", "b", 1, "zz"]), max_size=2), values)})
qpn_lines = st.one_of(qpn_rows.map(lambda r: json.dumps(r).encode("utf-8")), lines)


@PROPERTY
@given(lines=st.lists(qpn_lines, min_size=1, max_size=5), on_error=ON_ERROR)
def test_qpn_jsonl_loads_or_raises_data_error(collator, lines, on_error):
    from codiemb.data.readers.qpn import read_qpn_jsonl

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "qpn.jsonl"
        path.write_bytes(b"\n".join(line.replace(b"\n", b" ") for line in lines) + b"\n")
        try:
            result = read_qpn_jsonl(str(path), name="q", on_error=on_error)
        except DataError as error:
            assert error.source == str(path)
            assert (on_error == "raise" and error.line is not None) or file_level(error)
            event("DataError")
            return
    event("records loaded" if result.records else "nothing loaded")
    if result.records:
        assert collator(list(enumerate(result.records)))["size"] == len(result.records)


# ---------------------------------------------------------------- the record store's batched JSONL path
ascii_word = st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=10)
ascii_text = st.one_of(ascii_word, ascii_word, ascii_word, st.sampled_from(["", " ", "a b", "x"]))
# Mostly valid rows in plain ASCII (what the batched path accepts), each field sometimes wrong
ascii_rows = st.fixed_dictionaries(
    {"query": st.one_of(*[ascii_word] * 8, ascii_text, st.none()),
     "positives": st.one_of(*[st.lists(ascii_word, min_size=1, max_size=3)] * 8, st.lists(ascii_text, max_size=2),
                            st.none()),
     "score": st.one_of(*[st.floats(0, 5)] * 6, st.floats(-1, 6), st.integers(-1, 6), st.none())},
    optional={"negatives": st.one_of(*[st.lists(ascii_word, max_size=3)] * 6, st.lists(ascii_text, max_size=2),
                                     st.none()),
              "instruction": st.one_of(*[ascii_word] * 4, ascii_text, st.none()), "extra": st.integers(0, 9)})
ascii_rows = st.one_of(ascii_rows, ascii_rows, ascii_rows.flatmap(  # with a task field, mostly the declared one
    lambda row: st.sampled_from(["ir", "sts", "ir", "sts", "IR", None]).map(lambda t: {**row, "task": t})))
ascii_lines = ascii_rows.map(lambda r: json.dumps(r).encode())
store_lines = st.one_of(*[ascii_lines] * 20, lines, near_valid.map(lambda r: json.dumps(r, ensure_ascii=False).encode("utf-8", "surrogatepass")),
                        near_valid.map(lambda r: json.dumps(r, ensure_ascii=False).encode("utf-8", "surrogatepass")),
                        st.just(b""), st.just(b"   "), st.just(b'{"query": "a", "positives": ["b"], "task": null}'),
                        st.just(b'{"query": "caf\xe9", "positives": ["b"]}'),  # pyarrow keeps invalid UTF-8
                        st.just(b"null"))  # pyarrow 26 segfaults on a line holding only null: it must never see one


@PROPERTY
@given(lines=st.lists(store_lines, min_size=1, max_size=12), task=st.sampled_from([None, "ir", "sts", "ir", "sts"]),
       on_error=st.sampled_from(["skip", "skip", "raise"]),
       block=st.sampled_from([64, 1 << 20]))
def test_the_batched_store_path_keeps_exactly_what_the_row_reader_keeps(lines, task, on_error, block):
    """pyarrow + vectorised checks (data/fastjsonl.py) must accept, reject and count exactly like read_jsonl."""
    import codiemb.data.fastjsonl as fast
    from codiemb.data.readers.base import RowPolicy
    from codiemb.data.schema import Record

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "random.jsonl"
        path.write_bytes(b"\n".join(line.replace(b"\n", b" ") for line in lines) + b"\n")
        try:
            expected, expected_error = read_jsonl(str(path), name="r", task=task, on_error=on_error), None
        except DataError as error:
            expected, expected_error = None, str(error)
        saved, fast.BLOCK_BYTES = fast.BLOCK_BYTES, block
        policy, got, error = RowPolicy(on_error), [], None
        try:
            for chunk in fast.jsonl_chunks(str(path), name="r", policy=policy, task=task):
                if isinstance(chunk, list):
                    got += chunk
                    continue
                event("fast rows")
                got += [Record(task=r["task"], query=r["query"], positives=tuple(r["positives"]),
                               negatives=tuple(r["negatives"] or ()), score=r["score"], instruction=r["instruction"],
                               dataset="r") for r in chunk.to_pylist()]
        except DataError as exc:
            error = str(exc)
        finally:
            fast.BLOCK_BYTES = saved
    assert error == expected_error
    if expected is not None:
        assert got == expected.records and policy.skipped == expected.skipped
