"""The end-of-run summary: where everything went, in one screen, and the same facts in ``summary.json``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from codiemb.utils.atomic import atomic_write_text

SUMMARY_JSON = "summary.json"


def summary_lines(result: dict[str, Any]) -> list[str]:
    lines = ["", "=" * 72, "codiemb: training finished", "=" * 72,
             f"run directory      {result['output_dir']}"]
    if result.get("precision"):
        lines.append(f"precision          {result['precision']}")
    data = result.get("data", {})
    width = max([14, *(len(name) + 1 for name in data)])  # the value column (19), or wider for a long name
    for name, info in data.items():
        skipped = sum(info["skipped"].values())
        held = f", {info['held_out']} held back for validation" if info.get("held_out") else ""
        lines.append(f"data {name:<{width}}{info['task']}, {info['rows']} rows"
                     + (f", {skipped} skipped" if skipped else "") + held)
    validation = result.get("validation") or {}
    if validation.get("source") == "holdout":
        lines.append(f"validation         held back from the training data: {', '.join(validation['sets'])}")
    elif validation.get("sets"):
        lines.append(f"validation         {', '.join(validation['sets'])}")
    exports = result.get("exports") or []
    if exports:
        where = exports[-1].rsplit('/', 1)[0]
        if result.get("checkpoints_kept", True):
            lines.append(f"checkpoints        {len(exports)} exported models + .ckpt files in {where}")
        else:
            lines.append(f"checkpoints        {len(exports)} exported models in {where} (the .ckpt files are removed "
                         "once the run has finished; callbacks.model_checkpoint.keep_after_finish=true keeps them)")
        lines.append(f"final model        {exports[-1]}")
    best = result.get("best_export")
    if best:
        lines.append(f"best export        {best['path']}  (step {best['step']}, val/mean {best['val/mean']:.4f})")
    if result.get("merged"):
        lines.append(f"merged model       {result['merged']}  (load with SentenceTransformer(dir))")
    delivered = result.get("delivered")
    if delivered and delivered.get("kind") != "merged":
        lines.append(f"delivered          {delivered['model']}  ({delivered['kind']}; load with SentenceTransformer(dir))")
    stopped = result.get("early_stopping")
    if stopped:
        lines.append(f"early stopping     at step {stopped['step']}: {stopped['monitor']} did not improve on "
                     f"{stopped['best']:.4f} in {stopped['patience']} validations")
    metrics = result.get("metrics", {})
    for key in sorted(metrics):
        if key.startswith("train/") and key.endswith("_loss_avg"):  # each task's loss over its last steps
            task = key[len("train/"):-len("_loss_avg")]
            lines.append(f"{key:<23}{metrics[key]:.4f}  (mean of the last {task} steps)")
        elif key.startswith("val/") and key.count("/") == 1:  # per-set values: see the logger
            lines.append(f"{key:<23}{metrics[key]:.4f}  (last step)")
    for key in sorted(metrics):
        if key.startswith("merge/val/") and key.count("/") == 2:
            lines.append(f"{key:<23}{metrics[key]:.4f}  (merged model: the one delivered)")
    for warning in result.get("warnings") or []:
        lines.append(f"warning            {warning}")
    if "wall_time_s" in result:
        lines.append(f"wall time          {result['wall_time_s']:.1f} s")
    lines.append("=" * 72)
    return lines


def print_summary(result: dict[str, Any]) -> None:
    print("\n".join(summary_lines(result)), flush=True)


def write_summary(result: dict[str, Any], output_dir: str | Path, overrides: list[str] | None = None) -> Path:
    """``<run dir>/summary.json``: metrics, outputs and the command-line overrides (read by sweep tables)."""
    path = Path(output_dir) / SUMMARY_JSON
    payload = {k: v for k, v in result.items() if k != "data"}
    payload["data"] = {name: {"task": info.get("task"), "rows": info.get("rows"),
                              **({"held_out": info["held_out"]} if "held_out" in info else {})}
                       for name, info in (result.get("data") or {}).items()}
    payload["overrides"] = list(overrides or [])
    atomic_write_text(path, json.dumps(payload, indent=2, default=str) + "\n")
    return path


def objective(result: dict[str, Any] | None, key: str | None) -> float | None:
    """The value a Hydra sweeper optimises. ``merge/val/<m>`` is the delivered (merged) model's score; a run
    without a merged model (``merge=none``) delivers its last step, so its ``val/<m>`` stands in."""
    if not result or not key:
        return None
    metrics = result.get("metrics", {})
    if key in metrics:
        return float(metrics[key])
    if key.startswith("merge/") and not result.get("merged"):  # deliver=best: the best export; else the last step
        if (result.get("delivered") or {}).get("kind") == "best export" and f"best/{key[6:]}" in metrics:
            return float(metrics[f"best/{key[6:]}"])
        if key[len("merge/"):] in metrics:
            return float(metrics[key[len("merge/"):]])
    return None
