"""At the end of a Hydra multirun (``python train.py -m ...``), one table of its runs: each job's overrides and
final metrics, read from the ``summary.json`` every run writes. Printed, and saved as ``<sweep dir>/sweep_summary.md``
and ``.json``. A Hydra callback (configs/hydra/default.yaml), so it works with every launcher and sweeper."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from codiemb.utils.atomic import atomic_write_text
from codiemb.utils.summary import SUMMARY_JSON

log = logging.getLogger(__name__)

COLUMNS = ("merge/val/mean", "val/mean", "train/loss")


def collect_runs(sweep_dir: Path) -> list[dict[str, Any]]:
    """One row per job directory (``<sweep dir>/<job number>``), in job order; jobs that wrote no summary (failed
    or killed) are listed as such."""
    jobs = sorted((p for p in sweep_dir.iterdir() if p.is_dir() and p.name.isdigit()), key=lambda p: int(p.name))
    rows = []
    for job in jobs:
        file = job / SUMMARY_JSON
        if not file.is_file():
            rows.append({"job": job.name, "dir": str(job), "overrides": _overrides_of(job), "status": "no summary"})
            continue
        summary = json.loads(file.read_text())
        rows.append({"job": job.name, "dir": str(job), "overrides": summary.get("overrides") or _overrides_of(job),
                     "status": "ok", "merged": summary.get("merged"), "metrics": summary.get("metrics", {}),
                     "wall_time_s": summary.get("wall_time_s")})
    return rows


def _overrides_of(job: Path) -> list[str]:
    file = job / ".hydra" / "overrides.yaml"
    if not file.is_file():
        return []
    from omegaconf import OmegaConf

    return [str(x) for x in OmegaConf.load(file)]


def format_runs(rows: list[dict[str, Any]], columns=COLUMNS) -> str:
    header = ["job", "overrides", *columns, "wall s"]
    body = []
    for row in rows:
        metrics = row.get("metrics") or {}
        cells = [row["job"], " ".join(_short(o) for o in row["overrides"]) or "-"]
        cells += [f"{metrics[c]:.4f}" if c in metrics else ("-" if row["status"] == "ok" else row["status"])
                  for c in columns]
        cells.append(f"{row['wall_time_s']:.0f}" if row.get("wall_time_s") else "-")
        body.append(cells)
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cells) + " |" for cells in body]
    return "\n".join(lines)


def _short(override: str) -> str:
    """``module.lr=2.723675053410031e-05`` -> ``module.lr=2.724e-05`` (Optuna's samples are long floats)."""
    key, sep, value = override.partition("=")
    try:
        return f"{key}={float(value):.4g}" if sep and ("." in value or "e" in value) else override
    except ValueError:
        return override


class SweepSummary(Callback):
    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir))
        if not sweep_dir.is_dir():
            return
        rows = collect_runs(sweep_dir)
        if not rows:
            return
        table = format_runs(rows)
        atomic_write_text(sweep_dir / "sweep_summary.md", table + "\n")
        atomic_write_text(sweep_dir / "sweep_summary.json", json.dumps(rows, indent=2, default=str) + "\n")
        print(f"\ncodiemb: multirun finished: {len(rows)} runs in {sweep_dir}\n{table}\n", flush=True)
