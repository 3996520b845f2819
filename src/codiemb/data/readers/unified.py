"""Readers for the unified schema: JSONL files, and anything ``datasets.load_dataset`` reads."""

from __future__ import annotations

from typing import Iterable, Iterator

from codiemb.data.readers.base import (UNREADABLE, ReadResult, RowPolicy, check_file, decode_line, parse_json_line,
                                       row_errors, unreadable)
from codiemb.data.schema import Record, parse_record
from codiemb.errors import ConfigError, DataError


def check_score_range(score_range, name: str) -> None:
    """An empty range would divide by zero when scores are normalised: refuse it while loading."""
    low, high = (float(v) for v in score_range)
    if not low < high:
        raise ConfigError(f"dataset '{name}': score_range [{low:g}, {high:g}] is empty; "
                          "set score_range: [min, max] with min < max")


def iter_lines(numbered_lines: Iterable[tuple[int, bytes]], *, path, name: str, policy: RowPolicy,
               task: str | None = None, score_range: tuple[float, float] = (0.0, 5.0)) -> Iterator[tuple[int, Record]]:
    """``(line, record)`` for each valid one of ``(line number, raw bytes)``; bad lines go through ``policy``."""
    source, score_range = str(path), tuple(score_range)
    for line_no, raw_line in numbered_lines:
        try:
            text = decode_line(raw_line, source, line_no)
            if not text.strip():
                continue
            raw = parse_json_line(text, source, line_no)
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
