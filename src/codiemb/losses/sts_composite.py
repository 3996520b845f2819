"""CoDiEmb's STS objective: Pearson + rank-KL + PRO on the final layer, InfoNCE on a middle layer.

Source: CoDiEmb (arXiv 2508.11442); weights and temperatures from the official release
(TencentCloudADP/youtu-embedding, ``training/CoDiEmb/train/model.py``, ``TrainModel.forward`` for ``task_type="sts"``):
``loss = infonce(mid) + 0.5 * pro + 2 * pearson + 5 * rank_kl``.
"""

from __future__ import annotations

from torch import Tensor, nn

from codiemb.errors import ConfigError
from codiemb.losses.infonce import sts_pair_infonce
from codiemb.losses.infonce_slots import check_temperature
from codiemb.losses.pearson import pearson_loss
from codiemb.losses.pro import pro_loss
from codiemb.losses.rank_kl import rank_kl_loss


class CoDiEmbSTSLoss(nn.Module):
    """``loss = w_p * pearson(cos, y) + w_kl * rank_kl(cos, y) + w_pro * pro(cos, y) + w_mid * infonce_mid``.

    ``cos_i = cosine(a_i, b_i)`` of the final-layer embeddings, ``y`` the gold scores normalised to [0, 1].
    PRO sees ``score_scale * y``: its logits are weighted by gold-score gaps, so the scale matters (the official
    code sees raw scores; ``score_scale=5`` reproduces it on 0-5 data). Pearson and rank-KL are scale-free,
    and ``positive_threshold`` always applies to ``y`` on [0, 1].
    ``infonce_mid``: :func:`~codiemb.losses.infonce.info_nce` on the L2-normalised middle-layer embeddings,
    anchors ``a_mid[i]`` for the pairs with ``y_i >= positive_threshold``, candidates all ``b_mid`` of the batch,
    positive ``b_mid[i]``; skipped (and absent from ``components``) when ``a_mid`` is ``None``.

    Attributes read by the LightningModule:
        needs_middle_layer: ``True`` iff ``middle_infonce_weight > 0``.
        middle_layer: index into ``hidden_states`` or ``None`` for half depth (the official code uses
            ``hidden_states[len(hidden_states) // 2]``; the caller resolves ``None``).
    """

    def __init__(self, pearson_weight: float = 2.0, rank_kl_weight: float = 5.0, pro_weight: float = 0.5,
                 middle_infonce_weight: float = 1.0, positive_threshold: float = 0.8, temperature: float = 0.02,
                 middle_layer: int | None = None, cross_device: bool = False,
                 rank_kl_pred_temperature: float = 0.05, rank_kl_target_temperature: float = 0.05,
                 pro_temperature: float = 0.05, pro_weighted: bool = True, score_scale: float = 1.0):
        super().__init__()
        weights = dict(pearson_weight=pearson_weight, rank_kl_weight=rank_kl_weight, pro_weight=pro_weight,
                       middle_infonce_weight=middle_infonce_weight)
        negative = {name: value for name, value in weights.items() if value < 0}
        if negative:
            raise ConfigError(f"loss weights must be >= 0, got {negative}")
        if not score_scale > 0:
            raise ConfigError(f"score_scale must be > 0, got {score_scale}")
        for value in (temperature, rank_kl_pred_temperature, rank_kl_target_temperature, pro_temperature):
            check_temperature(value)
        self.pearson_weight = pearson_weight
        self.rank_kl_weight = rank_kl_weight
        self.pro_weight = pro_weight
        self.middle_infonce_weight = middle_infonce_weight
        self.positive_threshold = positive_threshold
        self.temperature = temperature
        self.middle_layer = middle_layer
        self.cross_device = cross_device  # recorded only: the caller gathers across ranks
        self.rank_kl_pred_temperature = rank_kl_pred_temperature
        self.rank_kl_target_temperature = rank_kl_target_temperature
        self.pro_temperature = pro_temperature
        self.pro_weighted = pro_weighted
        self.score_scale = score_scale

    @property
    def needs_middle_layer(self) -> bool:
        return self.middle_infonce_weight > 0

    def forward(self, a: Tensor, b: Tensor, scores: Tensor, a_mid: Tensor | None = None,
                b_mid: Tensor | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        scores = scores.float().to(a.device)
        cos = nn.functional.cosine_similarity(a.float(), b.float(), dim=-1)
        parts = {
            "pearson": pearson_loss(cos, scores),
            "rank_kl": rank_kl_loss(cos, scores, self.rank_kl_pred_temperature, self.rank_kl_target_temperature),
            "pro": pro_loss(cos, scores * self.score_scale, self.pro_temperature, self.pro_weighted),
        }
        weights = {"pearson": self.pearson_weight, "rank_kl": self.rank_kl_weight, "pro": self.pro_weight}
        if a_mid is not None:
            if b_mid is None:
                raise ValueError("a_mid given without b_mid")
            parts["middle_infonce"] = sts_pair_infonce(a_mid, b_mid, scores, self.positive_threshold,
                                                       self.temperature)
            weights["middle_infonce"] = self.middle_infonce_weight
        loss = sum(weights[name] * value for name, value in parts.items())
        return loss, {name: value.detach() for name, value in parts.items()}

    def extra_repr(self) -> str:
        return (f"pearson={self.pearson_weight}, rank_kl={self.rank_kl_weight}, pro={self.pro_weight}, "
                f"middle_infonce={self.middle_infonce_weight}, positive_threshold={self.positive_threshold}, "
                f"temperature={self.temperature}, middle_layer={self.middle_layer}, score_scale={self.score_scale}")
