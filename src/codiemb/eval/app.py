"""What ``eval.py`` does: evaluate one model (and optionally a second one to compare with), print the table,
write ``results.json``/``results.md`` and, with ``report.geometry=true``, the geometry report and plots."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import torch

from codiemb.eval import geometry as geo
from codiemb.eval.report import write_results
from codiemb.eval.runner import evaluate, summarize
from codiemb.eval.sets import load_set, parse_sets
from codiemb.eval.sts import evaluate_sts
from codiemb.utils.atomic import atomic_write_text

log = logging.getLogger(__name__)


def model_label(path: str, taken: set[str]) -> str:
    """A short column name for a model path: its last path component (unique among ``taken``)."""
    label = re.sub(r"^bundled:", "", str(path).rstrip("/")).split("/")[-1] or str(path)
    while label in taken:
        label += "'"
    return label


def load_encoder(path: str, device: str | None = None):
    from codiemb.models.encoder import Encoder
    encoder = Encoder.from_pretrained(str(path))
    return encoder.to(device or ("cuda" if torch.cuda.is_available() else "cpu"))


def run_eval(model_path: str, sets, output_dir: str | Path, *, compare_with: str | None = None,
             batch_size: int = 64, geometry: bool = False, geometry_max_pairs: int = 2000,
             device: str | None = None) -> dict:
    """Evaluate; the base/reference model (``compare_with``) comes first so deltas read trained - base."""
    specs = parse_sets(sets)
    paths = ([compare_with] if compare_with else []) + [model_path]
    cache: dict = {}
    models, encoders = {}, {}
    for path in paths:
        label = model_label(path, set(models))
        encoder = load_encoder(path, device)
        results = evaluate(encoder, specs, batch_size=batch_size, cache=cache)
        models[label] = {"path": str(path), "sets": results, "summary": summarize(results, specs)}
        encoders[label] = encoder
    extra = {}
    if geometry:
        extra["geometry"] = geometry_report(encoders, specs, cache, Path(output_dir), batch_size=batch_size,
                                            max_pairs=geometry_max_pairs)
    table = write_results(output_dir, models, specs, extra)
    print(table)
    if geometry:
        print(json.dumps(extra["geometry"], indent=1))
    return {"models": models, **extra}


def geometry_report(encoders: dict, specs, cache: dict, output_dir: Path, *, batch_size: int = 64,
                    max_pairs: int = 2000) -> dict:
    """Per set and model: alignment, uniformity, anisotropy, effective rank; PNGs named after the set."""
    report = {}
    for spec in specs:
        data = cache.get(spec.name) or cache.setdefault(spec.name, load_set(spec))
        pairs = geo.positive_pairs(data)
        if len(pairs) < 2:
            log.warning("geometry: %s has fewer than 2 positive pairs, skipped", spec.name)
            continue
        per_model = {label: geo.geometry(enc, pairs, batch_size=batch_size, max_pairs=max_pairs)
                     for label, enc in encoders.items()}
        geo.plot_cosine_histograms(per_model, output_dir / f"geometry_{spec.name}_cosines.png", spec.name)
        if spec.task == "sts":
            scatter = {}
            for label, enc in encoders.items():
                scores, cosines = evaluate_sts(enc, data.sentences1, data.sentences2, data.scores,
                                               batch_size=batch_size, return_predictions=True)
                scatter[label] = (data.scores, cosines.tolist(), scores["spearman"])
            geo.plot_sts_scatter(scatter, output_dir / f"geometry_{spec.name}_sts_scatter.png", spec.name)
        report[spec.name] = {label: {k: v for k, v in g.items() if not k.startswith("_")}
                             for label, g in per_model.items()}
    atomic_write_text(output_dir / "geometry.json", json.dumps(report, indent=2) + "\n")
    return report
