"""Every kind of bad input fails while loading with the file, line and field in the message (``on_error=raise``),
or is dropped and counted (``on_error=skip``). Each message is asserted in full: it is what the user sees."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from codiemb.data.datamodule import CoDiEmbDataModule
from codiemb.data.readers.beir import load_beir, read_beir
from codiemb.data.readers.qpn import read_qpn_jsonl
from codiemb.data.readers.unified import read_jsonl
from codiemb.errors import ConfigError, DataError

GOOD_IR = {"query": "how do I reset my router", "positives": ["hold the reset button for ten seconds"]}
GOOD_STS = {"query": "a man plays a guitar", "positives": ["someone plays an instrument"], "score": 3.5}


def write_lines(path: Path, lines: list) -> Path:
    """Write rows (dicts are dumped as JSON, ``str``/``bytes`` are written verbatim), one per line."""
    with path.open("wb") as fh:
        for line in lines:
            if isinstance(line, dict):
                line = json.dumps(line)
            fh.write((line.encode("utf-8") if isinstance(line, str) else line) + b"\n")
    return path


# (task, bad line placed on line 2 after one good row, expected "field: message" suffix after "<path>, line 2")
ROW_CASES = {
    "malformed_json": ("ir", '{"query": "a", "positives": ["b"]', ": malformed JSON: Expecting ',' delimiter (column 34)"),
    "truncated_json": ("ir", '{"query": "a", ', ": malformed JSON: Expecting property name enclosed in double quotes "
                       "(column 16)"),
    "not_an_object": ("ir", '["a", "b"]', ": expected a JSON object, got list"),
    "deep_nesting": ("ir", "[" * 100_000, ": malformed JSON: nested too deeply"),
    "missing_query": ("ir", {"positives": ["b"]}, ", field 'query': missing required field"),
    "query_wrong_type": ("ir", {"query": 5, "positives": ["b"]}, ", field 'query': expected a string, got int"),
    "positives_wrong_type": ("ir", {"query": "a", "positives": {"b": 1}},
                             ", field 'positives': expected a list of strings, got dict"),
    "positive_wrong_type": ("ir", {"query": "a", "positives": ["b", None]},
                            ", field 'positives[1]': expected a string, got NoneType"),
    "ir_empty_positives": ("ir", {"query": "a", "positives": []}, ", field 'positives': needs at least one positive"),
    "ir_no_positives": ("ir", {"query": "a", "negatives": ["n"]}, ", field 'positives': needs at least one positive"),
    "empty_query": ("ir", {"query": "", "positives": ["b"]}, ", field 'query': empty or whitespace-only text"),
    "whitespace_negative": ("ir", {"query": "a", "positives": ["b"], "negatives": [" \t\n"]},
                           ", field 'negatives[0]': empty or whitespace-only text"),
    "lone_surrogate": ("ir", '{"query": "caf\\ud800", "positives": ["b"]}',
                       ", field 'query': not valid Unicode (surrogates not allowed at character 3)"),
    "instruction_lone_surrogate": ("ir", '{"query": "a", "positives": ["b"], "instruction": "\\udfff x"}',
                                   ", field 'instruction': not valid Unicode (surrogates not allowed at character 0)"),
    "instruction_wrong_type": ("ir", {"query": "a", "positives": ["b"], "instruction": ["x"]},
                               ", field 'instruction': expected a string"),
    "non_utf8_bytes": ("ir", b'{"query": "caf\xe9", "positives": ["b"]}',
                       ": not valid UTF-8 (invalid continuation byte at byte 14)"),
    "task_mismatch": ("ir", {"task": "sts", "query": "a", "positives": ["b"], "score": 1},
                      ", field 'task': row says task 'sts' but dataset 'toy' is declared 'ir'"),
    "sts_score_missing": ("sts", {"query": "a", "positives": ["b"]}, ", field 'score': an STS row needs a score"),
    "sts_score_string": ("sts", {"query": "a", "positives": ["b"], "score": "3.5"},
                         ", field 'score': expected a number, got str"),
    "sts_score_bool": ("sts", {"query": "a", "positives": ["b"], "score": True},
                       ", field 'score': expected a number, got bool"),
    "sts_score_above_range": ("sts", {"query": "a", "positives": ["b"], "score": 5.5},
                              ", field 'score': score 5.5 is outside the declared range [0, 5]"),
    "sts_score_below_range": ("sts", {"query": "a", "positives": ["b"], "score": -1},
                              ", field 'score': score -1 is outside the declared range [0, 5]"),
    "sts_score_nan": ("sts", '{"query": "a", "positives": ["b"], "score": NaN}', ", field 'score': score is NaN"),
    "sts_score_infinite": ("sts", '{"query": "a", "positives": ["b"], "score": Infinity}',
                           ", field 'score': score inf is outside the declared range [0, 5]"),
    # numbers too big for Python's int/float conversions used to escape as ValueError / OverflowError
    "integer_5000_digits": ("ir", '{"query": "a", "positives": ["b"], "id": 1' + "0" * 4999 + "}",
                            ": malformed JSON: an integer with more than 4300 digits"),
    "score_10_pow_400": ("sts", '{"query": "a", "positives": ["b"], "score": 1' + "0" * 400 + "}",
                         ", field 'score': score 1000000000...(401 digits) is outside the declared range [0, 5]"),
    "score_1e400": ("sts", '{"query": "a", "positives": ["b"], "score": 1e400}',
                    ", field 'score': score inf is outside the declared range [0, 5]"),
    "query_only_nul": ("ir", {"query": "\x00\x00", "positives": ["b"]},
                       ", field 'query': only NUL or zero-width characters (no visible text)"),
    "query_only_zero_width": ("ir", {"query": "\u200b\u200d\ufeff\u2060", "positives": ["b"]},
                              ", field 'query': only NUL or zero-width characters (no visible text)"),
    "sts_two_texts": ("sts", {"query": "a", "positives": ["b", "c"], "score": 1},
                      ", field 'positives': an STS row pairs the query with exactly one text, got 2"),
}


@pytest.mark.parametrize("case", sorted(ROW_CASES))
def test_bad_row_raises_with_file_line_and_field(tmp_path, case):
    task, bad, suffix = ROW_CASES[case]
    path = write_lines(tmp_path / "toy.jsonl", [GOOD_IR if task == "ir" else GOOD_STS, bad])
    with pytest.raises(DataError) as info:
        read_jsonl(str(path), name="toy", task=task)
    assert str(info.value) == f"{path}, line 2{suffix}"
    assert (info.value.source, info.value.line) == (str(path), 2)


@pytest.mark.parametrize("case", sorted(ROW_CASES))
def test_skip_drops_exactly_the_bad_row_and_counts_it_under_its_field(tmp_path, case):
    task, bad, suffix = ROW_CASES[case]
    good = GOOD_IR if task == "ir" else GOOD_STS
    path = write_lines(tmp_path / "toy.jsonl", [good, bad, good])
    result = read_jsonl(str(path), name="toy", task=task, on_error="skip")
    assert [r.query for r in result.records] == [good["query"]] * 2
    field = suffix.split("field '")[1].split("'")[0] if "field '" in suffix else None
    assert dict(result.skipped) == {f"bad {field}" if field else "malformed row": 1}


def test_score_range_that_is_empty_is_a_config_error(tmp_path):
    path = write_lines(tmp_path / "toy.jsonl", [GOOD_STS])
    with pytest.raises(ConfigError, match=r"^dataset 'toy': score_range \[5, 5\] is empty; set score_range: "
                                          r"\[min, max\] with min < max$"):
        read_jsonl(str(path), name="toy", task="sts", score_range=(5, 5))


def test_declared_range_is_used_for_the_check(tmp_path):
    path = write_lines(tmp_path / "toy.jsonl", [{**GOOD_STS, "score": 0.9}, {**GOOD_STS, "score": 1.5}])
    with pytest.raises(DataError, match=r"line 2, field 'score': score 1.5 is outside the declared range \[0, 1\]$"):
        read_jsonl(str(path), name="toy", task="sts", score_range=(0, 1))


# ---------------------------------------------------------------- datasets as a whole (the datamodule)
def datamodule(tmp_path: Path, rows_by_name: dict[str, tuple[str, list]], **options) -> CoDiEmbDataModule:
    specs = [{"name": name, "task": task, "format": "jsonl",
              "path": str(write_lines(tmp_path / f"{name}.jsonl", rows))}
             for name, (task, rows) in rows_by_name.items()]
    return CoDiEmbDataModule(specs, **{"num_workers": 0, "ir_batch_size": 2, "sts_batch_size": 2,
                                       "cache_dir": str(tmp_path / "cache"), **options})


def test_dataset_empty_after_skipping_stops_loading(tmp_path):
    dm = datamodule(tmp_path, {"bad": ("ir", [{"query": "a"}, "{oops"])}, on_error="skip")
    with pytest.raises(DataError) as info:
        dm.load()
    assert str(info.value) == f"{tmp_path / 'bad.jsonl'}: dataset 'bad' is empty after loading (2 rows skipped)"


def test_an_empty_file_is_an_empty_dataset(tmp_path):
    (tmp_path / "empty.jsonl").write_text("\n\n")
    dm = CoDiEmbDataModule([{"name": "empty", "task": "ir", "path": str(tmp_path / "empty.jsonl")}],
                           cache_dir=str(tmp_path / "cache"))
    with pytest.raises(DataError, match=r"empty.jsonl: dataset 'empty' is empty after loading \(0 rows skipped\)$"):
        dm.load()


def test_skip_reports_per_dataset_counts_at_the_end_of_loading(tmp_path, caplog):
    dm = datamodule(tmp_path, {"ir_set": ("ir", [GOOD_IR, {"query": "a", "positives": []}, GOOD_IR, "{"]),
                               "sts_set": ("sts", [GOOD_STS, {**GOOD_STS, "score": 9}, GOOD_STS]),
                               "clean": ("ir", [GOOD_IR, GOOD_IR])}, on_error="skip")
    with caplog.at_level(logging.INFO, logger="codiemb.data.datamodule"):
        dm.load()
    assert {n: (i["rows"], i["skipped"]) for n, i in dm.load_report.items()} == {
        "ir_set": (2, {"bad positives": 1, "malformed row": 1}), "sts_set": (2, {"bad score": 1}), "clean": (2, {})}
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings[0] == ("skipped bad rows (data.on_error=skip): ir_set: 2 (bad positives: 1, malformed row: 1); "
                           "sts_set: 1 (bad score: 1)")
    assert warnings[1].startswith("suspicious rows")  # the same good row repeated: duplicates, kept and counted
    assert caplog.records[-1].levelno == logging.WARNING  # the reports come after every dataset was read


def test_raise_is_the_default_policy(tmp_path):
    dm = datamodule(tmp_path, {"ir_set": ("ir", [GOOD_IR, {"query": "a", "positives": []}])})
    with pytest.raises(DataError, match=r"ir_set.jsonl, line 2, field 'positives': needs at least one positive$"):
        dm.load()


def test_unknown_on_error_value_is_a_config_error(tmp_path):
    dm = datamodule(tmp_path, {"ir_set": ("ir", [GOOD_IR])}, on_error="ignore")
    with pytest.raises(ConfigError, match=r"^data.on_error must be one of \('raise', 'skip'\), got 'ignore'$"):
        dm.load()


def test_dataset_too_small_for_one_batch(tmp_path):
    dm = datamodule(tmp_path, {"ir_set": ("ir", [GOOD_IR] * 5), "sts_set": ("sts", [GOOD_STS] * 3)},
                    ir_batch_size=4, sts_batch_size=4)
    with pytest.raises(ConfigError) as info:
        dm.build_sampler()
    assert str(info.value) == ("dataset 'sts_set' has 3 rows but one sts step needs 4 (batch 4 x 1 ranks x 1 "
                               "accumulation); lower data.sts_batch_size or add data")


# ---------------------------------------------------------------- BEIR folders
def beir_folder(root: Path, corpus: list, queries: list, qrels: list[str]) -> Path:
    (root / "qrels").mkdir(parents=True)
    write_lines(root / "corpus.jsonl", corpus)
    write_lines(root / "queries.jsonl", queries)
    (root / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(f"{r}\n" for r in qrels))
    return root


def test_beir_duplicate_corpus_id(tmp_path):
    root = beir_folder(tmp_path / "b", [{"_id": "d1", "text": "x"}, {"_id": "d2", "text": "y"},
                                        {"_id": "d1", "text": "z"}], [{"_id": "q1", "text": "q"}], ["q1\td1\t1"])
    with pytest.raises(DataError) as info:
        read_beir(str(root), name="b")
    assert str(info.value) == f"{root / 'corpus.jsonl'}, line 3, field '_id': duplicate id 'd1'"


def test_beir_qrels_pointing_to_an_unknown_document(tmp_path):
    root = beir_folder(tmp_path / "b", [{"_id": "d1", "text": "x"}], [{"_id": "q1", "text": "q"}],
                       ["q1\td1\t1", "q1\td9\t1"])
    with pytest.raises(DataError) as info:
        read_beir(str(root), name="b")
    assert str(info.value) == f"{root / 'qrels' / 'train.tsv'}, line 3, field 'corpus-id': unknown corpus id 'd9'"


def test_beir_qrels_pointing_to_an_unknown_query(tmp_path):
    root = beir_folder(tmp_path / "b", [{"_id": "d1", "text": "x"}], [{"_id": "q1", "text": "q"}], ["q7\td1\t1"])
    with pytest.raises(DataError, match=r"train.tsv, line 2, field 'query-id': unknown query id 'q7'$"):
        load_beir(str(root), "train")


def test_beir_queries_without_a_relevant_document_are_counted_not_raised(tmp_path):
    root = beir_folder(tmp_path / "b", [{"_id": "d1", "text": "x"}],
                       [{"_id": "q1", "text": "q"}, {"_id": "q2", "text": "r"}], ["q1\td1\t1", "q2\td1\t0"])
    result = read_beir(str(root), name="b")
    assert [r.query for r in result.records] == ["q"] and dict(result.skipped) == {"no positive": 1}


def test_beir_non_utf8_corpus_is_a_data_error(tmp_path):
    root = beir_folder(tmp_path / "b", [{"_id": "d1", "text": "x"}, b'{"_id": "d2", "text": "caf\xe9"}'],
                       [{"_id": "q1", "text": "q"}], ["q1\td1\t1"])
    with pytest.raises(DataError, match=r"corpus.jsonl, line 2: not valid UTF-8"):
        read_beir(str(root), name="b")


# ---------------------------------------------------------------- encodings, paths, huge numbers in every reader
def test_utf8_bom_on_the_first_line_is_stripped(tmp_path):
    path = tmp_path / "bom.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(GOOD_IR).encode() + b"\n" + json.dumps(GOOD_IR).encode() + b"\n")
    assert [r.query for r in read_jsonl(str(path), name="bom", task="ir").records] == [GOOD_IR["query"]] * 2
    qpn = tmp_path / "bom_qpn.jsonl"
    qpn.write_bytes(b"\xef\xbb\xbf" + json.dumps({"query": "q", "pos": ["p"]}).encode() + b"\n")
    assert [r.query for r in read_qpn_jsonl(str(qpn), name="bom").records] == ["q"]
    root = beir_folder(tmp_path / "b", [{"_id": "d1", "text": "x"}], [{"_id": "q1", "text": "q"}], ["q1\td1\t1"])
    for name in ("corpus.jsonl", "queries.jsonl", "qrels/train.tsv"):
        (root / name).write_bytes(b"\xef\xbb\xbf" + (root / name).read_bytes())
    assert [(r.query, r.positives) for r in read_beir(str(root), name="b").records] == [("q", ("x",))]


@pytest.mark.parametrize("bom, name", [(b"\xff\xfe", "UTF-16 (little-endian)"), (b"\xfe\xff", "UTF-16 (big-endian)")])
def test_utf16_file_is_named_as_such(tmp_path, bom, name):
    path = tmp_path / "u16.jsonl"
    codec = "utf-16-le" if bom == b"\xff\xfe" else "utf-16-be"
    path.write_bytes(bom + (json.dumps(GOOD_IR) + "\n").encode(codec))
    for reader in (read_jsonl, read_qpn_jsonl):
        with pytest.raises(DataError) as info:
            reader(str(path), name="u16", task="ir", on_error="skip")
        assert str(info.value) == f"{path}: the file is {name}, not UTF-8; convert it (e.g. iconv -f UTF-16 -t UTF-8)"


def test_a_directory_given_as_a_file_says_so(tmp_path):
    from codiemb.data.readers.stsb import read_stsb

    for reader in (read_jsonl, read_qpn_jsonl, read_stsb):
        with pytest.raises(DataError) as info:
            reader(str(tmp_path), name="d")
        assert str(info.value) == f"{tmp_path}: is a directory; give the path of a file"
    with pytest.raises(DataError, match=r"nothing.jsonl: file not found$"):
        read_jsonl(str(tmp_path / "nothing.jsonl"), name="d")


BEIR_BAD_CORPUS_LINES = {
    "deep_nesting": ("[" * 100_000, ": malformed JSON: nested too deeply"),
    "integer_5000_digits": ('{"_id": "d2", "text": "y", "n": 1' + "0" * 4999 + "}",
                            ": malformed JSON: an integer with more than 4300 digits"),
    "text_not_a_string": ('{"_id": "d2", "text": 5}', ", field 'text': expected a string, got int"),
    "title_not_a_string": ('{"_id": "d2", "title": ["t"], "text": "y"}', ", field 'title': expected a string, got list"),
}


@pytest.mark.parametrize("case", sorted(BEIR_BAD_CORPUS_LINES))
def test_beir_corpus_rows_that_break_python_are_data_errors(tmp_path, case):
    bad, suffix = BEIR_BAD_CORPUS_LINES[case]
    root = beir_folder(tmp_path / "b", [{"_id": "d1", "text": "x"}, bad], [{"_id": "q1", "text": "q"}], ["q1\td1\t1"])
    for on_error in ("raise", "skip"):  # a broken corpus is an inconsistent folder: it raises under both
        with pytest.raises(DataError) as info:
            read_beir(str(root), name="b", on_error=on_error)
        assert str(info.value) == f"{root / 'corpus.jsonl'}, line 2{suffix}"


def test_beir_qrels_grade_too_large_is_a_data_error(tmp_path):
    root = beir_folder(tmp_path / "b", [{"_id": "d1", "text": "x"}], [{"_id": "q1", "text": "q"}], ["q1\td1\t1e400"])
    with pytest.raises(DataError) as info:
        read_beir(str(root), name="b")
    assert str(info.value) == f"{root / 'qrels' / 'train.tsv'}, line 2, field 'score': score '1e400' is not a finite number"


QPN_BAD_LINES = {
    "deep_nesting": ("[" * 100_000, ": malformed JSON: nested too deeply", "malformed row"),
    "integer_5000_digits": ('{"query": "q", "pos": ["p"], "qid": 1' + "0" * 4999 + "}",
                            ": malformed JSON: an integer with more than 4300 digits", "malformed row"),
    "neg_qid_huge": ('{"query": "q", "pos": ["p"], "neg_qids": [1' + "0" * 400 + "]}",
                     ", field 'neg_qids[0]': refers to qid 1000000000...(401 digits), which no row has", "bad neg_qids[0]"),
}


@pytest.mark.parametrize("case", sorted(QPN_BAD_LINES))
def test_qpn_rows_that_break_python_are_data_errors(tmp_path, case):
    bad, suffix, reason = QPN_BAD_LINES[case]
    path = write_lines(tmp_path / "q.jsonl", [{"query": "a", "pos": ["b"]}, bad, {"query": "c", "pos": ["d"]}])
    with pytest.raises(DataError) as info:
        read_qpn_jsonl(str(path), name="q")
    assert str(info.value) == f"{path}, line 2{suffix}"
    result = read_qpn_jsonl(str(path), name="q", on_error="skip")
    assert [r.query for r in result.records] == ["a", "c"] and dict(result.skipped) == {reason: 1}


def test_duplicates_and_negatives_equal_to_a_positive_are_counted_and_warned(tmp_path, caplog):
    dup = {"query": "q", "positives": ["p"], "negatives": ["n"]}
    false_negative = {"query": "r", "positives": ["p2", "p3"], "negatives": ["n2", "p3"]}
    dm = datamodule(tmp_path, {"ir_set": ("ir", [dup, GOOD_IR, dup, dup, false_negative]),
                               "sts_set": ("sts", [GOOD_STS, GOOD_STS])})
    with caplog.at_level(logging.INFO, logger="codiemb.data.datamodule"):
        dm.load()
    assert dm.load_report["ir_set"]["warnings"] == {"duplicate rows": 2, "negative equal to a positive": 1}
    assert dm.load_report["sts_set"]["warnings"] == {"duplicate rows": 1}
    assert dm.load_report["ir_set"]["rows"] == 5  # kept: a warning, not an error
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == ["suspicious rows (kept; duplicates weigh double, a negative equal to a positive is a false "
                        "negative): ir_set: duplicate rows: 2, negative equal to a positive: 1; sts_set: duplicate rows: 1"]


@pytest.mark.parametrize("block", [64, 1 << 20])
@pytest.mark.parametrize("case", sorted(ROW_CASES))
def test_the_record_store_batched_path_reports_every_case_like_the_reader(tmp_path, case, block, monkeypatch):
    """Five good rows, the bad one on line 6, five more: pyarrow takes the good rows, Python the bad one."""
    import codiemb.data.fastjsonl as fast
    from codiemb.data.readers.base import RowPolicy

    monkeypatch.setattr(fast, "BLOCK_BYTES", block)
    task, bad, suffix = ROW_CASES[case]
    good = GOOD_IR if task == "ir" else GOOD_STS
    path = write_lines(tmp_path / "toy.jsonl", [good] * 5 + [bad] + [good] * 5)
    with pytest.raises(DataError) as info:
        list(fast.jsonl_chunks(str(path), name="toy", policy=RowPolicy("raise"), task=task))
    assert str(info.value) == f"{path}, line 6{suffix}"
    policy = RowPolicy("skip")
    chunks = list(fast.jsonl_chunks(str(path), name="toy", policy=policy, task=task))
    assert sum(len(c) if isinstance(c, list) else c.num_rows for c in chunks) == 10
    if block == 64:  # one line a block: the batched path takes the good rows (one block holding them all may
        assert any(not isinstance(c, list) for c in chunks)  # go to Python whole, e.g. on a type conflict)
    field = suffix.split("field '")[1].split("'")[0] if "field '" in suffix else None
    assert dict(policy.skipped) == {f"bad {field}" if field else "malformed row": 1}
