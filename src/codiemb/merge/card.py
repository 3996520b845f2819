"""The model card (``README.md``) of a merged model: how it was made, from what, and how it scores.

Written by the merge stage itself (this package never imports ``codiemb.models``, so the card is rendered
here from the merge report), replacing the last checkpoint's card, which describes another model.
"""

from __future__ import annotations

from pathlib import Path

from codiemb.merge.registry import METHODS

CARD_FILE = "README.md"


def render_merge_card(report: dict) -> str:
    """Markdown: front matter, merge method + options + formula, base, members, per-trajectory weight,
    evaluation (when the merge was evaluated), usage."""
    method, options = report["method"], report.get("options") or {}
    formula = method_formula(method, options)
    lines = ["---", "library_name: sentence-transformers", "pipeline_tag: sentence-similarity",
             "tags: [sentence-transformers, feature-extraction, sentence-similarity, codiemb, merge]", "---", "",
             f"# Merged embedding model ({method})", "",
             ("Made by the [codiemb](https://arxiv.org/abs/2508.11442) merge stage from the checkpoints below "
              "(`merge_report.json` holds every number of this card)."), "", "## Merge", "",
             "| setting | value |", "|---|---|", f"| method | {method} |",
             f"| options | {', '.join(f'{k}={v}' for k, v in options.items()) or '-'} |",
             f"| formula | {formula} |", f"| base (w0) | `{report['base']}` |"]
    if report.get("select"):
        lines.append(f"| exports per run | {report['select']} |")
    lines += ["", "## Members", ""]
    summary = report.get("summary") or {}
    weights = summary.get("mean_weight") or []
    members = report.get("members") or [{"export": c} for c in report["checkpoints"]]
    lines += ["| # | trajectory | export | step | validation | mean weight | elements dominated |",
              "|---|---|---|---|---|---|---|"]
    for i, member in enumerate(members):
        weight = f"{weights[i]:.3f}" if i < len(weights) else ""
        share = summary.get("dominant_fraction", [None] * len(members))[i]
        lines.append(f"| {i + 1} | {member.get('trajectory', '')} | `{member['export']}` | {member.get('step', '')} "
                     f"| {_num(member.get('val'))} | {weight} | {_pct(share)} |")
    layers = report.get("layers") or {}
    if layers.get("layers") and len(layers.get("groups", [])) > 1:
        groups = layers["groups"]
        lines += ["", "## Which trajectory dominates which layers", "",
                  "Share of each layer's elements where the trajectory's contribution is the largest.", "",
                  "| layer | " + " | ".join(groups) + " | dominant |", "|---|" + "---|" * (len(groups) + 1)]
        lines += [f"| {name} | " + " | ".join(_pct(v) for v in entry["dominant_fraction"])
                  + f" | {entry['dominant_group']} |" for name, entry in layers["layers"].items()]
    evaluation = report.get("evaluation") or {}
    if evaluation.get("rows"):
        rows = evaluation["rows"]
        metrics = sorted({k for row in rows for k in row if k != "model"})
        lines += ["", "## Evaluation (validation sets)", "", "| model | " + " | ".join(metrics) + " |",
                  "|---|" + "---|" * len(metrics)]
        lines += [f"| {row['model']} | " + " | ".join(_num(row.get(m)) for m in metrics) + " |" for row in rows]
    lines += ["", "## Usage", "", "```python", "from sentence_transformers import SentenceTransformer",
              "model = SentenceTransformer('path/to/this/dir')", "embeddings = model.encode(['a sentence'])",
              "```", ""]
    return "\n".join(lines)


def write_merge_card(report: dict, directory: Path) -> None:
    from codiemb.utils.atomic import atomic_write_text

    atomic_write_text(Path(directory) / CARD_FILE, render_merge_card(report))


def _num(value) -> str:
    return "" if value is None else f"{value:.4f}" if isinstance(value, float) else str(value)


def _pct(value) -> str:
    return "" if value is None else f"{value:.1%}"


def method_formula(method: str, options: dict) -> str:
    """The registry entry's ``formula`` with ``{option}`` fields filled in; the method's name if it has none."""
    spec = METHODS.get(method)
    if spec is None or not spec.formula:
        return method
    try:
        return spec.formula.format(**{**spec.defaults, **options})
    except (KeyError, IndexError, ValueError):
        return spec.formula
