"""An export loads with ``SentenceTransformer(dir)`` without a load report: the pooler the encoder drops is not
expected by the architecture sentence-transformers builds (``model_args: {add_pooling_layer: false}``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from codiemb.models.encoder import Encoder
from tests.conftest import TINY, tiny_encoder

TEXTS = ["A man is playing a guitar.", "how do I reset my router", "The cat sleeps."]
LOAD = """
import json, sys
from sentence_transformers import SentenceTransformer
model = SentenceTransformer(sys.argv[1], device="cpu")
print("EMB " + json.dumps(model.encode(json.loads(sys.argv[2])).tolist()))
"""


def load_with_sentence_transformers(directory: Path) -> tuple[str, torch.Tensor]:
    """Everything a user sees on ``SentenceTransformer(dir)`` (own process: transformers prints its load
    report through its own handlers) and the embeddings of :data:`TEXTS`."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    done = subprocess.run([sys.executable, "-c", LOAD, str(directory), json.dumps(TEXTS)], env=env,
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    line = next(line for line in done.stdout.splitlines() if line.startswith("EMB "))
    return done.stdout + done.stderr, torch.tensor(json.loads(line[4:]))


def test_export_loads_without_missing_pooler(tmp_path):
    torch.manual_seed(0)
    encoder = tiny_encoder()
    assert not [name for name, _ in encoder.named_parameters() if "pooler" in name]
    encoder.save(tmp_path / "model")
    output, theirs = load_with_sentence_transformers(tmp_path / "model")
    # before: "BertModel LOAD REPORT ... pooler.dense.weight | MISSING ... Consider training on your downstream task"
    assert "MISSING" not in output and "pooler" not in output and "LOAD REPORT" not in output, output
    assert torch.allclose(theirs, encoder.encode(TEXTS), atol=1e-5)
    config = json.loads((tmp_path / "model" / "sentence_bert_config.json").read_text())
    assert config["model_args"] == {"add_pooling_layer": False}


@pytest.mark.slow
def test_export_with_a_pooler_keeps_it(tmp_path):
    """A backbone that does carry its pooler (built with it) exports it, and sentence-transformers gets the
    default architecture: nothing missing either way."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    from codiemb.models.resolve import resolve_model_path

    path = resolve_model_path("bundled:all-MiniLM-L6-v2")
    torch.manual_seed(0)
    backbone = BertModel(BertConfig.from_pretrained(path, **TINY), add_pooling_layer=True)
    encoder = Encoder(backbone, AutoTokenizer.from_pretrained(path))
    encoder.save(tmp_path / "model")
    assert "model_args" not in json.loads((tmp_path / "model" / "sentence_bert_config.json").read_text())
    output, theirs = load_with_sentence_transformers(tmp_path / "model")
    assert "MISSING" not in output and "LOAD REPORT" not in output, output
    assert torch.allclose(theirs, encoder.encode(TEXTS), atol=1e-5)
