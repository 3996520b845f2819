"""Distillation during training, for the LightningModule: ``loss.ir.distill`` (teacher scores in the data) and
``module.self_distill`` (a frozen copy of the starting model). The settings are checked here; the terms are the
pure functions of :mod:`codiemb.losses` (:func:`~codiemb.losses.ir_distill.ir_distill_term`,
:func:`~codiemb.losses.self_distill.self_distill_kl`)."""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F

from codiemb.errors import ConfigError
from codiemb.losses.ir_distill import DISTILL_KINDS, ir_distill_term
from codiemb.losses.self_distill import self_distill_kl

log = logging.getLogger(__name__)


class Distiller:
    """Holds the checked settings and the frozen starting model (a plain object, so the copy is no submodule of
    the LightningModule: not in its state_dict, exports or optimizer, never switched to train mode)."""

    def __init__(self, ir: dict | None, self_spec: dict | None, encoder):
        self.ir, self.self = ir, self_spec
        # built from the weights as they are now, i.e. pre-trained (a resume loads its checkpoint later)
        self.base = copy.deepcopy(encoder).requires_grad_(False).eval() if self_spec else None
        self.warned: set[str] = set()

    def to(self, device, dtype) -> None:
        if self.base is not None:
            self.base.to(device=device, dtype=dtype)

    def terms(self, batch: dict, a: torch.Tensor, b: torch.Tensor) -> dict[str, tuple[float, torch.Tensor]]:
        """``{name: (weight, term)}`` to add to the task's loss, from this rank's embeddings ``a`` (queries / STS
        sentence 1) and ``b`` (passages / sentence 2):

        * ``distill`` (IR and mixed batches carrying ``teacher_scores``; ``loss.ir.distill``): the student's cosine
          of every query with the passages against the teacher's scores; ``kl``: :func:`distill_kl` over each
          query's own candidates (the teacher's ``-inf`` marks the rest), ``margin_mse``: :func:`margin_mse` over
          each query's positive-negative pairs (:func:`ir_distill_term`).
        * ``self_distill`` (every batch; ``module.self_distill``): :func:`self_distill_kl` of the in-batch cosine
          matrix ``a x b`` against the frozen starting model's on the same tokens (no gradient to the copy).
        """
        terms: dict[str, tuple[float, torch.Tensor]] = {}
        spec = self.ir
        if spec is not None and batch["task"] != "sts":
            teacher = batch.get("teacher_scores")
            if teacher is None:
                if batch["dataset"] not in self.warned:
                    self.warned.add(batch["dataset"])
                    log.warning("loss.ir.distill is on but dataset '%s' has no teacher scores (pos_scores / "
                                "neg_scores): its batches train without the distillation term", batch["dataset"])
            else:
                student = F.normalize(a.float(), dim=-1) @ F.normalize(b.float(), dim=-1).T
                terms["distill"] = (spec["weight"], ir_distill_term(
                    spec["kind"], student, teacher.to(student.device), batch["positive_mask"].to(student.device),
                    spec["temperature"]))
        spec = self.self
        if spec is not None:
            with torch.no_grad():
                base_a, base_b = self.base(batch["query"]), self.base(batch["passages"])
            terms["self_distill"] = (spec["weight"], self_distill_kl(
                F.normalize(a.float(), dim=-1), F.normalize(b.float(), dim=-1), F.normalize(base_a.float(), dim=-1),
                F.normalize(base_b.float(), dim=-1), spec["temperature"]))
        return terms


def finite_number(key: str, value: Any, minimum: float, strict: bool) -> float:
    """``value`` as a float when it is a finite number above (``strict``) or at least ``minimum``; else a one-line
    :class:`ConfigError` naming ``key``. Also module.task_lr_scale's check (codiemb.models.optim)."""
    ok = not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value) and (
        value > minimum if strict else value >= minimum)
    if not ok:
        raise ConfigError(f"{key}={value!r} must be a finite number {'>' if strict else '>='} {minimum:g}")
    return float(value)


def _spec(key: str, spec: Any, known: tuple[str, ...]) -> dict | None:
    if spec is None:
        return None
    if not isinstance(spec, Mapping):
        raise ConfigError(f"{key} must be a mapping ({', '.join(known)}) or null, got {spec!r}")
    spec = dict(spec)
    unknown = sorted(set(spec) - set(known))
    if unknown:
        raise ConfigError(f"{key} has unknown key {unknown[0]!r}; known: {', '.join(known)}")
    return spec


def check_ir_distill(spec: Any) -> dict | None:
    """``loss.ir.distill`` as ``{kind, weight, temperature}`` (plain floats), or None when off (``kind`` null or
    ``weight`` 0); a bad value is a one-line :class:`ConfigError` naming the key."""
    spec = _spec("loss.ir.distill", spec, ("kind", "weight", "temperature"))
    if spec is None or spec.get("kind") is None:
        return None
    if spec["kind"] not in DISTILL_KINDS:
        raise ConfigError(f"loss.ir.distill.kind={spec['kind']!r} must be one of {', '.join(DISTILL_KINDS)} "
                          "(null = off)")
    weight = finite_number("loss.ir.distill.weight", spec.get("weight", 1.0), 0, strict=False)
    temperature = finite_number("loss.ir.distill.temperature", spec.get("temperature", 1.0), 0, strict=True)
    return {"kind": spec["kind"], "weight": weight, "temperature": temperature} if weight else None


def check_self_distill(spec: Any) -> dict | None:
    """``module.self_distill`` as ``{weight, temperature}``, or None when off (``weight`` 0 or null)."""
    spec = _spec("module.self_distill", spec, ("weight", "temperature"))
    if spec is None or not spec.get("weight"):
        return None
    weight = finite_number("module.self_distill.weight", spec["weight"], 0, strict=False)
    temperature = finite_number("module.self_distill.temperature", spec.get("temperature", 0.05), 0, strict=True)
    return {"weight": weight, "temperature": temperature}


def add_terms(result: tuple[torch.Tensor, dict[str, torch.Tensor]],
              terms: Mapping[str, tuple[float, torch.Tensor]]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """``(loss + sum weight x term, components + {name: term})``."""
    loss, components = result
    for name, (weight, term) in terms.items():
        loss, components = loss + weight * term, {**components, name: term.detach()}
    return loss, components
