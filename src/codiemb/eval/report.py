"""Result tables: one row per set, the main metrics of every model side by side, plus wall times.

``results.json`` keeps everything (all metrics, summaries, model paths); ``results.md`` is the table.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

from codiemb.eval.checks import nan_to_null
from codiemb.eval.runner import MAIN_METRIC
from codiemb.eval.sets import parse_sets
from codiemb.utils.atomic import atomic_write_text

log = logging.getLogger(__name__)
COLUMNS = {"sts": ("spearman", "pearson"), "ir": ("ndcg@10", "mrr@10", "recall@100", "map"),
           "pairs": ("ap", "max_f1")}


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(c)) for c in column) for column in zip(header, *rows)]
    def line(cells):
        return "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths)) + " |"
    return "\n".join([line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, rows)])


def results_table(models: dict[str, dict], sets) -> str:
    """``models`` maps a label to ``{"sets": {set: metrics}, "summary": {...}}`` (as :func:`build_results`).

    With two models a ``delta`` column (second minus first) follows each main score.
    """
    specs = parse_sets(sets)
    labels = list(models)
    header = ["set", "task", "metric"] + labels + (["delta"] if len(labels) == 2 else []) + \
        [f"wall_s ({label})" for label in labels]
    rows = []
    for spec in specs:
        for metric in COLUMNS[spec.task]:
            values = [models[label]["sets"].get(spec.name, {}).get(metric) for label in labels]
            row = [spec.name, spec.task, metric] + [_fmt(v) for v in values]
            if len(labels) == 2:
                row.append(_fmt(values[1] - values[0], signed=True) if None not in values else "")
            walls = [models[label]["sets"].get(spec.name, {}).get("wall_s") for label in labels]
            row += [f"{w:.1f}" if w is not None and metric == MAIN_METRIC[spec.task] else "" for w in walls]
            rows.append(row)
    for key in ("sts_spearman", "ir_ndcg@10", "pairs_ap", "mean"):
        values = [models[label]["summary"].get(key) for label in labels]
        if any(v is not None for v in values):
            row = ["**average**", "", key] + [_fmt(v) for v in values]
            if len(labels) == 2:
                row.append(_fmt(values[1] - values[0], signed=True) if None not in values else "")
            rows.append(row + [""] * len(labels))
    return markdown_table(header, rows)


def _fmt(value, signed: bool = False) -> str:
    if value is None:
        return ""
    if not math.isfinite(value):
        return "n/a"
    return f"{value:+.2f}" if signed else f"{value:.2f}"


def write_results(output_dir: str | Path, models: dict[str, dict], sets, extra: dict | None = None) -> str:
    """Write ``results.json`` and ``results.md`` atomically into ``output_dir``; return the table."""
    output_dir = Path(output_dir)
    table = results_table(models, sets)
    payload = {"models": models, "sets": [vars(s) | {"options": dict(s.options)} for s in parse_sets(sets)],
               **(extra or {})}
    undefined: list[str] = []
    payload = nan_to_null(payload, undefined)
    if undefined:  # e.g. Spearman of constant scores: undefined, so null rather than a bare NaN (invalid JSON)
        log.warning("undefined scores written as null in results.json (constant scores or labels?): %s",
                    "; ".join(undefined))
    atomic_write_text(output_dir / "results.json",
                      json.dumps(payload, indent=2, default=str, allow_nan=False) + "\n")
    atomic_write_text(output_dir / "results.md", "# Evaluation results\n\nScores x100.\n\n" + table + "\n")
    return table
