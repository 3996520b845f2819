"""The learning-rate schedule and the per-task learning-rate scale (``module.schedule``, ``module.task_lr_scale``)."""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import torch

from codiemb.errors import ConfigError
from codiemb.models.distill import finite_number

TASKS = ("ir", "sts", "mixed")


def schedule(kind: str, warmup: int, total: int):
    """Linear warmup, then linear (or cosine) decay to zero, or constant: the factor on ``lr`` at each step."""
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        if kind == "linear":
            return 1.0 - progress
        if kind == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * progress))
        if kind == "constant":
            return 1.0
        raise ValueError(f"unknown schedule {kind!r}; use linear, cosine or constant")
    return factor


def check_task_lr_scale(spec: Any) -> dict[str, float]:
    """``module.task_lr_scale`` as ``{task: factor}`` (tasks ir / sts / mixed, each a finite number >= 0; a task
    not named keeps 1); a bad entry is a one-line :class:`ConfigError` naming the key."""
    if spec is None:
        return {}
    if not isinstance(spec, Mapping):
        raise ConfigError(f"module.task_lr_scale must be a mapping of task to factor ({', '.join(TASKS)}), "
                          f"got {spec!r}")
    scales = {}
    for task, value in spec.items():
        if task not in TASKS:
            raise ConfigError(f"module.task_lr_scale has unknown task {task!r}; known: {', '.join(TASKS)}")
        scales[task] = finite_number(f"module.task_lr_scale.{task}", value, 0, strict=False)
    return scales


@contextmanager
def scaled_lr(optimizer: torch.optim.Optimizer, factor: float) -> Iterator[None]:
    """Every parameter group's ``lr`` times ``factor`` for one optimizer step, then as it was: the scheduler's
    value is untouched, so warm-up and decay go on as without the scale (and a checkpoint saves the plain lr)."""
    if factor == 1.0:
        yield
        return
    saved = [group["lr"] for group in optimizer.param_groups]
    for group in optimizer.param_groups:
        group["lr"] = group["lr"] * factor
    try:
        yield
    finally:
        for group, lr in zip(optimizer.param_groups, saved):
            group["lr"] = lr
