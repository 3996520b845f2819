"""Readers for the public formats: checked on the real files in ../shared/data (counts from SOURCES.md,
re-derived here by plain parsing) and on small hand-written files for each quirk."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import pytest

from codiemb.data.readers import read_dataset
from codiemb.data.readers.wikiqa import csv_unquote
from codiemb.errors import ConfigError, DataError

SHARED = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"


def shared(sub: str) -> Path:
    path = SHARED / sub
    if not path.exists():
        pytest.skip(f"real data not available: {path}")
    return path


# ------------------------------------------------------------------ SemEval STS
def test_semeval_sts12_counts_and_alignment():
    folder = shared("sts12-train/STS2012-train")
    result = read_dataset("semeval_sts", str(folder), name="sts12")
    assert len(result.records) == 750 + 750 + 734 and not result.skipped  # SOURCES.md
    first_pair = (folder / "STS.input.MSRpar.txt").read_text(encoding="utf-8").split("\n")[0].split("\t")
    first_gold = float((folder / "STS.gs.MSRpar.txt").read_text().split("\n")[0])
    msrpar = read_dataset("semeval_sts", str(folder / "STS.input.MSRpar.txt"), name="msrpar").records
    assert len(msrpar) == 750
    assert (msrpar[0].query, msrpar[0].positives[0], msrpar[0].score) == (first_pair[0], first_pair[1], first_gold)
    assert all(r.task == "sts" and 0 <= r.score <= 5 for r in result.records)
    only = read_dataset("semeval_sts", str(folder), name="x", subsets=["MSRvid"]).records
    assert len(only) == 750


def _sts_dir(tmp_path: Path, inputs: str, golds: str) -> Path:
    (tmp_path / "STS.input.toy.txt").write_text(inputs, encoding="utf-8")
    (tmp_path / "STS.gs.toy.txt").write_text(golds)
    (tmp_path / "STS.output.toy.txt").write_text("9\n9\n")  # a system run: must be ignored
    return tmp_path


def test_semeval_skips_unscored_pairs_and_ignores_extra_columns(tmp_path):
    folder = _sts_dir(tmp_path, "a b\tc d\tsrc1\tsrc2\ne\tf\ng\th\n", "4.5\n\n0\n")
    result = read_dataset("semeval_sts", str(folder), name="toy")
    assert [(r.query, r.positives, r.score) for r in result.records] == [("a b", ("c d",), 4.5), ("g", ("h",), 0.0)]
    assert result.skipped == {"no gold score": 1}


def test_semeval_bad_rows(tmp_path):
    with pytest.raises(DataError, match="2 sentence pairs but 1 gold"):
        read_dataset("semeval_sts", str(_sts_dir(tmp_path, "a\tb\nc\td\n", "1\n")), name="toy")
    folder = _sts_dir(tmp_path, "a\tb\nno tab here\nc\td\n", "1\n2\n7\n")
    with pytest.raises(DataError, match="line 2.*sentence2"):
        read_dataset("semeval_sts", str(folder), name="toy")
    result = read_dataset("semeval_sts", str(folder), name="toy", on_error="skip")
    assert len(result.records) == 1 and result.skipped == {"bad sentence2": 1, "bad score": 1}
    with pytest.raises(ConfigError):
        read_dataset("semeval_sts", str(folder), name="toy", task="ir")


# ------------------------------------------------------------------ SNLI
def test_snli_triplets_match_a_plain_grouping():
    folder = shared("snli")
    result = read_dataset("snli", str(folder), name="snli")
    expected = {}
    for split in ("dev", "test"):
        cols = [(folder / f"{s}.{split}").read_text().splitlines() for s in ("s1", "s2", "labels")]
        groups = defaultdict(lambda: ([], []))
        for premise, hypothesis, label in zip(*cols):
            if label != "neutral":
                groups[premise.strip()][label == "contradiction"].append(hypothesis.strip())
        expected.update({(split, p): g for p, g in groups.items() if g[0] and g[1]})
    assert len(result.records) == len(expected) == 5864  # "about 5.9k" in SOURCES.md
    for record in result.records:
        positives, negatives = expected[(record.meta["split"], record.query)]
        assert (list(record.positives), list(record.negatives)) == (positives, negatives)
        assert record.task == "ir" and record.meta["symmetric"]
    assert result.skipped["neutral hypothesis (unused)"] == 3235 + 3219  # `sort labels.* | uniq -c`
    assert len(read_dataset("snli", str(folder), name="s", split="dev").records) < len(result.records)


def test_snli_bad_label(tmp_path):
    for stem, text in (("s1", "p\np\np\n"), ("s2", "yes\nno\nmaybe\n"), ("labels", "entailment\ncontradiction\n-\n")):
        (tmp_path / f"{stem}.dev").write_text(text)
    with pytest.raises(DataError, match="labels.dev, line 3, field 'label'"):
        read_dataset("snli", str(tmp_path), name="toy")
    result = read_dataset("snli", str(tmp_path), name="toy", on_error="skip")
    assert [(r.query, r.positives, r.negatives) for r in result.records] == [("p", ("yes",), ("no",))]
    assert result.skipped == {"bad label": 1}


# ------------------------------------------------------------------ MRPC
@pytest.mark.parametrize("split, pairs, paraphrases", [("train", 4076, 2753), ("test", 1725, 1147)])
def test_mrpc_counts_bom_and_quotes(split, pairs, paraphrases):
    folder = shared("mrpc")
    sts = read_dataset("mrpc", str(folder), name="mrpc", split=split)
    assert len(sts.records) == pairs and not sts.skipped  # SOURCES.md
    assert sum(r.score == 1.0 for r in sts.records) == paraphrases and {r.score for r in sts.records} == {0.0, 1.0}
    first = (folder / f"msr_paraphrase_{split}.txt").read_bytes().decode("utf-8-sig").split("\n")[1].split("\t")
    assert (sts.records[0].query, sts.records[0].positives[0]) == (first[3], first[4])
    ir = read_dataset("mrpc", str(folder), name="mrpc", split=split, task="ir")
    assert len(ir.records) == paraphrases and sum(ir.skipped.values()) == pairs - paraphrases


def test_mrpc_score_range_and_errors(tmp_path):
    path = tmp_path / "m.txt"
    header = "\ufeffQuality\t#1 ID\t#2 ID\t#1 String\t#2 String\n"
    path.write_text(header + '1\t1\t2\tHe said " hi " .\tA\n0\t3\t4\tB\tC\n', encoding="utf-8")
    records = read_dataset("mrpc", str(path), name="m", score_range=[0, 5]).records
    assert [(r.query, r.score) for r in records] == [('He said " hi " .', 5.0), ("B", 0.0)]
    path.write_text(header + "2\t1\t2\tA\tB\n1\t1\tA\tB\n", encoding="utf-8")
    with pytest.raises(DataError, match="line 2, field 'Quality'"):
        read_dataset("mrpc", str(path), name="m")
    assert read_dataset("mrpc", str(path), name="m", on_error="skip").skipped == {"bad Quality": 1,
                                                                                 "malformed row": 1}


# ------------------------------------------------------------------ WikiQA
@pytest.mark.parametrize("split, questions, answerable", [("train", 2118, 873), ("test", 633, 243)])
def test_wikiqa_groups_by_question_text(split, questions, answerable):
    path = shared(f"wikiqa/WikiQA-{split}.tsv")
    result = read_dataset("wikiqa", str(path.parent), name="wikiqa", split=split)
    # plain reference: label is the last field, question the second, whatever the layout
    rows = [line.split("\t") for line in path.read_text(encoding="utf-8").splitlines()[1:]]
    labels = defaultdict(set)
    for fields in rows:
        labels[fields[1].strip().strip('"').replace('""', '"')].add(fields[-1])
    assert len(labels) == questions
    assert sum("1" in s for s in labels.values()) == answerable == len(result.records)
    assert result.skipped == {"question without a correct sentence": questions - answerable}
    assert sum(len(r.positives) + len(r.negatives) for r in result.records) == sum(
        1 for fields in rows if "1" in labels[fields[1].strip().strip('"').replace('""', '"')])


def test_wikiqa_real_quirks():
    """SOURCES.md says 872 answerable train questions: that count read the label from column 5 on the 13
    seven-field rows too, which loses 'what does leeroy jenkins mean' (only 7-field rows, one correct)."""
    records = read_dataset("wikiqa", str(shared("wikiqa")), name="w", split="train").records
    leeroy = next(r for r in records if r.query == "what does leeroy jenkins mean")
    assert len(leeroy.positives) == 1 and leeroy.positives[0].startswith("Leeroy Jenkins, sometimes misspelled")
    barefoot = next(r for r in records if r.query == "what does barefoot and pregnant mean")
    assert 'The phrase "barefoot and pregnant" was probably first used sometime before 1950.' in (
        barefoot.positives + barefoot.negatives)


def test_wikiqa_mixed_layouts(tmp_path):
    path = tmp_path / "WikiQA-toy.tsv"
    path.write_text("QuestionID\tQuestion\tSentenceID\tSentence\tLabel\n"
                    'Q1\twho?\tS1\t"He said ""no"", twice"\t0\n'
                    "Q2\twho?\tD1\tTitle\tD1-0\tHim.\t1\n"
                    "Q3\twhy?\tS3\tBecause.\t0\n"
                    "Q4\twhy?\tS4\tSo.\tyes\n", encoding="utf-8")
    with pytest.raises(DataError, match="line 5, field 'Label'"):
        read_dataset("wikiqa", str(path), name="w")
    result = read_dataset("wikiqa", str(tmp_path), name="w", split="toy", on_error="skip")
    assert [(r.query, r.positives, r.negatives) for r in result.records] == [
        ("who?", ("Him.",), ('He said "no", twice',))]
    assert result.skipped == {"bad Label": 1, "question without a correct sentence": 1}
    assert csv_unquote('"a ""b"""') == 'a "b"' and csv_unquote('"open') == '"open'


# ------------------------------------------------------------------ query/pos/neg JSONL
def test_medquad_neg_qids_become_hard_negatives():
    path = shared("medquad/medquad-qa.jsonl")
    result = read_dataset("qpn_jsonl", str(path), name="medquad")
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert len(result.records) == len(rows) == 16407 and not result.skipped
    assert sum(bool(r.negatives) for r in result.records) == 13906  # SOURCES.md
    answers = defaultdict(list)
    for row in rows:
        answers[row["qid"]].append(row["pos"])
    checked = 0
    for row, record in zip(rows, result.records):
        if any(len(answers[q]) > 1 for q in row["neg_qids"]):
            continue  # a repeated qid: see test_medquad_repeated_qid_resolves_to_nearest_row
        expected = [p for q in row["neg_qids"] for p in answers[q][0] if p not in row["pos"]]
        assert list(record.negatives) == list(dict.fromkeys(expected)) and list(record.positives) == row["pos"]
        checked += 1
    assert checked > 16000  # nearly every row has only unambiguous references

def test_medquad_repeated_qid_resolves_to_nearest_row():
    records = read_dataset("qpn_jsonl", str(shared("medquad/medquad-qa.jsonl")), name="m").records
    # qid CancerGov:0000013_2-1 names 7 rows, one per disease of one PDQ document (SOURCES: same doc_id)
    # (the same question text also appears under other sources, so look rows up by text *and* document)
    by_query = {r.query: r for r in records if r.meta["qid"].startswith("CancerGov:0000013_2-")}
    diagnose = by_query["How to diagnose Polycythemia Vera ?"]
    assert by_query["What is (are) Polycythemia Vera ?"].positives[0] in diagnose.negatives  # the nearest -1
    for other in ("Chronic Myeloproliferative Neoplasms", "Primary Myelofibrosis"):  # farther rows, same qid
        assert by_query[f"What is (are) {other} ?"].positives[0] not in diagnose.negatives

def test_climate_fever_counts():
    result = read_dataset("qpn_jsonl", str(shared("climate-fever/train.jsonl")), name="cf")
    assert len(result.records) == 1061  # SOURCES.md: 2745 positives, 2560 hard negatives
    assert sum(len(r.positives) for r in result.records) == 2745
    assert sum(len(r.negatives) for r in result.records) == 2560


def test_qpn_references_and_errors(tmp_path):
    path = tmp_path / "q.jsonl"
    rows = [{"qid": "a", "query": "qa", "pos": ["A"], "neg": ["X"], "neg_qids": ["b", "c"]},
            {"qid": "b", "query": "qb", "pos": ["B"], "neg_qids": ["a"]},
            {"qid": "c", "query": "qc", "pos": ["A"]},  # same passage as a's positive: not a negative of a
            {"qid": "b", "query": "far", "pos": ["FAR"]},  # repeated qid: a's reference resolves to line 2
            {"qid": "d", "query": "qd", "pos": ["D"], "neg_qids": ["zzz"]}]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    with pytest.raises(DataError, match="line 5, field 'neg_qids\\[0\\]'"):
        read_dataset("qpn_jsonl", str(path), name="q")
    result = read_dataset("qpn_jsonl", str(path), name="q", on_error="skip")
    got = {r.query: r.negatives for r in result.records}
    assert got == {"qa": ("X", "B"), "qb": ("A",), "qc": (), "far": ()} and result.skipped == {"bad neg_qids[0]": 1}
    assert read_dataset("qpn_jsonl", str(path), name="q", on_error="skip", max_negatives=1).records[0].negatives == (
        "X",)
    with pytest.raises(ConfigError):
        read_dataset("qpn_jsonl", str(path), name="q", task="sts")
