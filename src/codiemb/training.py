"""The training run behind ``train.py``: compose, validate data, fit, export, merge, summarise."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

import lightning as L
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from codiemb.callbacks.checkpoint import INITIAL, PeriodicExport
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
    datamodule = instantiate(cfg.data)
    datamodule.load()
    callbacks, loggers = instantiate_group(cfg.get("callbacks")), instantiate_group(cfg.get("logger"))
    trainer: L.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    datamodule.build_sampler(world_size=trainer.num_devices * trainer.num_nodes)

    module = instantiate(cfg.module)
    datamodule.attach_tokenizer(module.encoder.tokenizer, module.encoder.settings())
    hyperparameters = {k: OmegaConf.to_container(v, resolve=True) if OmegaConf.is_config(v) else v
                       for k, v in cfg.items() if k != "hydra"}  # the hydra node only resolves inside an app
    for logger in trainer.loggers:
        logger.log_hyperparams(hyperparameters)

    trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
    if not trainer.is_global_zero:
        return metrics

    output_dir = Path(cfg.paths.output_dir)
    export = next((c for c in callbacks if isinstance(c, PeriodicExport)), None)
    result: dict[str, Any] = {"metrics": metrics, "output_dir": str(output_dir), "data": datamodule.load_report}
    if export is not None:
        result["exports"] = [str(p) for p in export.all_exports()]
        result["merged"] = run_merge_stage(cfg, export.dirpath / INITIAL, export.all_exports(), output_dir)
    result["wall_time_s"] = time.perf_counter() - started
    print_summary(result)
    return result


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
