"""What a finished run delivers: the merge stage, the merged model's validation scores, model cards and the
loggers' merge event. Called by :func:`codiemb.training.train` on rank 0 after fitting."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import lightning as L
from omegaconf import DictConfig, OmegaConf

from codiemb.utils.timing import stage

log = logging.getLogger(__name__)


def validation_sets(cfg: DictConfig) -> list:
    """The sets the run validates on (``val.sets`` while the validation callback is enabled)."""
    if not (cfg.get("callbacks") or {}).get("validation"):
        return []
    return list((cfg.get("val") or {}).get("sets") or [])


def run_merge_stage(cfg: DictConfig, base: Path, checkpoints: list[Path],
                    output_dir: Path) -> tuple[str | None, dict]:
    """Merge the run's periodic exports (initial weights as base) into ``<run>/merged``; ``merge=none`` skips.
    Returns the merged model's directory (None when skipped) and the merge report."""
    merge_cfg = cfg.get("merge")
    if not merge_cfg or merge_cfg.get("method", "none") == "none" or not checkpoints:
        return None, {}
    from codiemb.merge.api import merge_from_config

    output = output_dir / "merged"
    sets = validation_sets(cfg)
    evaluate_fn = validation_scorer(sets) if sets else None
    with stage(f"merge ({merge_cfg.method}, {len(checkpoints)} exports)"):
        report = merge_from_config(merge_cfg, base=base, checkpoints=checkpoints, output=output,
                                   evaluate_fn=evaluate_fn)
    return str(output), report or {}


def score_merged(cfg: DictConfig, merged: str | None, report: dict) -> dict[str, float]:
    """``merge/val/<metric>``: the delivered (merged) model on the validation sets. Reuses the merge report's
    evaluation when ``merge.evaluate=true`` already scored it; empty without a merged model or sets."""
    sets = validation_sets(cfg)
    if not merged or not sets:
        return {}
    rows = (report.get("evaluation") or {}).get("rows") or []
    row = next((r for r in rows if str(r.get("model", "")).startswith("merged")), None)
    if row is None:
        with stage("validation of the merged model"):
            row = validation_scorer(sets)(merged)
    return {f"merge/{k}": float(v) for k, v in row.items() if k.startswith("val/") and isinstance(v, (int, float))}


def validation_scorer(sets):
    """``model_dir -> {"val/<metric>": value}`` on the validation sets: feeds merge.evaluate and greedy soup."""
    from codiemb.eval.runner import evaluate_model_dir

    def score(model_dir: str) -> dict[str, float]:
        return {f"val/{k}": v for k, v in evaluate_model_dir(model_dir, sets)["summary"].items()}
    return score


def publish_run(cfg: DictConfig, trainer: L.Trainer, module, result: dict[str, Any], report: dict) -> None:
    """Final model cards (data, losses, merge, evaluation) for the last export and the merged model; the merge
    event, its evaluation and plots for the loggers (W&B: table, images and an artifact)."""
    from codiemb.models.card import update_model_card
    from codiemb.models.lora import lora_summary

    merged = Path(result["merged"]) if result.get("merged") else None
    rows = (report.get("evaluation") or {}).get("rows") or []
    final_val = {k[4:]: v for k, v in result["metrics"].items() if k.startswith("val/") and k.count("/") == 1}
    card = {"datasets": {n: {"task": i.get("task"), "rows": i.get("rows")} for n, i in result["data"].items()},
            "task_mix": cfg.data.get("task_mix"), "lora": lora_summary(module.encoder.backbone),
            "losses": {t: OmegaConf.to_container(cfg.loss[t], resolve=True) for t in ("ir", "sts") if t in cfg.loss},
            "training": {"optimizer steps": trainer.global_step, "learning rate": cfg.module.get("lr")}}
    if result.get("exports"):
        update_model_card(result["exports"][-1], **card, evaluation={"this model": final_val} if final_val else None)
    if merged:
        merged_val = {k[len("merge/val/"):]: v for k, v in result["metrics"].items() if k.startswith("merge/val/")}
        evaluation = {row["model"]: {k: v for k, v in row.items() if k != "model"} for row in rows}
        if not evaluation and merged_val:
            evaluation = {"this model (merged)": merged_val, "last checkpoint": final_val or None}
        update_model_card(merged, **card, merge={"method": report.get("method"), **(report.get("options") or {})},
                          evaluation=evaluation or None)
        log_merge_event(trainer.loggers, trainer.global_step, merged, report, rows, result["metrics"])


def log_merge_event(loggers, step: int, merged: Path, report: dict, rows: list[dict],
                    metrics_so_far: dict[str, float]) -> None:
    """``events/merge`` and the merged model's scores (``merge/val/...``) as metrics; on W&B also the table,
    plots and report file."""
    metrics = {"events/merge": 1.0, "merge/unchanged_fraction": float(report.get("summary", {}).get(
        "unchanged_fraction", 0.0))}
    metrics.update({k: float(v) for k, v in metrics_so_far.items() if k.startswith("merge/val/")})
    for logger in loggers:
        logger.log_metrics(metrics, step=step)
        logger.save()
        if type(logger).__name__ != "WandbLogger":
            continue
        import wandb

        if rows:
            columns = list(dict.fromkeys(k for row in rows for k in row))
            logger.log_table("merge/evaluation", columns=columns, data=[[r.get(c) for c in columns] for r in rows])
        images = sorted(merged.glob("*.png"))
        if images:
            logger.log_image("merge/plots", images=[str(p) for p in images])
        artifact = wandb.Artifact(f"merge-report-{logger.experiment.id}", type="merge_report")
        for file in [merged / "merge_report.json", merged / "README.md", *images]:
            if file.is_file():
                artifact.add_file(str(file))
        logger.experiment.log_artifact(artifact)


def finish_loggers(loggers) -> None:
    """Close W&B runs: the next run in this process (an Optuna trial) must start its own, not reuse this one."""
    if any(type(logger).__name__ == "WandbLogger" for logger in loggers):
        import wandb

        wandb.finish()
