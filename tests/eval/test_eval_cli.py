"""eval.py end to end on an exported tiny model, and Hydra composition of every eval-group file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from codiemb.eval.runner import evaluate

from .conftest import tiny_encoder

ROOT = Path(__file__).resolve().parents[2]
GROUP_FILES = sorted(p.stem for p in (ROOT / "configs" / "eval").glob("*.yaml"))


@pytest.mark.parametrize("group", GROUP_FILES)
def test_primary_config_and_group_of_the_same_name_compose(group):
    with initialize_config_dir(str(ROOT / "configs"), version_base="1.3"):
        cfg = compose("eval", overrides=[f"eval={group}"], return_hydra_config=True)
    sets = cfg.eval.sets
    assert cfg.task_name == "eval" and cfg.model_path == "bundled:all-MiniLM-L6-v2" and len(sets) >= 2
    for spec in sets:
        assert {"name", "task", "format", "path"} <= set(spec) and spec.task in ("sts", "ir", "pairs")


def hydra_list(sets: list[dict]) -> str:
    items = [",".join(f"{k}:'{v}'" for k, v in spec.items()) for spec in sets]
    return "[" + ",".join("{" + item + "}" for item in items) + "]"


def test_eval_py_on_an_exported_checkpoint_compared_with_another(tmp_path, tiny_sets):
    base, trained = tiny_encoder(), tiny_encoder()
    for p in trained.parameters():  # a different model, deterministically
        p.data.mul_(1.5)
    base.save(tmp_path / "base")
    trained.save(tmp_path / "trained")
    run_dir = tmp_path / "run"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline"}
    proc = subprocess.run([sys.executable, str(ROOT / "eval.py"), f"model_path={tmp_path / 'trained'}",
                           f"compare_with={tmp_path / 'base'}", f"eval.sets={hydra_list(tiny_sets)}",
                           "report.geometry=true", "batch_size=4", "device=cpu", f"hydra.run.dir={run_dir}"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    saved = json.loads((run_dir / "results.json").read_text())
    assert list(saved["models"]) == ["base", "trained"]
    expected = evaluate(trained.eval(), tiny_sets, batch_size=4)
    got = saved["models"]["trained"]["sets"]
    assert got["tiny_sts"]["spearman"] == pytest.approx(expected["tiny_sts"]["spearman"], abs=1e-3)
    assert got["tiny_ir"]["ndcg@10"] == pytest.approx(expected["tiny_ir"]["ndcg@10"], abs=1e-3)
    table = (run_dir / "results.md").read_text()
    assert f"{got['tiny_ir']['ndcg@10']:.2f}" in table and "delta" in table and "delta" in proc.stdout
    for png in ("geometry_tiny_sts_cosines.png", "geometry_tiny_sts_sts_scatter.png", "geometry_tiny_ir_cosines.png"):
        assert (run_dir / png).read_bytes()[:4] == b"\x89PNG"
    geometry = json.loads((run_dir / "geometry.json").read_text())
    assert set(geometry["tiny_ir"]) == {"base", "trained"} and "uniformity" in geometry["tiny_ir"]["base"]
