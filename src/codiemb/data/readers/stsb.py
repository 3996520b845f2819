"""STS Benchmark TSV (Cer et al. 2017, the original untokenised release).

Rows are tab-separated ``genre, file, year, id, score, sentence1, sentence2``; some rows carry two
extra source columns, which are ignored. Sentences contain bare quotes, so the file is read with
``csv.QUOTE_NONE``: a quoting reader would swallow several rows into one field.
"""

from __future__ import annotations

import csv
from pathlib import Path

from codiemb.data.readers.base import ReadResult, RowPolicy, check_file
from codiemb.data.schema import parse_record
from codiemb.errors import DataError

SCORE_RANGE = (0.0, 5.0)
_SCORE, _S1, _S2 = 4, 5, 6


def _rows(path: Path):
    """Yield ``(line_no, fields)``; a missing file or a non-UTF-8 file is a DataError."""
    path = check_file(path)
    with path.open(encoding="utf-8-sig", newline="") as fh:  # -sig: a byte-order mark is dropped
        try:
            yield from enumerate(csv.reader(fh, delimiter="\t", quoting=csv.QUOTE_NONE), start=1)
        except UnicodeDecodeError as exc:
            raise DataError(f"not valid UTF-8 ({exc.reason})", source=str(path)) from exc


def _parse_row(fields: list[str], path: Path, line: int) -> tuple[str, str, float]:
    if len(fields) < 7:
        raise DataError(f"expected at least 7 tab-separated columns, got {len(fields)}", source=str(path),
                        line=line)
    try:
        score = float(fields[_SCORE])
    except ValueError:
        raise DataError(f"score {fields[_SCORE]!r} is not a number", source=str(path), line=line,
                        field="score") from None
    return fields[_S1], fields[_S2], score


def read_stsb(path: str, *, name: str, task: str = "sts", split: str | None = None, on_error: str = "raise",
              **_: object) -> ReadResult:
    """Read one STS-B file (``sts-{train,dev,test}.csv``) into STS records with scores in [0, 5].

    ``split`` is accepted for the common reader signature; the split is the file itself.
    """
    path, policy, records = Path(path), RowPolicy(on_error), []
    for line, fields in _rows(path):
        if not any(f.strip() for f in fields):
            continue
        try:
            s1, s2, score = _parse_row(fields, path, line)
            records.append(parse_record({"query": s1, "positives": [s2], "score": score}, dataset=name,
                                        source=str(path), line=line, task=task, score_range=SCORE_RANGE))
        except DataError as exc:
            policy.handle(exc)
    return ReadResult(records, policy.skipped)


def load_stsb_pairs(path: str) -> tuple[list[str], list[str], list[float]]:
    """``(sentence1s, sentence2s, gold scores)`` of an STS-B file, in file order; any bad row raises."""
    records = read_stsb(path, name=Path(path).stem).records
    return ([r.query for r in records], [r.positives[0] for r in records], [float(r.score) for r in records])
