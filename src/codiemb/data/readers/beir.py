"""BEIR layout (Thakur et al. 2021): ``corpus.jsonl``, ``queries.jsonl``, ``qrels/<split>.tsv``.

``corpus.jsonl`` rows are ``{"_id", "title", "text"}``; a document's text is ``title + " " + text``,
stripped, exactly as MTEB builds it (``mteb/_create_dataloaders.py::_corpus_to_dict``), so scores are
comparable with the MTEB leaderboard. ``qrels/<split>.tsv`` has the header ``query-id corpus-id score``.
"""

from __future__ import annotations

from pathlib import Path

from codiemb.data.readers.base import (
    ReadResult,
    RowPolicy,
    check_file,
    decode_line,
    parse_json_line,
    row_errors,
)
from codiemb.data.schema import parse_record
from codiemb.errors import DataError

Qrels = dict[str, dict[str, int]]


def document_text(row: dict) -> str:
    """MTEB's corpus text: ``"{title} {text}".strip()`` when a title is present, else the text."""
    title, text = row.get("title") or "", row.get("text") or ""
    for field_name, value in (("title", title), ("text", text)):
        if not isinstance(value, str):
            raise DataError(f"expected a string, got {type(value).__name__}", field=field_name)
    return f"{title} {text}".strip() if title else text.strip()


def _read_jsonl_ids(path: Path, text_of) -> dict[str, str]:
    """``{_id: text}``; a duplicate id, missing ``_id`` or malformed line raises, naming file and line."""
    path = check_file(path)
    out: dict[str, str] = {}
    with path.open("rb") as fh:
        for line, raw_bytes in enumerate(fh, start=1):
            raw = decode_line(raw_bytes, str(path), line)
            if not raw.strip():
                continue
            row = parse_json_line(raw, str(path), line)
            if not isinstance(row, dict) or "_id" not in row:
                raise DataError("missing required field", source=str(path), line=line, field="_id")
            with row_errors(str(path), line):
                doc_id = str(row["_id"])
                if doc_id in out:
                    raise DataError(f"duplicate id {doc_id!r}", source=str(path), line=line, field="_id")
                try:
                    out[doc_id] = text_of(row)
                except DataError as exc:  # document_text names the field; add where it is
                    raise DataError(str(exc).split(": ", 1)[1], source=str(path), line=line,
                                    field=exc.field) from None
    return out


def read_qrels(path: Path, corpus: dict[str, str] | None = None,
               queries: dict[str, str] | None = None) -> Qrels:
    """``{query_id: {doc_id: grade}}``; ids unknown to ``corpus``/``queries`` (when given) raise."""
    path = check_file(path)
    qrels: Qrels = {}
    with path.open("rb") as fh:
        for line, raw_bytes in enumerate(fh, start=1):
            raw = decode_line(raw_bytes, str(path), line)  # drops a BOM on line 1
            fields = raw.rstrip("\n\r").split("\t")
            if line == 1 and fields[:2] == ["query-id", "corpus-id"]:
                continue
            if not raw.strip():
                continue
            if len(fields) != 3:
                raise DataError(f"expected 3 tab-separated columns, got {len(fields)}", source=str(path),
                                line=line)
            qid, doc_id, grade = fields
            try:
                grade_value = int(float(grade))
            except ValueError:
                raise DataError(f"score {grade!r} is not a number", source=str(path), line=line,
                                field="score") from None
            except OverflowError:  # int(float("1e400")): infinity has no integer
                raise DataError(f"score {grade!r} is not a finite number", source=str(path), line=line,
                                field="score") from None
            if queries is not None and qid not in queries:
                raise DataError(f"unknown query id {qid!r}", source=str(path), line=line, field="query-id")
            if corpus is not None and doc_id not in corpus:
                raise DataError(f"unknown corpus id {doc_id!r}", source=str(path), line=line,
                                field="corpus-id")
            qrels.setdefault(qid, {})[doc_id] = grade_value
    return qrels


def load_beir(path: str, split: str = "test") -> tuple[dict[str, str], dict[str, str], Qrels]:
    """``(corpus, queries, qrels)`` of a BEIR folder; ``queries`` keeps only queries judged in ``split``."""
    root = Path(path)
    corpus = _read_jsonl_ids(root / "corpus.jsonl", document_text)
    queries = _read_jsonl_ids(root / "queries.jsonl", lambda row: str(row.get("text") or "").strip())
    qrels = read_qrels(root / "qrels" / f"{split}.tsv", corpus, queries)
    return corpus, {qid: queries[qid] for qid in qrels}, qrels


def read_beir(path: str, *, name: str, task: str = "ir", split: str = "train", on_error: str = "raise",
              **_: object) -> ReadResult:
    """Training records: each query with its relevant (grade > 0) documents as positives.

    Queries whose judgements are all 0 have no positive and are skipped (counted, never raised).
    File-level problems (duplicate ids, qrels naming unknown ids) always raise: they mean the folder
    is inconsistent, not that one row is bad.
    """
    corpus, queries, qrels = load_beir(path, split)
    policy, records = RowPolicy(on_error), []
    source = str(Path(path) / "qrels" / f"{split}.tsv")
    for qid, judged in qrels.items():
        positives = [corpus[d] for d, grade in judged.items() if grade > 0]
        if not positives:
            policy.skipped["no positive"] += 1
            continue
        try:
            records.append(parse_record({"query": queries[qid], "positives": positives}, dataset=name,
                                        source=source, line=None, task=task))
        except DataError as exc:
            policy.handle(exc)
    return ReadResult(records, policy.skipped)
