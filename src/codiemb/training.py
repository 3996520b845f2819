"""The training run behind ``train.py``: compose, validate data, fit, export, merge, summarise."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

import lightning as L
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

from codiemb.callbacks.checkpoint import PeriodicExport
from codiemb.errors import ConfigError
from codiemb.mined_data import resolve_mined_specs
from codiemb.outputs import finish_loggers, publish_run, run_merge_stage, score_merged
from codiemb.preflight import preflight
from codiemb.resume import checkpoint_dir, open_run, resolve_ckpt_path  # noqa: F401  (used by tests)
from codiemb.utils.precision import resolve_trainer_precision
from codiemb.utils.summary import print_summary, write_summary

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
    # The whole config first (numbers, loggers, merge, eval sets, model availability), then the data: a bad
    # setting or row fails here, before any model weights load.
    drop_duplicate_lightning_console()
    notes = preflight(cfg)
    precision_line = choose_trainer_precision(cfg)
    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True)

    session = open_run(cfg)  # lock the run directory; find, read and check the checkpoint to resume from
    try:
        if session.finished is not None:  # resume=auto on a finished run: nothing to do, nothing changed
            return session.finished
        return _fit(cfg, session, notes, precision_line, started)
    finally:  # a failed job gives its directory and lock back too: an in-process sweep runs many jobs
        session.close()


def _fit(cfg: DictConfig, session, notes: list[str], precision_line: str, started: float) -> dict[str, Any]:
    notes.extend(session.notes)
    session.notes, ckpt_path = notes, session.ckpt_path
    prepare_mined_data(cfg)
    datamodule = instantiate(cfg.data)
    datamodule.load()
    callbacks, loggers = instantiate_group(cfg.get("callbacks")), instantiate_group(cfg.get("logger"))
    session.prepare(callbacks, loggers)  # a resume continues the merge set and the metrics history
    trainer: L.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    check_cross_device(cfg, trainer.num_devices * trainer.num_nodes)
    sampler = datamodule.build_sampler(world_size=trainer.num_devices * trainer.num_nodes)
    session.check_sampler(sampler.state_dict(), allow_changes=bool(cfg.get("resume_allow_changes")))

    module = instantiate(cfg.module)
    datamodule.attach_tokenizer(module.encoder.tokenizer, module.encoder.settings())
    hyperparameters = {k: OmegaConf.to_container(v, resolve=True) if OmegaConf.is_config(v) else v
                       for k, v in cfg.items() if k != "hydra"}  # the hydra node only resolves inside an app
    for logger in trainer.loggers:
        logger.log_hyperparams(hyperparameters)

    trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
    session.after_fit(trainer, cfg)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
    if not trainer.is_global_zero:
        finish_loggers(trainer.loggers)
        return metrics

    output_dir = Path(cfg.paths.output_dir)
    export = next((c for c in callbacks if isinstance(c, PeriodicExport)), None)
    result: dict[str, Any] = {"metrics": metrics, "output_dir": str(output_dir), "data": datamodule.load_report,
                              "precision": precision_line, "warnings": notes}
    if export is not None:
        result["exports"] = [str(p) for p in export.all_exports()]
        result["merged"], report = run_merge_stage(cfg, export.base(), export.all_exports(), output_dir)
        metrics.update(score_merged(cfg, result["merged"], report))  # the delivered model, scored as the last step
        publish_run(cfg, trainer, module, result, report)
    result["wall_time_s"] = time.perf_counter() - started
    write_summary(result, output_dir, user_overrides())
    session.finish(cfg, trainer, result)  # checkpoints/finished.json; releases the run directory
    print_summary(result)
    finish_loggers(trainer.loggers)
    return result


def drop_duplicate_lightning_console() -> None:
    """``import lightning`` gives the "lightning" logger a console handler of its own that also propagates to the
    root logger, so under Hydra (root: console + train.log) every Lightning INFO line printed twice."""
    if not logging.getLogger().handlers:
        return
    logger = logging.getLogger("lightning")
    for handler in list(logger.handlers):
        if type(handler) is logging.StreamHandler:
            logger.removeHandler(handler)


def user_overrides() -> list[str]:
    """The command line's overrides (``merge.lam=0.5`` ...) when running under Hydra, else none."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return []
    return list(HydraConfig.get().overrides.task)


def choose_trainer_precision(cfg: DictConfig) -> str:
    """``trainer.precision=auto`` becomes bf16-mixed or 32-true for this machine (codiemb.utils.precision)."""
    value, line = resolve_trainer_precision(cfg.trainer.get("precision", "32-true"),
                                            cfg.trainer.get("accelerator", "cpu"))
    with open_dict(cfg):
        cfg.trainer.precision = value
    log.info("precision: %s", line)
    return line


def prepare_mined_data(cfg: DictConfig) -> None:
    """Datasets with a ``mine:`` block read their cached hard negatives (mined here on first use)."""
    specs = OmegaConf.to_container(cfg.data.datasets, resolve=True)
    if not any(spec.get("mine") for spec in specs):
        return
    model = OmegaConf.to_container(cfg.model, resolve=True)
    rank = int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", 0)))
    with open_dict(cfg):
        cfg.data.datasets = resolve_mined_specs(specs, model, rank)


def check_cross_device(cfg: DictConfig, world_size: int) -> None:
    """Cross-device negatives need several processes; with one they would silently be ordinary in-batch ones.

    ``cross_device: auto`` (the IR default) gathers whenever the world size is above 1 (DDP, FSDP, DeepSpeed)
    and is a no-op with one process; only an explicit ``true`` with one process is an error."""
    if world_size > 1:
        return
    for task in ("ir", "sts"):
        if ((cfg.get("loss") or {}).get(task) or {}).get("cross_device") is True:
            raise ConfigError(f"loss.{task}.cross_device=true gathers negatives across processes but this run has "
                              f"one process; set loss.{task}.cross_device=false or train with a distributed trainer "
                              "(trainer=ddp, trainer.devices>1)")
