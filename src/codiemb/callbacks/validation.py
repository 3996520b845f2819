"""Validation during training: every N optimizer steps, whenever a model is exported (``on_export``, so every
export has a score and the run can name its best) and at the end; STS dev Spearman and IR dev nDCG@10.

Logs ``val/sts_spearman`` (mean over STS sets), ``val/ir_ndcg@10`` (mean over IR sets), ``val/mean``
(mean of the two that exist) and ``val/<set>/<metric>`` per set, all x100, so ``val/mean`` can be the
monitored metric of ``ModelCheckpoint`` (same ``every_n_train_steps``) and the Optuna objective.

``precision``: ``train`` (default) encodes in the run's own precision: bf16 autocast when the trainer runs
``bf16-mixed``/``bf16-true``, fp32 otherwise. Lightning's autocast covers the training step only, not callbacks,
so without this a bf16 run validated in fp32, at twice the cost on a CPU with native bf16 (BENCHMARKS 1.0).
``fp32``, ``bf16`` or ``auto`` (bf16 where the device computes it natively) set it explicitly.

DDP: every rank evaluates the full (small) sets with its own copy of the weights, which DDP keeps
identical, and logs the same numbers: no collective call, so ranks can never wait on each other, and
every rank's ``ModelCheckpoint``/early stopping sees the monitored value. The cost is redundant work,
which is why the sets must be small (see ``configs/eval/real_dev.yaml``). The encoder is called
directly (``pl_module.encoder``), not through the DDP wrapper, so no gradient hooks fire.

``history`` holds every validation's ``val/<metric>`` means by step (kept in the checkpoint, so a resumed run
still knows its exports' scores); after each validation, callbacks with an ``on_codiemb_validation(trainer,
step, metrics)`` method hear of it (:class:`codiemb.callbacks.early_stopping.ValidationEarlyStopping`).
"""

from __future__ import annotations

import logging
import time

import lightning as L

from codiemb.eval.runner import evaluate, summarize
from codiemb.eval.sets import parse_sets
from codiemb.utils.precision import VALIDATION_PRECISIONS, autocast_dtype, resolve_short_precision

log = logging.getLogger(__name__)


class ValidationCallback(L.Callback):
    def __init__(self, sets: list[dict], every_n_steps: int = 50, batch_size: int = 64, on_train_end: bool = True,
                 on_export: bool = True, precision: str = "train"):
        if every_n_steps < 1:
            raise ValueError(f"every_n_steps must be >= 1, got {every_n_steps}")
        if str(precision) not in VALIDATION_PRECISIONS:
            raise ValueError(f"callbacks.validation.precision must be one of {list(VALIDATION_PRECISIONS)}, "
                             f"got {precision!r}")
        self.precision = str(precision)
        self.sets = parse_sets(sets)
        self.every_n_steps, self.batch_size = every_n_steps, batch_size
        self.evaluate_on_train_end = on_train_end
        self.on_export = bool(on_export)
        self.history: dict[int, dict[str, float]] = {}  # step -> {"val/mean": ..., "val/sts_spearman": ...}
        self._cache: dict = {}  # set name -> loaded data: the files are read once per run
        self._last_step: int | None = None
        self.last_metrics: dict[str, float] = {}

    def compute(self, pl_module) -> dict[str, float]:
        """``{"val/...": value}`` for the module's encoder at its current weights."""
        results = evaluate(pl_module.encoder, self.sets, batch_size=self.batch_size, cache=self._cache,
                           autocast_dtype=self.autocast_dtype(pl_module))
        metrics = {f"val/{k}": v for k, v in summarize(results, self.sets).items()}
        for name, scores in results.items():
            metrics.update({f"val/{name}/{k}": v for k, v in scores.items()
                            if k not in ("queries", "docs", "pairs", "main_score")})
        return metrics

    def autocast_dtype(self, pl_module):
        """What validation encodes under: ``torch.bfloat16`` (autocast) or None (fp32); see ``precision``."""
        if self.precision != "train":
            device = next(pl_module.encoder.parameters()).device.type
            return autocast_dtype(resolve_short_precision(self.precision, "cuda" if device == "cuda" else "cpu",
                                                          "callbacks.validation.precision"))
        trainer = getattr(pl_module, "_trainer", None)
        return autocast_dtype("bf16" if trainer is not None and str(trainer.precision).startswith("bf16") else "fp32")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        step = trainer.global_step
        if step == 0 or step % self.every_n_steps:
            return
        self.validate(trainer, pl_module)

    def on_exported(self, trainer, pl_module, hook: str = "batch") -> None:
        """:class:`~codiemb.callbacks.checkpoint.PeriodicExport` wrote a model in Lightning's ``hook`` (``batch``:
        on_train_batch_end, ``epoch``: on_train_epoch_end, ``end``: on_train_end): score it (``on_export``).
        Outside a batch Lightning forbids ``self.log(on_step=True)``, so the numbers go to the loggers and
        ``callback_metrics`` directly."""
        if not self.on_export:
            return
        if hook == "batch":
            self.validate(trainer, pl_module)
        else:
            self._validate_final(trainer, pl_module, final=hook == "end")

    def validate(self, trainer, pl_module) -> None:
        """Validate the weights of the current step unless that was done already (every N steps, and when
        :class:`~codiemb.callbacks.checkpoint.PeriodicExport` exports during training)."""
        step = trainer.global_step
        # global_step counts optimizer steps, so with gradient accumulation it repeats: evaluate once.
        if step == 0 or step == self._last_step or not self.sets:
            return
        metrics = self._run(trainer, pl_module, step)
        # To the loggers at the step measured (self.log would wait for the next log_every_n_steps flush, and a
        # value measured after the last flush of a run would never reach them) ...
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=step)
        # ... and to callback_metrics / the progress bar only (ModelCheckpoint's monitor, early stopping).
        for key, value in metrics.items():
            pl_module.log(key, value, on_step=True, on_epoch=False, prog_bar=key == "val/mean", logger=False,
                          sync_dist=False, rank_zero_only=False)

    def on_train_end(self, trainer, pl_module):
        """Score the final weights too (Lightning forbids ``self.log`` here, so write to the loggers)."""
        if self.evaluate_on_train_end:
            self._validate_final(trainer, pl_module)

    def _validate_final(self, trainer, pl_module, final: bool = True) -> None:
        if not self.sets or trainer.global_step == self._last_step:
            return
        metrics = self._run(trainer, pl_module, trainer.global_step, final=final)
        trainer.callback_metrics.update({k: _tensor(v) for k, v in metrics.items()})
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=trainer.global_step)

    def _run(self, trainer, pl_module, step: int, final: bool = False) -> dict[str, float]:
        self._last_step = step
        started = time.perf_counter()
        self.last_metrics = self.compute(pl_module)
        self.history[int(step)] = {k: float(v) for k, v in self.last_metrics.items() if k.count("/") == 1}
        log.info("step %d: validation in %.1f s: %s", step, time.perf_counter() - started,
                 {k: round(v, 2) for k, v in self.last_metrics.items() if k.count("/") == 1})
        for callback in trainer.callbacks if not final else ():  # training is over at the final one
            if hasattr(callback, "on_codiemb_validation"):
                callback.on_codiemb_validation(trainer, step, self.last_metrics)
        return self.last_metrics

    def state_dict(self) -> dict:
        return {"history": {int(k): dict(v) for k, v in self.history.items()}}

    def load_state_dict(self, state_dict: dict) -> None:
        self.history = {int(k): dict(v) for k, v in (state_dict.get("history") or {}).items()}


def _tensor(value: float):
    import torch
    return torch.tensor(value)
