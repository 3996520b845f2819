"""The training run behind ``train.py``: plan, claim the run directory, load data, fit, deliver, summarise."""

from __future__ import annotations

import logging
import os
import time
from typing import Any

import lightning as L
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

from codiemb.callbacks.checkpoint import PeriodicExport
from codiemb.errors import ConfigError, RunInterrupted
from codiemb.run.delivery import deliver
from codiemb.run.loggers import finish_loggers
from codiemb.run.plan import RunPlan, build_plan
from codiemb.run.resume import RunSession, open_run
from codiemb.run.run_dir import process_rank
from codiemb.utils.config_tree import print_config_tree
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
    plan = build_plan(cfg)
    if cfg.get("print_config"):
        print_config_tree(cfg)
    log.info("precision: %s", plan.precision_line)
    if plan.seed is not None:
        L.seed_everything(plan.seed, workers=True)

    session = open_run(plan)  # lock the run directory; find, read and check the checkpoint to resume from
    try:
        if session.finished is not None:  # resume=auto on a finished run: nothing to do, nothing changed
            return session.finished
        return _fit(plan, session, started)
    finally:  # a failed job gives its directory and lock back too: an in-process sweep runs many jobs
        session.close()


def _fit(plan: RunPlan, session: RunSession, started: float) -> dict[str, Any]:
    nodes = plan.nodes
    prepare_mined_data(nodes["data"], nodes["model"])
    datamodule = instantiate(nodes["data"])
    datamodule.load()
    callbacks, loggers = instantiate_group(nodes["callbacks"]), instantiate_group(nodes["logger"])
    session.prepare(callbacks, loggers)  # a resume continues the merge set and the metrics history
    trainer: L.Trainer = instantiate(nodes["trainer"], callbacks=callbacks, logger=loggers or False)
    world_size = trainer.num_devices * trainer.num_nodes
    check_cross_device(plan.cross_device, world_size)
    sampler = datamodule.build_sampler(world_size=world_size)
    session.check_sampler(sampler.state_dict(), allow_changes=plan.allow_changes)

    module = instantiate(nodes["module"])
    datamodule.attach_tokenizer(module.encoder.tokenizer, module.encoder.settings())
    for logger in trainer.loggers:
        logger.log_hyperparams(plan.hyperparameters)

    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=session.ckpt_path)
    except SystemExit as exc:  # Lightning ends a fit on SIGTERM (code None) and on Ctrl-C (code 1) this way
        finish_loggers(trainer.loggers)
        raise interrupted(exc, plan, trainer.global_step) from None
    step = final_step(trainer, plan)
    session.after_fit(step, plan.limits)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
    if not trainer.is_global_zero:
        finish_loggers(trainer.loggers)
        return metrics

    export = next((c for c in callbacks if isinstance(c, PeriodicExport)), None)
    result: dict[str, Any] = {"metrics": metrics, "output_dir": str(plan.output_dir), "data": datamodule.load_report,
                              "precision": plan.precision_line, "warnings": session.notes}
    if export is not None:
        deliver(plan, step, trainer.loggers, module, export, result)  # merge, score, describe what is delivered
    result["checkpoints_kept"] = plan.keep_checkpoints
    result["wall_time_s"] = time.perf_counter() - started
    write_summary(result, plan.output_dir, plan.overrides)
    session.finish(step, plan.limits, result, plan.keep_checkpoints)  # finished.json, .ckpt files go; unlocks
    print_summary(result)
    finish_loggers(trainer.loggers)
    return result


def final_step(trainer: L.Trainer, plan: RunPlan) -> int:
    """The optimizer step training ended at. Under a spawning strategy (``trainer=ddp_cpu_sim``) the ranks
    trained and this launching process's trainer never counted: its ``last.ckpt`` says."""
    last = plan.checkpoint_dir / "last.ckpt"
    if trainer.global_step or not last.is_file():
        return trainer.global_step
    from codiemb.run.checkpoints import load

    return int(load(last)["global_step"])


def interrupted(exc: SystemExit, plan: RunPlan, step: int) -> RunInterrupted:
    """What an interrupted run says: where it stopped, what a resume continues from, the command that does it;
    exit 143 for SIGTERM (a scheduler's stop), 130 for Ctrl-C. Never 0: a `train.py && eval.py` chain stops."""
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    signal, code = ("SIGTERM", 143) if isinstance(exc, SIGTERMException) else ("Ctrl-C", 130)
    last = plan.checkpoint_dir / "last.ckpt"
    kept = f"the last checkpoint ({last}) holds the work up to its step" if last.is_file() else \
        "no checkpoint was written yet, so a resume starts from the beginning"
    return RunInterrupted(f"run {plan.output_dir} stopped by {signal} at step {step}; {kept}; continue it with: "
                          f"python train.py resume=auto hydra.run.dir={plan.output_dir}", exit_code=code)


def drop_duplicate_lightning_console() -> None:
    """``import lightning`` gives the "lightning" logger a console handler of its own that also propagates to the
    root logger, so under Hydra (root: console + train.log) every Lightning INFO line printed twice."""
    if not logging.getLogger().handlers:
        return
    logger = logging.getLogger("lightning")
    for handler in list(logger.handlers):
        if type(handler) is logging.StreamHandler:
            logger.removeHandler(handler)


def prepare_mined_data(data: DictConfig, model: DictConfig) -> None:
    """Datasets with a ``mine:`` block read their cached hard negatives (mined here on first use)."""
    specs = OmegaConf.to_container(data.datasets, resolve=True)
    if not any(spec.get("mine") for spec in specs):
        return
    from codiemb.mining.cache import resolve_mined_specs

    with open_dict(data):
        data.datasets = resolve_mined_specs(specs, OmegaConf.to_container(model, resolve=True), process_rank())


def check_cross_device(cross_device: dict[str, Any], world_size: int) -> None:
    """Cross-device negatives need several processes; with one they would silently be ordinary in-batch ones.

    ``cross_device: auto`` (the IR default) gathers whenever the world size is above 1 (DDP, FSDP, DeepSpeed)
    and is a no-op with one process; only an explicit ``true`` with one process is an error."""
    if world_size > 1:
        return
    for task, value in cross_device.items():
        if value is True:
            raise ConfigError(f"loss.{task}.cross_device=true gathers negatives across processes but this run has "
                              f"one process; set loss.{task}.cross_device=false or train with a distributed trainer "
                              "(trainer=ddp, trainer.devices>1)")
