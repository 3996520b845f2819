"""STS-B TSV and BEIR-layout readers: hand-written files, error reporting, and the real files' counts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from codiemb.data.readers import read_dataset
from codiemb.data.readers.beir import document_text, load_beir, read_beir
from codiemb.data.readers.stsb import load_stsb_pairs, read_stsb
from codiemb.errors import DataError

SHARED = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"

STSB_ROWS = [
    "main-captions\tMSRvid\t2012test\t0001\t5.000\tA man is playing a flute.\tA man plays the flute.",
    # A bare quote must not swallow the following rows (csv.QUOTE_NONE).
    'main-news\theadlines\t2015\t0002\t1.5\t"Quoted start of a sentence.\tAnother one."\tsrc-a\tsrc-b',
    "main-forums\tdeft\t2014\t0003\t0.000\tCats.\tThe economy.",
]


def write(path: Path, lines: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_stsb_reads_columns_4_to_6_with_bare_quotes_and_extra_columns(tmp_path):
    path = write(tmp_path / "sts.csv", STSB_ROWS)
    s1, s2, scores = load_stsb_pairs(str(path))
    assert s1 == ["A man is playing a flute.", '"Quoted start of a sentence.', "Cats."]
    assert s2 == ["A man plays the flute.", 'Another one."', "The economy."]
    assert scores == [5.0, 1.5, 0.0]
    records = read_dataset("stsb", str(path), name="toy").records
    assert [r.task for r in records] == ["sts"] * 3 and records[1].normalized_score == pytest.approx(0.3)


@pytest.mark.parametrize("bad_row, field", [
    ("g\tf\t2012\t9\tfive\tA.\tB.", "score"),
    ("g\tf\t2012\t9\t7.5\tA.\tB.", "score"),      # outside 0-5
    ("g\tf\t2012\t9\t2.0\tA.", None),             # too few columns
    ("g\tf\t2012\t9\t2.0\t \tB.", "query"),       # empty sentence
])
def test_stsb_bad_row_names_file_line_and_field(tmp_path, bad_row, field):
    path = write(tmp_path / "sts.csv", [STSB_ROWS[0], bad_row])
    with pytest.raises(DataError) as info:
        read_stsb(str(path), name="toy")
    assert info.value.line == 2 and info.value.field == field and str(path) in str(info.value)
    skipped = read_stsb(str(path), name="toy", on_error="skip")
    assert len(skipped.records) == 1 and sum(skipped.skipped.values()) == 1


def make_beir(root: Path, corpus: list[dict], queries: list[dict], qrels: dict[str, list[str]]) -> Path:
    write(root / "corpus.jsonl", [json.dumps(row) for row in corpus])
    write(root / "queries.jsonl", [json.dumps(row) for row in queries])
    for split, rows in qrels.items():
        write(root / "qrels" / f"{split}.tsv", ["query-id\tcorpus-id\tscore", *rows])
    return root


CORPUS = [{"_id": "d1", "title": "Cats", "text": "Cats purr."}, {"_id": "d2", "title": "", "text": " Dogs bark. "},
          {"_id": "d3", "text": "Birds sing."}]
QUERIES = [{"_id": "q1", "text": "what purrs"}, {"_id": "q2", "text": "who barks"},
           {"_id": "q3", "text": "unjudged"}]


def test_beir_joins_title_and_text_like_mteb_and_keeps_judged_queries(tmp_path):
    root = make_beir(tmp_path / "b", CORPUS, QUERIES,
                     {"test": ["q1\td1\t2", "q1\td3\t0", "q2\td2\t1"], "train": ["q1\td1\t1", "q2\td2\t0"]})
    corpus, queries, qrels = load_beir(str(root), "test")
    assert corpus == {"d1": "Cats Cats purr.", "d2": "Dogs bark.", "d3": "Birds sing."}
    assert queries == {"q1": "what purrs", "q2": "who barks"}
    assert qrels == {"q1": {"d1": 2, "d3": 0}, "q2": {"d2": 1}}
    assert document_text({"title": "T", "text": "x"}) == "T x"
    result = read_beir(str(root), name="toy", split="train")
    assert [(r.query, r.positives) for r in result.records] == [("what purrs", ("Cats Cats purr.",))]
    assert result.skipped["no positive"] == 1


@pytest.mark.parametrize("corpus, qrels_rows, file, line, field", [
    (CORPUS + [{"_id": "d2", "text": "again"}], ["q1\td1\t1"], "corpus.jsonl", 4, "_id"),
    (CORPUS, ["q1\td1\t1", "q1\tnope\t1"], "test.tsv", 3, "corpus-id"),
    (CORPUS, ["q9\td1\t1"], "test.tsv", 2, "query-id"),
    (CORPUS, ["q1\td1"], "test.tsv", 2, None),
])
def test_beir_inconsistent_folder_raises_with_file_and_line(tmp_path, corpus, qrels_rows, file, line, field):
    root = make_beir(tmp_path / "b", corpus, QUERIES, {"test": qrels_rows})
    with pytest.raises(DataError) as info:
        load_beir(str(root), "test")
    assert info.value.source.endswith(file) and info.value.line == line and info.value.field == field


@pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/data not present")
def test_real_files_have_the_documented_counts():
    s1, s2, scores = load_stsb_pairs(str(SHARED / "stsbenchmark" / "sts-test.csv"))
    assert len(s1) == len(s2) == len(scores) == 1379 and min(scores) >= 0 and max(scores) <= 5
    corpus, queries, qrels = load_beir(str(SHARED / "scifact"), "test")
    assert (len(corpus), len(queries), sum(map(len, qrels.values()))) == (5183, 300, 339)
    train = read_beir(str(SHARED / "scifact"), name="scifact", split="train")
    assert len(train.records) == 809
