"""Loggers that keep a run's metrics history across resumes.

Lightning's ``CSVLogger`` deletes ``metrics.csv`` whenever its directory already holds one, so resuming a run
into its own directory wiped every row logged before the crash. :class:`CSVLogger` keeps them: after
:meth:`CSVLogger.resume_at` (called by ``train()`` when it resumes from a checkpoint) it keeps the rows up to the
checkpoint's step, drops those of the work the checkpoint does not hold (the resumed run logs them again) and
appends.
"""

from __future__ import annotations

import csv
import io
import os

from lightning.fabric.loggers.logger import rank_zero_experiment
from lightning.pytorch.loggers.csv_logs import CSVLogger as _LightningCSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter

from codiemb.utils.atomic import atomic_write_text


def keep_row(row: dict, step: int) -> bool:
    """Whether a ``metrics.csv`` row belongs to the training a checkpoint at global step ``step`` holds.

    Lightning logs the metrics of optimizer step ``k`` (``self.log`` rows, which carry ``epoch``, and the LR
    monitor's ``lr-*`` rows) at step ``k - 1``; rows logged explicitly at ``trainer.global_step`` (exports,
    end-of-training validation, merge events) carry the step they follow. So at ``step`` itself only the latter
    came before the checkpoint.
    """
    try:
        logged = int(float(row.get("step", "")))
    except ValueError:
        return True
    if logged != step:
        return logged < step
    return not row.get("epoch") and not any(key.startswith("lr-") and value for key, value in row.items())


class _HistoryWriter(ExperimentWriter):
    """Lightning's CSV writer, except that an existing ``metrics.csv`` is continued (cut after ``resume_step``)."""

    def __init__(self, log_dir: str, resume_step: int | None) -> None:
        self._resume_step = resume_step
        super().__init__(log_dir=log_dir)

    def _check_log_dir_exists(self) -> None:
        if self._resume_step is None or not os.path.isfile(self.metrics_file_path):
            super()._check_log_dir_exists()  # a fresh run: Lightning's behaviour
            return
        with open(self.metrics_file_path, newline="") as fh:
            reader = csv.DictReader(fh)
            header = list(reader.fieldnames or [])
            rows = [row for row in reader if keep_row(row, self._resume_step)]
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=header)
        writer.writeheader()
        writer.writerows(rows)
        atomic_write_text(self.metrics_file_path, out.getvalue())
        self.metrics_keys = header


class CSVLogger(_LightningCSVLogger):
    """``lightning.pytorch.loggers.CSVLogger`` whose history survives a resume (see the module docstring)."""

    _resume_step: int | None = None

    def resume_at(self, step: int) -> None:
        """Continue the existing ``metrics.csv`` from global step ``step`` (before the first row is logged)."""
        self._resume_step = int(step)

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None and self._resume_step is not None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _HistoryWriter(log_dir=self.log_dir, resume_step=self._resume_step)
        return super().experiment
