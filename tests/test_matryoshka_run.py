"""Matryoshka embeddings end to end: training with ``loss.matryoshka_dims`` (chunked encoding and cross-device
negatives included), what the exports say, ``SentenceTransformer(dir, truncate_dim=...)`` and
``eval.py truncate_dim=...``."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
import torch.nn.functional as F

from codiemb.errors import ConfigError
from codiemb.run.train import train
from tests import dist_worker

ROOT = Path(__file__).resolve().parents[1]
FAST = ["model=tiny", "trainer=default", "trainer.max_steps=4", "trainer.log_every_n_steps=1",
        "checkpoint_every_n_steps=2", "data.num_workers=0"]
DIMS, WEIGHTS = [128, 64, 32], [1.0, 0.5, 2.0]


def build(chunk: int | None = None, dims=DIMS):
    """The tiny model of the gradient-parity tests with Matryoshka sizes; cross-device on, dropout off."""
    from codiemb.losses import CoDiEmbSTSLoss, InfoNCELoss
    from codiemb.models.module import CoDiEmbModule
    from tests.conftest import tiny_encoder

    torch.manual_seed(0)
    module = CoDiEmbModule(tiny_encoder(), InfoNCELoss(temperature=0.05, cross_device=True),
                           CoDiEmbSTSLoss(temperature=0.05, cross_device=True), embed_chunk_size=chunk,
                           matryoshka_dims=dims, matryoshka_weights=WEIGHTS if dims else None)
    return module.train(False)


def relative_error(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    floor = 1e-3 * float(torch.cat([g.flatten() for g in b.values()]).norm())
    return max(float((a[k] - b[k]).norm()) / max(float(b[k].norm()), floor) for k in a)


@pytest.mark.parametrize("task", ["ir", "sts"])
def test_module_loss_is_the_weighted_sum_over_sizes_and_chunking_keeps_the_gradients(task):
    from codiemb.losses.matryoshka import shrink

    module, chunked, plain = build(), build(chunk=3), build(dims=None)
    batch = dist_worker.collate(module, dist_worker.records(task))
    loss, parts = module.compute_loss(batch)
    assert {f"loss_{d}" for d in DIMS} <= set(parts)
    torch.testing.assert_close(loss, sum(w * parts[f"loss_{d}"] for d, w in zip(DIMS, WEIGHTS)))
    # the inner loss called by hand on the truncated embeddings of the module's own forward
    with torch.no_grad():
        if task == "ir":
            q, p = module.embed(batch["query"]), module.embed(batch["passages"])
            by_hand = [plain.ir_loss(shrink(q, d), shrink(p, d), batch["positive_mask"])[0] for d in DIMS]
        else:
            layer = module.middle_layer()
            (a, a_mid), (b, b_mid) = module.embed(batch["query"], layer), module.embed(batch["passages"], layer)
            by_hand = [plain.sts_loss(shrink(a, d), shrink(b, d), batch["scores"], a_mid, b_mid)[0] for d in DIMS]
    torch.testing.assert_close(loss.detach(), sum(w * x for w, x in zip(WEIGHTS, by_hand)), rtol=1e-5, atol=1e-6)
    assert relative_error(dist_worker.gradients(chunked, batch), dist_worker.gradients(module, batch)) < 1e-5


def _rank(rank: int, world: int, port: int, out: str) -> None:
    with dist_worker.gloo_rank(rank, world, port):
        results = {}
        for task in ("ir", "sts"):
            for chunk in (None, 3):
                module = build(chunk=chunk)
                results[task, chunk] = dist_worker.ddp_gradients(
                    module, dist_worker.shard(module, task, rank, world), world)
        if rank == 0:
            torch.save(results, out)


def test_two_ranks_with_cross_device_negatives_match_one_process(tmp_path):
    """The module gathers before calling the (wrapped) loss, so every size sees the other rank's negatives."""
    from tests.test_distributed_parity import free_port

    out = str(tmp_path / "grads.pt")
    mp.spawn(_rank, args=(2, free_port(), out), nprocs=2, join=True)
    distributed = torch.load(out)
    for task in ("ir", "sts"):
        module = build()
        reference = dist_worker.gradients(module, dist_worker.collate(module, dist_worker.records(task)))
        for chunk in (None, 3):
            assert relative_error(distributed[task, chunk], reference) < 1e-5, (task, chunk)


def logged_keys(output_dir: Path) -> set[str]:
    with open(output_dir / "csv" / "metrics.csv") as fh:
        return {key for row in csv.DictReader(fh) for key, value in row.items() if value not in ("", None)}


def test_a_run_with_matryoshka_sizes_exports_models_that_say_so(compose_cfg):
    from sentence_transformers import SentenceTransformer

    from codiemb.models.encoder import Encoder

    cfg = compose_cfg(FAST + ["loss.matryoshka_dims=[128,64,32]", "loss.matryoshka_weights=[1,1,0.5]",
                              "module.embed_chunk_size=4"])
    result = train(cfg)
    assert torch.isfinite(torch.tensor(result["metrics"]["train/loss"]))
    keys = logged_keys(Path(cfg.paths.output_dir))
    assert {"train/ir/loss_32", "train/ir/infonce_128", "train/sts/pro_64", "train/sts/loss_128"} <= keys
    final, merged = Path(result["exports"][-1]), Path(cfg.paths.output_dir) / "merged"
    for model in (final, merged):
        assert json.loads((model / "codiemb.json").read_text())["matryoshka_dims"] == [128, 64, 32]
        card = (model / "README.md").read_text()
        assert "| Matryoshka sizes (trained; truncate + re-normalise) | 128, 64, 32 |" in card, model
    assert "truncate_dim=32" in (final / "README.md").read_text()
    # an export written during training names the wrapped losses, not the wrapper
    assert "InfoNCELoss at sizes [128, 64, 32]" in (Path(result["exports"][0]) / "README.md").read_text()

    texts = ["a query about billing", "how do I reset my password", "the cat sat on the mat"]
    small = SentenceTransformer(str(merged), device="cpu", truncate_dim=32)
    got = small.encode(texts, convert_to_tensor=True)
    assert got.shape == (3, 32) and small.get_embedding_dimension() == 32
    encoder = Encoder.from_pretrained(str(merged))
    assert encoder.matryoshka_dims == (128, 64, 32)
    encoder.truncate_dim = 32
    ours = encoder.encode(texts)
    assert ours.shape == (3, 32)
    torch.testing.assert_close(ours.norm(dim=-1), torch.ones(3))
    torch.testing.assert_close(F.normalize(got.float(), dim=-1), ours, atol=1e-5, rtol=1e-4)


def test_a_size_larger_than_the_model_is_one_config_error(compose_cfg):
    cfg = compose_cfg(FAST + ["loss.matryoshka_dims=[256,64]", "merge=none"])
    with pytest.raises(ConfigError) as info:
        train(cfg)
    message = str(info.value)
    assert "loss.matryoshka_dims=[256, 64]: size 256 is larger than the model's embedding dimension 128" in message
    assert "\n" not in message
    assert not list((Path(cfg.paths.output_dir) / "checkpoints").glob("step_*"))


def test_no_key_means_no_wrapper(compose_cfg):
    from hydra.utils import instantiate

    from codiemb.losses import MatryoshkaLoss

    cfg = compose_cfg(["model=tiny"])
    assert cfg.module.matryoshka_dims is None and cfg.loss.matryoshka_dims is None
    module = instantiate(cfg.module)
    assert not isinstance(module.ir_loss, MatryoshkaLoss) and module.encoder.matryoshka_dims is None
    assert "matryoshka_dims" not in module.encoder.settings()


def run_eval_cli(tmp_path: Path, *overrides: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline"}
    return subprocess.run([sys.executable, str(ROOT / "eval.py"), "model_path=bundled:all-MiniLM-L6-v2",
                           "device=cpu", "precision=fp32", f"hydra.run.dir={tmp_path}", *overrides],
                          check=False, capture_output=True, text=True, env=env, timeout=600)


def test_eval_py_truncate_dim_scores_the_truncated_renormalised_embeddings(tmp_path, minilm):
    from codiemb.eval.runner import evaluate
    from codiemb.eval.sets import parse_sets
    from tests.conftest import compose

    proc = run_eval_cli(tmp_path / "run", "truncate_dim=128")
    assert proc.returncode == 0, proc.stderr[-3000:]
    saved = json.loads((tmp_path / "run" / "results.json").read_text())
    assert saved["truncate_dim"] == 128 and saved["precision"] == "fp32"  # both recorded with the scores
    assert "truncated to 128" in proc.stdout
    sets = parse_sets(compose("eval", [], tmp_path / "cfg").eval.sets)
    minilm.truncate_dim = 128
    try:
        expected = evaluate(minilm, sets, batch_size=64)
        minilm.truncate_dim = None
        full = evaluate(minilm, sets, batch_size=64)
    finally:
        minilm.truncate_dim = None
    got = saved["models"]["all-MiniLM-L6-v2"]["sets"]
    for spec in sets:
        main = "spearman" if spec.task == "sts" else "ndcg@10"
        assert got[spec.name][main] == pytest.approx(expected[spec.name][main], abs=1e-3), spec.name
    assert any(abs(expected[s.name]["main_score"] - full[s.name]["main_score"]) > 1e-3 for s in sets)


def test_eval_py_refuses_a_truncate_dim_above_the_model_in_one_line(tmp_path):
    proc = run_eval_cli(tmp_path / "run", "truncate_dim=1000")
    assert proc.returncode == 1
    lines = [line for line in proc.stderr.splitlines() if line.startswith("codiemb: error:")]
    expected = ("codiemb: error: truncate_dim=1000 is larger than the embedding dimension 384 of "
                "bundled:all-MiniLM-L6-v2; use a size <= 384")
    assert lines == [expected], proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
