"""merge_report.json and merge_report.png: per tensor, each checkpoint's mean merging weight and the share
of elements it dominates (has the largest contribution ``|c_k d_k|``; an element where several checkpoints tie
for the largest counts 1/n for each of them), plus the evaluation table if any.

``layers`` aggregates the same numbers per layer (embeddings, layer 0..N-1, the rest) and per *group* of
checkpoints: the trajectory (run) each came from when runs are fused, else each checkpoint alone. Both numbers
add up over a group's checkpoints: a trajectory's weight is the sum of its exports' mean weights, and it
dominates an element when one of its exports has the largest contribution there.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
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


_LAYER = re.compile(r"(?:^|\.)(?:layer|layers|h|block|blocks)\.(\d+)\.")


def layer_of(name: str) -> str:
    """``encoder.layer.3.attention...`` -> ``layer 3``; embeddings -> ``embeddings``; anything else -> ``other``."""
    found = _LAYER.search(name)
    if found:
        return f"layer {int(found.group(1))}"
    return "embeddings" if "embed" in name else "other"


def layer_summary(tensors: dict[str, dict], groups: Sequence[str]) -> dict:
    """Per layer and per group (``groups[k]`` names checkpoint k's group): element-weighted mean weight and
    share of elements dominated, the dominant group of each layer, and the same over the whole model."""
    names = list(dict.fromkeys(groups))
    index = [names.index(g) for g in groups]
    layers: dict[str, dict] = {}
    for tensor_name, stats in tensors.items():
        entry = layers.setdefault(layer_of(tensor_name), {"numel": 0, "mean_weight": [0.0] * len(names),
                                                          "dominant_fraction": [0.0] * len(names)})
        entry["numel"] += stats["numel"]
        for k, g in enumerate(index):
            entry["mean_weight"][g] += stats["mean_weight"][k] * stats["numel"]
            entry["dominant_fraction"][g] += stats["dominant_fraction"][k] * stats["numel"]
    order = sorted(layers, key=lambda n: (n != "embeddings", n == "other",
                                          int(n.split()[1]) if n.startswith("layer ") else 0))
    result = {}
    for layer in order:
        entry = layers[layer]
        n = max(entry["numel"], 1)
        entry["mean_weight"] = [v / n for v in entry["mean_weight"]]
        entry["dominant_fraction"] = [v / n for v in entry["dominant_fraction"]]
        entry["dominant_group"] = names[max(range(len(names)), key=lambda g: entry["dominant_fraction"][g])]
        result[layer] = entry
    return {"groups": names, "layers": result, "overall": _overall(result, len(names))}


def _overall(layers: dict, k: int) -> dict:
    total = sum(e["numel"] for e in layers.values()) or 1
    return {key: [sum(e[key][g] * e["numel"] for e in layers.values()) / total for g in range(k)]
            for key in ("mean_weight", "dominant_fraction")}


def format_layers(summary: dict) -> str:
    """Plain-text table: layers x groups, ``weight / dominated share`` per cell."""
    rows = [{"layer": layer, **{g: f"{e['mean_weight'][i]:.3f} / {e['dominant_fraction'][i]:.0%}"
                                 for i, g in enumerate(summary["groups"])}, "dominant": e["dominant_group"]}
            for layer, e in summary["layers"].items()]
    header = ["layer", *summary["groups"], "dominant"]
    cells = [header] + [[str(r.get(h, "")) for h in header] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "mean merging weight / share of elements dominated, per layer and trajectory\n" + "\n".join(lines)


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
    layers = (report.get("layers") or {}).get("layers") or {}
    height = max(3.0, 0.14 * len(names) + 1.5)
    rows = 2 if layers else 1
    fig, grid = plt.subplots(rows, 2, figsize=(4 + 1.2 * len(labels), height + 3 * (rows - 1)), squeeze=False,
                             gridspec_kw={"height_ratios": [height, 3][:rows]})
    if layers:  # second row: layers x trajectories
        groups = report["layers"]["groups"]
        for ax, key, title in zip(grid[1], ("mean_weight", "dominant_fraction"),
                                  ("per layer: weight of each trajectory", "per layer: share dominated")):
            values = [layers[n][key] for n in layers]
            image = ax.imshow(values, aspect="auto", cmap="viridis")
            if len(groups) <= 12:  # the numbers themselves: the colour scale can span very little
                for y, row in enumerate(values):
                    for x, v in enumerate(row):
                        ax.text(x, y, f"{v:.2f}", ha="center", va="center", fontsize=6, color="white")
            ax.set_xticks(range(len(groups)), [g[:28] for g in groups], rotation=30, ha="right", fontsize=7)
            ax.set_yticks(range(len(layers)), list(layers), fontsize=7)
            ax.set_title(title, fontsize=9)
            fig.colorbar(image, ax=ax, fraction=0.05)
    axes = grid[0]
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
    axes[1].set_yticks([])
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
