"""Shared helpers: a deterministic fake encoder (no model, instant) and tiny on-disk eval sets."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

SHARED = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"


class HashEncoder:
    """Embeds a text as a normalised pseudo-random vector seeded by its words (bag of word vectors), so
    texts sharing words are similar. Records each call's ``kind`` for the tests."""

    embedding_dim = 16

    def __init__(self):
        self.calls: list[tuple[str, int]] = []

    def vector(self, text: str) -> torch.Tensor:
        total = torch.zeros(self.embedding_dim)
        for word in text.lower().split():
            seed = int(hashlib.md5(word.encode()).hexdigest()[:8], 16)
            total += torch.randn(self.embedding_dim, generator=torch.Generator().manual_seed(seed))
        return F.normalize(total + 1e-6, dim=0)

    def encode(self, texts, kind="passage", batch_size=64, **_):
        self.calls.append((kind, len(texts)))
        if not texts:
            return torch.empty(0, self.embedding_dim)
        return torch.stack([self.vector(t) for t in texts])


@pytest.fixture
def hash_encoder():
    return HashEncoder()


def write_tiny_sets(root: Path) -> list[dict]:
    """A 6-pair STS jsonl file and a 3-query / 6-doc BEIR folder; returns their eval-set specs."""
    root.mkdir(parents=True, exist_ok=True)
    pairs = [("a cat sits on the mat", "a cat is on the mat", 4.8), ("a man plays guitar", "a man plays music", 3.9),
             ("the sun is hot", "stocks fell sharply", 0.2), ("dogs run in parks", "dogs run outside", 4.1),
             ("rain falls today", "a cat sleeps", 0.5), ("children read books", "kids read a book", 4.4)]
    (root / "sts.jsonl").write_text("".join(json.dumps({"task": "sts", "query": a, "positives": [b], "score": s})
                                            + "\n" for a, b, s in pairs))
    ir = root / "ir"
    (ir / "qrels").mkdir(parents=True, exist_ok=True)
    docs = {"d1": "cats purr and sleep", "d2": "dogs bark loudly", "d3": "guitar music concerts",
            "d4": "the stock market fell", "d5": "sleeping cats dream", "d6": "weather rain forecast"}
    (ir / "corpus.jsonl").write_text("".join(json.dumps({"_id": k, "title": "", "text": v}) + "\n"
                                             for k, v in docs.items()))
    queries = {"q1": "do cats sleep", "q2": "why do dogs bark", "q3": "rain forecast weather"}
    (ir / "queries.jsonl").write_text("".join(json.dumps({"_id": k, "text": v}) + "\n" for k, v in queries.items()))
    (ir / "qrels" / "dev.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t2\nq1\td5\t1\nq2\td2\t1\nq3\td6\t1\n")
    return [{"name": "tiny_sts", "task": "sts", "format": "jsonl", "path": str(root / "sts.jsonl")},
            {"name": "tiny_ir", "task": "ir", "format": "beir", "path": str(ir), "split": "dev"}]


@pytest.fixture
def tiny_sets(tmp_path):
    return write_tiny_sets(tmp_path / "sets")


def tiny_encoder():
    from codiemb.models.encoder import Encoder
    torch.manual_seed(0)
    return Encoder.from_pretrained("bundled:all-MiniLM-L6-v2", random_init=True, config_overrides=dict(
        hidden_size=128, num_hidden_layers=2, num_attention_heads=2, intermediate_size=256))
