"""The run plan: the composed training config read once, at the start of :func:`codiemb.run.train`.

Every module below the entry takes the plan (or the fields it needs), never the whole ``DictConfig``. The plan
is the one place that knows where the run's files go (``callbacks.model_checkpoint.dirpath``,
``callbacks.model_export.dirpath``), which sets validate the run (``val.sets`` while the validation callback is
on) and how the merge stage runs (``merge``, checked by :func:`codiemb.merge.config.check_merge_config`).
The config nodes that Hydra instantiates (data, module, trainer, callbacks, loggers) are kept as nodes.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from codiemb.errors import ConfigError

log = logging.getLogger(__name__)


@dataclass
class RunPlan:
    """What one training run will do, decided before any data or model weights load."""

    output_dir: Path
    checkpoint_dir: Path  # Lightning's .ckpt files (callbacks.model_checkpoint.dirpath)
    export_enabled: bool  # periodic model exports (callbacks.model_export) feed the merge stage
    val_sets: list  # the validation sets, resolved ([] when the validation callback is off)
    merge: dict | None  # the merge node as it will run; None for merge=none
    ckpt_path: str | None  # ckpt_path=<file>
    resume: str | None  # resume=auto
    allow_changes: bool  # resume_allow_changes
    max_steps: float  # inf when unlimited
    max_epochs: float  # inf when unlimited (Lightning's 1000-epoch default when neither is set)
    seed: int | None
    precision: str = "32-true"  # what the trainer runs (trainer.precision=auto resolved for this machine)
    precision_line: str = ""
    optimized_metric: str | None = None
    cross_device: dict[str, Any] = field(default_factory=dict)  # loss.<task>.cross_device
    card: dict[str, Any] = field(default_factory=dict)  # task mix, losses, learning rate for the model card
    hyperparameters: dict[str, Any] = field(default_factory=dict)  # the resolved config, for the loggers
    overrides: list[str] = field(default_factory=list)  # the command line's overrides (Hydra)
    nodes: dict[str, Any] = field(default_factory=dict)  # config nodes to instantiate: data, module, trainer ...
    warnings: list[str] = field(default_factory=list)  # said before the run starts; repeated in the summary

    @property
    def limits(self) -> dict[str, float]:
        return {"max_steps": self.max_steps, "max_epochs": self.max_epochs}

    @property
    def merges(self) -> bool:
        return self.merge is not None and self.export_enabled


def build_plan(cfg: DictConfig) -> RunPlan:
    """Read ``cfg`` once: run preflight checks (one ``ConfigError`` line for the first setting that cannot work),
    resolve ``trainer.precision=auto`` for this machine and return the plan. The only function of the run
    lifecycle that takes the whole config."""
    from codiemb.run import preflight as check
    from codiemb.utils.precision import resolve_trainer_precision

    def select(key: str) -> Any:
        return OmegaConf.select(cfg, key, default=check.ABSENT, throw_on_missing=False)

    warnings: list[str] = []
    check.check_numbers(select, warnings)
    for group in ("logger", "callbacks"):
        check.check_targets(cfg.get(group), group)
    merge = check.check_merge(cfg.get("merge"))
    callbacks = cfg.get("callbacks") or {}
    val_sets = list((cfg.get("val") or {}).get("sets") or []) if callbacks.get("validation") else []
    check.check_eval_sets(val_sets)
    check.check_extras(select)
    check.check_model_available(cfg.get("model"))
    for line in warnings:
        log.warning(line)
    precision, line = resolve_trainer_precision(cfg.trainer.get("precision", "32-true"),
                                                cfg.trainer.get("accelerator", "cpu"))
    with open_dict(cfg):
        cfg.trainer.precision = precision
    checkpoint_dir = (callbacks.get("model_checkpoint") or {}).get("dirpath")
    loss = cfg.get("loss") or {}
    plan = RunPlan(
        output_dir=Path(cfg.paths.output_dir),
        checkpoint_dir=Path(checkpoint_dir) if checkpoint_dir else Path(cfg.paths.output_dir) / "checkpoints",
        export_enabled=bool(callbacks.get("model_export")),
        val_sets=val_sets, merge=merge, ckpt_path=cfg.get("ckpt_path"), resume=cfg.get("resume"),
        allow_changes=bool(cfg.get("resume_allow_changes")), seed=cfg.get("seed"),
        precision=precision, precision_line=line, optimized_metric=cfg.get("optimized_metric"),
        cross_device={task: (loss.get(task) or {}).get("cross_device") for task in ("ir", "sts")},
        card={"task_mix": cfg.data.get("task_mix"), "lr": cfg.module.get("lr"),
              "losses": {t: OmegaConf.to_container(loss[t], resolve=True) for t in ("ir", "sts") if t in loss}},
        hyperparameters={k: OmegaConf.to_container(v, resolve=True) if OmegaConf.is_config(v) else v
                         for k, v in cfg.items() if k != "hydra"},  # the hydra node only resolves in an app
        overrides=user_overrides(), warnings=warnings,
        nodes={"data": cfg.data, "model": cfg.model, "module": cfg.module, "trainer": cfg.trainer,
               "callbacks": cfg.get("callbacks"), "logger": cfg.get("logger")},
        **trainer_limits(cfg.trainer.get("max_steps", -1), cfg.trainer.get("max_epochs")))
    if plan.resume not in (None, "auto"):
        raise ConfigError(f"resume={plan.resume} is not understood; use resume=auto (with hydra.run.dir=<run dir>) "
                          "or ckpt_path=<file.ckpt>")
    return plan


def trainer_limits(steps: Any, epochs: Any) -> dict[str, float]:
    """``trainer.max_steps`` / ``max_epochs`` as numbers (unlimited = inf; Lightning's 1000-epoch default)."""
    steps = math.inf if steps in (None, -1) else float(steps)
    if epochs is None:
        epochs = 1000.0 if steps == math.inf else math.inf
    return {"max_steps": steps, "max_epochs": math.inf if epochs == -1 else float(epochs)}


def user_overrides() -> list[str]:
    """The command line's overrides (``merge.lam=0.5`` ...) when running under Hydra, else none."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return []
    return list(HydraConfig.get().overrides.task)
