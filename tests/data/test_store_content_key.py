"""The record store's cache is keyed on file content, not size + mtime; ``max_rows`` must be an integer >= 1."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from codiemb.data.datamodule import CoDiEmbDataModule
from codiemb.errors import ConfigError


def write_rows(path: Path, queries: list[str]) -> Path:
    path.write_text("".join(json.dumps({"query": q, "positives": [f"passage of {q}"]}) + "\n" for q in queries))
    return path


def load(tmp_path: Path, specs: list[dict]) -> CoDiEmbDataModule:
    dm = CoDiEmbDataModule(specs, num_workers=0, ir_batch_size=2, sts_batch_size=2,
                           cache_dir=str(tmp_path / "cache"))
    dm.load()
    return dm


def test_a_file_edited_in_place_with_size_and_mtime_kept_is_read_again(tmp_path):
    """``cp -p`` / ``rsync -a`` / an editor that restores the mtime: same size, same mtime, other bytes."""
    path = write_rows(tmp_path / "a.jsonl", ["alpha", "bravo", "charlie", "delta"])
    spec = [{"name": "a", "task": "ir", "path": str(path)}]
    assert next(r.query for r in load(tmp_path, spec).dataset.records()) == "alpha"
    stat = path.stat()
    write_rows(path, ["ALPHA", "bravo", "charlie", "delta"])  # the same size
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert path.stat().st_size == stat.st_size and path.stat().st_mtime_ns == stat.st_mtime_ns
    assert next(r.query for r in load(tmp_path, spec).dataset.records()) == "ALPHA"
    assert len(list((tmp_path / "cache").glob("a-*"))) == 2


def test_an_unchanged_file_touched_is_still_only_mapped(tmp_path):
    path = write_rows(tmp_path / "a.jsonl", ["alpha", "bravo"])
    spec = [{"name": "a", "task": "ir", "path": str(path)}]
    first = load(tmp_path, spec).load_report["a"]["cache"]
    os.utime(path, ns=(1, 1))  # mtime changed, content not
    assert load(tmp_path, spec).load_report["a"]["cache"] == first


@pytest.mark.parametrize("value", [0, -2, "abc", 1.5])
def test_max_rows_must_be_a_positive_integer(tmp_path, value):
    path = write_rows(tmp_path / "a.jsonl", ["alpha", "bravo", "charlie"])
    with pytest.raises(ConfigError) as raised:
        load(tmp_path, [{"name": "toy", "task": "ir", "path": str(path), "max_rows": value}])
    assert str(raised.value) == (f"dataset 'toy': max_rows={value} must be an integer >= 1 (a seeded subsample of "
                                 "that many rows); leave max_rows out to use every row")


def test_max_rows_keeps_that_many_rows(tmp_path):
    path = write_rows(tmp_path / "a.jsonl", ["alpha", "bravo", "charlie"])
    assert len(load(tmp_path, [{"name": "toy", "task": "ir", "path": str(path), "max_rows": 2}]).dataset) == 2
