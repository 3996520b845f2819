"""Embedding-geometry report: how the model spreads texts on the unit sphere.

On L2-normalised embeddings ``f``:

* alignment (Wang & Isola 2020, alpha = 2): ``E_{(x,y) ~ positive pairs} ||f(x) - f(y)||^2``; lower is better;
* uniformity (Wang & Isola 2020, t = 2): ``log E_{x != y} exp(-2 ||f(x) - f(y)||^2)`` over all pairs of
  distinct texts; lower (more negative) means more evenly spread;
* anisotropy (Ethayarajh 2019): mean cosine of random pairs; near 0 is isotropic, near 1 a narrow cone;
* effective rank (Roy & Vetterli 2007): ``exp(-sum_i p_i log p_i)`` with ``p_i = s_i / sum_j s_j`` the
  normalised singular values of the embedding matrix (texts x dims).

Plots (PNG, matplotlib Agg): cosine histograms of positive vs random pairs, and predicted cosine vs gold
score for STS pairs.
"""

from __future__ import annotations

import random
from pathlib import Path

import torch
import torch.nn.functional as F


def alignment(emb_a: torch.Tensor, emb_b: torch.Tensor) -> float:
    a, b = F.normalize(emb_a.float(), dim=-1), F.normalize(emb_b.float(), dim=-1)
    return float((a - b).pow(2).sum(-1).mean())


def uniformity(emb: torch.Tensor, t: float = 2.0) -> float:
    x = F.normalize(emb.float(), dim=-1)
    return float(torch.pdist(x).pow(2).mul(-t).exp().mean().log())


def anisotropy(emb_a: torch.Tensor, emb_b: torch.Tensor) -> float:
    """Mean cosine of the given (random) pairs."""
    return float(F.cosine_similarity(emb_a.float(), emb_b.float(), dim=-1).mean())


def effective_rank(emb: torch.Tensor) -> float:
    s = torch.linalg.svdvals(emb.double())
    p = s / s.sum()
    p = p[p > 0]
    return float(torch.exp(-(p * p.log()).sum()))


def positive_pairs(data, *, min_score_fraction: float = 0.8, score_range=(0.0, 5.0)) -> list[tuple[str, str]]:
    """Pairs that should sit close: STS pairs scored in the top ``1 - min_score_fraction`` of the range,
    or (query, relevant document) pairs of an IR set."""
    if hasattr(data, "scores"):
        low, high = score_range
        threshold = low + min_score_fraction * (high - low)
        return [(a, b) for a, b, s in zip(data.sentences1, data.sentences2, data.scores) if s >= threshold]
    return [(data.queries[q], data.corpus[d]) for q, docs in data.qrels.items() for d, g in docs.items()
            if g > 0 and q in data.queries and d in data.corpus]


def geometry(encoder, pairs: list[tuple[str, str]], *, batch_size: int = 64, max_pairs: int = 2000,
             seed: int = 0) -> dict:
    """Metrics above for ``pairs`` (subsampled to ``max_pairs``); random pairs = first texts x shuffled
    second texts. Returns metrics plus the raw cosines (for plots) under ``_cosines``."""
    if len(pairs) < 2:
        raise ValueError("the geometry report needs at least 2 positive pairs")
    rng = random.Random(seed)
    pairs = rng.sample(pairs, max_pairs) if len(pairs) > max_pairs else list(pairs)
    texts = sorted({t for pair in pairs for t in pair})
    index = {t: i for i, t in enumerate(texts)}
    emb = encoder.encode(texts, kind="passage", batch_size=batch_size)
    a = emb[[index[x] for x, _ in pairs]]
    b = emb[[index[y] for _, y in pairs]]
    shuffled = list(range(len(pairs)))
    rng.shuffle(shuffled)
    b_random = b[shuffled]
    return {"pairs": len(pairs), "texts": len(texts), "alignment": alignment(a, b), "uniformity": uniformity(emb),
            "anisotropy": anisotropy(a, b_random), "effective_rank": effective_rank(emb),
            "dims": emb.size(1),
            "_cosines": {"positive": F.cosine_similarity(a, b, dim=-1).tolist(),
                         "random": F.cosine_similarity(a, b_random, dim=-1).tolist()}}


def plot_cosine_histograms(per_model: dict[str, dict], path: Path, title: str) -> Path:
    """One panel per model: cosine histograms of positive vs random pairs."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(per_model), figsize=(5 * len(per_model), 3.5), squeeze=False)
    for ax, (label, geo) in zip(axes[0], per_model.items()):
        ax.hist(geo["_cosines"]["random"], bins=50, range=(-1, 1), alpha=0.6, label="random pairs")
        ax.hist(geo["_cosines"]["positive"], bins=50, range=(-1, 1), alpha=0.6, label="positive pairs")
        ax.set(title=f"{label}: align {geo['alignment']:.2f}, unif {geo['uniformity']:.2f}",
               xlabel="cosine similarity", ylabel="pairs")
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_sts_scatter(per_model: dict[str, tuple[list[float], list[float], float]], path: Path,
                     title: str) -> Path:
    """``per_model[label] = (gold, predicted cosine, spearman)``: predicted vs gold, one panel per model."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(per_model), figsize=(5 * len(per_model), 4), squeeze=False)
    for ax, (label, (gold, predicted, rho)) in zip(axes[0], per_model.items()):
        ax.scatter(gold, predicted, s=4, alpha=0.4)
        ax.set(title=f"{label}: Spearman {rho:.2f}", xlabel="gold score", ylabel="cosine similarity")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
