"""Early stopping on the validation callback's ``val/mean``: Lightning's ``EarlyStopping`` (same state in the
checkpoint, same messages), checked after every validation of :class:`~codiemb.callbacks.validation.
ValidationCallback` instead of at the end of a Lightning validation loop (this project has none).

``patience: null`` (the default) turns it off; ``callbacks.early_stopping.patience=N`` stops the run after N
validations in a row without a ``val/mean`` better than the best so far (by more than ``min_delta``). The run
then ends as a finished run does: a final export (already there when the stop came at an export), its merge and
summary.
"""

from __future__ import annotations

import logging

import torch
from lightning.pytorch.callbacks import EarlyStopping

log = logging.getLogger(__name__)


class ValidationEarlyStopping(EarlyStopping):
    def __init__(self, patience: int | None = None, monitor: str = "val/mean", mode: str = "max",
                 min_delta: float = 0.0, verbose: bool = True):
        self.enabled = patience is not None
        super().__init__(monitor=monitor, mode=mode, patience=int(patience) if self.enabled else 0,
                         min_delta=min_delta, verbose=verbose, strict=False, check_on_train_epoch_end=False)
        self.stopped_at_step: int | None = None

    def on_train_epoch_end(self, trainer, pl_module) -> None:  # checked after each validation instead
        return

    def on_validation_end(self, trainer, pl_module) -> None:
        return

    def on_codiemb_validation(self, trainer, step: int, metrics: dict[str, float]) -> None:
        """After a validation at ``step``: one more record for the patience count."""
        if not self.enabled or self.monitor not in metrics or self._should_skip_check(trainer):
            return
        should_stop, reason = self._evaluate_stopping_criteria(torch.tensor(float(metrics[self.monitor])))
        should_stop = trainer.strategy.reduce_boolean_decision(should_stop, all=False)
        if reason and self.verbose:
            self._log_info(trainer, reason, self.log_rank_zero_only)
        if should_stop and not trainer.should_stop:
            trainer.should_stop = True
            self.stopped_epoch, self.stopped_at_step = trainer.current_epoch, int(step)
            self.stopping_reason_message = reason
            log.info("early stopping at step %d: %s did not improve on %.4f in the last %d validations "
                     "(callbacks.early_stopping.patience=%d)", step, self.monitor, float(self.best_score),
                     self.wait_count, self.patience)
