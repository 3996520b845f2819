"""The record store: every dataset, whatever its format, becomes a memory-mapped Arrow table in a cache directory.

Building (once per input and options): the dataset's reader streams validated records (the same per-row
checks, messages and ``on_error`` policy as everywhere: :mod:`codiemb.data.schema`), which are written in
batches to ``<cache_dir>/<name>-<key>/data.arrow`` beside a ``meta.json`` (rows, skipped rows by reason,
suspicious rows, task, score range). ``key`` hashes the format, the reader options, ``on_error`` and every
input file's path, size and content (SHA-256, ~0.8 s/GB; mtime missed in-place edits made with ``cp -p``), so a
changed file or option builds a new table and an unchanged one is only mapped. The directory is written under a
temporary name and renamed at once: it is complete or absent.

Processes: local rank 0 builds (under a file lock, so two runs sharing a cache never build the same table
twice); the other ranks wait for the directory to appear and map the same file. The table is opened with
``datasets.Dataset.from_file`` (memory-mapped; pickled by path, so spawned ranks and DataLoader workers map
the same pages instead of copying rows). Rows are read by index: ``RecordStore[(position, row)]``.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import os
import random
import re
import shutil
import time
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from torch.utils.data import Dataset

from codiemb.data.holdout import BUCKETS
from codiemb.data.quality import QualityCounter
from codiemb.data.readers import read_dataset
from codiemb.data.readers.base import RowPolicy, file_digest
from codiemb.data.schema import Record
from codiemb.errors import ConfigError, DataError

log = logging.getLogger(__name__)

STORE_VERSION = 2  # bump when the table layout or the validation changes: old caches are then rebuilt
BATCH_ROWS = 16_384
SCHEMA = pa.schema([("task", pa.string()), ("query", pa.string()), ("positives", pa.list_(pa.string())),
                    ("negatives", pa.list_(pa.string())), ("score", pa.float64()), ("instruction", pa.string()),
                    # teacher scores (distillation): one per positive / negative; null when the row has none
                    ("pos_scores", pa.list_(pa.float64())), ("neg_scores", pa.list_(pa.float64())),
                    ("length", pa.int32()),  # characters of the query + its longest passage (length grouping)
                    ("bucket", pa.int32())])  # holdout hash bucket of the query (codiemb.data.holdout)
COLUMNS = SCHEMA.names
ROW_SCHEMA = pa.schema(list(SCHEMA)[:8])  # what readers produce; length and bucket are derived


def default_cache_dir() -> Path:
    return Path(os.environ.get("CODIEMB_DATA_CACHE") or Path.home() / ".cache" / "codiemb" / "data")


def local_rank() -> int:
    for var in ("LOCAL_RANK", "SLURM_LOCALID", "RANK"):
        if os.environ.get(var, "").isdigit():
            return int(os.environ[var])
    return 0


# ------------------------------------------------------------------ cache keys
def input_files(path: str, options: dict) -> list[Path]:
    """The local files a dataset reads: the file itself, every file under a folder, or ``data_files``."""
    candidates = [Path(path)]
    data_files = (options.get("load_kwargs") or {}).get("data_files")
    if data_files is not None:
        values = data_files.values() if isinstance(data_files, dict) else [data_files]
        candidates += [Path(f) for v in values for f in ([v] if isinstance(v, str) else v)]
    files = []
    for candidate in candidates:
        if candidate.is_file():
            files.append(candidate)
        elif candidate.is_dir():
            files += sorted(p for p in candidate.rglob("*") if p.is_file())
    return files


def cache_key(fmt: str, path: str, options: dict) -> str:
    stamps = [(str(f.resolve()), f.stat().st_size, file_digest(f)) for f in input_files(path, options)]
    payload = {"version": STORE_VERSION, "format": fmt, "path": str(path), "options": options, "files": stamps}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


# ------------------------------------------------------------------ building
def _chunks(fmt: str, path: str, name: str, options: dict, policy: RowPolicy) -> Iterator[list[Record] | pa.Table]:
    """Validated rows in order, as record lists or (fast path) Arrow tables; rejected rows go to ``policy``."""
    if fmt == "jsonl":  # batched: pyarrow parses, vectorised checks accept, Python decides the rest
        from codiemb.data.fastjsonl import jsonl_chunks

        yield from jsonl_chunks(path, name=name, policy=policy, **options)
        return
    if fmt == "hf":  # streamed row by row from the (Arrow-backed) datasets table
        from codiemb.data.readers.unified import iter_hf

        records = (r for _, r in iter_hf(path, name=name, policy=policy, **options))
    else:  # the public formats: small files, read whole by their reader
        result = read_dataset(fmt, path, name=name, on_error=policy.on_error, **options)
        policy.skipped.update(result.skipped)
        records = iter(result.records)
    while chunk := list(itertools.islice(records, BATCH_ROWS)):
        yield chunk


def _records_table(records: list[Record]) -> pa.Table:
    return pa.table({"task": [r.task for r in records], "query": [r.query for r in records],
                     "positives": [r.positives for r in records], "negatives": [r.negatives for r in records],
                     "score": [r.score for r in records], "instruction": [r.instruction for r in records],
                     "pos_scores": [r.pos_scores for r in records], "neg_scores": [r.neg_scores for r in records]},
                    schema=ROW_SCHEMA)


def _finish(table: pa.Table) -> pa.RecordBatch:
    """Add the length (query + longest passage, in characters) and holdout bucket columns."""
    longest = np.zeros(table.num_rows, dtype=np.int64)
    for column in ("positives", "negatives"):
        lists = table.column(column).combine_chunks()
        if len(pc.list_flatten(lists)):
            np.maximum.at(longest, pc.list_parent_indices(lists).to_numpy(zero_copy_only=False),
                          pc.utf8_length(pc.list_flatten(lists)).to_numpy(zero_copy_only=False))
    length = np.minimum(pc.utf8_length(table.column("query")).to_numpy(zero_copy_only=False) + longest, 2**31 - 1)
    bucket = [zlib.crc32(q.strip().encode("utf-8")) % BUCKETS for q in table.column("query").to_pylist()]
    return pa.record_batch([*(c.combine_chunks() for c in table.columns), pa.array(length, pa.int32()),
                            pa.array(bucket, pa.int32())],
                           schema=SCHEMA)


def _write_table(chunks: Iterable[list[Record] | pa.Table], arrow_file: Path, quality: QualityCounter,
                 score_range: Sequence[float]) -> dict[str, Any]:
    rows, tasks, buffered, pending = 0, set(), 0, []
    with pa.OSFile(str(arrow_file), "wb") as sink, pa.ipc.new_stream(sink, SCHEMA) as writer:
        def flush():
            table = pa.concat_tables(pending) if pending else _records_table([])
            quality.add(table)
            tasks.update(pc.unique(table.column("task")).to_pylist())
            writer.write_batch(_finish(table))
            pending.clear()
        for chunk in chunks:
            if isinstance(chunk, list):
                if any(r.task == "sts" for r in chunk):
                    score_range = next(r.score_range for r in chunk if r.task == "sts")
                chunk = _records_table(chunk)
            pending.append(chunk)
            rows, buffered = rows + chunk.num_rows, buffered + chunk.num_rows
            if buffered >= BATCH_ROWS:
                flush()
                buffered = 0
        if pending or not rows:
            flush()
    return {"rows": rows, "tasks": sorted(tasks), "score_range": [float(v) for v in score_range]}


def build(fmt: str, path: str, name: str, options: dict, target: Path) -> None:
    """Read, validate and write one dataset into ``target`` (atomically: a temporary sibling renamed)."""
    options = dict(options)
    policy = RowPolicy(options.pop("on_error", "raise"))
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        started, quality = time.perf_counter(), QualityCounter()
        info = _write_table(_chunks(fmt, path, name, options, policy), tmp / "data.arrow", quality,
                            options.get("score_range", (0.0, 5.0)))
        meta = {**info, "name": name, "format": fmt, "path": str(path), "options": options,
                "on_error": policy.on_error, "skipped": dict(policy.skipped), "warnings": quality.counts(),
                "built_by_pid": os.getpid(), "build_seconds": round(time.perf_counter() - started, 2)}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1, sort_keys=True, default=str) + "\n")
        os.rename(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:  # hand the parse buffers back: DataLoader workers forked later would otherwise inherit them
        pa.default_memory_pool().release_unused()


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)[:80] or "dataset"


def ensure_built(fmt: str, path: str, name: str, options: dict, cache_dir: str | Path, *, rank: int | None = None,
                 wait_timeout: float = 7200.0) -> Path:
    """The cache directory of this dataset, built by local rank 0 if missing; other ranks wait for it."""
    cache_dir = Path(cache_dir)
    target = cache_dir / f"{_slug(name)}-{cache_key(fmt, path, options)}"
    if (target / "meta.json").is_file():
        log.info("dataset '%s': mapping the cached Arrow table %s", name, target)
        return target
    rank = local_rank() if rank is None else rank
    if rank > 0:
        log.info("dataset '%s': rank %d waits for rank 0 to build %s", name, rank, target)
        deadline = time.monotonic() + wait_timeout
        while not (target / "meta.json").is_file():
            if time.monotonic() > deadline:
                raise DataError(f"rank {rank} waited {wait_timeout:.0f} s for rank 0 to build the record store "
                                f"{target}; did rank 0 fail? (build it once with one process to check)", source=path)
            time.sleep(0.2)
        return target
    from filelock import FileLock

    cache_dir.mkdir(parents=True, exist_ok=True)
    with FileLock(str(cache_dir / f".{target.name}.lock")):
        if not (target / "meta.json").is_file():  # another run may have built it while we waited for the lock
            log.info("dataset '%s': building the Arrow record store %s", name, target)
            build(fmt, path, name, options, target)
    return target


# ------------------------------------------------------------------ reading
def check_max_rows(name: str, max_rows: Any) -> int | None:
    """``None`` (every row) or an integer >= 1; ``0`` (once silently "every row"), negatives, strings: refused."""
    if max_rows is not None and (isinstance(max_rows, bool) or not isinstance(max_rows, int) or max_rows < 1):
        raise ConfigError(f"dataset '{name}': max_rows={max_rows} must be an integer >= 1 (a seeded subsample of "
                          "that many rows); leave max_rows out to use every row")
    return max_rows


@dataclass
class Part:
    """One dataset in the store: its mapped table and the table rows it contributes (after holdout/max_rows)."""

    name: str
    task: str
    score_range: tuple[float, float]
    table: Any  # datasets.Dataset, memory-mapped
    rows: np.ndarray
    meta: dict

    @classmethod
    def open(cls, target: Path, *, holdout: float | None = None, max_rows: int | None = None, seed: int = 0):
        import datasets

        meta = json.loads((target / "meta.json").read_text())
        max_rows = check_max_rows(meta["name"], max_rows)
        table = datasets.Dataset.from_file(str(target / "data.arrow"))
        if len(meta["tasks"]) > 1:
            raise ConfigError(f"dataset '{meta['name']}' mixes tasks {meta['tasks']}; declare task: in its "
                              "entry or split it into one dataset per task")
        rows = np.arange(meta["rows"], dtype=np.int64)
        if holdout:  # {fraction: f}: the queries reserved for validation are dropped (holdout.is_held_out)
            buckets = table.data.table.column("bucket").to_numpy()
            rows = rows[buckets >= float(holdout) * BUCKETS]
        if max_rows is not None and len(rows) > max_rows:  # a seeded subsample, for quick recipes
            rows = rows[sorted(random.Random(seed).sample(range(len(rows)), max_rows))]
        task = meta["tasks"][0] if meta["tasks"] else (meta["options"].get("task") or "ir")
        return cls(meta["name"], task, tuple(meta["score_range"] or (0.0, 5.0)), table, rows, meta)

    def lengths(self) -> np.ndarray:
        return self.table.data.table.column("length").to_numpy()[self.rows]


def _scores(values: list | None) -> tuple[float, ...] | None:
    return None if values is None else tuple(values)


class RecordStore(Dataset):
    """All parts, concatenated; indexed by ``(position, row)`` pairs from the sampler. Rows are read from the
    mapped tables by index (``__getitems__`` reads a whole micro-batch with one ``take`` per part)."""

    def __init__(self, parts: Sequence[Part]):
        self.parts = list(parts)
        self.offsets = np.cumsum([0] + [len(p.rows) for p in self.parts])

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def lengths(self) -> np.ndarray:
        return np.concatenate([p.lengths() for p in self.parts]) if self.parts else np.zeros(0, np.int32)

    def __getitem__(self, key: tuple[int, int]) -> tuple[int, Record]:
        return self.__getitems__([key])[0]

    def __getitems__(self, keys: Sequence[tuple[int, int]]) -> list[tuple[int, Record]]:
        rows = np.asarray([int(row) for _, row in keys], dtype=np.int64)
        if len(rows) and (rows.min() < 0 or rows.max() >= len(self)):
            raise IndexError(f"row index out of range [0, {len(self)})")
        which = np.searchsorted(self.offsets, rows, side="right") - 1
        out: list[Record | None] = [None] * len(rows)
        for p in np.unique(which):
            part, picked = self.parts[p], np.flatnonzero(which == p)
            table_rows = part.rows[rows[picked] - self.offsets[p]]
            # fast_gather slices the mapped record batches; Table.take would first concatenate every chunk of
            # the column into this process's memory (the whole dataset, in every DataLoader worker)
            for k, row in zip(picked, part.table.data.fast_gather(table_rows).to_pylist()):
                out[k] = Record(task=row["task"], query=row["query"], positives=tuple(row["positives"]),
                                negatives=tuple(row["negatives"] or ()), score=row["score"], score_range=part.score_range,
                                instruction=row["instruction"], dataset=part.name,
                                pos_scores=_scores(row["pos_scores"]), neg_scores=_scores(row["neg_scores"]))
        return [(int(position), record) for (position, _), record in zip(keys, out)]

    def records(self) -> Iterator[Record]:
        """Every row in order (mining, checks); streams one batch at a time."""
        for start in range(0, len(self), BATCH_ROWS):
            yield from (r for _, r in self.__getitems__([(0, i) for i in range(start, min(start + BATCH_ROWS,
                                                                                              len(self)))]))
