"""The model card (``README.md``) of a merged model: how it was made, from what, and how it scores.

Written by the merge stage itself, for ``merge.py`` and ``train.py``'s merge alike: the one renderer of a
merged model's card, a function of the merge's inputs only, so the same merge gets the same card. It is
rendered from the merge report plus the members' own description, the ``## Model`` / ``## Training data`` /
``## Training recipe`` sections of the last member's card (this package never imports ``codiemb.models``).
"""

from __future__ import annotations

from pathlib import Path

from codiemb.merge.registry import METHODS

CARD_FILE = "README.md"


# The sections of a member's card that describe all members alike (the model, the data and recipe it trained on).
MEMBER_SECTIONS = ("## Model", "## Training data", "## Training recipe")


def render_merge_card(report: dict, member_card: str | None = None) -> str:
    """Markdown: front matter, merge method + options + formula, base, members, per-trajectory weight, the
    members' model and training (:data:`MEMBER_SECTIONS` of ``member_card``), evaluation (when the merge was
    evaluated), usage."""
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
    sections = card_sections(member_card or "", MEMBER_SECTIONS)
    if sections:
        lines += ["", "## The members (from the last member's card)", "", *sections]
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

    member = Path(report["checkpoints"][-1]) / CARD_FILE if report.get("checkpoints") else None
    member_card = member.read_text() if member is not None and member.is_file() else None
    atomic_write_text(Path(directory) / CARD_FILE, render_merge_card(report, member_card))


def card_sections(card: str, titles: tuple[str, ...]) -> list[str]:
    """The lines of each ``## title`` section of a Markdown card, in card order (a title one level deeper)."""
    kept, keep = [], False
    for line in card.splitlines():
        if line.startswith("## "):
            keep = line.strip() in titles
            line = "#" + line if keep else line
        if keep:
            kept.append(line)
    while kept and not kept[-1].strip():
        kept.pop()
    return kept


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
