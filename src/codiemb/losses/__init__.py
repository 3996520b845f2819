"""Loss functions: pure functions of embeddings / similarities and labels, plus thin ``nn.Module`` wrappers.

This package sees tensors only (it imports nothing from ``codiemb.data`` or ``codiemb.models``).
Formulas, defaults and sources: docs/losses.md.
"""

from codiemb.losses.angle import AnglELoss, angle_loss, pairwise_angle_similarity
from codiemb.losses.cosent import CoSENTLoss, cosent_loss
from codiemb.losses.distill_kl import DistillKLLoss, distill_kl
from codiemb.losses.infonce import InfoNCELoss, STSInfoNCELoss, info_nce, sts_pair_infonce
from codiemb.losses.infonce_slots import info_nce_slots, passage_slots
from codiemb.losses.l2sp import l2sp_penalty
from codiemb.losses.margin_mse import MarginMSELoss, margin_mse
from codiemb.losses.matryoshka import MatryoshkaLoss, matryoshka_loss, matryoshka_sizes
from codiemb.losses.pearson import PearsonLoss, pearson_loss
from codiemb.losses.pro import PROLoss, pro_loss
from codiemb.losses.rank_kl import RankKLLoss, normalised_average_ranks, rank_kl_loss
from codiemb.losses.self_distill import SelfDistillKLLoss, self_distill_kl
from codiemb.losses.sts_composite import CoDiEmbSTSLoss

__all__ = [
    "AnglELoss", "CoDiEmbSTSLoss", "CoSENTLoss", "DistillKLLoss", "InfoNCELoss", "MarginMSELoss", "MatryoshkaLoss",
    "PROLoss", "PearsonLoss", "RankKLLoss", "STSInfoNCELoss", "SelfDistillKLLoss", "angle_loss", "cosent_loss",
    "distill_kl", "info_nce", "info_nce_slots", "l2sp_penalty", "margin_mse", "matryoshka_loss", "matryoshka_sizes",
    "normalised_average_ranks", "pairwise_angle_similarity", "passage_slots", "pearson_loss", "pro_loss",
    "rank_kl_loss", "self_distill_kl", "sts_pair_infonce",
]
