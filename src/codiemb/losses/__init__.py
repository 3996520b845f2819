"""Loss functions: pure functions of embeddings / similarities and labels, plus thin ``nn.Module`` wrappers.

This package sees tensors only (it imports nothing from ``codiemb.data`` or ``codiemb.models``).
Formulas, defaults and sources: docs/losses.md.
"""

from codiemb.losses.angle import AnglELoss, angle_loss, pairwise_angle_similarity
from codiemb.losses.cosent import CoSENTLoss, cosent_loss
from codiemb.losses.infonce import InfoNCELoss, STSInfoNCELoss, info_nce, sts_pair_infonce
from codiemb.losses.infonce_slots import info_nce_slots, passage_slots
from codiemb.losses.l2sp import l2sp_penalty
from codiemb.losses.pearson import PearsonLoss, pearson_loss
from codiemb.losses.pro import PROLoss, pro_loss
from codiemb.losses.rank_kl import RankKLLoss, normalised_average_ranks, rank_kl_loss
from codiemb.losses.sts_composite import CoDiEmbSTSLoss

__all__ = [
    "AnglELoss", "CoDiEmbSTSLoss", "CoSENTLoss", "InfoNCELoss", "PROLoss", "PearsonLoss", "RankKLLoss",
    "STSInfoNCELoss", "angle_loss", "cosent_loss", "info_nce", "info_nce_slots", "l2sp_penalty", "normalised_average_ranks",
    "pairwise_angle_similarity", "passage_slots", "pearson_loss", "pro_loss", "rank_kl_loss", "sts_pair_infonce",
]
