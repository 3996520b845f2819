"""Callbacks and losses that the reliability tests plug into real ``train.py`` runs through Hydra overrides
(``+callbacks.x._target_=tests.reliability.helpers.X``): the subprocess imports them from the repo root."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import signal as signal_module
from pathlib import Path

import lightning as L
import torch


def batch_fingerprint(batch: dict) -> str:
    """Which rows a batch holds, as a hash of its token ids (same rows in the same order -> same hash)."""
    digest = hashlib.sha256()
    for key in ("query", "passages"):
        digest.update(batch[key]["input_ids"].numpy().tobytes())
    return digest.hexdigest()[:16]


class BatchRecorder(L.Callback):
    """Append one JSON line per micro-batch: step, epoch, sampler position, task, dataset, row fingerprint.

    Each line is flushed and fsynced before training goes on, so a SIGKILL loses nothing already trained on.
    """

    def __init__(self, path: str):
        self.path = Path(path)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        line = {"step": trainer.global_step, "epoch": trainer.current_epoch, "position": int(batch["position"]),
                "task": batch["task"], "dataset": batch["dataset"], "rows": batch_fingerprint(batch)}
        with self.path.open("a") as fh:
            fh.write(json.dumps(line) + "\n")
            fh.flush()
            os.fsync(fh.fileno())


class KillAtStep(L.Callback):
    """SIGKILL this process right after optimizer step ``step`` (before any checkpoint of that step is saved:
    Lightning runs checkpoint callbacks after all others). Nothing is flushed or cleaned up, as in a real kill."""

    def __init__(self, step: int):
        self.step = int(step)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)


class NonFiniteAfter(torch.nn.Module):
    """Wraps a loss and returns ``value`` (NaN or inf) from its ``call``-th call on (1-based)."""

    def __init__(self, loss: torch.nn.Module, call: int, value: float = float("nan")):
        super().__init__()
        self.loss, self.call, self.value, self.calls = loss, int(call), float(value), 0
        for name in ("cross_device", "needs_middle_layer", "middle_layer"):
            if hasattr(loss, name):
                setattr(self, name, getattr(loss, name))

    def forward(self, *args):
        self.calls += 1
        loss, components = self.loss(*args)
        if self.calls >= self.call:
            loss = loss * self.value
        return loss, components


class _NanGradient(torch.autograd.Function):
    """Identity forward; backward sends NaN: a finite loss whose gradients are not."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad * float("nan")


class NanGradientAfter(NonFiniteAfter):
    """Wraps a loss; from its ``call``-th call on, the loss stays finite but its gradient is NaN."""

    def forward(self, *args):
        self.calls += 1
        loss, components = self.loss(*args)
        return (_NanGradient.apply(loss) if self.calls >= self.call else loss), components


class SignalAtStep(L.Callback):
    """Send ``signal`` (SIGTERM as a scheduler does, SIGINT as Ctrl-C does) to this process after optimizer step
    ``step``; unlike :class:`KillAtStep` the process may handle it."""

    def __init__(self, step: int, signal: str = "SIGTERM"):
        self.step, self.signal = int(step), getattr(signal_module, signal)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), self.signal)
