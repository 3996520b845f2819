"""AnglE angle-optimised loss (Li & Li 2023, "AnglE-optimized Text Embeddings", arXiv 2309.12871).

Follows sentence-transformers ``AnglELoss``: CoSENT (see :mod:`codiemb.losses.cosent`) where the pair similarity
is ``util.pairwise_angle_sim``.
"""

from __future__ import annotations

from torch import Tensor, nn

from codiemb.losses.cosent import PairRankingSTSLoss, cosent_loss


def pairwise_angle_similarity(x: Tensor, y: Tensor) -> Tensor:
    """``|cos(x_i, y_i) + sin(x_i, y_i)|`` after L2 normalisation.

    Each embedding is read as a complex vector ``z = u + i v`` with ``u`` its first and ``v`` its second half
    (an odd dimension gets a zero pad). For unit ``z_x, z_y``, ``z_x * conj(z_y)`` summed over dimensions
    gives ``cos + i * sin`` with ``cos = <x, y>`` and ``sin = <v_x, u_y> - <u_x, v_y>``; AnglE scores the pair by the
    absolute sum of the two, which keeps a gradient where the cosine saturates. Same as
    sentence-transformers ``util.pairwise_angle_sim`` (v5+, the cos + sin rewrite of the AnglE complex division).
    """
    x, y = x.float(), y.float()
    if x.shape[-1] % 2:
        x = nn.functional.pad(x, (0, 1))
        y = nn.functional.pad(y, (0, 1))
    x = nn.functional.normalize(x, dim=-1)
    y = nn.functional.normalize(y, dim=-1)
    cosines = (x * y).sum(dim=-1)
    x_first, x_last = x.chunk(2, dim=-1)
    y_first, y_last = y.chunk(2, dim=-1)
    sines = (x_last * y_first - x_first * y_last).sum(dim=-1)
    return (cosines + sines).abs()


def angle_loss(a: Tensor, b: Tensor, target: Tensor, scale: float = 20.0) -> Tensor:
    """``log(1 + sum_{(i, j): y_i > y_j} exp(scale * (ang_j - ang_i)))`` with ``ang = pairwise_angle_similarity(a, b)``."""
    return cosent_loss(pairwise_angle_similarity(a, b), target, scale)


class AnglELoss(PairRankingSTSLoss):
    """AnglE on STS pairs; same signature as :class:`~codiemb.losses.cosent.CoSENTLoss`."""

    component_name = "angle"

    def similarity(self, a: Tensor, b: Tensor) -> Tensor:
        return pairwise_angle_similarity(a, b)
