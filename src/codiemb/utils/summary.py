"""The end-of-run summary: where everything went, in one screen."""

from __future__ import annotations

from typing import Any


def print_summary(result: dict[str, Any]) -> None:
    lines = ["", "=" * 72, "codiemb: training finished", "=" * 72,
             f"run directory      {result['output_dir']}"]
    for name, info in result.get("data", {}).items():
        skipped = sum(info["skipped"].values())
        lines.append(f"data {name:<14}{info['task']}, {info['rows']} rows" + (f", {skipped} skipped" if skipped else ""))
    exports = result.get("exports") or []
    if exports:
        lines.append(f"checkpoints        {len(exports)} exported models + .ckpt files in {exports[-1].rsplit('/', 1)[0]}")
        lines.append(f"final model        {exports[-1]}")
    if result.get("merged"):
        lines.append(f"merged model       {result['merged']}  (load with SentenceTransformer(dir))")
    for key in sorted(result.get("metrics", {})):
        if key == "train/loss" or (key.startswith("val/") and key.count("/") == 1):  # per-set values: see the logger
            lines.append(f"{key:<19}{result['metrics'][key]:.4f}")
    if "wall_time_s" in result:
        lines.append(f"wall time          {result['wall_time_s']:.1f} s")
    lines.append("=" * 72)
    print("\n".join(lines), flush=True)
