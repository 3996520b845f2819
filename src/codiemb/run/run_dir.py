"""One run, one directory: unique timestamped run directories, the live-run lock, and where Hydra writes
its ``.hydra/`` files when a directory is used again.

* ``${codiemb_unique_dir:<path>}`` (``hydra.run.dir``, ``hydra.sweep.dir``) creates ``<path>`` with one atomic
  ``mkdir``; when it exists (another run started in the same second) it takes ``<path>-1``, ``<path>-2`` ...
  Hydra resolves the run directory more than once, so the answer is remembered for the process.
* ``${codiemb_hydra_subdir:<run dir>}`` (``hydra.output_subdir``) is ``.hydra`` for a new directory; a directory
  that already has one (a resume, or a run that will be refused) gets ``.hydra/rerun_<time>`` instead, so the
  original run's composed config and ``overrides.yaml`` are never overwritten.
* :class:`RunLock` (``<run dir>/.codiemb.lock``, holding the owner's pid and host) keeps a second process out
  of a directory in which a run is alive. It is an ``flock``: the kernel drops it when the owner dies, so the
  lock of a killed run is taken over by the next one.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import socket
import sys
import time
from pathlib import Path

from codiemb.errors import ConfigError
from codiemb.utils.overrides import override_key

LOCK_NAME = ".codiemb.lock"
HYDRA_SUBDIR = ".hydra"

_unique_dirs: dict[str, str] = {}
_hydra_subdirs: dict[str, tuple[str, bool]] = {}  # run dir -> (subdir, created by this process)
_held_locks: dict[str, RunLock] = {}


def process_rank() -> int:
    """This process's global rank from the launcher's environment (0 when not launched as a distributed job)."""
    for key in ("RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK", "LOCAL_RANK"):
        value = os.environ.get(key)
        if value not in (None, ""):
            return int(value)
    for key in ("NODE_RANK", "GROUP_RANK"):  # a non-first node's launcher process
        if os.environ.get(key) not in (None, "", "0"):
            return 1
    return 0


def unique_dir(path: str) -> str:
    """``path``, or ``path-1``, ``path-2`` ... : the first that this call could create (atomic ``mkdir``)."""
    key = os.path.abspath(str(path))
    if key in _unique_dirs:
        return _unique_dirs[key]
    if process_rank() != 0:  # torchrun/srun ranks resolve their own timestamp: never move away from rank 0's
        os.makedirs(key, exist_ok=True)
        _unique_dirs[key] = str(path)
        return str(path)
    os.makedirs(os.path.dirname(key) or ".", exist_ok=True)
    for n in range(10_000):
        candidate = str(path) if n == 0 else f"{path}-{n}"
        try:
            os.mkdir(candidate)
        except FileExistsError:
            continue
        _unique_dirs[key] = candidate
        return candidate
    raise ConfigError(f"could not create a new run directory next to {path} (10000 taken); set hydra.run.dir")


def hydra_subdir(run_dir: str) -> str:
    """``.hydra`` for a directory that has none yet; else a fresh ``.hydra/rerun_<time>`` (claimed atomically)."""
    key = os.path.abspath(str(run_dir))
    if key in _hydra_subdirs:
        return _hydra_subdirs[key][0]
    os.makedirs(key, exist_ok=True)
    try:
        os.mkdir(os.path.join(key, HYDRA_SUBDIR))
        _hydra_subdirs[key] = (HYDRA_SUBDIR, True)
        return HYDRA_SUBDIR
    except FileExistsError:
        pass
    stamp = time.strftime("%Y-%m-%d_%H-%M-%S")
    for n in range(10_000):
        name = f"{HYDRA_SUBDIR}/rerun_{stamp}" + (f"-{n}" if n else "")
        try:
            os.mkdir(os.path.join(key, name))
        except FileExistsError:
            continue
        _hydra_subdirs[key] = (name, True)
        return name
    raise ConfigError(f"could not create a config folder under {key}/{HYDRA_SUBDIR}")


def discard_hydra_output(run_dir: str | Path) -> None:
    """Remove the ``.hydra`` folder this process's Hydra wrote into ``run_dir`` (a refused run leaves no trace);
    folders of other processes are never touched."""
    key = os.path.abspath(str(run_dir))
    subdir, created = _hydra_subdirs.get(key, (None, False))
    if subdir and created:
        shutil.rmtree(os.path.join(key, subdir), ignore_errors=True)
        _hydra_subdirs.pop(key, None)


class RunLock:
    """An exclusive ``flock`` on ``<run dir>/.codiemb.lock`` for as long as this process lives (or until
    :meth:`release`); the file names the owner. Re-entrant within one process."""

    def __init__(self, run_dir: str | Path):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_NAME
        self._fd: int | None = None

    @classmethod
    def acquire(cls, run_dir: str | Path) -> RunLock:
        key = os.path.abspath(str(run_dir))
        if key in _held_locks:
            return _held_locks[key]
        lock = cls(run_dir)
        lock._take()
        _held_locks[key] = lock
        return lock

    def _take(self) -> None:
        import fcntl

        self.run_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                self._take_without_flock(fd)  # a filesystem without flock: judge by the recorded pid
                return
            os.close(fd)
            raise ConfigError(self._in_use_message()) from None
        self._fd = fd
        self._write_owner()

    def _take_without_flock(self, fd: int) -> None:
        owner = self.owner()
        if owner and _alive(owner) and owner.get("pid") != os.getpid():
            os.close(fd)
            raise ConfigError(self._in_use_message())
        self._fd = fd
        self._write_owner()

    def _write_owner(self) -> None:
        payload = json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                              "started": time.strftime("%Y-%m-%d %H:%M:%S")}).encode()
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, payload + b"\n", 0)
        os.fsync(self._fd)

    def owner(self) -> dict | None:
        try:
            return json.loads(self.path.read_text() or "null")
        except (OSError, ValueError):
            return None

    def _in_use_message(self) -> str:
        owner = self.owner() or {}
        who = f"pid {owner.get('pid')} on {owner.get('host')}, started {owner.get('started')}" if owner else \
            "another process"
        return (f"run directory {self.run_dir} is in use by another run ({who}); wait for it to finish, or "
                "start this run in its own directory (drop hydra.run.dir, or give another one)")

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the flock; the file stays (removing it would race a waiter)
            self._fd = None
        _held_locks.pop(os.path.abspath(str(self.run_dir)), None)


def _alive(owner: dict) -> bool:
    if owner.get("host") not in (None, socket.gethostname()):
        return True  # another machine's process: cannot check it, so assume it lives
    try:
        os.kill(int(owner["pid"]), 0)
    except (ProcessLookupError, KeyError, TypeError, ValueError):
        return False
    except PermissionError:
        return True
    return True


_wandb_ids: dict[str, str] = {}


def wandb_run_id(run_dir: str) -> str:
    """The W&B run id of this run directory: the one its ``wandb/`` folder already used (a resumed run goes on
    logging into the same W&B run), else a new one. Remembered for the process."""
    key = os.path.abspath(str(run_dir))
    if key not in _wandb_ids:
        runs = sorted(Path(key, "wandb").glob("*run-*-*"), key=lambda p: p.name.split("run-", 1)[-1])
        runs = [p for p in runs if p.is_dir() and p.name != "latest-run"]
        if runs:
            _wandb_ids[key] = runs[-1].name.rsplit("-", 1)[-1]
        else:
            import secrets
            import string

            alphabet = string.ascii_lowercase + string.digits
            _wandb_ids[key] = "".join(secrets.choice(alphabet) for _ in range(8))
    return _wandb_ids[key]


def with_saved_overrides(argv: list[str]) -> list[str]:
    """``python train.py resume=auto hydra.run.dir=<run>`` composes the run's own config: the overrides it was
    started with (``<run>/.hydra/overrides.yaml``) go before the typed ones, which win where they name the same
    key (a changed model, data or sampler is then refused by the resume's change checks). Other command lines
    are returned as they are."""
    args = argv[1:]
    if any(a in ("-m", "--multirun") for a in args) or "resume=auto" not in args:
        return argv
    run_dir = next((a.split("=", 1)[1] for a in args if a.startswith("hydra.run.dir=")), None)
    saved_file = Path(run_dir, HYDRA_SUBDIR, "overrides.yaml") if run_dir else None
    if saved_file is None or not saved_file.is_file():
        return argv
    import yaml

    typed = {override_key(a) for a in args if not a.startswith("-")}

    def covers(k: str, override: str) -> bool:  # typed `callbacks.x` (or `~callbacks.x`) covers `callbacks.x.step`
        return override_key(override) == k or override_key(override).startswith(k + ".")

    stored = [str(o) for o in yaml.safe_load(saved_file.read_text()) or []]
    saved = [o for o in stored if not any(covers(k, o) for k in typed)]
    # a typed `~x` whose node only the saved `+x...` overrides added: dropping those is the whole deletion
    args = [a for a in args if not (a.startswith("~") and any(covers(override_key(a), o) and o.startswith("+")
                                                                for o in stored))]
    if saved:
        print(f"resume=auto: composing {run_dir}'s config again with its overrides {' '.join(saved)}",
              file=sys.stderr, flush=True)
    return [argv[0], *saved, *args]


def record_in_log_files(message: str, level: int = logging.ERROR) -> None:
    """Write ``message`` to the run's log files only (Hydra's ``<run dir>/train.log``), not to the console, where
    the entry script prints it itself: a refused run's log then says why it stopped instead of being empty."""
    root = logging.getLogger()
    record = root.makeRecord("codiemb", level, __file__, 0, message, None, None)
    for handler in root.handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)
