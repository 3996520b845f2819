"""Geometry metrics against loops written from the definitions, and the plots."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from codiemb.eval import geometry as geo
from codiemb.eval.sets import STSData


def test_metrics_match_definitions():
    g = torch.Generator().manual_seed(0)
    a, b = F.normalize(torch.randn(7, 5, generator=g), dim=-1), F.normalize(torch.randn(7, 5, generator=g), dim=-1)
    align = sum(float(((a[i] - b[i]) ** 2).sum()) for i in range(7)) / 7
    assert geo.alignment(a, b) == pytest.approx(align, rel=1e-5)
    pairs = [(i, j) for i in range(7) for j in range(i + 1, 7)]
    unif = math.log(sum(math.exp(-2 * float(((a[i] - a[j]) ** 2).sum())) for i, j in pairs) / len(pairs))
    assert geo.uniformity(a) == pytest.approx(unif, rel=1e-5)
    assert geo.anisotropy(a, b) == pytest.approx(sum(float(a[i] @ b[i]) for i in range(7)) / 7, rel=1e-5)


def test_effective_rank_hand_worked():
    assert geo.effective_rank(torch.eye(4)) == pytest.approx(4.0)        # 4 equal singular values
    assert geo.effective_rank(torch.ones(5, 3)) == pytest.approx(1.0)    # rank one
    # singular values 3 and 1: p = (3/4, 1/4), erank = exp(H(p))
    h = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    assert geo.effective_rank(torch.diag(torch.tensor([3.0, 1.0]))) == pytest.approx(math.exp(h))


def test_report_and_plots(tmp_path, hash_encoder):
    data = STSData(["a cat sits", "dogs run fast", "the sun", "kids play"], ["a cat sat", "dogs run", "stocks", "kids"],
                   [5.0, 4.2, 0.1, 4.0])
    pairs = geo.positive_pairs(data)
    assert pairs == [("a cat sits", "a cat sat"), ("dogs run fast", "dogs run"), ("kids play", "kids")]
    report = geo.geometry(hash_encoder, pairs)
    assert report["pairs"] == 3 and report["texts"] == 6 and 1 <= report["effective_rank"] <= 6
    png = geo.plot_cosine_histograms({"base": report, "trained": report}, tmp_path / "h.png", "t")
    scatter = geo.plot_sts_scatter({"base": (data.scores, [0.9, 0.8, 0.1, 0.7], 80.0)}, tmp_path / "s.png", "t")
    assert png.read_bytes()[:4] == scatter.read_bytes()[:4] == b"\x89PNG"
