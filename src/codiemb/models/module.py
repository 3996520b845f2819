"""The LightningModule: encode a task-homogeneous batch and hand it to that task's loss."""

from __future__ import annotations

from collections.abc import Mapping

import lightning as L
import torch
from lightning.pytorch.plugins.precision import MixedPrecision
from torch import nn
from torchmetrics.aggregation import RunningMean

from codiemb.errors import CodiembError, ConfigError
from codiemb.losses.gather import (
    all_gather_no_grad,
    all_gather_with_grad,
    all_ranks_finite,
    assert_lockstep,
    gather_positive_mask,
    is_distributed,
)
from codiemb.losses.l2sp import l2sp_penalty
from codiemb.losses.matryoshka import MatryoshkaLoss, matryoshka_sizes
from codiemb.models.distill import Distiller, add_terms, check_ir_distill, check_self_distill
from codiemb.models.encoder import Encoder
from codiemb.models.optim import check_task_lr_scale, scaled_lr, schedule
from codiemb.models.rng import rng_states, set_rng_states

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
                 ir_distill: Mapping | None = None, self_distill: Mapping | None = None,
                 task_lr_scale: Mapping | None = None):
        super().__init__()
        self.encoder, self.ir_loss, self.sts_loss = encoder, ir_loss, sts_loss
        # A bad Matryoshka or distillation setting is raised in setup(): raised here, Hydra would wrap it into a
        # multi-line traceback.
        self._config_error: CodiembError | None = None
        # Matryoshka (loss.matryoshka_dims): both tasks' losses at every listed leading size of the embedding
        # (truncated, re-normalised), weighted and summed; exports record the sizes (codiemb.json, card).
        if matryoshka_dims is not None or matryoshka_weights is not None:
            try:
                dims, weights = matryoshka_sizes(matryoshka_dims, matryoshka_weights, encoder.embedding_dim)
            except CodiembError as exc:
                self._config_error, matryoshka_dims, matryoshka_weights = exc, None, None
            else:
                self.ir_loss, self.sts_loss = (MatryoshkaLoss(loss, dims, weights) for loss in (ir_loss, sts_loss))
                matryoshka_dims, matryoshka_weights = list(dims), list(weights)  # plain lists in the hparams
        encoder.matryoshka_dims = tuple(matryoshka_dims) if matryoshka_dims else None
        if freeze_embeddings:  # the token-embedding table keeps its pre-trained rows (robust fine-tuning)
            encoder.backbone.get_input_embeddings().requires_grad_(False)
        # Distillation: loss.ir.distill (teacher scores in the data) and module.self_distill (a frozen copy of the
        # starting model, kept outside this module's state: codiemb.models.distill.Distiller).
        try:
            ir_distill, self_distill = check_ir_distill(ir_distill), check_self_distill(self_distill)
        except ConfigError as exc:
            self._config_error, ir_distill, self_distill = self._config_error or exc, None, None
        self.distiller = Distiller(ir_distill, self_distill, encoder)
        try:  # module.task_lr_scale: each task's steps at lr x its factor (optimizer_step)
            self._lr_scale = check_task_lr_scale(task_lr_scale)
        except ConfigError as exc:
            self._config_error, self._lr_scale = self._config_error or exc, {}
        task_lr_scale = dict(self._lr_scale)  # a plain dict in the hparams: a checkpoint loads with weights_only
        self._task: str | None = None  # the task of the step in progress (on_train_batch_start)
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
        if self._config_error is not None:  # see __init__
            raise self._config_error

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
            extra = self.distiller.terms(batch, a, b)  # this rank's texts, before any gather
            if gathers(self.sts_loss):
                a, b, scores = all_gather_with_grad(a), all_gather_with_grad(b), all_gather_no_grad(scores)
                a_mid, b_mid = (None, None) if a_mid is None else (all_gather_with_grad(a_mid),
                                                                     all_gather_with_grad(b_mid))
            return add_terms(self.sts_loss(a, b, scores, a_mid, b_mid), extra)
        query, passages, mask = self.embed(batch["query"]), self.embed(batch["passages"]), batch["positive_mask"]
        extra = self.distiller.terms(batch, query, passages)
        if gathers(self.ir_loss):
            query, passages = all_gather_with_grad(query), all_gather_with_grad(passages)
            mask = gather_positive_mask(mask)
        return add_terms(self.ir_loss(query, passages, mask), extra)

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
        self._task = batch["task"]
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
        self.distiller.to(self.device, next(self.encoder.parameters()).dtype)  # the frozen copy follows the student

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        # Lightning does not save RNG states; dropout masks after a resume must match the uninterrupted run.
        checkpoint["codiemb_rng_states"] = rng_states()
        checkpoint["codiemb_steps"] = {"task": dict(self.steps_by_task), "dataset": dict(self.steps_by_dataset)}
        # the windows' write positions (plain ints, not metric states): a resume fills the same slots
        checkpoint["codiemb_loss_avg_seen"] = {task: m._num_vals_seen for task, m in self.loss_avg.items()}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        state = checkpoint.get("state_dict", {})  # a checkpoint from before the loss averages: start them empty
        for key, value in self.state_dict().items():
            if key.startswith("loss_avg.") and key not in state:
                state[key] = value
        for task, seen in checkpoint.get("codiemb_loss_avg_seen", {}).items():
            self.loss_avg[task]._num_vals_seen = int(seen)
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
    def optimizer_step(self, epoch, batch_idx, optimizer, optimizer_closure=None) -> None:
        with scaled_lr(optimizer, self._lr_scale.get(self._task, 1.0)):
            super().optimizer_step(epoch, batch_idx, optimizer, optimizer_closure)

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
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule(self.hparams.schedule, warmup, total))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def gathers(loss: nn.Module) -> bool:
    """Whether ``loss`` sees every rank's embeddings: ``cross_device`` true, or ``"auto"`` (the IR default, as in
    every official training script) with a world size above 1. One process never gathers."""
    mode = getattr(loss, "cross_device", False)
    return is_distributed() and (mode is True or mode == "auto")
