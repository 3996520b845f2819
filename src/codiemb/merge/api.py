"""The merge stage's entry points: ``merge_models`` (Python), ``merge_from_config`` (train.py, merge.py, the
fuse callback). ``merge.runs`` fuses the exports of several training runs (:mod:`codiemb.merge.runs`)."""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import torch

from codiemb.errors import ConfigError
from codiemb.merge.card import write_merge_card
from codiemb.merge.config import CONFIG_KEYS, check_merge_config
from codiemb.merge.greedy import greedy_soup_select
from codiemb.merge.methods import MergeRule, make_rule
from codiemb.merge.output import check_output, write_marker
from codiemb.merge.report import REPORT_JSON, format_table, layer_summary, summarise, write_report
from codiemb.merge.runs import resolve_members
from codiemb.merge.stream import (
    CHUNK_ELEMENTS,
    ModelDir,
    TensorReader,
    check_compatible,
    merge_tensor,
    plan_tensors,
    write_model_dir,
)
from codiemb.utils.atomic import atomic_directory, atomic_write_text, remove_stale_temporaries, temp_prefix

log = logging.getLogger(__name__)

ScoreFn = Callable[[str], float]
EvaluateFn = Callable[[str], Mapping[str, float]]
__all__ = ["CONFIG_KEYS", "check_merge_config", "evaluate_models", "merge_from_config", "merge_models"]


def merge_models(base: str | Path, checkpoints: Sequence[str | Path], output: str | Path,
                 method: str = "delta", score_fn: ScoreFn | None = None, *,
                 evaluate_fn: EvaluateFn | None = None, chunk_elements: int = CHUNK_ELEMENTS,
                 members: Sequence[Mapping] | None = None, select: str | None = None, **options) -> dict:
    """Merge exported model directories ``checkpoints`` against ``base`` into ``output``; return the report.

    ``method``: a registered method (:data:`codiemb.merge.registry.METHODS`: delta | uniform | greedy_soup |
    task_arithmetic | ties | dare), ``options`` as in its entry's ``defaults`` (``lambda`` is accepted for
    ``lam``).
    ``score_fn(model_dir)`` (higher is better) is required by greedy_soup.
    ``evaluate_fn(model_dir) -> {metric: value}``, when given, scores the base, every checkpoint and the
    result; the table is logged and stored in the report.
    ``members`` (one dict per checkpoint: ``trajectory``, ``step``, ``val``...) describe where checkpoints came
    from when runs are fused; ``layers`` in the report then groups the merging weights by trajectory.
    ``output`` appears complete or not at all; it holds the last checkpoint's non-weight files, the merged
    ``model.safetensors``, a model card for the merged model (``README.md``), ``merge_report.json``,
    ``merge_report.png`` and the marker ``.codiemb_model``. An existing ``output`` is replaced only when it is
    empty or carries that marker (:mod:`codiemb.merge.output`); a merged tensor holding NaN or inf, or an input
    holding one, raises MergeError and leaves ``output`` as it was.
    """
    if not checkpoints:
        raise ConfigError("merge needs at least one checkpoint")
    rule = make_rule(method, **options)
    output = Path(output)
    check_output(output)  # before any work: only an empty directory or a model codiemb wrote is replaced
    dirs = [ModelDir.open(p) for p in [base, *checkpoints]]
    check_compatible(dirs)
    greedy = None
    with TensorReader(dirs) as reader:
        merged_names, copied, ignored = plan_tensors(reader)
        if method == "greedy_soup":
            if score_fn is None:
                raise ConfigError("greedy_soup needs a score_fn (an evaluator in the config, or score_fn=)")
            greedy = _select_greedy(reader, merged_names, copied, score_fn, output, chunk_elements)
            rule = make_rule("greedy_soup", members=[i in greedy["members"] for i in range(len(checkpoints))])
        tensors, stats = _merge_all(reader, merged_names, copied, rule, chunk_elements)
        metadata = reader.metadata(len(checkpoints), (merged_names + copied)[0])
    report = {"method": method, "options": rule.options, "base": str(base),
              "checkpoints": [str(c) for c in checkpoints], "output": str(output),
              "summary": summarise(stats), "tensors": stats, "copied_from_last_checkpoint": copied,
              "ignored_base_only": ignored, "greedy_soup": greedy}
    if members is not None:
        report["members"], report["select"] = [dict(m) for m in members], select
    groups = [m["trajectory"] for m in members] if members else [f"ckpt {i + 1}" for i in range(len(checkpoints))]
    report["layers"] = layer_summary(stats, groups)
    with atomic_directory(output) as tmp:
        write_model_dir(tmp, dirs[-1], tensors, metadata, skip=("README.md",))
        write_report(report, tmp)
        write_merge_card(report, tmp)
        write_marker(tmp, method)
        check_output(output)  # again: something may have appeared there while we merged
    del tensors
    log.info("merged %d checkpoints with %s into %s", len(checkpoints), method, output)
    if evaluate_fn is not None:
        labels = [f"{m['trajectory']} @ step {m['step']}" for m in members] if members else None
        report["evaluation"] = evaluate_models(base, checkpoints, output, evaluate_fn, method, labels)
        atomic_write_text(output / REPORT_JSON, json.dumps(report, indent=2) + "\n")
        write_merge_card(report, output)
    return report


def merge_from_config(cfg: Mapping, *, base=None, checkpoints=None, output=None,
                      evaluate_fn: EvaluateFn | None = None, user_overrides: Sequence[str] | None = None) -> dict | None:
    """Run the stage described by a ``merge`` config group (``configs/merge/<method>.yaml``).

    Explicit ``base``/``checkpoints``/``output`` override the config (train.py passes its run's directories).
    ``runs`` (run or sweep directories) + ``select`` (last | all | best_val) take the checkpoints from training
    runs instead, with their common initial weights as base. ``method: none`` returns None. ``evaluate: true``
    needs ``evaluate_fn``; greedy_soup scores with ``evaluate_fn(dir)[score_key]``. Every other key is an
    option of the method; see :func:`codiemb.merge.config.check_merge_config` for which ones count.
    """
    cfg = check_merge_config(cfg, user_overrides)
    method = cfg.get("method")
    if method in (None, "none"):
        return None
    members = None
    runs = cfg.get("runs") or []
    if runs and checkpoints is None:
        if cfg.get("checkpoints"):
            raise ConfigError("set merge.runs or merge.checkpoints, not both")
        common, found = resolve_members(runs, cfg.get("select") or "last", cfg.get("score_key", "val/mean"))
        base = base if base is not None else (cfg.get("base") or common)
        checkpoints, members = [m.export for m in found], [m.as_dict() for m in found]
    base = base if base is not None else cfg.get("base")
    checkpoints = list(checkpoints if checkpoints is not None else cfg.get("checkpoints") or [])
    output = output if output is not None else cfg.get("output")
    for key, value in (("merge.base", base), ("merge.output", output)):
        if value is None:
            raise ConfigError(f"{key} is not set (e.g. `python merge.py {key}=<dir>`)")
    check_output(output)
    if not checkpoints:
        raise ConfigError("merge.checkpoints is empty (e.g. `merge.checkpoints=[<dir>,<dir>]`, or "
                          "`merge.runs=[<run dir>,...]` / `merge.runs=<multirun dir>`)")
    needs_scores = cfg.get("evaluate") or method == "greedy_soup"
    if needs_scores and evaluate_fn is None:
        raise ConfigError(f"{'greedy_soup' if method == 'greedy_soup' else 'merge.evaluate=true'} needs an "
                          "evaluator: set `evaluator` (a `_target_` giving fn(model_dir) -> {metric: value})")
    inputs = [base, *checkpoints]
    cached = _cached(evaluate_fn, inputs) if evaluate_fn is not None else None
    score_key = cfg.get("score_key", "val/mean")
    score_fn = (lambda d: float(cached(d)[score_key])) if method == "greedy_soup" else None
    options = {k: v for k, v in cfg.items() if k not in CONFIG_KEYS}
    return merge_models(base, checkpoints, output, method, score_fn,
                        evaluate_fn=cached if cfg.get("evaluate") else None, members=members,
                        select=cfg.get("select") if members else None, **options)


def evaluate_models(base, checkpoints, output, evaluate_fn: EvaluateFn, method: str,
                    labels: Sequence[str] | None = None) -> dict:
    """Score base, checkpoints and merged result; log one table."""
    labels = labels or [f"ckpt {i + 1}: {Path(c).name}" for i, c in enumerate(checkpoints)]
    models = [("base", base)] + list(zip(labels, checkpoints))
    models.append((f"merged ({method})", output))
    rows = [{"model": label, **flat_metrics(evaluate_fn(str(path)))} for label, path in models]
    table = format_table(rows)
    log.info("merge evaluation:\n%s", table)
    return {"rows": rows, "table": table}


def _merge_all(reader: TensorReader, merged_names: list[str], copied: list[str], rule: MergeRule,
               chunk_elements: int) -> tuple[dict[str, torch.Tensor], dict[str, dict]]:
    last = len(reader.dirs) - 1
    tensors, stats = {}, {}
    for name in reader.dirs[-1].tensor_files:  # keep the checkpoint's tensor order
        if name in copied:
            tensors[name] = reader.read(last, name)
        elif name in merged_names:
            tensors[name], tensor_stats = merge_tensor(reader, name, rule, chunk_elements)
            stats[name] = tensor_stats.as_dict()
    return tensors, stats


def _select_greedy(reader, merged_names, copied, score_fn: ScoreFn, output: Path,
                   chunk_elements: int) -> dict:
    """Score each checkpoint, then soups written to scratch directories beside ``output``."""
    individual = [float(score_fn(str(d.path))) for d in reader.dirs[1:]]

    def soup_score(members: list[int]) -> float:
        rule = make_rule("greedy_soup", members=[i in members for i in range(len(individual))])
        tensors, _ = _merge_all(reader, merged_names, copied, rule, chunk_elements)
        output.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(output)
        scratch = Path(tempfile.mkdtemp(prefix=temp_prefix(output, "soup"), dir=output.parent))
        try:
            write_model_dir(scratch / "model", reader.dirs[-1], tensors, {})
            del tensors
            return float(score_fn(str(scratch / "model")))
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    return {"individual_scores": individual, **greedy_soup_select(individual, soup_score)}


def _cached(evaluate_fn: EvaluateFn, inputs: Sequence) -> EvaluateFn:
    """Evaluate each input directory once (greedy soup and the table both ask for the checkpoints' scores).

    Only the inputs are cached: scratch soups and the output are new models at possibly reused paths.
    """
    keep = {str(Path(p).resolve()) for p in inputs}
    seen: dict[str, Mapping[str, float]] = {}

    def evaluate(model_dir: str) -> Mapping[str, float]:
        key = str(Path(model_dir).resolve())
        if key not in keep:
            return flat_metrics(evaluate_fn(model_dir))
        if key not in seen:
            seen[key] = flat_metrics(evaluate_fn(model_dir))
        return seen[key]
    return evaluate


def flat_metrics(result: Mapping) -> dict[str, float]:
    """Metrics as one flat dict. ``codiemb.eval``'s ``{"summary": {...}, "sets": {name: {...}}}`` becomes
    ``val/<summary key>`` plus ``val/<set name>`` (that set's ``main_score``); flat dicts pass through."""
    if "summary" not in result:
        return {k: float(v) for k, v in result.items()}
    flat = {f"val/{k}": float(v) for k, v in result["summary"].items()}
    for name, scores in (result.get("sets") or {}).items():
        if "main_score" in scores:
            flat[f"val/{name}"] = float(scores["main_score"])
    return flat
