"""The LightningModule: encode a task-homogeneous batch and hand it to that task's loss."""

from __future__ import annotations

import copy
import logging
import math
import random
from collections.abc import Mapping
from typing import Any

import numpy as np
import lightning as L
from lightning.pytorch.plugins.precision import MixedPrecision
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics.aggregation import RunningMean

from codiemb.errors import CodiembError, ConfigError
from codiemb.losses.distill_kl import distill_kl
from codiemb.losses.gather import (all_gather_no_grad, all_gather_with_grad, all_ranks_finite, assert_lockstep,
                                   gather_positive_mask, is_distributed)
from codiemb.losses.infonce import InfoNCELoss
from codiemb.losses.l2sp import l2sp_penalty
from codiemb.losses.margin_mse import margin_mse
from codiemb.losses.matryoshka import MatryoshkaLoss, matryoshka_sizes
from codiemb.losses.self_distill import self_distill_kl
from codiemb.models.encoder import Encoder

log = logging.getLogger(__name__)

LOSS_WINDOW = 20  # steps of one task behind train/<task>_loss_avg


class NonFiniteLossError(CodiembError, RuntimeError):
    """The loss became NaN or infinite: training stops before the optimizer step, so no checkpoint holds it."""


class NonFiniteGradientError(CodiembError, RuntimeError):
    """The loss was finite but a gradient was not: training stops before the optimizer step applies it."""


class CoDiEmbModule(L.LightningModule):
    """Dispatches every step to the IR loss (``ir`` and ``mixed`` batches) or the STS loss (``sts``).

    Losses are ``nn.Module`` s with the signatures of :mod:`codiemb.losses`:
    ``ir_loss(query, passages, positive_mask)`` and ``sts_loss(a, b, scores, a_mid, b_mid)``, each returning
    ``(loss, components)``.
    """

    def __init__(self, encoder: Encoder, ir_loss: nn.Module, sts_loss: nn.Module, lr: float = 2e-5,
                 weight_decay: float = 0.01, warmup_ratio: float = 0.1, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, schedule: str = "linear", embed_chunk_size: int | None = None,
                 l2sp_weight: float = 0.0, freeze_embeddings: bool = False,
                 matryoshka_dims: list[int] | None = None, matryoshka_weights: list[float] | None = None,
                 ir_distill: Mapping | None = None, self_distill: Mapping | None = None):
        super().__init__()
        self.encoder, self.ir_loss, self.sts_loss = encoder, ir_loss, sts_loss
        # Matryoshka (issue #23, loss.matryoshka_dims): both tasks' losses at every listed leading size of the
        # embedding (truncated, re-normalised), weighted and summed; exports record the sizes (codiemb.json, card).
        # A bad setting is raised in setup(): raised here, Hydra would wrap it into a multi-line traceback.
        self._matryoshka_error = None
        if matryoshka_dims is not None or matryoshka_weights is not None:
            try:
                dims, weights = matryoshka_sizes(matryoshka_dims, matryoshka_weights, encoder.embedding_dim)
            except CodiembError as exc:
                self._matryoshka_error, matryoshka_dims, matryoshka_weights = exc, None, None
            else:
                self.ir_loss, self.sts_loss = (MatryoshkaLoss(loss, dims, weights) for loss in (ir_loss, sts_loss))
                matryoshka_dims, matryoshka_weights = list(dims), list(weights)  # plain lists in the hparams
        encoder.matryoshka_dims = tuple(matryoshka_dims) if matryoshka_dims else None
        if freeze_embeddings:  # the token-embedding table keeps its pre-trained rows (robust fine-tuning)
            encoder.backbone.get_input_embeddings().requires_grad_(False)
        # Distillation (issue #24): ir_distill = loss.ir.distill (teacher scores in the data), self_distill = a frozen
        # copy of the starting model (see distillation_terms). Bad settings are raised in setup(), as Matryoshka's.
        self._distill_error = None
        try:
            ir_distill, self_distill = check_ir_distill(ir_distill), check_self_distill(self_distill)
        except ConfigError as exc:
            self._distill_error, ir_distill, self_distill = exc, None, None
        self.ir_distill, self.self_distill = ir_distill, self_distill  # plain dicts (hparams, weights_only loads)
        # The frozen copy is built from the weights as built here, i.e. pre-trained (a resume loads its checkpoint
        # into self.encoder later); set past nn.Module, so it is no submodule: not in state_dict (checkpoints,
        # exports), not in parameters() (optimizer, DDP), never switched to train mode; on_fit_start moves it.
        base = copy.deepcopy(encoder).requires_grad_(False).eval() if self_distill else None
        object.__setattr__(self, "base_encoder", base)
        self._warned_no_teacher: set[str] = set()
        # L2-SP's anchor: the trainable weights as built here, i.e. pre-trained (a resume loads its checkpoint
        # later, so the anchor stays the starting point); a plain dict, so it is never saved in a checkpoint.
        self._anchors = {name: p.detach().clone() for name, p in encoder.named_parameters()
                         if p.requires_grad} if l2sp_weight else {}
        # from_pretrained leaves Hugging Face models in eval mode and Lightning keeps module modes as they
        # are, so switch to train mode here: dropout on, as in every other fine-tuning framework.
        self.train()
        self.save_hyperparameters(ignore=["encoder", "ir_loss", "sts_loss"])
        # train/<task>_loss_avg: each task's loss over its last LOSS_WINDOW steps (synced across ranks), what the
        # run summary shows; saved in the checkpoint, so a resumed run reports what the uninterrupted one would.
        self.loss_avg = nn.ModuleDict({task: RunningMean(window=LOSS_WINDOW) for task in ("ir", "sts", "mixed")})
        for metric in self.loss_avg.values():
            metric.persistent(True)
        self.steps_by_task: dict[str, int] = {}
        self.steps_by_dataset: dict[str, int] = {}
        self._restored_rng: dict | None = None

    def setup(self, stage: str) -> None:
        if self._matryoshka_error is not None:  # see __init__
            raise self._matryoshka_error
        if self._distill_error is not None:  # see __init__
            raise self._distill_error

    # ------------------------------------------------------------ steps
    def middle_layer(self) -> int | None:
        if not getattr(self.sts_loss, "needs_middle_layer", False):
            return None
        layer = getattr(self.sts_loss, "middle_layer", None)
        # hidden_states has num_layers + 1 entries (embeddings first); the official release takes len // 2.
        return (self.encoder.num_layers + 1) // 2 if layer is None else int(layer)

    def embed(self, features: dict, hidden_layer: int | None = None):
        """Encode a batch; with ``embed_chunk_size`` in chunks whose activations are dropped after the forward
        and recomputed chunk by chunk in the backward (GradCache's memory profile, as sentence-transformers'
        CachedMultipleNegativesRankingLoss: the loss still sees every embedding of the big batch, but only
        one chunk's activations are alive at a time; the price is one extra forward)."""
        size = self.hparams.get("embed_chunk_size")
        rows = features["input_ids"].shape[0]
        if not size or rows <= size or not torch.is_grad_enabled():
            return self.encoder(features, hidden_layer=hidden_layer)
        from torch.utils.checkpoint import checkpoint

        outputs = [checkpoint(self.encoder, {k: v[start:start + size] for k, v in features.items()}, hidden_layer,
                              use_reentrant=False)  # keeps the RNG state, so dropout recomputes identically
                   for start in range(0, rows, size)]
        if hidden_layer is None:
            return torch.cat(outputs)
        return torch.cat([o[0] for o in outputs]), torch.cat([o[1] for o in outputs])

    def compute_loss(self, batch: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The task's loss, plus ``l2sp_weight * sum ||w - w0||^2`` when L2-SP is on (``components["l2sp"]``)."""
        loss, components = self.task_loss(batch)
        if self._anchors:
            named = dict(self.encoder.named_parameters())
            penalty = l2sp_penalty([named[name] for name in self._anchors], self._anchors.values())
            loss, components = loss + self.hparams.l2sp_weight * penalty, {**components, "l2sp": penalty.detach()}
        return loss, components

    def task_loss(self, batch: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        # Under DDP all ranks must be on the same task and dataset, or a gather would hang or mix tasks.
        assert_lockstep(f"{batch['task']}/{batch['dataset']}", self.device)
        if batch["task"] == "sts":
            layer = self.middle_layer()
            a, b = self.embed(batch["query"], layer), self.embed(batch["passages"], layer)
            (a, a_mid), (b, b_mid) = (a, b) if layer is not None else ((a, None), (b, None))
            scores = batch["scores"]
            extra = self.distillation_terms(batch, a, b)  # this rank's texts, before any gather
            if gathers(self.sts_loss):
                a, b, scores = all_gather_with_grad(a), all_gather_with_grad(b), all_gather_no_grad(scores)
                a_mid, b_mid = (None, None) if a_mid is None else (all_gather_with_grad(a_mid),
                                                                     all_gather_with_grad(b_mid))
            return add_terms(self.sts_loss(a, b, scores, a_mid, b_mid), extra)
        query, passages, mask = self.embed(batch["query"]), self.embed(batch["passages"]), batch["positive_mask"]
        extra = self.distillation_terms(batch, query, passages)
        if gathers(self.ir_loss):
            query, passages = all_gather_with_grad(query), all_gather_with_grad(passages)
            mask = gather_positive_mask(mask)
        return add_terms(self.ir_loss(query, passages, mask), extra)

    def distillation_terms(self, batch: dict, a: torch.Tensor, b: torch.Tensor) -> dict[str, tuple[float, torch.Tensor]]:
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
        spec = self.ir_distill
        if spec is not None and batch["task"] != "sts":
            teacher = batch.get("teacher_scores")
            if teacher is None:
                if batch["dataset"] not in self._warned_no_teacher:
                    self._warned_no_teacher.add(batch["dataset"])
                    log.warning("loss.ir.distill is on but dataset '%s' has no teacher scores (pos_scores / "
                                "neg_scores): its batches train without the distillation term", batch["dataset"])
            else:
                student = F.normalize(a.float(), dim=-1) @ F.normalize(b.float(), dim=-1).T
                terms["distill"] = (spec["weight"], ir_distill_term(
                    spec["kind"], student, teacher.to(student.device), batch["positive_mask"].to(student.device),
                    spec["temperature"]))
        spec = self.self_distill
        if spec is not None:
            with torch.no_grad():
                base_a, base_b = self.base_encoder(batch["query"]), self.base_encoder(batch["passages"])
            terms["self_distill"] = (spec["weight"], self_distill_kl(
                F.normalize(a.float(), dim=-1), F.normalize(b.float(), dim=-1), F.normalize(base_a.float(), dim=-1),
                F.normalize(base_b.float(), dim=-1), spec["temperature"]))
        return terms

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss, components = self.compute_loss(batch)
        task, size = batch["task"], batch["size"]
        self._step_context = f"global step {self.global_step} (task '{task}', dataset '{batch['dataset']}', " \
                             f"micro-batch {batch_idx})"
        # Raising here skips backward, optimizer step and checkpoint; every rank learns of any rank's NaN (one
        # all-reduce under DDP), so all stop together instead of the others waiting in backward's all-reduce.
        if not all_ranks_finite(loss, self.device):
            raise NonFiniteLossError(
                f"loss is {loss.item()} at {self._step_context}; stopped before the optimizer step, so the last "
                "checkpoint is clean: lower module.lr, check that dataset, or resume with ckpt_path=<last.ckpt>")
        logged = loss.detach().float()
        self.log("train/loss", logged, prog_bar=True, batch_size=size)
        self.log(f"train/{task}_loss", logged, batch_size=size)
        self.loss_avg[task].update(logged)  # every rank runs the same task each step, so compute's sync matches
        self.log(f"train/{task}_loss_avg", self.loss_avg[task].compute(), batch_size=size)
        for name, value in components.items():
            self.log(f"train/{task}/{name}", value.float(), batch_size=size)
        return loss

    # ------------------------------------------------------------ exact resumes
    def on_train_batch_start(self, batch: dict, batch_idx: int) -> None:
        if self._restored_rng is not None:  # restored here, after the DataLoader and callbacks have started
            set_rng_states(self._restored_rng)
            self._restored_rng = None
        # Count the batch as consumed (and a finished optimizer step in the sampler/steps_* counters, logged at
        # batch end) now: checkpoint callbacks run before this module's on_train_batch_end, so a checkpoint
        # saved at the end of this step must already include it.
        datamodule = getattr(self.trainer, "datamodule", None)
        if datamodule is not None and hasattr(datamodule, "mark_consumed"):
            datamodule.mark_consumed(batch["position"])
        if self._ends_step(batch_idx):
            self.steps_by_task[batch["task"]] = self.steps_by_task.get(batch["task"], 0) + 1
            self.steps_by_dataset[batch["dataset"]] = self.steps_by_dataset.get(batch["dataset"], 0) + 1

    def _ends_step(self, batch_idx: int) -> bool:
        return (batch_idx + 1) % self.trainer.accumulate_grad_batches == 0

    def on_fit_start(self) -> None:
        self._anchors = {name: a.to(self.device) for name, a in self._anchors.items()}
        if self.base_encoder is not None:  # no submodule (see __init__): follows the student's device and dtype
            self.base_encoder.to(device=self.device, dtype=next(self.encoder.parameters()).dtype)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        # Lightning does not save RNG states; dropout masks after a resume must match the uninterrupted run.
        checkpoint["codiemb_rng_states"] = rng_states()
        checkpoint["codiemb_steps"] = {"task": dict(self.steps_by_task), "dataset": dict(self.steps_by_dataset)}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        state = checkpoint.get("state_dict", {})  # a checkpoint from before the loss averages: start them empty
        for key, value in self.state_dict().items():
            if key.startswith("loss_avg.") and key not in state:
                state[key] = value
        self._restored_rng = checkpoint.get("codiemb_rng_states")
        steps = checkpoint.get("codiemb_steps", {})  # the sampler/steps_* counters go on from where they were
        self.steps_by_task, self.steps_by_dataset = dict(steps.get("task", {})), dict(steps.get("dataset", {}))

    def on_train_batch_end(self, outputs, batch: dict, batch_idx: int) -> None:
        # The sampler statistics the loggers show.
        if self._ends_step(batch_idx):
            for task, count in self.steps_by_task.items():
                self.log(f"sampler/steps_{task}", float(count), batch_size=1)
            for dataset, count in self.steps_by_dataset.items():
                self.log(f"sampler/steps/{dataset}", float(count), batch_size=1)

    # ------------------------------------------------------------ optimisation
    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None) -> None:
        # Lightning's mixed-precision plugin refuses to clip for a fused optimiser because fp16 loss scaling
        # would have to be undone first; bf16 has no scaler, so the gradients are plain and can be clipped here.
        plugin = self.trainer.precision_plugin
        if getattr(plugin, "scaler", None) is None:  # fp16's loss scaler skips non-finite steps by design
            self._check_finite_gradients()
        if (gradient_clip_val and isinstance(plugin, MixedPrecision) and plugin.scaler is None
                and gradient_clip_algorithm in (None, "norm")):
            torch.nn.utils.clip_grad_norm_(self.parameters(), gradient_clip_val)
            return
        super().configure_gradient_clipping(optimizer, gradient_clip_val, gradient_clip_algorithm)

    def _check_finite_gradients(self) -> None:
        grads = [p.grad for p in self.parameters() if p.grad is not None]
        if grads and not all_ranks_finite(torch.nn.utils.get_total_norm(grads), self.device):
            bad = [name for name, p in self.named_parameters()
                   if p.grad is not None and not torch.isfinite(p.grad).all()]
            where = f"in {len(bad)} parameters, first '{bad[0]}'" if bad else "on another rank" \
                if is_distributed() else "in its norm (each gradient is finite; their norm overflows)"
            raise NonFiniteGradientError(
                f"gradient is not finite {where} at {getattr(self, '_step_context', 'this step')} although the "
                "loss is finite; stopped before the optimizer step, so the weights and the last checkpoint are "
                "clean: lower module.lr or trainer.gradient_clip_val, use bf16/fp32, or resume with "
                "ckpt_path=<last.ckpt>")

    def configure_optimizers(self):
        decay, no_decay = [], []
        for name, param in self.named_parameters():
            if param.requires_grad:
                (no_decay if param.ndim < 2 or "norm" in name.lower() else decay).append(param)
        groups = [{"params": decay, "weight_decay": self.hparams.weight_decay},
                  {"params": no_decay, "weight_decay": 0.0}]
        # Fused AdamW runs on CUDA and (torch >= 2.4) CPU: one kernel instead of per-tensor foreach ops,
        # 8x faster on CPU for MiniLM (docs/speed.md). Not with an fp16 grad scaler: Lightning cannot clip then.
        scaler = getattr(self.trainer.precision_plugin, "scaler", None) if self._trainer is not None else None
        fused = (scaler is None and all(p.device.type in ("cuda", "cpu") for p in decay + no_decay)) or None
        optimizer = torch.optim.AdamW(groups, lr=self.hparams.lr, betas=tuple(self.hparams.betas),
                                      eps=self.hparams.eps, fused=fused)
        total = max(1, int(self.trainer.estimated_stepping_batches))
        warmup = int(self.hparams.warmup_ratio * total)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _schedule(self.hparams.schedule, warmup, total))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}



def gathers(loss: nn.Module) -> bool:
    """Whether ``loss`` sees every rank's embeddings: ``cross_device`` true, or ``"auto"`` (the IR default, as in
    every official training script) with a world size above 1. One process never gathers."""
    mode = getattr(loss, "cross_device", False)
    return is_distributed() and (mode is True or mode == "auto")


def rng_states() -> dict:
    """Every RNG training draws from, as plain tensors, lists and ints: checkpoints load with weights_only=True."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    states = {"torch": torch.get_rng_state(), "numpy": [kind, keys.tolist(), pos, has_gauss, cached],
              "python": random.getstate()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["torch.cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict) -> None:
    torch.set_rng_state(states["torch"])
    kind, keys, pos, has_gauss, cached = states["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    python = states["python"]  # a tuple when saved; lists once it went through a checkpoint
    random.setstate((python[0], tuple(python[1]), python[2]))
    if "torch.cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["torch.cuda"])


def _schedule(kind: str, warmup: int, total: int):
    """Linear warmup, then linear (or cosine) decay to zero, or constant."""
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


# ------------------------------------------------------------ distillation (issue #24 part 3)
DISTILL_KINDS = ("kl", "margin_mse")


class DistillableInfoNCELoss(InfoNCELoss):
    """:class:`codiemb.losses.InfoNCELoss` that also takes the ``loss.ir.distill`` block of configs/loss/*.yaml
    (Hydra passes every key of ``loss.ir``) and leaves it to the module, which reads it as ``ir_distill``."""

    def __init__(self, *args, distill: Mapping | None = None, **kwargs):
        super().__init__(*args, **kwargs)


def _number(key: str, value: Any, minimum: float, strict: bool) -> float:
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
    weight = _number("loss.ir.distill.weight", spec.get("weight", 1.0), 0, strict=False)
    temperature = _number("loss.ir.distill.temperature", spec.get("temperature", 1.0), 0, strict=True)
    return {"kind": spec["kind"], "weight": weight, "temperature": temperature} if weight else None


def check_self_distill(spec: Any) -> dict | None:
    """``module.self_distill`` as ``{weight, temperature}``, or None when off (``weight`` 0 or null)."""
    spec = _spec("module.self_distill", spec, ("weight", "temperature"))
    if spec is None or not spec.get("weight"):
        return None
    weight = _number("module.self_distill.weight", spec["weight"], 0, strict=False)
    temperature = _number("module.self_distill.temperature", spec.get("temperature", 0.05), 0, strict=True)
    return {"weight": weight, "temperature": temperature}


def ir_distill_term(kind: str, student: torch.Tensor, teacher: torch.Tensor, positive_mask: torch.Tensor,
                    temperature: float) -> torch.Tensor:
    """The distillation term of one IR batch. ``student`` [B, M]: the student's score of every query with every
    passage; ``teacher`` [B, M]: the teacher's score of each query's *own* sampled passages, ``-inf`` elsewhere
    (the collator's ``teacher_scores``); ``positive_mask`` [B, M]: each query's own positives.

    * ``kl``: :func:`distill_kl` over each query's own candidates, both sides divided by ``temperature``.
    * ``margin_mse``: :func:`margin_mse` over every (own positive, own negative) pair of each query, on the raw
      scores (``temperature`` unused): the teacher's scores should be on the student's (cosine) scale.
    """
    if kind == "kl":
        return distill_kl(student, teacher, temperature)
    if kind != "margin_mse":
        raise ValueError(f"unknown distillation kind {kind!r}; use one of {DISTILL_KINDS}")
    own = teacher > float("-inf")
    # each query's own columns first (stable: in batch order), then [B, K, K] pairs with K = most own columns
    order = torch.sort((~own).to(torch.uint8), dim=1, stable=True).indices[:, :max(1, int(own.sum(1).max()))]
    s, t = student.gather(1, order), teacher.masked_fill(~own, 0.0).gather(1, order)
    valid, positive = own.gather(1, order), positive_mask.to(torch.bool).gather(1, order)
    pairs = (valid & positive)[:, :, None] & (valid & ~positive)[:, None, :]
    return margin_mse(s[:, :, None], s[:, None, :], t[:, :, None], t[:, None, :], pairs)


def add_terms(result: tuple[torch.Tensor, dict[str, torch.Tensor]],
              terms: Mapping[str, tuple[float, torch.Tensor]]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """``(loss + sum weight x term, components + {name: term})``."""
    loss, components = result
    for name, (weight, term) in terms.items():
        loss, components = loss + weight * term, {**components, name: term.detach()}
    return loss, components
