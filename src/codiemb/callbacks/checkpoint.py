"""Periodic model exports: the inputs of the merge stage.

Lightning's own ``ModelCheckpoint`` writes the resumable ``.ckpt`` files; this callback writes, at the same
cadence, an exported model directory (sentence-transformers layout) per checkpoint, plus the initial weights
that the merge stage uses as its base.
"""

from __future__ import annotations

import logging
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint

log = logging.getLogger(__name__)

INITIAL = "initial"


def export_name(step: int) -> str:
    return f"step_{step:06d}"


class PeriodicExport(L.Callback):
    """Export ``pl_module.encoder`` every ``every_n_steps`` optimizer steps and at the end of training.

    Every export is kept (the merge stage needs them all); each is written atomically.
    """

    def __init__(self, dirpath: str, every_n_steps: int = 50, export_initial: bool = True):
        self.dirpath = Path(dirpath)
        self.every_n_steps = int(every_n_steps)
        self.export_initial = export_initial
        self.exported: list[Path] = []
        self.initial: Path | None = None
        self._last_step = -1

    def _export(self, trainer: L.Trainer, pl_module: L.LightningModule, name: str) -> Path:
        path = self.dirpath / name
        if trainer.is_global_zero:
            pl_module.encoder.save(path, card=run_card_info(trainer, pl_module))
            log.info("exported model to %s", path)
            # An event the loggers show (a W&B chart of export steps; a column in metrics.csv).
            for logger in trainer.loggers:
                logger.log_metrics({"events/export_step": float(trainer.global_step)}, step=trainer.global_step)
        trainer.strategy.barrier("codiemb_export")
        return path

    def on_train_start(self, trainer, pl_module) -> None:
        if self.export_initial and not (self.dirpath / INITIAL).exists():  # a resumed run keeps its base
            self.initial = self._export(trainer, pl_module, INITIAL)
        elif (self.dirpath / INITIAL).exists():
            self.initial = self.dirpath / INITIAL

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if self.every_n_steps > 0 and step > 0 and step % self.every_n_steps == 0 and step != self._last_step:
            self._save_step(trainer, pl_module, step)

    def on_train_end(self, trainer, pl_module) -> None:
        if trainer.global_step != self._last_step:
            self._save_step(trainer, pl_module, trainer.global_step)

    def _save_step(self, trainer, pl_module, step: int) -> None:
        self.exported.append(self._export(trainer, pl_module, export_name(step)))
        self._last_step = step

    def all_exports(self) -> list[Path]:
        """Every step export on disk, in step order (includes those of an earlier, resumed run)."""
        return sorted(p for p in self.dirpath.glob("step_*") if p.is_dir())


def run_card_info(trainer: L.Trainer, pl_module: L.LightningModule) -> dict:
    """What the model card can say about the run so far: data sets and sizes, task mix, losses, steps."""
    datamodule = getattr(trainer, "datamodule", None)
    report = getattr(datamodule, "load_report", None) or {}
    return {"datasets": {name: {"task": info.get("task"), "rows": info.get("rows")} for name, info in report.items()},
            "task_mix": getattr(datamodule, "task_mix", None),
            "losses": {task: type(getattr(pl_module, f"{task}_loss")).__name__ for task in ("ir", "sts")
                       if hasattr(pl_module, f"{task}_loss")},
            "training": {"optimizer steps": trainer.global_step}}


class StepCheckpoint(ModelCheckpoint):
    """Lightning's ``ModelCheckpoint`` that also saves at the end of training when the last step was not a
    multiple of ``every_n_train_steps``, so the final weights always have a resumable checkpoint."""

    def on_train_end(self, trainer, pl_module) -> None:
        super().on_train_end(trainer, pl_module)
        if trainer.global_step > 0 and self._last_global_step_saved != trainer.global_step:
            candidates = self._monitor_candidates(trainer)
            self._save_topk_checkpoint(trainer, candidates)
            self._save_last_checkpoint(trainer, candidates)
