"""``mine.py ... teacher=<model dir>``: teacher scores written beside the mined negatives, then trained on with
``loss.ir.distill`` (issue #24 part 3)."""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from codiemb.data.readers import read_dataset
from codiemb.data.schema import Record
from codiemb.models.resolve import bundled_minilm_path
from codiemb.models.teacher import is_cross_encoder, load_teacher, score_records
from codiemb.run.train import train
from tests.conftest import ROOT, TINY

RECORDS = [Record("ir", "how do I reset my password", ("open settings and click reset password",),
                  ("the cafeteria opens at noon", "password managers store secrets"), dataset="d"),
           Record("ir", "what is dna", ("dna is the molecule that carries genetic information",), (), dataset="d")]


@pytest.fixture(scope="module")
def minilm_teacher():
    return load_teacher("bundled:all-MiniLM-L6-v2", device="cpu")


def test_a_bi_encoder_teacher_scores_cosines_of_normalised_embeddings(minilm_teacher):
    from sentence_transformers import SentenceTransformer

    assert minilm_teacher.kind == "bi-encoder" and not is_cross_encoder(bundled_minilm_path())
    scored = score_records(RECORDS, minilm_teacher)
    assert [len(r.pos_scores) for r in scored] == [1, 1] and [len(r.neg_scores) for r in scored] == [2, 0]
    model = SentenceTransformer(bundled_minilm_path(), device="cpu")
    for r in scored:
        q = model.encode([r.query], normalize_embeddings=True, convert_to_tensor=True)
        p = model.encode(list(r.positives + r.negatives), normalize_embeddings=True, convert_to_tensor=True)
        torch.testing.assert_close(torch.tensor(r.pos_scores + r.neg_scores), (q @ p.T)[0], rtol=1e-4, atol=1e-5)
    assert scored[0].pos_scores[0] > max(scored[0].neg_scores)  # the real model ranks the answer first


@pytest.fixture(scope="module")
def tiny_cross_encoder(tmp_path_factory) -> Path:
    """A random one-label BertForSequenceClassification with the MiniLM tokenizer: a cross-encoder directory."""
    from transformers import AutoConfig, AutoTokenizer, BertForSequenceClassification

    path = tmp_path_factory.mktemp("ce") / "tiny-ce"
    config = AutoConfig.from_pretrained(bundled_minilm_path(), num_labels=1, **TINY)
    config.architectures = ["BertForSequenceClassification"]
    torch.manual_seed(0)
    BertForSequenceClassification(config).save_pretrained(path)
    AutoTokenizer.from_pretrained(bundled_minilm_path()).save_pretrained(path)
    return path


def test_a_cross_encoder_directory_is_detected_and_scores_pairs(tiny_cross_encoder):
    from sentence_transformers import CrossEncoder

    assert is_cross_encoder(tiny_cross_encoder)
    teacher = load_teacher(str(tiny_cross_encoder), device="cpu")
    assert teacher.kind == "cross-encoder"
    scored = score_records(RECORDS, teacher)
    reference = CrossEncoder(str(tiny_cross_encoder), device="cpu")
    for r in scored:
        expected = reference.predict([[r.query, p] for p in r.positives + r.negatives])
        assert list(r.pos_scores + r.neg_scores) == pytest.approx([float(x) for x in expected], rel=1e-5)


def mine(tmp_path: Path, source: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    overrides = [f"input.path={source}", "input.format=jsonl", "input.split=null", f"output={out}",
                 "range_min=0", "range_max=8", "num_negatives=3", "seed=5", "show_progress=false",
                 "+encoder.random_init=true", *(f"+encoder.config_overrides.{k}={v}" for k, v in TINY.items()),
                 f"hydra.run.dir={tmp_path / 'run'}", *extra]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline", "PROJECT_ROOT": str(ROOT)}
    return subprocess.run([sys.executable, str(ROOT / "mine.py"), *overrides], check=False, cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)


def test_mine_with_a_teacher_then_train_with_kl_distillation(compose_cfg, tmp_path, minilm_teacher):
    source = ROOT / "data" / "example" / "ir_support.jsonl"
    out = tmp_path / "mined.jsonl"
    done = mine(tmp_path, source, out, "teacher=bundled:all-MiniLM-L6-v2")
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert rows and all(len(r["pos_scores"]) == len(r["positives"]) and len(r["neg_scores"]) == len(r["negatives"])
                        for r in rows)
    # the scores are the teacher's cosines of the written texts (checked on a few rows)
    for r in rows[:3]:
        expected = score_records([Record("ir", r["query"], tuple(r["positives"]), tuple(r["negatives"]))],
                                 minilm_teacher)[0]
        assert r["pos_scores"] + r["neg_scores"] == pytest.approx(list(expected.pos_scores + expected.neg_scores),
                                                                  abs=1e-5)
    records = read_dataset("jsonl", str(out), name="mined", task="ir").records  # the schema accepts them
    assert all(r.pos_scores is not None for r in records)

    cfg = compose_cfg(["model=tiny", "trainer=default", "trainer.max_steps=3", "trainer.log_every_n_steps=1",
                       "checkpoint_every_n_steps=3", "data.num_workers=0", "merge=none", "task_mix=ir_only",
                       f"data.datasets=[{{name: mined, task: ir, format: jsonl, path: '{out}'}}]",
                       "data.ir_batch_size=8", "loss.ir.distill.kind=kl"])
    result = train(cfg)
    with open(Path(cfg.paths.output_dir) / "csv" / "metrics.csv") as fh:
        values = [float(r["train/ir/distill"]) for r in csv.DictReader(fh) if r.get("train/ir/distill")]
    assert len(values) == 3 and all(math.isfinite(v) and v > 0 for v in values)
    assert math.isfinite(result["metrics"]["train/loss"])


@pytest.mark.slow
def test_mining_without_a_teacher_writes_no_scores(tmp_path):
    source = tmp_path / "in.jsonl"  # input rows carrying scores: new negatives would no longer line up with them
    source.write_text("".join(json.dumps({"query": f"q {i} about {t}", "positives": [f"{t} text {i}"],
                                          "negatives": ["an old negative"], "pos_scores": [1.0],
                                          "neg_scores": [0.5]}) + "\n"
                              for i, t in enumerate(["cats", "rivers", "stars", "bread", "chess", "rain"])))
    out = tmp_path / "mined.jsonl"
    done = mine(tmp_path, source, out, "num_negatives=2")
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert rows and all("pos_scores" not in r and "neg_scores" not in r for r in rows)
