"""The training run behind ``train.py``: compose, validate data, fit, export, merge, summarise."""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import lightning as L
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

from codiemb.callbacks.checkpoint import INITIAL, PeriodicExport
from codiemb.errors import ConfigError
from codiemb.mined_data import resolve_mined_specs
from codiemb.utils.summary import print_summary

log = logging.getLogger(__name__)


def instantiate_group(node: DictConfig | None) -> list[Any]:
    """Instantiate every entry of a callbacks/logger group (entries without ``_target_`` are skipped)."""
    if not node:
        return []
    return [instantiate(entry) for entry in node.values() if isinstance(entry, DictConfig) and "_target_" in entry]


def train(cfg: DictConfig) -> dict[str, Any]:
    """Run one training job. Returns the final metrics (floats) plus the output locations."""
    started = time.perf_counter()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # tokenisation runs in DataLoader workers
    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True)

    # Data first: a bad row or an impossible batch size fails here, before any model weights load.
    ckpt_path = resolve_ckpt_path(cfg)
    prepare_mined_data(cfg)
    datamodule = instantiate(cfg.data)
    datamodule.load()
    callbacks, loggers = instantiate_group(cfg.get("callbacks")), instantiate_group(cfg.get("logger"))
    trainer: L.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    check_cross_device(cfg, trainer.num_devices * trainer.num_nodes)
    datamodule.build_sampler(world_size=trainer.num_devices * trainer.num_nodes)

    module = instantiate(cfg.module)
    datamodule.attach_tokenizer(module.encoder.tokenizer, module.encoder.settings())
    hyperparameters = {k: OmegaConf.to_container(v, resolve=True) if OmegaConf.is_config(v) else v
                       for k, v in cfg.items() if k != "hydra"}  # the hydra node only resolves inside an app
    for logger in trainer.loggers:
        logger.log_hyperparams(hyperparameters)

    trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
    if not trainer.is_global_zero:
        finish_loggers(trainer.loggers)
        return metrics

    output_dir = Path(cfg.paths.output_dir)
    export = next((c for c in callbacks if isinstance(c, PeriodicExport)), None)
    result: dict[str, Any] = {"metrics": metrics, "output_dir": str(output_dir), "data": datamodule.load_report}
    if export is not None:
        result["exports"] = [str(p) for p in export.all_exports()]
        result["merged"] = run_merge_stage(cfg, export.dirpath / INITIAL, export.all_exports(), output_dir)
        publish_run(cfg, trainer, module, result)
    result["wall_time_s"] = time.perf_counter() - started
    print_summary(result)
    finish_loggers(trainer.loggers)
    return result


def prepare_mined_data(cfg: DictConfig) -> None:
    """Datasets with a ``mine:`` block read their cached hard negatives (mined here on first use)."""
    specs = OmegaConf.to_container(cfg.data.datasets, resolve=True)
    if not any(spec.get("mine") for spec in specs):
        return
    model = OmegaConf.to_container(cfg.model, resolve=True)
    rank = int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", 0)))
    with open_dict(cfg):
        cfg.data.datasets = resolve_mined_specs(specs, model, rank)


def checkpoint_dir(cfg: DictConfig) -> Path:
    """Where Lightning's ``.ckpt`` files of this run go (the ``model_checkpoint`` callback's ``dirpath``)."""
    dirpath = ((cfg.get("callbacks") or {}).get("model_checkpoint") or {}).get("dirpath")
    return Path(dirpath) if dirpath else Path(cfg.paths.output_dir) / "checkpoints"


def resolve_ckpt_path(cfg: DictConfig) -> str | None:
    """``ckpt_path=<file>`` resumes from that file; ``resume=auto`` from the run directory's ``last.ckpt`` when
    there is one (so the same command both starts a run and continues it after a crash)."""
    ckpt_path, resume = cfg.get("ckpt_path"), cfg.get("resume")
    if ckpt_path:
        if not Path(ckpt_path).is_file():
            raise ConfigError(f"ckpt_path={ckpt_path} is not a file; point it at a checkpoint such as "
                              "<run dir>/checkpoints/last.ckpt, or use resume=auto with hydra.run.dir=<run dir>")
        return str(ckpt_path)
    if resume is None:
        return None
    if resume != "auto":
        raise ConfigError(f"resume={resume} is not understood; use resume=auto (with hydra.run.dir=<run dir>) "
                          "or ckpt_path=<file.ckpt>")
    last = checkpoint_dir(cfg) / "last.ckpt"
    if last.is_file():
        log.info("resume=auto: continuing from %s", last)
        return str(last)
    log.info("resume=auto: no %s yet, starting from the beginning", last)
    return None


def check_cross_device(cfg: DictConfig, world_size: int) -> None:
    """Cross-device negatives need several processes; with one they would silently be ordinary in-batch ones."""
    if world_size > 1:
        return
    for task in ("ir", "sts"):
        if ((cfg.get("loss") or {}).get(task) or {}).get("cross_device"):
            raise ConfigError(f"loss.{task}.cross_device=true gathers negatives across processes but this run has "
                              f"one process; set loss.{task}.cross_device=false or train with a distributed trainer "
                              "(trainer=ddp, trainer.devices>1)")


def run_merge_stage(cfg: DictConfig, base: Path, checkpoints: list[Path], output_dir: Path) -> str | None:
    """Merge the run's periodic exports (initial weights as base) into ``<run>/merged``; ``merge=none`` skips."""
    merge_cfg = cfg.get("merge")
    if not merge_cfg or merge_cfg.get("method", "none") == "none" or not checkpoints:
        return None
    from codiemb.merge.api import merge_from_config

    output = output_dir / "merged"
    sets = (cfg.get("val") or {}).get("sets") or []
    evaluate_fn = validation_scorer(sets) if sets else None
    merge_from_config(merge_cfg, base=base, checkpoints=checkpoints, output=output, evaluate_fn=evaluate_fn)
    return str(output)


def validation_scorer(sets):
    """``model_dir -> {"val/<metric>": value}`` on the validation sets: feeds merge.evaluate and greedy soup."""
    from codiemb.eval.runner import evaluate_model_dir

    def score(model_dir: str) -> dict[str, float]:
        return {f"val/{k}": v for k, v in evaluate_model_dir(model_dir, sets)["summary"].items()}
    return score


def publish_run(cfg: DictConfig, trainer: L.Trainer, module, result: dict[str, Any]) -> None:
    """Final model cards (data, losses, merge, evaluation) for the last export and the merged model; the merge
    event, its evaluation and plots for the loggers (W&B: table, images and an artifact)."""
    from codiemb.merge.report import REPORT_JSON
    from codiemb.models.card import update_model_card
    from codiemb.models.lora import lora_summary

    merged = Path(result["merged"]) if result.get("merged") else None
    report = json.loads((merged / REPORT_JSON).read_text()) if merged and (merged / REPORT_JSON).is_file() else {}
    rows = (report.get("evaluation") or {}).get("rows") or []
    final_val = {k[4:]: v for k, v in result["metrics"].items() if k.startswith("val/") and k.count("/") == 1}
    card = {"datasets": {n: {"task": i.get("task"), "rows": i.get("rows")} for n, i in result["data"].items()},
            "task_mix": cfg.data.get("task_mix"), "lora": lora_summary(module.encoder.backbone),
            "losses": {t: OmegaConf.to_container(cfg.loss[t], resolve=True) for t in ("ir", "sts") if t in cfg.loss},
            "training": {"optimizer steps": trainer.global_step, "learning rate": cfg.module.get("lr")}}
    if result.get("exports"):
        update_model_card(result["exports"][-1], **card, evaluation={"this model": final_val} if final_val else None)
    if merged:
        evaluation = {row["model"]: {k: v for k, v in row.items() if k != "model"} for row in rows}
        update_model_card(merged, **card, merge={"method": report.get("method"), **(report.get("options") or {})},
                          evaluation=evaluation or None)
        log_merge_event(trainer.loggers, trainer.global_step, merged, report, rows)


def log_merge_event(loggers, step: int, merged: Path, report: dict, rows: list[dict]) -> None:
    """``events/merge`` and the merged model's scores as metrics; on W&B also the table, plots and report file."""
    metrics = {"events/merge": 1.0, "merge/unchanged_fraction": float(report.get("summary", {}).get(
        "unchanged_fraction", 0.0))}
    merged_row = next((r for r in rows if str(r["model"]).startswith("merged")), {})
    metrics.update({f"merge/{k}": float(v) for k, v in merged_row.items() if isinstance(v, (int, float))})
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
