"""The run plan: the composed training config read once, at the start of :func:`codiemb.run.train`.

Every module below the entry takes the plan (or the fields it needs), never the whole ``DictConfig``. The plan
is the one place that knows where the run's files go (``callbacks.model_checkpoint.dirpath``,
``callbacks.model_export.dirpath``), which sets validate the run (``val.sets`` while the validation callback is
on, or a slice held back from the user's own data: :func:`choose_val_sets`), what it delivers (``deliver``) and
how the merge stage runs (``merge``, checked by :func:`codiemb.merge.config.check_merge_config`).
The config nodes that Hydra instantiates (data, module, trainer, callbacks, loggers) are kept as nodes (an
explicit ``trainer.max_steps`` first lifts a default epoch limit: :func:`uncap_max_steps`).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from codiemb.errors import ConfigError
from codiemb.utils.overrides import override_key

log = logging.getLogger(__name__)


@dataclass
class RunPlan:
    """What one training run will do, decided before any data or model weights load."""

    output_dir: Path
    checkpoint_dir: Path  # Lightning's .ckpt files (callbacks.model_checkpoint.dirpath)
    export_enabled: bool  # periodic model exports (callbacks.model_export) feed the merge stage
    val_sets: list  # the validation sets, resolved ([] when the validation callback is off)
    merge: dict | None  # the merge node as it will run; None for merge=none (and deliver=best)
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
    validation: dict[str, Any] = field(default_factory=dict)  # where val_sets come from (summary.json "validation")
    keep_checkpoints: bool = False  # callbacks.model_checkpoint.keep_after_finish: .ckpt files outlive the run
    deliver: str = "merged"  # deliver=merged (the merge stage's model; the last export with merge=none) | best

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
    overrides = user_overrides()
    uncap_max_steps(cfg, overrides)
    check.check_numbers(select, warnings)
    check.check_choices(select)
    for group in ("logger", "callbacks"):
        check.check_targets(cfg.get(group), group)
    for node in ("module", "trainer"):
        check.check_node(cfg.get(node), node)
    check.check_seed(cfg.get("seed"))
    merge = check.check_merge(cfg.get("merge"))
    callbacks = cfg.get("callbacks") or {}
    val_sets, validation = choose_val_sets(cfg, overrides)
    if validation["source"] == "config":
        check.check_eval_sets(val_sets)
    deliver, merge = check_delivery(cfg, val_sets, merge)
    check.check_extras(select)
    check.check_model_available(cfg.get("model"))
    for line in warnings:
        log.warning(line)
    precision, line = resolve_trainer_precision(cfg.trainer.get("precision", "32-true"),
                                                cfg.trainer.get("accelerator", "cpu"))
    with open_dict(cfg):
        cfg.trainer.precision = precision
    checkpointing = callbacks.get("model_checkpoint") or {}
    checkpoint_dir = checkpointing.get("dirpath")
    loss = cfg.get("loss") or {}
    plan = RunPlan(
        output_dir=Path(cfg.paths.output_dir),
        checkpoint_dir=Path(checkpoint_dir) if checkpoint_dir else Path(cfg.paths.output_dir) / "checkpoints",
        export_enabled=bool(callbacks.get("model_export")),
        keep_checkpoints=bool(checkpointing.get("keep_after_finish", True)) or not callbacks.get("model_export"),
        val_sets=val_sets, merge=merge, ckpt_path=cfg.get("ckpt_path"), resume=cfg.get("resume"),
        allow_changes=bool(cfg.get("resume_allow_changes")), seed=cfg.get("seed"),
        precision=precision, precision_line=line, optimized_metric=cfg.get("optimized_metric"),
        cross_device={task: (loss.get(task) or {}).get("cross_device") for task in ("ir", "sts")},
        card={"task_mix": cfg.data.get("task_mix"), "lr": cfg.module.get("lr"),
              "losses": {t: OmegaConf.to_container(loss[t], resolve=True) for t in ("ir", "sts") if t in loss}},
        hyperparameters={k: OmegaConf.to_container(v, resolve=True) if OmegaConf.is_config(v) else v
                         for k, v in cfg.items() if k != "hydra"},  # the hydra node only resolves in an app
        overrides=overrides, warnings=warnings, validation=validation, deliver=deliver,
        nodes={"data": cfg.data, "model": cfg.model, "module": cfg.module, "trainer": cfg.trainer,
               "callbacks": cfg.get("callbacks"), "logger": cfg.get("logger")},
        **trainer_limits(cfg.trainer.get("max_steps", -1), cfg.trainer.get("max_epochs")))
    if plan.resume not in (None, "auto"):
        raise ConfigError(f"resume={plan.resume} is not understood; use resume=auto (with hydra.run.dir=<run dir>) "
                          "or ckpt_path=<file.ckpt>")
    return plan


# Formats that imply their task (a dataset of another format declares it: task: ir | sts).
FORMAT_TASKS = {"stsb": "sts", "semeval_sts": "sts", "beir": "ir", "wikiqa": "ir", "qpn_jsonl": "ir"}
# The keys of a dataset entry that are not reader options (the rest goes to the validation set's reader too).
_NOT_READER_OPTIONS = ("name", "task", "format", "path", "max_rows", "holdout", "mine")


def uncap_max_steps(cfg: DictConfig, overrides: list[str]) -> None:
    """An explicit ``trainer.max_steps`` on the command line is the run's length: a default epoch count
    (``trainer=cpu``'s ``max_epochs: 1``, an experiment's) no longer stops it first. ``trainer.max_epochs``
    given too still counts."""
    keys = {override_key(o) for o in overrides}
    steps = cfg.trainer.get("max_steps")
    if "trainer.max_steps" not in keys or "trainer.max_epochs" in keys or steps in (None, -1):
        return
    if cfg.trainer.get("max_epochs") not in (None, -1):
        log.info("trainer.max_steps=%s without trainer.max_epochs: the default max_epochs=%s no longer applies",
                 steps, cfg.trainer.get("max_epochs"))
    with open_dict(cfg):
        cfg.trainer.max_epochs = -1


def choose_val_sets(cfg: DictConfig, overrides: list[str]) -> tuple[list, dict[str, Any]]:
    """The sets that validate the run and where they come from (``source``: ``config`` | ``holdout`` | ``none``).

    ``val.sets`` as composed, unless they are the bundled example sets while the data is not the example data
    and the command line named no sets (``eval@val=`` / ``val.sets=``): then the user's data config named none,
    and validating on the bundled examples would say nothing about it. Instead every training dataset holds
    back a slice (``val.holdout``: a fraction of its queries / pairs by content hash, at most ``max_queries`` /
    ``max_pairs`` rows; a dataset's own ``holdout:`` is kept) that training drops and validation scores."""
    if not (cfg.get("callbacks") or {}).get("validation"):
        return [], {"source": "none", "sets": []}
    val = cfg.get("val") or {}
    sets = OmegaConf.to_container(val.get("sets"), resolve=True) if val.get("sets") else []
    named = any(override_key(o) in ("eval@val", "val", "val.sets") for o in overrides)
    if not sets or named or not _bundled(sets, cfg, "example/val") or _bundled(
            OmegaConf.to_container(cfg.data.get("datasets") or [], resolve=True), cfg, "example"):
        return sets, {"source": "config", "sets": [s.get("name") for s in sets]}
    holdout = dict(OmegaConf.to_container(val.get("holdout"), resolve=True) if val.get("holdout") else {})
    fraction = float(holdout.get("fraction", 0.1))
    caps = {"ir": holdout.get("max_queries", 200), "sts": holdout.get("max_pairs", 500)}
    sets = []
    with open_dict(cfg):
        for node, spec in zip(cfg.data.datasets, OmegaConf.to_container(cfg.data.datasets, resolve=True)):
            name, fmt = spec.get("name"), spec.get("format", "jsonl")
            task = spec.get("task") or FORMAT_TASKS.get(fmt)
            if task not in ("ir", "sts"):
                raise ConfigError(f"dataset '{name}' declares no task, and validation holds back a slice of each "
                                  "dataset (no validation sets are named for this data): add task: ir or task: sts "
                                  "to it, or name validation sets with eval@val=<name> or val.sets=[...]")
            own = spec.get("holdout") or {"fraction": fraction, "max": caps[task]}
            if not spec.get("holdout"):
                node.holdout = own
            entry = {k: v for k, v in spec.items() if k not in _NOT_READER_OPTIONS}
            entry.setdefault("on_error", cfg.data.get("on_error", "raise"))
            entry.update(name=f"{name}_holdout", task=task, format=fmt, path=str(spec.get("path")),
                         holdout_fraction=float(own["fraction"]), holdout_max=own.get("max"))
            if task == "ir":
                entry["max_corpus"] = holdout.get("max_corpus", 1000)
            sets.append(entry)
        if "val" not in cfg:
            cfg.val = {}
        cfg.val.sets = sets
    line = (f"validation: no validation sets are named for this data (val.sets is the bundled example's), so a "
            f"slice of each training dataset is held back from training and validates the run: "
            f"{', '.join(s['name'] for s in sets)} (val.holdout: {fraction:g} of each dataset's queries/pairs by "
            f"content hash, at most {caps['ir']} queries / {caps['sts']} pairs each); name sets instead with "
            "eval@val=<name> or val.sets=[...]")
    log.info(line)
    return sets, {"source": "holdout", "sets": [s["name"] for s in sets], "line": line,
                  "holdout": {"fraction": fraction, "max_queries": caps["ir"], "max_pairs": caps["sts"]}}


def _bundled(specs: list, cfg: DictConfig, under: str) -> bool:
    """Every entry's ``path`` lies under ``<paths.data_dir>/<under>`` (the project's example data)."""
    root = Path(str(OmegaConf.select(cfg, "paths.data_dir", default="data"))).resolve() / under
    paths = [Path(str(s.get("path"))).resolve() for s in specs if isinstance(s, dict) and s.get("path")]
    return bool(paths) and all(p == root or root in p.parents for p in paths)


def check_delivery(cfg: DictConfig, val_sets: list, merge: dict | None) -> tuple[str, dict | None]:
    """``deliver=merged`` (default: the merge stage's model) or ``deliver=best`` (the export with the best
    ``val/mean``; no merge). Early stopping and ``deliver=best`` need validation sets."""
    deliver = str(cfg.get("deliver") or "merged")
    if deliver not in ("merged", "best"):
        raise ConfigError(f"deliver={deliver} is not understood; use deliver=merged (the merged exports, the "
                          "default) or deliver=best (the export with the best val/mean)")
    patience = OmegaConf.select(cfg, "callbacks.early_stopping.patience", default=None)
    if patience is not None and (isinstance(patience, bool) or not isinstance(patience, int) or patience < 1):
        raise ConfigError(f"callbacks.early_stopping.patience={patience} must be an integer >= 1 (or null: off)")
    for wanted, what in ((deliver == "best", "deliver=best picks the export with the best val/mean"),
                         (patience is not None, "callbacks.early_stopping.patience stops on val/mean")):
        if wanted and not val_sets:
            raise ConfigError(f"{what}, but this run validates on nothing (callbacks.validation is off or "
                              "val.sets is empty); turn validation on or drop it")
    if deliver == "best" and merge is not None:
        log.info("deliver=best: the merge stage is skipped; the run delivers its best export")
        merge = None
    return deliver, merge


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
