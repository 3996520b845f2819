"""The Hydra side: configs/merge.yaml + configs/merge/<method>.yaml compose, merge_from_config, merge.py."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from safetensors.torch import load_file

from codiemb.errors import ConfigError
from codiemb.merge import merge_from_config
from codiemb.merge.config import CONFIG_KEYS
from codiemb.merge.methods import DEFAULT_OPTIONS
from codiemb.merge.registry import METHODS as REGISTERED

ROOT = Path(__file__).resolve().parents[2]
METHODS = [*sorted(REGISTERED), "none"]  # every registered method needs configs/merge/<method>.yaml


@pytest.mark.parametrize("method", METHODS)
def test_every_method_config_composes_with_its_defaults(compose_cfg, method):
    assert (ROOT / "configs" / "merge" / f"{method}.yaml").is_file(), f"configs/merge/{method}.yaml is missing"
    cfg = compose_cfg([f"merge={method}"], config_name="merge")
    merge = OmegaConf.to_container(cfg.merge)
    assert merge["method"] == method and cfg.task_name == "merge"
    assert {k: merge[k] for k in ("base", "checkpoints", "output", "evaluate", "runs", "select")} == \
        {"base": None, "checkpoints": [], "output": None, "evaluate": False, "runs": [], "select": "last"}
    options = {k: v for k, v in merge.items() if k not in CONFIG_KEYS}
    assert options == DEFAULT_OPTIONS.get(method, {})  # configs document the same defaults as the code


def test_train_config_selects_the_merge_group(compose_cfg):
    if not (ROOT / "configs" / "train.yaml").is_file():
        pytest.skip("configs/train.yaml not written yet")
    assert compose_cfg([], config_name="train").merge.method == "delta"
    assert compose_cfg(["merge=none"], config_name="train").merge.method == "none"


def test_merge_from_config_uses_overrides_and_options(compose_cfg, tiny_dirs, tmp_path):
    base, ckpts = tiny_dirs
    cfg = compose_cfg(["merge=task_arithmetic", "merge.lam=0.25"], config_name="merge")
    report = merge_from_config(cfg.merge, base=base, checkpoints=ckpts, output=tmp_path / "m")
    assert report["options"] == {"lam": 0.25}
    w0 = load_file(str(base / "model.safetensors"))
    ws = [load_file(str(c / "model.safetensors")) for c in ckpts]
    name = "encoder.layer.0.attention.output.dense.weight"
    expected = w0[name] + 0.25 * sum(w[name] - w0[name] for w in ws)
    torch.testing.assert_close(load_file(str(tmp_path / "m" / "model.safetensors"))[name], expected,
                               rtol=1e-5, atol=1e-6)


def test_merge_from_config_refusals(compose_cfg, tiny_dirs, tmp_path):
    base, ckpts = tiny_dirs
    assert merge_from_config(compose_cfg(["merge=none"], config_name="merge").merge, base=base,
                             checkpoints=ckpts, output=tmp_path / "m") is None
    delta = compose_cfg([], config_name="merge").merge
    with pytest.raises(ConfigError, match="merge.base"):
        merge_from_config(delta, checkpoints=ckpts, output=tmp_path / "m")
    wrong = compose_cfg(["merge.method=ties", "merge.granularity=row"], config_name="merge").merge
    with pytest.raises(ConfigError, match="merge.granularity do not apply"):  # set by the user: refused
        merge_from_config(wrong, base=base, checkpoints=ckpts, output=tmp_path / "m")
    soup = compose_cfg(["merge=greedy_soup"], config_name="merge").merge
    with pytest.raises(ConfigError, match="evaluator"):
        merge_from_config(soup, base=base, checkpoints=ckpts, output=tmp_path / "m")
    assert not (tmp_path / "m").exists()


def test_greedy_soup_through_config_with_eval_shaped_results(compose_cfg, tiny_dirs, tmp_path):
    """An evaluator returning codiemb.eval's nested shape; greedy soup ranks by val/mean."""
    base, ckpts = tiny_dirs
    name = "embeddings.LayerNorm.bias"
    target = load_file(str(ckpts[1] / "model.safetensors"))[name]
    calls = []

    def evaluate(model_dir):
        calls.append(Path(model_dir).name)
        distance = (load_file(str(Path(model_dir) / "model.safetensors"))[name] - target).norm().item()
        return {"summary": {"mean": -distance}, "sets": {"toy": {"main_score": -distance}}}

    cfg = compose_cfg(["merge=greedy_soup", "merge.evaluate=true"], config_name="merge").merge
    report = merge_from_config(cfg, base=base, checkpoints=ckpts, output=tmp_path / "soup",
                               evaluate_fn=evaluate)
    # ckpt 2 (index 1) is the target itself: score 0 beats every average with another checkpoint
    assert report["greedy_soup"]["members"] == [1]
    rows = report["evaluation"]["rows"]
    assert rows[-1]["val/mean"] == pytest.approx(0.0, abs=1e-6) and "val/toy" in rows[-1]
    assert calls.count("ckpt1") == 1  # inputs are evaluated once, shared by the soup and the table


def test_merge_script_end_to_end(tiny_dirs, tmp_path):
    base, ckpts = tiny_dirs
    out = tmp_path / "merged"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1"}
    command = [sys.executable, str(ROOT / "merge.py"), f"merge.base={base}",
               f"merge.checkpoints=[{','.join(map(str, ckpts))}]", "merge.method=delta",
               f"merge.output={out}", f"hydra.run.dir={tmp_path / 'run'}"]
    result = subprocess.run(command, check=False, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "merged 3 checkpoints (delta)" in result.stdout
    assert {"model.safetensors", "config.json", "tokenizer.json", "modules.json", "merge_report.json",
            "merge_report.png"} <= {p.name for p in out.iterdir()}
