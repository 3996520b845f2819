"""Periodic model exports (the inputs of the merge stage) and the resumable ``.ckpt`` files.

:class:`StepCheckpoint` (Lightning's ``ModelCheckpoint``) writes the resumable ``.ckpt`` files, through
:class:`AtomicCheckpointIO`: a temporary file beside the target, fsync, ``os.replace``, fsync of the directory
(Lightning's own writer stages the file in ``$TMPDIR`` and moves it, which across filesystems is a copy into the
final name: a full disk or a kill left a truncated ``step_XXXXXX.ckpt`` or a 0-byte ``last.ckpt``).
:class:`PeriodicExport` writes, at the same cadence, an exported model directory (sentence-transformers layout)
per checkpoint, plus the initial weights that the merge stage uses as its base; the validation callback scores
each export as it is written (:meth:`~codiemb.callbacks.validation.ValidationCallback.on_exported`).

Only the ``.ckpt`` files that resume needs are kept by default (``save_top_k: 1``): ``last.ckpt`` and the newest
``step_XXXXXX.ckpt``, the fallback when ``last.ckpt`` cannot be read (a file of its own, so damage to one leaves
the other readable). ``callbacks.model_checkpoint.save_top_k=-1`` keeps every step's, ``0`` only ``last.ckpt``.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import lightning as L
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.callbacks import ModelCheckpoint

from codiemb.utils.atomic import atomic_file, remove_stale_temporaries_in

log = logging.getLogger(__name__)

INITIAL = "initial"


def export_name(step: int) -> str:
    return f"step_{step:06d}"


class PeriodicExport(L.Callback):
    """Export ``pl_module.encoder`` every ``every_n_steps`` optimizer steps (0: never), at the end of every
    ``every_n_epochs``-th epoch (0: never; 1 = the official release's ``save_strategy epoch``) and at the end of
    training.

    Every export is kept (the merge stage needs them all); each is written atomically.
    """

    def __init__(self, dirpath: str, every_n_steps: int = 50, export_initial: bool = True, every_n_epochs: int = 0):
        self.dirpath = Path(dirpath)
        self.every_n_steps = int(every_n_steps or 0)
        self.every_n_epochs = int(every_n_epochs or 0)
        self.export_initial = export_initial
        self.exported: list[Path] = []
        self.initial: Path | None = None
        self.carried: list[Path] = []  # exports made before a resume (possibly in another run directory)
        self._restored: dict | None = None
        self._start_step = 0  # the step a resume started from
        self._ran_here = False  # False in the main process of a spawning strategy (ddp_spawn): it trains elsewhere
        self._last_step = -1
        self.peers: list = []

    def _export(self, trainer: L.Trainer, pl_module: L.LightningModule, name: str) -> Path:
        path = self.dirpath / name
        if trainer.is_global_zero:
            started = time.perf_counter()
            pl_module.encoder.save(path, card=run_card_info(trainer, pl_module))
            log.info("exported model to %s (%.1f s)", path, time.perf_counter() - started)
            # An event the loggers show (a W&B chart of export steps; a column in metrics.csv).
            for logger in trainer.loggers:
                logger.log_metrics({"events/export_step": float(trainer.global_step)}, step=trainer.global_step)
        trainer.strategy.barrier("codiemb_export")
        return path

    def adopt(self, state: dict | None, ckpt_path: str, step: int) -> None:
        """Take the merge base and earlier exports of the checkpoint a resume starts from (``state`` is this
        callback's :meth:`state_dict` in it), wherever they are."""
        initial, self.carried = carried_exports(state, ckpt_path, step)
        if initial is not None:
            self.initial = initial
        self._start_step = int(step)
        if any(p.name == export_name(step) for p in self.carried):
            self._last_step = int(step)

    def on_train_start(self, trainer, pl_module) -> None:
        self._ran_here = True
        self.peers = [c for c in trainer.callbacks if c is not self]  # validation history, early stopping
        if trainer.ckpt_path:  # a resume: the base and earlier exports are the checkpoint's
            self.adopt(self._restored, trainer.ckpt_path, trainer.global_step)
        if self.initial is not None:
            return
        if self.export_initial and not (self.dirpath / INITIAL).exists():
            self.initial = self._export(trainer, pl_module, INITIAL)
        elif (self.dirpath / INITIAL).exists():
            self.initial = self.dirpath / INITIAL

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if self.every_n_steps > 0 and step > 0 and step % self.every_n_steps == 0 and step != self._last_step:
            self._save_step(trainer, pl_module, step, hook="batch")

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        step = trainer.global_step
        if self.every_n_epochs > 0 and (trainer.current_epoch + 1) % self.every_n_epochs == 0 \
                and step > 0 and step != self._last_step:
            self._save_step(trainer, pl_module, step, hook="epoch")

    def on_train_end(self, trainer, pl_module) -> None:
        if trainer.global_step != self._last_step:
            self._save_step(trainer, pl_module, trainer.global_step, hook="end")

    def _save_step(self, trainer, pl_module, step: int, hook: str) -> None:
        self.exported.append(self._export(trainer, pl_module, export_name(step)))
        self._last_step = step
        for callback in trainer.callbacks:  # every export gets its validation score (the best one is named)
            if hasattr(callback, "on_exported"):
                callback.on_exported(trainer, pl_module, hook=hook)

    def all_exports(self) -> list[Path]:
        """Every export of the whole run in step order: those the resumed checkpoint carried (up to its step),
        then this process's; an export redone after a resume replaces the earlier one of the same step."""
        own = self.exported if self._ran_here else [  # a spawned process trained: its exports are on disk
            p for p in self.dirpath.glob("step_*") if p.is_dir() and (export_step(p) or 0) > self._start_step]
        by_name = {p.name: p for p in self.carried}
        by_name.update({p.name: p for p in own})
        return [by_name[name] for name in sorted(by_name)]

    def base(self) -> Path:
        """The merge base: the pre-trained weights exported when the run first started."""
        return self.initial if self.initial is not None else self.dirpath / INITIAL

    def state_dict(self) -> dict:
        """Stored in every ``.ckpt``: a resume (into any directory) merges from the same base and exports."""
        return {"dirpath": str(self.dirpath.resolve()),
                "initial": str(self.base().resolve()),
                "exports": [str(p.resolve()) for p in self.all_exports()]}

    def load_state_dict(self, state_dict: dict) -> None:
        self._restored = dict(state_dict)


def export_step(path: Path) -> int | None:
    name = Path(path).name
    return int(name[5:]) if name.startswith("step_") and name[5:].isdigit() else None


def carried_exports(state: dict | None, ckpt_path: str | Path, step: int) -> tuple[Path | None, list[Path]]:
    """The merge base and the exports (steps <= ``step``) of the run that wrote checkpoint ``ckpt_path``.

    ``state`` is :meth:`PeriodicExport.state_dict` from the checkpoint. A path that no longer exists is looked
    up beside the checkpoint (a run directory moved as a whole); a checkpoint written before this state existed
    uses the exports beside it. The base is ``None`` when it cannot be found.
    """
    beside = Path(ckpt_path).resolve().parent

    def locate(path: str | None) -> Path | None:
        if not path:
            return None
        for candidate in (Path(path), beside / Path(path).name):
            if candidate.is_dir():
                return candidate
        return None

    if state:
        initial = locate(state.get("initial"))
        exports = [p for p in (locate(e) for e in state.get("exports") or []) if p is not None]
    else:
        initial = locate(str(beside / INITIAL))
        exports = sorted(p for p in beside.glob("step_*") if p.is_dir())
    return initial, [p for p in exports if (export_step(p) or 0) <= step]


def loss_name(loss) -> str:
    """A task loss as the card names it: a Matryoshka wrapper by the loss it wraps and its sizes."""
    dims = getattr(loss, "dims", None)
    inner = getattr(loss, "loss", None)
    return f"{type(inner).__name__} at sizes {list(dims)}" if dims and inner is not None else type(loss).__name__


def run_card_info(trainer: L.Trainer, pl_module: L.LightningModule) -> dict:
    """What the model card can say about the run so far: data sets and sizes, task mix, losses, steps."""
    datamodule = getattr(trainer, "datamodule", None)
    report = getattr(datamodule, "load_report", None) or {}
    return {"datasets": {name: {"task": info.get("task"), "rows": info.get("rows")} for name, info in report.items()},
            "task_mix": getattr(datamodule, "task_mix", None),
            "losses": {task: loss_name(getattr(pl_module, f"{task}_loss")) for task in ("ir", "sts")
                       if hasattr(pl_module, f"{task}_loss")},
            "training": {"optimizer steps": trainer.global_step}}


class AtomicCheckpointIO(TorchCheckpointIO):
    """``torch.save`` into a temporary file beside the checkpoint, then fsync, ``os.replace`` and fsync of the
    directory (:func:`codiemb.utils.atomic.atomic_file`). A save that fails (a full disk, a kill) leaves the
    previous file of that name intact and no temporary behind (a killed process's is removed by the next save).
    Remote URLs (``s3://`` ...) keep Lightning's writer."""

    def save_checkpoint(self, checkpoint: dict, path, storage_options=None) -> None:
        text = str(path)
        if "://" in text and not text.startswith("file://"):
            return super().save_checkpoint(checkpoint, path, storage_options)
        if storage_options is not None:
            raise TypeError(f"storage_options are not supported by {type(self).__name__}")
        with atomic_file(text.removeprefix("file://"), "wb") as fh:
            torch.save(checkpoint, fh)


def use_atomic_checkpoint_io(trainer: L.Trainer) -> None:
    """Give ``trainer`` :class:`AtomicCheckpointIO` unless it was configured with a checkpoint IO of its own."""
    strategy = trainer.strategy
    current = getattr(strategy, "_checkpoint_io", None)
    if current is None or type(current) is TorchCheckpointIO:
        strategy.checkpoint_io = AtomicCheckpointIO()


class StepCheckpoint(ModelCheckpoint):
    """Lightning's ``ModelCheckpoint`` that writes every ``.ckpt`` atomically in its own directory
    (:class:`AtomicCheckpointIO`) and also saves at the end of training when the last step was not a multiple of
    ``every_n_train_steps``, so the final weights always have a resumable checkpoint.

    ``keep_after_finish``: a finished run (merge done, ``checkpoints/finished.json`` written) keeps its ``.ckpt``
    files only when true; the run itself reads it (:class:`codiemb.run.resume.RunSession`), not this callback."""

    def __init__(self, *args, keep_after_finish: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.keep_after_finish = bool(keep_after_finish)

    def setup(self, trainer, pl_module, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        use_atomic_checkpoint_io(trainer)
        if trainer.is_global_zero and self.dirpath:  # temporaries of a run killed while saving
            remove_stale_temporaries_in(self.dirpath)

    def on_train_end(self, trainer, pl_module) -> None:
        super().on_train_end(trainer, pl_module)
        if trainer.global_step > 0 and self._last_global_step_saved != trainer.global_step:
            candidates = self._monitor_candidates(trainer)
            self._save_topk_checkpoint(trainer, candidates)
            self._save_last_checkpoint(trainer, candidates)
