"""Sweep to fused model in one command: `train.py -m ... +fuse=<method>` (Hydra callback, on_multirun_end)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[2]
FAST = ["model=tiny", "trainer=default", "trainer.max_steps=4", "checkpoint_every_n_steps=2", "data.num_workers=0",
        "merge=none", "callbacks.validation.every_n_steps=2", "callbacks.progress_bar.refresh_rate=0"]


@pytest.mark.parametrize("method", ["delta", "uniform", "ties", "dare", "task_arithmetic", "greedy_soup"])
def test_every_fuse_config_composes_with_the_methods_options(compose_cfg, method):
    from hydra.utils import instantiate

    from codiemb.merge.methods import DEFAULT_OPTIONS

    cfg = compose_cfg([f"+fuse={method}"])
    node = cfg.hydra.callbacks.fuse
    callback = instantiate(node)
    assert callback.method == method and callback.options == DEFAULT_OPTIONS[method]
    assert node.select == "last" and node.output is None


def test_sweep_writes_a_fused_model_and_prints_the_table(tmp_path):
    sweep = tmp_path / "sweep"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1",
           "PROJECT_ROOT": str(ROOT)}
    # the tiny model is randomly initialised from the seed: the runs differ by task emphasis, not by seed
    command = [sys.executable, str(ROOT / "train.py"), "-m", *FAST, "task_mix.ir_share=0.25,0.75", "+fuse=delta",
               f"hydra.sweep.dir={sweep}"]
    result = subprocess.run(command, check=False, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    fused = sweep / "fused"
    report = json.loads((fused / "merge_report.json").read_text())
    runs = [sweep / "0", sweep / "1"]
    assert [Path(c) for c in report["checkpoints"]] == [r / "checkpoints" / "step_000004" for r in runs]
    assert [m["trajectory"] for m in report["members"]] == ["0 (task_mix.ir_share=0.25)", "1 (task_mix.ir_share=0.75)"]
    # the fused tensors are the delta formula over the two runs' last exports and their common initial weights
    w0 = load_file(str(runs[0] / "checkpoints" / "initial" / "model.safetensors"))
    assert w0.keys() == load_file(str(runs[1] / "checkpoints" / "initial" / "model.safetensors")).keys()
    ws = [load_file(str(r / "checkpoints" / "step_000004" / "model.safetensors")) for r in runs]
    out = load_file(str(fused / "model.safetensors"))
    for name in ("encoder.layer.0.attention.self.query.weight", "embeddings.LayerNorm.weight"):
        deltas = torch.stack([w[name].float() - w0[name].float() for w in ws])
        total = deltas.abs().sum(0)
        a = torch.where(total > 0, deltas.abs() / total.clamp_min(1e-30), torch.zeros_like(deltas))
        torch.testing.assert_close(out[name].float(), w0[name].float() + (a * deltas).sum(0), rtol=1e-5, atol=1e-6)
    # the card lists the members; the table covers base, members and the fused model; per-layer weights printed
    card = (fused / "README.md").read_text()
    assert "0 (task_mix.ir_share=0.25)" in card and "1 (task_mix.ir_share=0.75)" in card
    rows = [row["model"] for row in report["evaluation"]["rows"]]
    assert rows == ["base", "0 (task_mix.ir_share=0.25) @ step 4", "1 (task_mix.ir_share=0.75) @ step 4",
                    "merged (delta)"]
    assert "validation (x100)" in result.stdout and "merged (delta)" in result.stdout
    assert "per layer and trajectory" in result.stdout and "layer 1" in result.stdout
    from sentence_transformers import SentenceTransformer

    assert SentenceTransformer(str(fused), device="cpu").encode(["a test"]).shape == (1, 128)


def test_fusion_weights_go_to_wandb_when_the_sweep_logs_there(tiny_dirs, perturb, tmp_path, monkeypatch):
    from omegaconf import OmegaConf

    from codiemb.merge import merge_from_config
    from codiemb.sweep.fuse import log_to_wandb
    from tests.ecosystem.helpers import finished_wandb_records
    from tests.merge.test_merge_runs import fake_run

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    base, _ = tiny_dirs
    sweep = tmp_path / "sweep"
    for i in range(2):
        fake_run(sweep / str(i), base, perturb, seed=i, overrides=[f"module.lr={i}"])
    report = merge_from_config({"method": "delta", "runs": [str(sweep)], "output": str(sweep / "fused")},
                               user_overrides=[])
    config = OmegaConf.create({"logger": {"wandb": {"_target_": "lightning.pytorch.loggers.wandb.WandbLogger",
                                                    "project": "codiemb", "save_dir": "${paths.output_dir}"}}})
    log_to_wandb(config, report, sweep / "fused")
    (run_file,) = sweep.glob("wandb/offline-run-*/run-*.wandb")
    history = {item.key or "/".join(item.nested_key) for r in finished_wandb_records(run_file)
               if r.WhichOneof("record_type") == "history" for item in r.history.item}
    assert {"fuse/layers/_type", "fuse/plots/_type"} <= history, history
