"""Atomic writes: build into a temporary sibling, then rename, so a kill never leaves a half-written output.

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
from pathlib import Path
from typing import Iterator

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
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
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
    if target.exists():
        old = Path(tempfile.mkdtemp(prefix=temp_prefix(target, "old"), dir=target.parent))
        os.replace(target, old / "previous")
        os.replace(tmp, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, target)


def atomic_write_text(path: str | Path, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=temp_prefix(path), dir=path.parent)
    os.fchmod(fd, 0o666 & ~current_umask())  # mkstemp makes it 0600; respect the umask like open() would
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
