"""Correctness anchors: the unmodified all-MiniLM-L6-v2 must reproduce MTEB's published numbers.

STS-B test: 82.03 cosine Spearman; SciFact test: 64.51 nDCG@10 (MTEB leaderboard, main scores x100).
"""

from __future__ import annotations

import pytest

from codiemb.eval.runner import evaluate

from .conftest import SHARED

pytestmark = pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/data not present")


@pytest.fixture(scope="module")
def minilm():
    from codiemb.models.encoder import Encoder
    return Encoder.from_pretrained("bundled:all-MiniLM-L6-v2")


@pytest.mark.slow  # ~12 s on 2 idle CPU cores, ~90 s on the shared ones
def test_stsb_test_spearman_is_mtebs_82_03(minilm):
    spec = {"name": "stsb_test", "task": "sts", "format": "stsb", "path": str(SHARED / "stsbenchmark" / "sts-test.csv")}
    assert evaluate(minilm, [spec])["stsb_test"]["spearman"] == pytest.approx(82.03, abs=0.05)


@pytest.mark.slow  # ~6 min on 2 idle CPU cores (5183 abstracts)
def test_scifact_test_ndcg_at_10_is_mtebs_64_51(minilm):
    spec = {"name": "scifact", "task": "ir", "format": "beir", "path": str(SHARED / "scifact"), "split": "test"}
    assert evaluate(minilm, [spec])["scifact"]["ndcg@10"] == pytest.approx(64.51, abs=0.1)
