"""JSONL with ``query``/``pos``/``neg`` (FlagEmbedding's fine-tuning format), plus row references.

Each line is ``{"query": str, "pos": [str, ...], "neg": [str, ...]}``; ``positives``/``negatives`` are
accepted too, and other keys are ignored. Rows may carry a ``qid`` and ``neg_qids`` (as MedQuAD does):
every ``neg_qids`` entry names another row whose ``pos`` passages are hard negatives of this row -- for
MedQuAD, the other questions about the same source document. Referenced passages that equal one of this
row's positives are dropped (a passage cannot be both); negatives are de-duplicated, first seen first.

A ``qid`` may repeat (MedQuAD has 8 qids shared by 42 rows, different topics of one long document);
a reference to such a qid resolves to the row of that qid nearest in the file (ties: the earlier one),
because MedQuAD lists each topic's questions together.
"""

from __future__ import annotations

import bisect
import logging
from dataclasses import replace
from pathlib import Path

from codiemb.data.readers.base import ReadResult, RowPolicy, check_file, decode_line, parse_json_line
from codiemb.data.schema import parse_record, show_value
from codiemb.errors import ConfigError, DataError

log = logging.getLogger(__name__)


def _load_rows(path: Path, policy: RowPolicy) -> list[tuple[int, dict]]:
    """``[(line, row)]`` of the JSON objects in ``path``; undecodable lines go through ``policy``."""
    rows, source = [], str(path)
    with path.open("rb") as fh:
        for line_no, raw_line in enumerate(fh, start=1):
            try:
                text = decode_line(raw_line, source, line_no)
                if not text.strip():
                    continue
                row = parse_json_line(text, source, line_no)
                if not isinstance(row, dict):
                    raise DataError(f"expected a JSON object, got {type(row).__name__}", source=source, line=line_no)
            except DataError as exc:
                policy.handle(exc)
                continue
            rows.append((line_no, row))
    return rows


def _positives(row: dict) -> list:
    value = row.get("pos", row.get("positives")) or []
    return [value] if isinstance(value, str) else list(value)


def _nearest(lines: list[int], line_no: int) -> int:
    """Index into sorted ``lines`` of the entry closest to ``line_no`` (ties: the earlier)."""
    i = bisect.bisect_left(lines, line_no)
    if i == 0:
        return 0
    if i == len(lines) or line_no - lines[i - 1] <= lines[i] - line_no:
        return i - 1
    return i


def read_qpn_jsonl(path: str, *, name: str, task: str | None = None, split: str | None = None,
                   on_error: str = "raise", max_negatives: int | None = None, **_: object) -> ReadResult:
    """Read query/pos/neg JSONL as IR records, resolving ``neg_qids`` into hard negatives.

    ``max_negatives`` keeps the first N negatives of each row (own ``neg`` first, then referenced ones).
    A ``neg_qids`` entry naming no row is a :class:`DataError` (the row is skipped with ``on_error="skip"``).
    """
    if task not in (None, "ir"):
        raise ConfigError(f"dataset '{name}': query/pos/neg rows are retrieval data, so task must be 'ir'")
    path = check_file(path)
    policy = RowPolicy(on_error)
    rows = _load_rows(path, policy)
    lines_of_qid: dict[str, list[int]] = {}
    row_at_line = {}
    for line_no, row in rows:
        row_at_line[line_no] = row
        if row.get("qid") is not None:
            lines_of_qid.setdefault(str(row["qid"]), []).append(line_no)
    ambiguous = sum(len(lines) > 1 for lines in lines_of_qid.values())
    if ambiguous:
        log.info("%s: %d qids name several rows; references resolve to the nearest row", path, ambiguous)

    records = []
    for line_no, row in rows:
        try:
            negatives = row.get("neg", row.get("negatives")) or []
            negatives = [negatives] if isinstance(negatives, str) else list(negatives)
            neg_qids = row.get("neg_qids") or []
            if not isinstance(neg_qids, list):
                raise DataError(f"expected a list of qids, got {type(neg_qids).__name__}", source=str(path),
                                line=line_no, field="neg_qids")
            for i, qid in enumerate(neg_qids):
                candidates = lines_of_qid.get(str(qid))
                if not candidates:
                    raise DataError(f"refers to qid {show_value(qid)}, which no row has", source=str(path),
                                    line=line_no, field=f"neg_qids[{i}]")
                negatives.extend(_positives(row_at_line[candidates[_nearest(candidates, line_no)]]))
            own = set(_positives(row))
            negatives = [n for n in dict.fromkeys(negatives) if n not in own][:max_negatives]
            raw = {k: v for k, v in row.items() if k not in ("neg", "negatives")}
            record = parse_record({**raw, "negatives": negatives}, dataset=name, source=str(path),
                                  line=line_no, task="ir")
        except DataError as exc:
            policy.handle(exc)
            continue
        except TypeError as exc:  # e.g. an unhashable (non-string) passage in a list
            policy.handle(DataError(f"malformed passages: {exc}", source=str(path), line=line_no))
            continue
        except (ValueError, AttributeError, KeyError, IndexError, OverflowError, RecursionError) as exc:
            policy.handle(DataError(f"unreadable row ({type(exc).__name__}: {str(exc)[:200]})", source=str(path),
                                    line=line_no))
            continue
        meta = {"qid": str(row["qid"])} if row.get("qid") is not None else {}
        records.append(replace(record, meta=meta) if meta else record)
    return ReadResult(records, policy.skipped)
