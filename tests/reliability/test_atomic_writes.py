"""codiemb.utils.atomic: a write that fails (a full disk shows up as ENOSPC from write, flush or fsync) keeps the
previous output and leaves no temporary; the rename is made durable with an fsync of the directory."""

from __future__ import annotations

import errno
import os

import pytest

from codiemb.utils import atomic


def enospc(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_atomic_file_failing_mid_write_keeps_the_old_file(tmp_path):
    target = tmp_path / "last.ckpt"
    atomic.atomic_write_bytes(target, b"old" * 1000)
    with pytest.raises(OSError), atomic.atomic_file(target) as fh:
        fh.write(b"new" * 500)
        enospc()
    assert target.read_bytes() == b"old" * 1000 and [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


@pytest.mark.parametrize("writer", ["text", "directory"])
def test_enospc_at_fsync_keeps_the_old_output_and_leaves_no_temporary(tmp_path, monkeypatch, writer):
    target = tmp_path / "out"
    if writer == "text":
        atomic.atomic_write_text(target, "old")
    else:
        with atomic.atomic_directory(target) as tmp:
            (tmp / "weights.bin").write_bytes(b"old")
    monkeypatch.setattr(atomic.os, "fsync", enospc)
    with pytest.raises(OSError) as raised:
        if writer == "text":
            atomic.atomic_write_text(target, "new" * 1000)
        else:
            with atomic.atomic_directory(target) as tmp:
                (tmp / "weights.bin").write_bytes(b"new" * 1000)
    assert raised.value.errno == errno.ENOSPC
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
    assert (target.read_text() if writer == "text" else (target / "weights.bin").read_bytes()) in ("old", b"old")


def test_the_directory_is_fsynced_after_the_rename(tmp_path, monkeypatch):
    synced = []
    real_fsync = os.fsync

    def record(fd):
        synced.append(os.path.realpath(f"/proc/self/fd/{fd}"))
        return real_fsync(fd)

    monkeypatch.setattr(atomic.os, "fsync", record)
    atomic.atomic_write_text(tmp_path / "a.json", "{}")
    with atomic.atomic_directory(tmp_path / "model") as tmp:
        (tmp / "config.json").write_text("{}")
    assert synced.count(str(tmp_path)) == 2, synced
