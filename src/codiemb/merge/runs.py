"""Fusion across training runs: find the runs of a sweep, choose their exports, check they share one base.

A *run* is a training output directory with ``checkpoints/initial`` (the initial weights, exported before the
first step) and ``checkpoints/step_*`` (periodic exports); a sweep directory (Hydra's multirun dir) holds runs
one or two levels down. ``merge.runs=[<dir>,...]`` accepts either kind. Each run contributes

* ``select=last``: its final export; ``all``: every export; ``best_val``: the export with the best validation
  score (``score_key``, default ``val/mean``, read from the run's ``metrics.csv``: the validation callback logs
  at the same steps as the exports when their cadences agree, and always at the end of training).

The base of the merge is the runs' common initial weights. Runs that started from other weights, another
architecture or another tokenizer cannot share it: :func:`check_common_base` names the odd run.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from codiemb.errors import ConfigError, MergeError
from codiemb.merge.safetensors_io import SafetensorsFile
from codiemb.merge.stream import ARCHITECTURE_KEYS, ModelDir, tokenizer_fingerprint

SELECTS = ("last", "all", "best_val")
INITIAL, EXPORT_GLOB = "initial", "step_*"


@dataclass
class Member:
    """One export taking part in a fusion: which run, which step, its validation score when known."""

    run: Path
    label: str
    export: Path
    step: int
    score: float | None = None

    def as_dict(self) -> dict:
        return {"run": str(self.run), "trajectory": self.label, "export": str(self.export), "step": self.step,
                "val": self.score}


def is_run(path: Path) -> bool:
    return (path / "checkpoints" / INITIAL).is_dir() and any(exports(path))


def exports(run: Path) -> list[Path]:
    """The run's step exports in step order (each an exported model directory)."""
    found = [p for p in (run / "checkpoints").glob(EXPORT_GLOB) if p.is_dir()]
    return sorted(found, key=export_step)


def export_step(path: Path) -> int:
    try:
        return int(Path(path).name.split("_", 1)[1])
    except (IndexError, ValueError):
        return -1


def find_runs(paths: Sequence[str | Path]) -> list[Path]:
    """Run directories named by ``paths``: each a run, or a sweep directory whose runs lie 1-2 levels below."""
    if isinstance(paths, (str, Path)):
        paths = [paths]
    runs: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if not path.is_dir():
            raise ConfigError(f"merge.runs: {path} is not a directory")
        if is_run(path):
            found = [path]
        else:
            found = sorted({p for p in [*path.glob("*"), *path.glob("*/*")] if p.is_dir() and is_run(p)},
                           key=_natural)
        if not found:
            raise ConfigError(f"merge.runs: {path} is neither a training run (checkpoints/initial + "
                              "checkpoints/step_*) nor a sweep directory holding runs")
        runs += [p for p in found if p not in runs]
    return runs


def validation_scores(run: Path, score_key: str = "val/mean") -> dict[int, float]:
    """``{step: score}`` from the run's CSV logs (every ``metrics.csv`` below it); empty when it never validated."""
    scores: dict[int, float] = {}
    for file in sorted(run.rglob("metrics.csv")):
        with open(file, newline="") as fh:
            for row in csv.DictReader(fh):
                value, step = row.get(score_key), row.get("step")
                if value not in (None, "") and step not in (None, ""):
                    scores[int(float(step))] = float(value)
    return scores


def select_exports(run: Path, select: str = "last", score_key: str = "val/mean") -> list[tuple[Path, float | None]]:
    """``[(export, validation score or None)]`` of one run under ``select``."""
    if select not in SELECTS:
        raise ConfigError(f"merge.select must be one of {SELECTS}, got {select!r}")
    found = exports(run)
    scores = validation_scores(run, score_key)
    scored = [(p, _score_at(scores, export_step(p))) for p in found]
    if select == "last":
        return scored[-1:]
    if select == "all":
        return scored
    known = [(p, s) for p, s in scored if s is not None]
    if not known:
        raise ConfigError(f"merge.select=best_val: run {run} has no validation score ({score_key}) at any of its "
                          f"exports; validate at the export cadence (callbacks.validation.every_n_steps = "
                          "checkpoint_every_n_steps, csv logger) or use merge.select=last")
    return [max(known, key=lambda item: item[1])]


def _score_at(scores: dict[int, float], step: int) -> float | None:
    # Lightning logs a step's metrics under that step, or one step on (hooks after the optimizer step).
    for candidate in (step, step - 1, step + 1):
        if candidate in scores:
            return scores[candidate]
    return None


def run_labels(runs: Sequence[Path]) -> list[str]:
    """A short name per run: its directory name plus the overrides that differ between the runs."""
    overrides = [_overrides(run) for run in runs]
    common = set.intersection(*(set(o) for o in overrides)) if overrides else set()
    labels = []
    for run, own in zip(runs, overrides):
        varying = [o for o in own if o not in common and not o.startswith("hydra.")]
        labels.append(f"{run.name} ({', '.join(varying)})" if varying else run.name)
    if len(set(labels)) < len(labels):  # e.g. runs/0 of two sweeps: use the parent too
        labels = [f"{run.parent.name}/{label}" for run, label in zip(runs, labels)]
    return labels


def check_common_base(runs: Sequence[Path]) -> Path:
    """The shared initial weights (``<first run>/checkpoints/initial``); MergeError naming a run that differs."""
    bases = [ModelDir.open(run / "checkpoints" / INITIAL) for run in runs]
    checks = (("another architecture (config.json)", _architecture), ("another tokenizer", _tokenizer),
              ("other initial weights (another base model?)", _weights))
    for what, fingerprint in checks:
        prints = [fingerprint(base) for base in bases]
        counts = {p: prints.count(p) for p in prints}
        majority = max(counts, key=lambda p: (counts[p], -prints.index(p)))
        odd = [run for run, p in zip(runs, prints) if p != majority]
        if odd:
            agree = [str(run) for run, p in zip(runs, prints) if p == majority]
            raise MergeError(f"run {odd[0]} has {what} than {', '.join(agree)}: runs fused together must start "
                             "from the same base model, architecture and tokenizer; leave it out of merge.runs")
    return bases[0].path


def resolve_members(paths: Sequence[str | Path], select: str = "last",
                    score_key: str = "val/mean") -> tuple[Path, list[Member]]:
    """(common base, members in run order) for ``merge.runs``/``merge.select``."""
    runs = find_runs(paths)
    base = check_common_base(runs)
    members = []
    for run, label in zip(runs, run_labels(runs)):
        members += [Member(run, label, export, export_step(export), score)
                    for export, score in select_exports(run, select, score_key)]
    return base, members


def _architecture(model: ModelDir) -> str:
    file = model.path / "config.json"
    config = json.loads(file.read_text()) if file.is_file() else {}
    return json.dumps({k: config.get(k) for k in ARCHITECTURE_KEYS}, sort_keys=True)


def _tokenizer(model: ModelDir) -> str:
    return tokenizer_fingerprint(model.path) or ""


def _weights(model: ModelDir) -> str:
    digest = hashlib.sha256()
    handles: dict[Path, SafetensorsFile] = {}
    try:
        for name in sorted(model.tensor_files):
            file = model.tensor_files[name]
            if file not in handles:  # one open file per shard (setdefault would open it once per tensor)
                handles[file] = SafetensorsFile(file)
            handle = handles[file]
            digest.update(f"{name}:{handle.dtype(name)}:{handle.shape(name)}".encode())
            digest.update(handle.raw(name))
    finally:
        for handle in handles.values():
            handle.close()
    return digest.hexdigest()


def _overrides(run: Path) -> list[str]:
    file = run / ".hydra" / "overrides.yaml"
    if not file.is_file():
        return []
    import yaml

    return [str(o) for o in (yaml.safe_load(file.read_text()) or [])]


def _natural(path: Path) -> tuple:
    parts = path.parts
    return tuple((0, int(p), "") if p.isdigit() else (1, math.inf, p) for p in parts)
