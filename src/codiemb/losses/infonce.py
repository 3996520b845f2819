"""Multi-positive InfoNCE for retrieval, and the naive InfoNCE baseline for STS pairs.

Sources: van den Oord et al. 2018 ("Representation Learning with Contrastive Predictive Coding") for InfoNCE;
the per-positive form with hard and in-batch negatives follows the CoDiEmb release
(TencentCloudADP/youtu-embedding, ``training/CoDiEmb/train/loss.py``, ``ContrastiveLoss`` with ``ir_mode="all"``).
See docs/losses.md for how this differs from that code in its candidate set.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from codiemb.errors import ConfigError
from codiemb.losses.infonce_slots import check_temperature, info_nce_slots


def info_nce(query: Tensor, passages: Tensor, positive_mask: Tensor, temperature: float = 0.02) -> Tensor:
    """InfoNCE with several positives per query, each positive scored in turn.

    With ``s_ik = <q_i, p_k> / t`` (embeddings already L2-normalised) and ``P_i = {k : positive_mask[i, k]}``::

        term_ij = -log( exp(s_ij) / (exp(s_ij) + sum_{k not in P_i} exp(s_ik)) )      for j in P_i
        loss    = mean over all (i, j) with j in P_i

    The candidates ``k not in P_i`` are the query's own hard negatives and every other query's passages; the
    query's *other* positives are left out so that two positives never compete with each other.
    Queries without a positive contribute nothing; with no positive at all the loss is a zero that stays
    connected to the inputs (so DDP / Lightning see a gradient for every parameter).

    Args:
        query: ``[B, D]`` query embeddings.
        passages: ``[M, D]`` every passage of the batch (positives and hard negatives of all queries).
        positive_mask: ``[B, M]`` bool, ``True`` where passage ``k`` is a positive of query ``i``.
        temperature: ``t`` above.
    """
    check_temperature(temperature)
    if positive_mask.shape != (query.shape[0], passages.shape[0]):
        raise ValueError(f"positive_mask has shape {tuple(positive_mask.shape)}, "
                         f"expected {(query.shape[0], passages.shape[0])}")
    positive_mask = positive_mask.bool()
    logits = query.float() @ passages.float().T / temperature
    # A finite fill (not -inf) keeps logsumexp's gradient NaN-free when a row has no negative at all.
    negatives_only = logits.masked_fill(positive_mask, torch.finfo(logits.dtype).min)
    negative_lse = torch.logsumexp(negatives_only, dim=1, keepdim=True)  # [B, 1]
    # -log(e^s / (e^s + e^N)) = logaddexp(s, N) - s
    terms = torch.logaddexp(logits, negative_lse) - logits
    terms = torch.where(positive_mask, terms, torch.zeros_like(terms))
    return terms.sum() / positive_mask.sum().clamp_min(1)


CANDIDATE_SETS = ("all", "slot")


def check_cross_device_mode(value) -> bool | str:
    """``True``, ``False`` or ``"auto"`` (gather whenever the world size is above 1); ``None`` means auto."""
    value = "auto" if value is None else value
    if value == "auto" or isinstance(value, bool):
        return value
    raise ConfigError(f"cross_device must be true, false or auto, got {value!r}")


class InfoNCELoss(nn.Module):
    """IR InfoNCE: :func:`info_nce` (``candidates="all"``) or the official per-slot candidate set
    (``candidates="slot"``, :func:`~codiemb.losses.infonce_slots.info_nce_slots`).

    ``cross_device`` is only recorded here (``"auto"``: on whenever the world size is above 1, as every
    official training script); the caller gathers embeddings across ranks before calling. ``distill`` (the
    ``loss.ir.distill`` block of the config) is read by the LightningModule, which adds the distillation term.
    """

    def __init__(self, temperature: float = 0.02, cross_device: bool | str = "auto", candidates: str = "all",
                 distill: dict | None = None):
        super().__init__()
        check_temperature(temperature)
        if candidates not in CANDIDATE_SETS:
            raise ConfigError(f"candidates must be one of {CANDIDATE_SETS}, got {candidates!r}")
        self.temperature = temperature
        self.cross_device = check_cross_device_mode(cross_device)
        self.candidates = candidates

    def forward(self, query: Tensor, passages: Tensor, positive_mask: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        if self.candidates == "slot":
            loss = info_nce_slots(query, passages, positive_mask, self.temperature)
        else:
            loss = info_nce(query, passages, positive_mask, self.temperature)
        return loss, {"infonce": loss.detach()}

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}, cross_device={self.cross_device}, candidates={self.candidates}"


def sts_pair_infonce(a: Tensor, b: Tensor, scores: Tensor, positive_threshold: float,
                     temperature: float) -> Tensor:
    """InfoNCE on STS pairs: each ``a_i`` whose gold score is ``>= positive_threshold`` must pick ``b_i``
    among all ``b`` of the batch. Inputs are L2-normalised here. Same as the CoDiEmb ``ContrastiveLoss``
    with ``task_type="sts"`` (which uses threshold 1.0 on its scores)."""
    a = nn.functional.normalize(a.float(), dim=-1)
    b = nn.functional.normalize(b.float(), dim=-1)
    is_anchor = scores >= positive_threshold
    positive_mask = torch.eye(a.shape[0], dtype=torch.bool, device=a.device) & is_anchor[:, None]
    # Rows without an anchor have an all-False mask and contribute nothing, so no boolean indexing
    # (which would force a device sync) is needed.
    return info_nce(a, b, positive_mask, temperature)


class STSInfoNCELoss(nn.Module):
    """Naive STS baseline: InfoNCE on pairs with score ``>= positive_threshold`` (scores in [0, 1]).

    Same call signature as :class:`~codiemb.losses.sts_composite.CoDiEmbSTSLoss`.
    """

    needs_middle_layer = False
    middle_layer = None

    def __init__(self, temperature: float = 0.02, positive_threshold: float = 0.8):
        super().__init__()
        check_temperature(temperature)
        self.temperature = temperature
        self.positive_threshold = positive_threshold

    def forward(self, a: Tensor, b: Tensor, scores: Tensor, a_mid: Tensor | None = None,
                b_mid: Tensor | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        loss = sts_pair_infonce(a, b, scores, self.positive_threshold, self.temperature)
        return loss, {"infonce": loss.detach()}
