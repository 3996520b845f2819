"""Readers for the unified schema: JSONL files, and anything ``datasets.load_dataset`` reads."""

from __future__ import annotations

import json
from pathlib import Path

from codiemb.data.readers.base import ReadResult, RowPolicy, decode_line
from codiemb.data.schema import parse_record
from codiemb.errors import ConfigError, DataError


def check_score_range(score_range, name: str) -> None:
    """An empty range would divide by zero when scores are normalised: refuse it while loading."""
    low, high = (float(v) for v in score_range)
    if not low < high:
        raise ConfigError(f"dataset '{name}': score_range [{low:g}, {high:g}] is empty; "
                          "set score_range: [min, max] with min < max")


def read_jsonl(path: str, *, name: str, task: str | None = None, on_error: str = "raise",
               score_range: tuple[float, float] = (0.0, 5.0), **_: object) -> ReadResult:
    """One JSON object per line in the unified schema (blank lines are ignored)."""
    check_score_range(score_range, name)
    path = Path(path)
    if not path.is_file():
        raise DataError("file not found", source=str(path))
    policy, records = RowPolicy(on_error), []
    with path.open("rb") as fh:
        for line_no, raw_line in enumerate(fh, start=1):
            try:
                text = decode_line(raw_line, str(path), line_no)
            except DataError as exc:
                policy.handle(exc)
                continue
            if not text.strip():
                continue
            try:
                raw = json.loads(text.rstrip("\r\n"))  # without the newline, colno points into this line
            except json.JSONDecodeError as exc:
                policy.handle(DataError(f"malformed JSON: {exc.msg} (column {exc.colno})",
                                        source=str(path), line=line_no))
                continue
            except RecursionError:  # json recurses once per nesting level
                policy.handle(DataError("malformed JSON: nested too deeply", source=str(path), line=line_no))
                continue
            try:
                records.append(parse_record(raw, dataset=name, source=str(path), line=line_no, task=task,
                                            score_range=tuple(score_range)))
            except DataError as exc:
                policy.handle(exc)
    return ReadResult(records, policy.skipped)


def read_hf(path: str, *, name: str, task: str | None = None, split: str | None = "train",
            on_error: str = "raise", score_range: tuple[float, float] = (0.0, 5.0),
            columns: dict | None = None, load_kwargs: dict | None = None, **_: object) -> ReadResult:
    """Anything ``datasets.load_dataset`` reads: a hub name, or a builder ("json", "parquet", "csv") with
    ``load_kwargs={"data_files": ...}``. ``columns`` renames source columns onto the unified fields,
    e.g. ``{"sentence1": "query", "sentence2": "positives", "label": "score"}``."""
    import datasets

    check_score_range(score_range, name)
    try:
        ds = datasets.load_dataset(path, split=split or "train", **(load_kwargs or {}))
    except Exception as exc:  # datasets raises many types; the user needs the name and the cause
        raise DataError(f"datasets.load_dataset failed: {type(exc).__name__}: {exc}", source=str(path)) from exc
    policy, records = RowPolicy(on_error), []
    rename = dict(columns or {})
    for row_no, row in enumerate(ds, start=1):
        raw = {rename.get(k, k): v for k, v in row.items()}
        try:
            records.append(parse_record(raw, dataset=name, source=f"{path}[{split}]", line=row_no, task=task,
                                        score_range=tuple(score_range)))
        except DataError as exc:
            policy.handle(exc)
    return ReadResult(records, policy.skipped)
