"""Provenance of a benchmark's result file, under one set of keys, and an atomic JSON writer.

    import time
    from provenance import write_result      # python bench/<script>.py: bench/ is already on sys.path

    started_at = time.time()
    ...                                      # measure
    write_result("bench/results/x.json", {"rows": rows}, started_at)

Scripts under ``bench/studies/`` put ``bench/`` on ``sys.path`` first (two lines at their top). Every result
file written through :func:`write_result` opens with the keys of :data:`KEYS`; the payload may not reuse them.
Result files committed before this module keep the keys they were written with (``git``, ``cpu``, ...).
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
KEYS = ("command", "git_revision", "git_dirty", "cpu_capability", "cpu_model", "cpu_count", "threads",
        "wall_time_s", "started", "finished", "python", "torch")


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def cpu_model() -> str:
    """The CPU's marketing name (``model name`` in /proc/cpuinfo), else what :mod:`platform` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _timestamp(seconds: float) -> str:
    return datetime.datetime.fromtimestamp(seconds).astimezone().isoformat(timespec="seconds")


ISA_CAPS = ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY")


def provenance(started_at: float, finished_at: float | None = None) -> dict:
    """Where, how and when a result was measured; ``started_at`` / ``finished_at`` are ``time.time()`` values.

    ``git_dirty`` is true when tracked files differ from ``git_revision`` (untracked files are ignored);
    both are ``None`` outside a git checkout. ``threads`` holds torch's intra-op thread count and the
    ``OMP_NUM_THREADS`` the process was started with (``None`` when unset). ``isa_caps`` holds the environment
    caps that make ``precision: auto`` choose fp32 on a CPU with native bf16 (``ONEDNN_MAX_CPU_ISA`` or ``DNNL_MAX_CPU_ISA``,
    ``ATEN_CPU_CAPABILITY``; codiemb.utils.precision), only where one is set."""
    import torch

    finished_at = time.time() if finished_at is None else finished_at
    status = _git("status", "--porcelain", "--untracked-files=no")
    return {
        "command": shlex.join(["python", *sys.argv]),
        "git_revision": _git("rev-parse", "HEAD"),
        "git_dirty": None if status is None else bool(status),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "threads": {"torch": torch.get_num_threads(), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS")},
        **({"isa_caps": caps} if (caps := {k: os.environ[k] for k in ISA_CAPS if os.environ.get(k)}) else {}),
        "wall_time_s": round(finished_at - started_at, 2),
        "started": _timestamp(started_at),
        "finished": _timestamp(finished_at),
        "python": platform.python_version(),
        "torch": torch.__version__,
    }


def write_json(path: str | Path, obj) -> Path:
    """Write ``obj`` as JSON to ``path`` atomically: a temporary file beside it, then ``os.replace``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as handle:
            json.dump(obj, handle, indent=2)
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_result(path: str | Path, payload: dict, started_at: float) -> dict:
    """Write ``payload`` to ``path`` (atomically) after the provenance keys; return what was written."""
    clash = sorted(set(payload) & set(KEYS))
    if clash:
        raise ValueError(f"payload keys {clash} are provenance keys: leave them to provenance()")
    record = {**provenance(started_at), **payload}
    write_json(path, record)
    return record
