"""The run's loggers: the one module that knows logger types (CSV, TensorBoard, W&B).

Loggers keep a run's metrics history across resumes.

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
import secrets
from pathlib import Path

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
    """Lightning's CSV writer, except that an existing ``metrics.csv`` is continued (cut after ``resume_step``),
    and columns that another process added to the file are kept (under ``trainer=ddp_cpu_sim`` the spawned ranks
    write the training rows; the launching process then adds the merge event and never saw their names)."""

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

    def save(self) -> None:
        if self.metrics and os.path.isfile(self.metrics_file_path):
            with open(self.metrics_file_path, newline="") as fh:
                header = next(csv.reader(fh), [])
            self.metrics_keys = sorted(set(self.metrics_keys) | set(header))
        super().save()


class CSVLogger(_LightningCSVLogger):
    """``lightning.pytorch.loggers.CSVLogger`` whose history survives a resume (see the module docstring)."""

    _resume_step: int | None = None

    def resume_at(self, step: int) -> None:
        """Continue the existing ``metrics.csv`` from global step ``step`` (before the first row is logged)."""
        self._resume_step = int(step)

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _HistoryWriter(log_dir=self.log_dir, resume_step=self._resume_step)
        return super().experiment


# The one place that knows logger types: everything else asks these functions.
def is_wandb(logger) -> bool:
    from lightning.pytorch.loggers import WandbLogger

    return isinstance(logger, WandbLogger)


def wandb_settings(logger_group: dict) -> dict | None:
    """The W&B entry of a ``logger`` config group (a sweep's callbacks see configs, not logger objects)."""
    return next((v for v in logger_group.values() if isinstance(v, dict)
                 and str(v.get("_target_", "")).rsplit(".", 1)[-1] == "WandbLogger"), None)


def resume_loggers(loggers, step: int) -> None:
    """Before the first row of a resumed run: the metrics history continues at the checkpoint's ``step`` (CSV
    keeps its rows up to it; TensorBoard purges the events after it; W&B keeps its run id, see the config)."""
    from lightning.pytorch.loggers import TensorBoardLogger

    for logger in loggers:
        if isinstance(logger, CSVLogger):
            logger.resume_at(step)
        elif isinstance(logger, TensorBoardLogger) and getattr(logger, "_experiment", None) is None:
            logger._kwargs.setdefault("purge_step", step)  # Lightning passes these on to its SummaryWriter


def finish_loggers(loggers) -> None:
    """Close W&B runs: the next run in this process (an Optuna trial) must start its own, not reuse this one."""
    if any(is_wandb(logger) for logger in loggers):
        import wandb

        wandb.finish()


def log_merge_report(log_table, log_images, log_artifact, prefix: str, report: dict, output: Path) -> None:
    """A merge's evaluation table, its plots and its report files (``merge_report.json``, the card) on W&B, for
    the training run's merge (``merge/...``) and a sweep's fusion (``fuse/...``) alike. The three callables are
    the W&B run's own (a ``WandbLogger``'s ``log_table``/``log_image`` or a ``wandb.Run``'s)."""
    import wandb

    rows = (report.get("evaluation") or {}).get("rows") or []
    if rows:
        columns = list(dict.fromkeys(k for row in rows for k in row))
        log_table(f"{prefix}/evaluation", columns, [[r.get(c) for c in columns] for r in rows])
    images = sorted(Path(output).glob("*.png"))
    if images:
        log_images(f"{prefix}/plots", [str(p) for p in images])
    artifact = wandb.Artifact(f"{prefix}-report-{secrets.token_hex(4)}", type="merge_report")
    for file in [Path(output) / "merge_report.json", Path(output) / "README.md", *images]:
        if file.is_file():
            artifact.add_file(str(file))
    log_artifact(artifact)
