"""WikiQA answer-sentence selection (Yang et al. 2015) as IR records with natural hard negatives.

Two row layouts, detected per row (one file may mix them):

* 7 fields, the original release: ``QuestionID Question DocumentID DocumentTitle SentenceID Sentence Label``;
  text is raw (a sentence may itself start with ``"``).
* 5 fields, a re-export: ``QuestionID Question SentenceID Sentence Label``. Its ids are per *row*, not per
  question, and fields holding quotes were written CSV-style (wrapped in ``"``, inner ``"`` doubled), so
  such fields are unquoted.

Rows are grouped by question text. One record per question: positives = label-1 sentences, negatives =
the question's other sentences (same Wikipedia page: hard negatives). Questions without a positive are
skipped and counted, as the WikiQA paper does for answer selection.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from codiemb.data.readers.base import ReadResult, RowPolicy, read_text, split_file
from codiemb.data.schema import parse_record
from codiemb.errors import ConfigError, DataError

NO_POSITIVE = "question without a correct sentence"


def wikiqa_file(path: str | Path, split: str | None) -> Path:
    """``path`` itself when it is a file, else ``path/WikiQA-<split>.tsv``."""
    return split_file(path, split, "WikiQA-{split}.tsv", "'train', 'dev' or 'test'")


def csv_unquote(field: str) -> str:
    """Undo CSV quoting of one field (outer quotes removed, doubled inner quotes halved); fields not wrapped
    in quotes are returned unchanged."""
    if len(field) >= 2 and field[0] == field[-1] == '"':
        return field[1:-1].replace('""', '"')
    return field


def _parse_row(fields: list[str], path: Path, line_no: int) -> tuple[str, str, bool]:
    """(question, sentence, is_correct) of one data row of either layout."""
    if len(fields) == 5:
        question, sentence, label = csv_unquote(fields[1]), csv_unquote(fields[3]), fields[4]
    elif len(fields) == 7:
        question, sentence, label = fields[1], fields[5], fields[6]
    else:
        raise DataError(f"expected 5 or 7 tab-separated fields, got {len(fields)}", source=str(path),
                        line=line_no)
    if label not in ("0", "1"):
        raise DataError(f"Label must be 0 or 1, got {label!r}", source=str(path), line=line_no, field="Label")
    return question.strip(), sentence.strip(), label == "1"


def read_wikiqa(path: str, *, name: str, task: str | None = None, split: str | None = None,
                on_error: str = "raise", **_: object) -> ReadResult:
    """Read one WikiQA TSV (or ``path/WikiQA-<split>.tsv``) into one IR record per answerable question."""
    if task not in (None, "ir"):
        raise ConfigError(f"dataset '{name}': WikiQA is answer retrieval, so task must be 'ir', not {task!r}")
    path = wikiqa_file(path, split)
    policy = RowPolicy(on_error)
    lines = read_text(path).split("\n")
    if not lines[0].startswith("QuestionID\tQuestion\t"):
        raise DataError("expected a header starting 'QuestionID<TAB>Question'", source=str(path), line=1)
    # question text -> (first line, positives, negatives); dicts keep first-seen order, so output is stable
    groups: dict[str, tuple[int, list[str], list[str]]] = {}
    for line_no, line in enumerate(lines[1:], start=2):
        line = line.rstrip("\r")
        if not line.strip():
            continue
        try:
            question, sentence, correct = _parse_row(line.split("\t"), path, line_no)
            if not sentence:
                raise DataError("empty sentence", source=str(path), line=line_no, field="Sentence")
        except DataError as exc:
            policy.handle(exc)
            continue
        group = groups.setdefault(question, (line_no, [], []))
        (group[1] if correct else group[2]).append(sentence)
    records = []
    for question, (line_no, positives, negatives) in groups.items():
        if not positives:
            policy.skipped[NO_POSITIVE] += 1
            continue
        try:
            record = parse_record({"query": question, "positives": positives, "negatives": negatives},
                                  dataset=name, source=str(path), line=line_no, task="ir")
        except DataError as exc:
            policy.handle(exc)
            continue
        records.append(replace(record, meta={"first_line": line_no}))
    return ReadResult(records, policy.skipped)
