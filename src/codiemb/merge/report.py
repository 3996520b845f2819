"""merge_report.json and merge_report.png: per tensor, each checkpoint's mean merging weight and the share
of elements it dominates (has the largest contribution ``|c_k d_k|``), plus the evaluation table if any."""

from __future__ import annotations

import json
import math
from pathlib import Path

REPORT_JSON = "merge_report.json"
REPORT_PNG = "merge_report.png"


def summarise(tensors: dict[str, dict]) -> dict:
    """Element-weighted averages over all merged tensors (what one checkpoint contributed overall)."""
    total = sum(t["numel"] for t in tensors.values()) or 1
    k = len(next(iter(tensors.values()))["mean_weight"]) if tensors else 0

    def weighted(key: str) -> list[float]:
        return [sum(t[key][i] * t["numel"] for t in tensors.values()) / total for i in range(k)]

    return {"numel": total, "mean_weight": weighted("mean_weight"),
            "dominant_fraction": weighted("dominant_fraction"),
            "unchanged_fraction": sum(t["unchanged_fraction"] * t["numel"] for t in tensors.values()) / total}


def write_report(report: dict, directory: Path) -> None:
    """Both files into ``directory`` (the merge's temporary output, so they appear atomically with it)."""
    (directory / REPORT_JSON).write_text(json.dumps(report, indent=2) + "\n")
    plot_report(report, directory / REPORT_PNG)


def plot_report(report: dict, path: Path) -> None:
    """Two heat maps, tensors x checkpoints: mean merging weight, and fraction of elements dominated."""
    import matplotlib

    matplotlib.use("Agg")  # no display on servers; must precede pyplot
    import matplotlib.pyplot as plt

    names = list(report["tensors"])
    labels = [f"ckpt {i + 1}" for i in range(len(report["checkpoints"]))]
    height = max(3.0, 0.14 * len(names) + 1.5)
    fig, axes = plt.subplots(1, 2, figsize=(4 + 1.2 * len(labels), height), sharey=True)
    for ax, key, title in zip(axes, ("mean_weight", "dominant_fraction"),
                              ("mean merging weight", "fraction of elements dominated")):
        values = [report["tensors"][n][key] for n in names]
        finite = [v for row in values for v in row if math.isfinite(v)]
        image = ax.imshow(values or [[0.0]], aspect="auto", cmap="viridis",
                          vmin=min(finite + [0.0]), vmax=max(finite + [1e-12]))
        ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right", fontsize=7)
        ax.set_title(title, fontsize=9)
        fig.colorbar(image, ax=ax, fraction=0.05)
    axes[0].set_yticks(range(len(names)), names, fontsize=max(3, min(7, 600 // max(len(names), 1))))
    fig.suptitle(f"merge method: {report['method']}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def format_table(rows: list[dict]) -> str:
    """Plain-text table: one row per model (``{"model": label, metric: value, ...}``), metrics as columns."""
    metrics = sorted({key for row in rows for key in row if key != "model"})
    header = ["model"] + metrics
    cells = [[str(row["model"])] + [_fmt(row.get(m)) for m in metrics] for row in rows]
    widths = [max(len(r[i]) for r in [header] + cells) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in [header] + cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.4f}" if isinstance(value, float) else str(value)
