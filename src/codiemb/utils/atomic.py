"""Atomic writes: build into a temporary sibling, then rename, so a kill never leaves a half-written output.

Every write follows the same four steps: a temporary file (or directory) *beside* the target, in the same
directory and so on the same filesystem (never ``$TMPDIR``: a move across filesystems is a copy into the final
name, which a full disk or a kill leaves truncated); fsync of its data; ``os.replace``; fsync of the directory,
so the rename itself survives a power cut. A write that raises (a full disk: ``OSError(ENOSPC)``) removes its
temporary and leaves the previous file as it was.

Temporary siblings are named ``.<target>.tmp-<host>-<pid>-<random>``: a later write of the same target removes
those of a process that is gone (a merge or export killed with SIGKILL cannot clean up after itself).
Files appear with the permissions ``open()`` would give them under the process umask (``mkstemp`` and the
safetensors writer create 0600 files; exported models are meant to be shared like any other output).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import socket
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

log = logging.getLogger(__name__)


def current_umask() -> int:
    """The process umask, read without changing it where Linux allows (os.umask can only set and return)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def make_readable(path: str | Path) -> None:
    """Give a file at least the read/write bits ``open()`` would (``0o666 & ~umask``), keeping its other bits."""
    mode = stat.S_IMODE(os.stat(path).st_mode)
    wanted = mode | (0o666 & ~current_umask())
    if wanted != mode:
        os.chmod(path, wanted)


def _host_tag() -> str:
    return hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]


def temp_prefix(target: Path, kind: str = "tmp") -> str:
    """``.<name>.<kind>-<host>-<pid>-``: whose temporary sibling of ``target`` this is."""
    return f".{target.name}.{kind}-{_host_tag()}-{os.getpid()}-"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def remove_stale_temporaries(target: str | Path) -> list[Path]:
    """Remove temporary siblings of ``target`` left by dead processes of this host; return what was removed."""
    target = Path(target)
    removed = []
    if not target.parent.is_dir():
        return removed
    host = _host_tag()
    for item in target.parent.glob(f".{target.name}.*-{host}-*"):
        kind_host_pid = item.name[len(target.name) + 2:].split("-")
        if len(kind_host_pid) < 3 or kind_host_pid[0] not in ("tmp", "old", "soup") or not kind_host_pid[2].isdigit():
            continue
        pid = int(kind_host_pid[2])
        if pid == os.getpid() or _alive(pid):
            continue
        shutil.rmtree(item, ignore_errors=True) if item.is_dir() else item.unlink(missing_ok=True)
        removed.append(item)
    if removed:
        log.info("removed %d stale temporary copies of %s left by dead processes", len(removed), target)
    return removed


def remove_stale_temporaries_in(directory: str | Path) -> list[Path]:
    """:func:`remove_stale_temporaries` for every target in ``directory`` (e.g. ``.step_000002.ckpt.tmp-...``
    left by a run killed while saving a checkpoint that no later save writes again)."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    targets = {item.name[1:].split(f".{kind}-")[0] for item in directory.glob(".*")
               for kind in ("tmp", "old", "soup") if f".{kind}-" in item.name}
    return [p for name in sorted(targets) if name for p in remove_stale_temporaries(directory / name)]


def fsync_directory(directory: str | Path) -> None:
    """Make the entries of ``directory`` (a rename into it) durable. No-op where directories cannot be opened."""
    try:
        fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:  # e.g. Windows
        return
    try:
        os.fsync(fd)
    except OSError:  # some filesystems refuse fsync on a directory
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_directory(target: str | Path) -> Iterator[Path]:
    """Yield a temporary directory; on success it replaces ``target`` in (close to) one rename.

    If the body raises, the temporary directory is removed and ``target`` is left as it was. Temporary
    siblings of ``target`` left by dead processes are removed first.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(target)
    tmp = Path(tempfile.mkdtemp(prefix=temp_prefix(target), dir=target.parent))
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~current_umask())  # mkdtemp makes it 0700; the output should look like a mkdir'd one
        for root, dirs, files in os.walk(tmp):  # make the data durable (and readable) before it becomes visible
            for name in dirs:
                os.chmod(os.path.join(root, name), stat.S_IMODE(os.stat(os.path.join(root, name)).st_mode)
                         | (0o777 & ~current_umask()))
            for name in files:
                path = os.path.join(root, name)
                make_readable(path)
                with open(path, "rb") as fh:
                    os.fsync(fh.fileno())
            fsync_directory(root)
        if target.exists():
            old = Path(tempfile.mkdtemp(prefix=temp_prefix(target, "old"), dir=target.parent))
            os.replace(target, old / "previous")
            try:
                os.replace(tmp, target)
            except BaseException:  # put the previous output back
                os.replace(old / "previous", target)
                raise
            finally:
                shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
        fsync_directory(target.parent)
    finally:  # a body or a write that raised (a full disk) leaves no temporary behind
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def atomic_file(path: str | Path, mode: str = "wb", **open_kwargs) -> Iterator[IO]:
    """Yield a file object opened on a temporary sibling of ``path``; on success it becomes ``path``.

    The data is flushed and fsynced, renamed over ``path`` with ``os.replace`` and the directory fsynced. If
    the body (or the flush: a full disk) raises, the temporary is removed and ``path`` keeps its old content.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    fd, tmp = tempfile.mkstemp(prefix=temp_prefix(path), dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~current_umask())  # mkstemp makes it 0600; respect the umask like open() would
        with os.fdopen(fd, mode, **open_kwargs) as fh:
            fd = None  # the file object owns it now
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        tmp = None
        fsync_directory(path.parent)
    finally:
        if fd is not None:
            os.close(fd)
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)


def atomic_write_text(path: str | Path, text: str) -> None:
    with atomic_file(path, "w") as fh:
        fh.write(text)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_file(path, "wb") as fh:
        fh.write(data)
