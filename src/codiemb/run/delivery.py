"""What a finished run delivers: the last export's model card, every export's validation score and the best
export, the merge stage, the delivered model (``deliver=merged``: the merged exports, or the last export with
``merge=none``; ``deliver=best``: the best export, no merge) and its validation scores, and the loggers' merge
event. Called by :func:`codiemb.run.train.train` on rank 0 after fitting."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from codiemb.callbacks.checkpoint import PeriodicExport, export_step
from codiemb.eval.scorer import validation_scorer
from codiemb.run.loggers import is_wandb, log_merge_report
from codiemb.run.plan import RunPlan
from codiemb.utils.timing import stage

log = logging.getLogger(__name__)


def deliver(plan: RunPlan, step: int, loggers, module, export: PeriodicExport, result: dict[str, Any]) -> None:
    """Describe the last export, merge the exports into ``<run>/merged`` and score it (``merge/val/...``, the
    delivered model's scores, added to ``result["metrics"]``)."""
    exports = export.all_exports()
    result["exports"] = [str(p) for p in exports]
    if plan.validation:
        result["validation"] = dict(plan.validation)
    describe_training(plan, export, exports, result)
    describe_last_export(plan, step, module, result)
    best = result.get("best_export")
    if plan.deliver == "best" and best is not None:
        result["merged"] = None
        result["delivered"] = {"model": best["path"], "kind": "best export"}
        return
    dtype = validation_dtype(export, module)
    result["merged"], report = run_merge_stage(plan, export.base(), exports, dtype)
    result["metrics"].update(score_merged(plan.val_sets, result["merged"], report, dtype))
    if result["merged"]:
        result["delivered"] = {"model": result["merged"], "kind": "merged"}
        log_merge_event(loggers, step, Path(result["merged"]), report, result["metrics"])
    elif exports:
        result["delivered"] = {"model": str(exports[-1]), "kind": "last export"}


def describe_training(plan: RunPlan, export: PeriodicExport, exports: list[Path], result: dict[str, Any]) -> None:
    """Every export's validation score (``export_scores``), the best export (highest ``val/mean``; the earliest
    of equals) with its scores as ``best/val/...`` metrics, and whether early stopping ended the run. The scores
    come from the validation callback's history (restored from the checkpoint on a resume)."""
    peers = list(getattr(export, "peers", []))
    history = next((dict(c.history) for c in peers if isinstance(getattr(c, "history", None), dict)), {})
    if not history:  # a spawning strategy trained in other processes: their last checkpoint has the history
        history = saved_validation_history(plan.checkpoint_dir / "last.ckpt")
    scores = []
    for path in exports:
        values = history.get(export_step(path))
        if values and "val/mean" in values:
            scores.append({"step": export_step(path), "path": str(path), "val/mean": float(values["val/mean"])})
    if scores:
        best = max(scores, key=lambda s: s["val/mean"])
        result["export_scores"], result["best_export"] = scores, best
        result["metrics"].update({f"best/{k}": float(v) for k, v in history[best["step"]].items()})
    stopper = next((c for c in peers if getattr(c, "stopped_at_step", None) is not None), None)
    if stopper is not None:
        result["early_stopping"] = {"step": stopper.stopped_at_step, "patience": stopper.patience,
                                    "monitor": stopper.monitor, "best": float(stopper.best_score)}


def saved_validation_history(ckpt: Path) -> dict[int, dict[str, float]]:
    """The validation callback's history stored in a checkpoint (empty when there is none)."""
    if not ckpt.is_file():
        return {}
    import torch

    try:
        states = torch.load(ckpt, map_location="cpu", weights_only=False, mmap=True).get("callbacks") or {}
    except Exception:  # noqa: BLE001  (an unreadable checkpoint: no scores, the run is still delivered)
        return {}
    state = next((v for k, v in states.items() if "ValidationCallback" in str(k)), None) or {}
    return {int(k): dict(v) for k, v in (state.get("history") or {}).items()}


def validation_dtype(export: PeriodicExport, module):
    """What the run's validation callback encodes under (``callbacks.validation.precision``), so that the merge
    stage scores its candidates and the merged model as the exports were scored; fp32 (None) without one."""
    callback = next((c for c in getattr(export, "peers", []) if hasattr(c, "autocast_dtype")), None)
    return callback.autocast_dtype(module) if callback is not None else None


def run_merge_stage(plan: RunPlan, base: Path, checkpoints: list[Path],
                    autocast_dtype=None) -> tuple[str | None, dict]:
    """Merge the run's periodic exports (initial weights as base) into ``<run>/merged``; ``merge=none`` skips.
    Returns the merged model's directory (None when skipped) and the merge report."""
    if plan.merge is None or not checkpoints:
        return None, {}
    from codiemb.merge.api import merge_from_config

    output = plan.output_dir / "merged"
    evaluate_fn = validation_scorer(plan.val_sets, autocast_dtype) if plan.val_sets else None
    with stage(f"merge ({plan.merge['method']}, {len(checkpoints)} exports)"):
        report = merge_from_config(plan.merge, base=base, checkpoints=checkpoints, output=output,
                                   evaluate_fn=evaluate_fn)
    return str(output), report or {}


def score_merged(sets: list, merged: str | None, report: dict, autocast_dtype=None) -> dict[str, float]:
    """``merge/val/<metric>``: the delivered (merged) model on the validation sets. Reuses the merge report's
    evaluation when ``merge.evaluate=true`` already scored it; empty without a merged model or sets."""
    if not merged or not sets:
        return {}
    rows = (report.get("evaluation") or {}).get("rows") or []
    row = next((r for r in rows if str(r.get("model", "")).startswith("merged")), None)
    if row is None:
        with stage("validation of the merged model"):
            row = validation_scorer(sets, autocast_dtype)(merged)
    return {f"merge/{k}": float(v) for k, v in row.items() if k.startswith("val/") and isinstance(v, (int, float))}


def describe_last_export(plan: RunPlan, step: int, module, result: dict[str, Any]) -> None:
    """The final model card of the last export (data, losses, LoRA, steps, its validation scores). Written
    before the merge, so the merged model's card (rendered by the merge stage from its members' cards) is the
    same whether ``train.py`` or ``merge.py`` made it."""
    from codiemb.models.card import update_model_card
    from codiemb.models.lora import lora_summary

    if not result.get("exports"):
        return
    final_val = {k[4:]: v for k, v in result["metrics"].items() if k.startswith("val/") and k.count("/") == 1}
    update_model_card(result["exports"][-1], lora=lora_summary(module.encoder.backbone),
                      datasets={n: {"task": i.get("task"), "rows": i.get("rows")} for n, i in result["data"].items()},
                      task_mix=plan.card.get("task_mix"), losses=plan.card.get("losses"),
                      training={"optimizer steps": step, "learning rate": plan.card.get("lr")},
                      evaluation={"this model": final_val} if final_val else None)


def log_merge_event(loggers, step: int, merged: Path, report: dict, metrics_so_far: dict[str, float]) -> None:
    """``events/merge`` and the merged model's scores (``merge/val/...``) as metrics; on W&B also the table,
    plots and report file."""
    metrics = {"events/merge": 1.0, "merge/unchanged_fraction": float(report.get("summary", {}).get(
        "unchanged_fraction", 0.0))}
    metrics.update({k: float(v) for k, v in metrics_so_far.items() if k.startswith("merge/val/")})
    for logger in loggers:
        logger.log_metrics(metrics, step=step)
        logger.save()
        if is_wandb(logger):
            report_to_wandb(logger, report, merged)


def report_to_wandb(logger, report: dict, merged: Path) -> None:
    """The merge's table, plots and report files through a ``WandbLogger``."""
    log_merge_report(lambda key, columns, data: logger.log_table(key, columns=columns, data=data),
                     lambda key, images: logger.log_image(key, images=images),
                     logger.experiment.log_artifact, "merge", report, merged)
