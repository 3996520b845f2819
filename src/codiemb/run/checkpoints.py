"""Reading the ``.ckpt`` a resume starts from, and what it says about the run's other files.

* :func:`read_checkpoint`: step, sampler settings and merge inputs of a checkpoint, without keeping its weights.
* :func:`newest_readable`: when ``last.ckpt`` is damaged (a kill or a full disk while it was written), the
  newest ``step_*.ckpt`` that still loads, named in the error with the command that resumes from it.
* :func:`missing_exports`: the exports a checkpoint's merge set lists that are no longer on disk.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from codiemb.callbacks.checkpoint import export_step
from codiemb.errors import ConfigError


def load(path: str | Path) -> dict[str, Any]:
    """The checkpoint as a dict (memory-mapped), or ``ConfigError`` naming the file and why it cannot be read."""
    import torch

    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False, mmap=True)
    except Exception as exc:  # noqa: BLE001  (any unreadable file: say which and why, in one line)
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"{path} is not a readable Lightning checkpoint ({reason})") from None
    if not isinstance(ckpt, dict) or "global_step" not in ckpt:
        raise ConfigError(f"{path} is not a Lightning checkpoint (no global_step)")
    return ckpt


def read_checkpoint(path: str, run_dir: Path | None = None) -> dict[str, Any]:
    """What a resume needs from a Lightning checkpoint. A damaged ``last.ckpt`` of ``run_dir`` names the newest
    readable ``step_*.ckpt`` beside it and how to resume from that."""
    try:
        ckpt = load(path)
    except ConfigError as exc:
        fallback = newest_readable(Path(path).parent) if Path(path).name == "last.ckpt" else None
        if fallback is not None:
            step, file = fallback
            where = f" hydra.run.dir={run_dir}" if run_dir is not None else ""
            raise ConfigError(f"{exc}; the newest readable checkpoint is {file} (step {step}): resume from it with "
                              f"python train.py ckpt_path={file}{where}") from None
        raise ConfigError(f"{exc}; point ckpt_path at a .ckpt file written by train.py") from None
    callbacks = ckpt.get("callbacks") or {}
    return {"path": str(path), "global_step": int(ckpt["global_step"]),
            "sampler": (ckpt.get("CoDiEmbDataModule") or {}).get("sampler"),
            "export": next((v for k, v in callbacks.items() if str(k).startswith("PeriodicExport")), None)}


def newest_readable(directory: Path) -> tuple[int, Path] | None:
    """The newest ``step_*.ckpt`` in ``directory`` that loads, with its step; None when there is none."""
    for file in sorted(directory.glob("step_*.ckpt"), reverse=True):
        try:
            return int(load(file)["global_step"]), file
        except ConfigError:
            continue
    return None


def missing_exports(state: dict | None, found: list[Path], step: int) -> list[tuple[int, str]]:
    """``(step, path)`` of each export up to ``step`` that the checkpoint's merge set lists but that is gone."""
    if not state:
        return []
    present = {Path(p).name for p in found}
    listed = [e for e in state.get("exports") or [] if (export_step(Path(e)) or 0) <= step]
    return [(export_step(Path(e)) or 0, e) for e in listed if Path(e).name not in present]
