"""Readers for the unified schema: JSONL files, and anything ``datasets.load_dataset`` reads.

Rows in sentence-transformers' column names load as they are (:func:`sentence_transformers_row`):
``anchor``/``positive``/``negative`` (or ``negative_1``, ``negative_2`` ...) as an IR row with one positive and
its negatives, ``sentence1``/``sentence2``/``score`` as an STS row. A row with neither names the keys it has and
what to write, in one line.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from codiemb.data.readers.base import (
    UNREADABLE,
    ReadResult,
    RowPolicy,
    check_file,
    decode_line,
    parse_json_line,
    row_errors,
    unreadable,
)
from codiemb.data.schema import Record, parse_record
from codiemb.errors import ConfigError, DataError


def check_score_range(score_range, name: str) -> None:
    """An empty range would divide by zero when scores are normalised: refuse it while loading."""
    low, high = (float(v) for v in score_range)
    if not low < high:
        raise ConfigError(f"dataset '{name}': score_range [{low:g}, {high:g}] is empty; "
                          "set score_range: [min, max] with min < max")


# The unified schema's own keys (codiemb.data.schema), and what sentence-transformers calls them.
SCHEMA_KEYS = frozenset({"task", "query", "positives", "negatives", "pos", "neg", "score", "instruction",
                         "pos_scores", "neg_scores"})
WHAT_TO_WRITE = ("write query and positives (+ negatives; score for sts), or sentence-transformers' "
                 "anchor/positive/negative or sentence1/sentence2/score")


def sentence_transformers_row(raw, task: str | None, source: str, line: int):
    """A row in sentence-transformers' column names as a unified one: ``anchor`` -> ``query``, ``positive`` ->
    ``positives`` (one), ``negative`` / ``negative_<n>`` -> ``negatives``; ``sentence1`` -> ``query``,
    ``sentence2`` -> ``positives`` (one), ``score`` kept. Without a declared ``task`` the names imply it (ir /
    sts). A row without ``query`` whose other keys are none of these is refused naming its keys."""
    if not isinstance(raw, dict) or "query" in raw:
        return raw
    if "anchor" in raw:
        numbered = sorted((k for k in raw if k.startswith("negative_") and k[9:].isdigit()), key=lambda k: int(k[9:]))
        row = {k: v for k, v in raw.items() if k not in ("anchor", "positive", "negative") and k not in numbered}
        row["query"] = raw["anchor"]
        if "positive" in raw:
            row["positives"] = [raw["positive"]]
        negatives = ([raw["negative"]] if "negative" in raw else []) + [raw[k] for k in numbered]
        if negatives:
            row["negatives"] = negatives
        implied = "ir"
    elif "sentence1" in raw:
        row = {k: v for k, v in raw.items() if k not in ("sentence1", "sentence2")}
        row["query"] = raw["sentence1"]
        if "sentence2" in raw:
            row["positives"] = [raw["sentence2"]]
        implied = "sts"
    else:
        other = [str(k) for k in raw if k not in SCHEMA_KEYS]
        if other:
            raise DataError(f"missing required field (the row has {', '.join(other)}; {WHAT_TO_WRITE})",
                            source=source, line=line, field="query")
        return raw
    if task is None:
        row.setdefault("task", implied)
    return row


def iter_lines(numbered_lines: Iterable[tuple[int, bytes]], *, path, name: str, policy: RowPolicy,
               task: str | None = None, score_range: tuple[float, float] = (0.0, 5.0)) -> Iterator[tuple[int, Record]]:
    """``(line, record)`` for each valid one of ``(line number, raw bytes)``; bad lines go through ``policy``."""
    source, score_range = str(path), tuple(score_range)
    for line_no, raw_line in numbered_lines:
        try:
            text = decode_line(raw_line, source, line_no)
            if not text.strip():
                continue
            raw = sentence_transformers_row(parse_json_line(text, source, line_no), task, source, line_no)
            record = parse_record(raw, dataset=name, source=source, line=line_no, task=task, score_range=score_range)
        except DataError as exc:
            policy.handle(exc)
            continue
        except UNREADABLE as exc:  # what row_errors maps, inlined: this loop runs once per row of big files
            policy.handle(unreadable(exc, source, line_no))
            continue
        yield line_no, record


def iter_jsonl(path: str, *, name: str, policy: RowPolicy, task: str | None = None,
               score_range: tuple[float, float] = (0.0, 5.0), **_: object) -> Iterator[tuple[int, Record]]:
    """``(line, record)`` for each valid line, streaming; bad lines go through ``policy`` (blank lines are
    ignored). A UTF-8 byte-order mark on line 1 is dropped; a UTF-16 file or a directory is named as such."""
    check_score_range(score_range, name)
    path = check_file(path)
    with path.open("rb") as fh:
        yield from iter_lines(enumerate(fh, start=1), path=path, name=name, policy=policy, task=task,
                              score_range=score_range)


def read_jsonl(path: str, *, name: str, task: str | None = None, on_error: str = "raise",
               score_range: tuple[float, float] = (0.0, 5.0), **_: object) -> ReadResult:
    """One JSON object per line in the unified schema (blank lines are ignored)."""
    policy = RowPolicy(on_error)
    records = [r for _, r in iter_jsonl(path, name=name, policy=policy, task=task, score_range=score_range)]
    return ReadResult(records, policy.skipped)


def iter_hf(path: str, *, name: str, policy: RowPolicy, task: str | None = None, split: str | None = "train",
            score_range: tuple[float, float] = (0.0, 5.0), columns: dict | None = None,
            load_kwargs: dict | None = None, **_: object) -> Iterator[tuple[int, Record]]:
    """``(row, record)`` for each valid row of ``datasets.load_dataset(path, split, **load_kwargs)``, streaming
    (the dataset itself is Arrow-backed); bad rows go through ``policy``."""
    import datasets

    check_score_range(score_range, name)
    try:
        ds = datasets.load_dataset(path, split=split or "train", **(load_kwargs or {}))
    except Exception as exc:  # datasets raises many types; the user needs the name and the cause
        raise DataError(f"datasets.load_dataset failed: {type(exc).__name__}: {exc}", source=str(path)) from exc
    rename, source, score_range = dict(columns or {}), f"{path}[{split}]", tuple(score_range)
    for row_no, row in enumerate(ds, start=1):
        raw = {rename.get(k, k): v for k, v in row.items()}
        try:
            with row_errors(source, row_no):
                raw = sentence_transformers_row(raw, task, source, row_no)
                record = parse_record(raw, dataset=name, source=source, line=row_no, task=task,
                                      score_range=score_range)
        except DataError as exc:
            policy.handle(exc)
            continue
        yield row_no, record


def read_hf(path: str, *, name: str, task: str | None = None, split: str | None = "train",
            on_error: str = "raise", score_range: tuple[float, float] = (0.0, 5.0),
            columns: dict | None = None, load_kwargs: dict | None = None, **_: object) -> ReadResult:
    """Anything ``datasets.load_dataset`` reads: a hub name, or a builder ("json", "parquet", "csv") with
    ``load_kwargs={"data_files": ...}``. ``columns`` renames source columns onto the unified fields,
    e.g. ``{"sentence1": "query", "sentence2": "positives", "label": "score"}``."""
    policy = RowPolicy(on_error)
    records = [r for _, r in iter_hf(path, name=name, policy=policy, task=task, split=split, score_range=score_range,
                                     columns=columns, load_kwargs=load_kwargs)]
    return ReadResult(records, policy.skipped)
