"""Batched validation of unified JSONL for the record store: pyarrow parses a block of lines, vectorised checks
accept the rows that are certainly valid, and every other line goes through the row-by-row reader
(:func:`codiemb.data.readers.unified.iter_jsonl`'s checks), which gives the exact message or skip count.

The fast path is conservative: a line goes to Python if it holds anything whose meaning pyarrow and Python's
``json`` could disagree on or that the schema checks treat specially: a ``\\u`` escape, a control byte, a
byte-order mark, bytes that are not UTF-8, an integer too long for Python, 400+ brackets (deep nesting), a blank or invisible text, a missing or
odd field, an STS score outside the range (NaN included). A block pyarrow cannot parse whole (a malformed line,
a type conflict, invalid UTF-8, a duplicate key) goes to Python entirely. So the rows stored are the rows the
row-by-row reader returns, in file order, and errors name the same file, line and field.
"""

from __future__ import annotations

import io
import sys
from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj

from codiemb.data.readers.base import RowPolicy, check_file
from codiemb.data.readers.unified import check_score_range, iter_lines
from codiemb.data.schema import BLANK, TASKS, Record

BLOCK_BYTES = 16 << 20
_BLANK_RE = "^[" + "".join(f"\\x{{{ord(c):04x}}}" for c in BLANK) + "]*$"
_KNOWN = {"task": pa.string(), "query": pa.string(), "positives": pa.list_(pa.string()),
          "negatives": pa.list_(pa.string()), "score": pa.float64(), "instruction": pa.string(),
          "pos_scores": pa.list_(pa.float64()), "neg_scores": pa.list_(pa.float64())}
_SCORE_LISTS = ("pos_scores", "neg_scores")  # teacher scores: one finite number per positive / negative


_CONTROL = bytes(c for c in range(0x20) if c != 0x0A)
_NOT_BRACKET = bytes(c for c in range(256) if c not in b"[{\n")
_DIGITS = bytes.maketrans(b"0123456789", b"0000000000")
_MAX_BRACKETS = 400  # Python's json recurses once per level and stops near the recursion limit (1000)
_BLANK_FIRST = pa.array(sorted(set(BLANK)))


def _find_all(block: bytes, needle: bytes) -> list[int]:
    found, at = [], block.find(needle)
    while at >= 0:
        found.append(at)
        at = block.find(needle, at + 1)
    return found


def _suspicious_lines(block: bytes, lines: list[bytes], starts: np.ndarray) -> np.ndarray:
    """Per line of ``block`` (line k spans ``starts[k]:starts[k+1]``): True where Python must decide. Each check
    is one pass of a bytes method (C speed); the positions it finds, rare in real data, are mapped to lines."""
    flags = np.zeros(len(lines), dtype=bool)
    positions = _find_all(block, b"\\u") + _find_all(block, b"\xef\xbb")  # \u escapes, byte-order marks
    if positions:
        flags[np.searchsorted(starts, positions, side="right") - 1] = True
    plain = block.replace(b"\r\n", b"\n") if b"\r" in block else block  # CRLF line ends are fine
    if len(plain.translate(None, _CONTROL)) != len(plain):  # control bytes: find their lines
        flags |= np.array([len(line.rstrip(b"\r").translate(None, _CONTROL)) != len(line.rstrip(b"\r"))
                           for line in lines], dtype=bool)
    brackets = block.translate(None, _NOT_BRACKET).split(b"\n")[:len(lines)]  # deep nesting
    flags |= np.array([len(b) > _MAX_BRACKETS for b in brackets], dtype=bool)
    limit = sys.get_int_max_str_digits()  # Python refuses to convert longer integers: let it say so
    for k, line in enumerate(lines):
        if limit and len(line) > limit and b"0" * limit in line.translate(_DIGITS):
            flags[k] = True
    try:  # pyarrow keeps invalid UTF-8 inside a string as it is: Python must see those lines
        block.decode("utf-8")
    except UnicodeDecodeError:
        for k, line in enumerate(lines):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError:
                flags[k] = True
    return flags


def _texts_ok(values: pa.Array) -> np.ndarray:
    """Per string: not null and not blank (whitespace/NUL/zero-width only). Only strings whose first character
    is blank can be blank, so the full-match regex runs on those few."""
    values = values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
    ok = pc.is_valid(values).to_numpy(zero_copy_only=False)
    first_blank = pc.is_in(pc.utf8_slice_codeunits(values, 0, 1), value_set=_BLANK_FIRST).fill_null(False)
    suspects = np.flatnonzero(first_blank.to_numpy(zero_copy_only=False) | (pc.utf8_length(values).fill_null(0)
                                                                             .to_numpy(zero_copy_only=False) == 0))
    if len(suspects):
        blank = pc.match_substring_regex(values.take(pa.array(suspects)), _BLANK_RE).fill_null(True)
        ok[suspects[blank.to_numpy(zero_copy_only=False)]] = False
    return ok


def _lists_ok(lists: pa.Array, need_one: bool) -> np.ndarray:
    """Per row: every element a valid text (and at least one element, if ``need_one``); null lists fail."""
    n = len(lists)
    ok = pc.is_valid(lists).to_numpy(zero_copy_only=False)
    counts = pc.list_value_length(lists).fill_null(0).to_numpy(zero_copy_only=False)
    if need_one:
        ok &= counts >= 1
    flat = pc.list_flatten(lists)
    if len(flat):
        parents = pc.list_parent_indices(lists).to_numpy(zero_copy_only=False)
        bad = np.zeros(n, bool)
        np.logical_or.at(bad, parents, ~_texts_ok(flat))
        ok &= ~bad
    return ok


def _accept(table: pa.Table, task: str | None, low: float, high: float) -> tuple[np.ndarray, pa.Table] | None:
    """``(mask of rows certainly valid, those rows' columns)`` or None when the block's types are unexpected."""
    n, cols = table.num_rows, {}
    if {"pos", "neg"} & set(table.column_names) or "query" not in table.column_names:
        return None
    for name, want in _KNOWN.items():
        if name not in table.column_names:
            cols[name] = pa.nulls(n, want)
            continue
        col = table.column(name).combine_chunks()
        empty_texts = (name in ("positives", "negatives") and pa.types.is_list(col.type)
                       and pa.types.is_null(col.type.value_type))
        if pa.types.is_null(col.type) or (name == "score" and pa.types.is_integer(col.type)) or empty_texts:
            col = col.cast(want)
        elif name in _SCORE_LISTS and pa.types.is_list(col.type) and (
                pa.types.is_null(col.type.value_type) or pa.types.is_integer(col.type.value_type)):
            col = col.cast(want, safe=False)  # int64 -> float64 rounds as Python's float(int) does
        if col.type != want:
            return None
        cols[name] = col
    if task is None or "task" in table.column_names:  # a null task (absent or null) is Python's to judge
        tasks = cols["task"]
        ok = pc.is_in(tasks, pa.array(TASKS if task is None else [task])).fill_null(False).to_numpy(
            zero_copy_only=False)
    else:
        tasks = cols["task"].fill_null(task)
        ok = np.ones(n, bool)
    ok &= _texts_ok(cols["query"]) & _lists_ok(cols["positives"], True)
    ok &= _lists_ok(cols["negatives"].fill_null(pa.scalar([], pa.list_(pa.string()))), False)
    ok &= ~(pc.is_valid(cols["instruction"]).to_numpy(zero_copy_only=False) & ~_texts_ok(cols["instruction"]))
    sts = pc.equal(tasks, "sts").fill_null(False).to_numpy(zero_copy_only=False)
    if sts.any():
        in_range = pc.and_(pc.greater_equal(cols["score"], low), pc.less_equal(cols["score"], high))
        one = pc.equal(pc.list_value_length(cols["positives"]), 1)
        ok &= ~sts | (pc.and_(in_range, one).fill_null(False).to_numpy(zero_copy_only=False))
    score = pc.if_else(pa.array(sts), cols["score"], pa.nulls(n, pa.float64()))
    negatives = cols["negatives"].fill_null(pa.scalar([], pa.list_(pa.string())))
    scores_ok, neg_scores = _teacher_scores_ok(cols["pos_scores"], cols["neg_scores"], cols["positives"], negatives)
    ok &= scores_ok
    out = pa.table({"task": tasks, "query": cols["query"], "positives": cols["positives"], "negatives": negatives,
                    "score": score, "instruction": cols["instruction"], "pos_scores": cols["pos_scores"],
                    "neg_scores": neg_scores})
    return ok, out


def _teacher_scores_ok(pos: pa.Array, neg: pa.Array, positives: pa.Array,
                       negatives: pa.Array) -> tuple[np.ndarray, pa.Array]:
    """Per row: the teacher scores are valid as :func:`codiemb.data.schema._teacher_scores` decides (both null;
    or one finite number per positive and per negative, ``neg_scores`` null allowed without negatives), and the
    ``neg_scores`` column as the record keeps it (``[]`` for that null)."""
    n = len(pos)
    pos_given = pc.is_valid(pos).to_numpy(zero_copy_only=False)
    neg_given = pc.is_valid(neg).to_numpy(zero_copy_only=False)
    if not pos_given.any() and not neg_given.any():
        return np.ones(n, bool), neg
    negative_counts = pc.list_value_length(negatives).to_numpy(zero_copy_only=False)
    neg_filled = pos_given & ~neg_given & (negative_counts == 0)  # schema: no negatives, no neg_scores needed
    neg = pc.if_else(pa.array(neg_filled), pa.scalar([], pa.list_(pa.float64())), neg)
    neg_given = neg_given | neg_filled
    ok = pos_given == neg_given  # both or neither
    for lists, counts in ((pos, pc.list_value_length(positives).fill_null(0).to_numpy(zero_copy_only=False)),
                          (neg, negative_counts)):
        lengths = pc.list_value_length(lists).fill_null(-1).to_numpy(zero_copy_only=False)
        given = pc.is_valid(lists).to_numpy(zero_copy_only=False)
        ok &= ~given | (lengths == counts)
        flat = pc.list_flatten(lists)
        if len(flat):  # every element a finite number (null, NaN and inf are Python's to name)
            bad = np.zeros(n, bool)
            finite = pc.is_finite(flat).fill_null(False).to_numpy(zero_copy_only=False)
            np.logical_or.at(bad, pc.list_parent_indices(lists).to_numpy(zero_copy_only=False), ~finite)
            ok &= ~bad
    return ok, neg


def jsonl_chunks(path: str, *, name: str, policy: RowPolicy, task: str | None = None,
                 score_range=(0.0, 5.0), **_: object) -> Iterator[list[Record] | pa.Table]:
    """Valid rows of ``path`` in file order, as tables (fast rows) and record lists (rows Python decided)."""
    check_score_range(score_range, name)
    path = check_file(path)
    low, high = float(score_range[0]), float(score_range[1])
    first_line = 1
    with path.open("rb") as fh:
        while True:
            block = fh.read(BLOCK_BYTES)
            if not block:
                return
            if not block.endswith(b"\n"):
                block += fh.readline()
            lines = block.split(b"\n")
            if lines[-1] == b"":
                lines.pop()
            starts = np.zeros(len(lines) + 1, dtype=np.int64)
            np.cumsum([len(line) + 1 for line in lines], out=starts[1:])
            yield from _block(lines, first_line, _suspicious_lines(block, lines, starts), path, name, policy, task, low,
                              high, block.endswith(b"\n"))
            first_line += len(lines)


def _block(lines, first_line, suspicious, path, name, policy, task, low, high, newline_at_end):
    if first_line == 1:
        suspicious[0] = True  # a BOM or anything else odd about line 1: let Python look
    stripped = [line.strip() for line in lines]
    blank = [not line for line in stripped]
    # one JSON object per line, nothing else: pyarrow 26 crashes on a line holding only `null`
    fast = [k for k, (s, line) in enumerate(zip(suspicious, stripped))
            if not s and line[:1] == b"{" and line[-1:] == b"}"]
    accepted = None
    if fast:
        try:
            parsed = pj.read_json(io.BytesIO(b"\n".join(lines[k] for k in fast)))
            accepted = _accept(parsed, task, low, high) if parsed.num_rows == len(fast) else None
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
            accepted = None
    ok = np.zeros(len(lines), bool)
    if accepted is not None:
        ok[np.asarray(fast, dtype=np.int64)[accepted[0]]] = True
        good = accepted[1].filter(pa.array(accepted[0]))
    slow = [k for k in range(len(lines)) if not ok[k] and not blank[k]]
    # rows in file order: runs of fast rows as table slices, Python-decided rows as record lists
    record_at = {line_no - first_line: record for line_no, record in iter_lines(
        [(first_line + k, lines[k] + (b"\n" if newline_at_end or k < len(lines) - 1 else b"")) for k in slow],
        path=path, name=name, policy=policy, task=task,
        score_range=(low, high))}
    taken, pending, k, n = 0, [], 0, len(lines)
    while k < n:
        if ok[k]:
            run = k
            while run < n and ok[run]:
                run += 1
            if pending:
                yield pending
                pending = []
            yield good.slice(taken, run - k)
            taken, k = taken + run - k, run
            continue
        if k in record_at:
            pending.append(record_at[k])
        k += 1
    if pending:
        yield pending
