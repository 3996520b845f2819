"""What ``eval.py`` does: evaluate one model (and optionally a second one to compare with), print the table,
write ``results.json``/``results.md`` and, with ``report.geometry=true``, the geometry report and plots."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import torch

from codiemb.errors import ConfigError
from codiemb.eval import geometry as geo
from codiemb.eval.checks import check_eval_options, check_loaded_set
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


_EXPORTED = "an exported model directory such as <run dir>/merged or <run dir>/checkpoints/step_XXXXXX, or a hub name"


def check_model_path(path: str, key: str = "model_path") -> None:
    """Refuse, in one line and before anything loads, a ``model_path`` that cannot be a model: a missing path,
    a file (a Lightning ``.ckpt`` included), a run directory or a directory without a model config."""
    text = str(path)
    if text.startswith("bundled:"):
        return
    local = Path(text).expanduser()
    if not local.exists():
        looks_local = text.startswith(("/", ".", "~")) or text.count("/") > 1 or local.suffix in (".ckpt", ".pt")
        if looks_local:
            raise ConfigError(f"{key}={text} does not exist; point it at {_EXPORTED}")
        return  # a hub name: loading says whether it exists
    if local.is_file():
        what = "a Lightning training checkpoint" if local.suffix == ".ckpt" else "a file"
        raise ConfigError(f"{key}={text} is {what}, not a model; point it at {_EXPORTED}")
    if (local / "config.json").is_file():
        return
    if (local / "merged").is_dir() or (local / "checkpoints").is_dir():
        raise ConfigError(f"{key}={text} is a run directory, not a model; point it at {local / 'merged'} or one "
                          f"of {local / 'checkpoints'}/step_XXXXXX")
    raise ConfigError(f"{key}={text} is a directory without a model (no config.json); point it at {_EXPORTED}")


def load_encoder(path: str, device: str | None = None):
    from codiemb.models.encoder import Encoder
    try:
        encoder = Encoder.from_pretrained(str(path))
    except OSError as exc:  # a hub name that does not exist (or cannot be fetched offline)
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"model_path={path} is not a model that can be loaded: {reason}") from None
    return encoder.to(device or ("cuda" if torch.cuda.is_available() else "cpu"))


def run_eval(model_path: str, sets, output_dir: str | Path, *, compare_with: str | None = None,
             batch_size: int = 64, geometry: bool = False, geometry_max_pairs: int = 2000,
             device: str | None = None, precision: str | None = "fp32", truncate_dim: int | None = None) -> dict:
    """Evaluate; the base/reference model (``compare_with``) comes first so deltas read trained - base.
    ``precision``: fp32 | bf16 | auto (bf16 where the device computes it natively, codiemb.utils.precision).
    ``truncate_dim``: score every model on the first ``truncate_dim`` coordinates of its embeddings,
    L2-re-normalised (a Matryoshka model's smaller sizes). Both are recorded in ``results.json``."""
    from codiemb.utils.precision import autocast_dtype, resolve_short_precision

    check_eval_options(batch_size=batch_size, precision=precision, device=device, geometry=geometry,
                       geometry_max_pairs=geometry_max_pairs)
    check_truncate_dim(truncate_dim)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    chosen = resolve_short_precision(precision, "cuda" if str(device).startswith("cuda") else "cpu")
    encode_kwargs = {"autocast_dtype": autocast_dtype(chosen)}
    specs = parse_sets(sets)
    paths = ([compare_with] if compare_with else []) + [model_path]
    for key, path in (("compare_with", compare_with), ("model_path", model_path)):
        if path:
            check_model_path(path, key)
    cache: dict = {}
    for spec in specs:  # every set read and checked before any model loads
        cache[spec.name] = load_set(spec)
        check_loaded_set(spec, cache[spec.name])
    models, encoders = {}, {}
    for path in paths:
        label = model_label(path, set(models))
        encoder = load_encoder(path, device)
        if truncate_dim is not None:
            check_truncate_dim(truncate_dim, encoder.embedding_dim, path)
            encoder.truncate_dim = int(truncate_dim)
        results = evaluate(encoder, specs, batch_size=batch_size, cache=cache, **encode_kwargs)
        models[label] = {"path": str(path), "sets": results, "summary": summarize(results, specs)}
        encoders[label] = encoder
    extra: dict = {"precision": chosen}  # what the scores were encoded in (bf16 moves them by ~0.01)
    if truncate_dim is not None:
        extra["truncate_dim"] = int(truncate_dim)
    if geometry:
        extra["geometry"] = geometry_report(encoders, specs, cache, Path(output_dir), batch_size=batch_size,
                                            max_pairs=geometry_max_pairs)
    table = write_results(output_dir, models, specs, extra)
    print(table)
    if geometry:
        print(json.dumps(extra["geometry"], indent=1))
    size = "" if truncate_dim is None else f"; embeddings truncated to {int(truncate_dim)} (re-normalised)"
    print(f"precision {chosen}{size}; results written to {Path(output_dir).resolve()}", flush=True)
    return {"models": models, **extra}


def check_truncate_dim(value, embedding_dim: int | None = None, path: str | None = None) -> None:
    """``truncate_dim``: null, or a positive integer no larger than the model's embedding dimension."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"truncate_dim={value!r} must be a positive integer (a size the model was trained for, "
                          "e.g. 128) or null")
    if embedding_dim is not None and value > embedding_dim:
        raise ConfigError(f"truncate_dim={value} is larger than the embedding dimension {embedding_dim} of "
                          f"{path}; use a size <= {embedding_dim}")


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
