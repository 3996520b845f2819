"""merge.runs / merge.select: fusing the exports of several training runs over their common initial weights."""

import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from codiemb.errors import ConfigError, MergeError
from codiemb.merge import merge_from_config
from codiemb.merge.runs import find_runs, resolve_members

NAME = "encoder.layer.1.intermediate.dense.weight"


def fake_run(root: Path, base: Path, perturb, seed: int, scores: dict[int, float] | None = None,
             overrides: list[str] | None = None) -> Path:
    """A training run's layout: checkpoints/initial, step_000002, step_000004, csv/metrics.csv, .hydra/."""
    (root / "checkpoints").mkdir(parents=True)
    shutil.copytree(base, root / "checkpoints" / "initial")
    for step in (2, 4):
        perturb(base, root / "checkpoints" / f"step_{step:06d}", seed=seed * 10 + step, scale=0.01 * step)
    if scores:
        (root / "csv").mkdir()
        lines = ["epoch,step,train/loss,val/mean"] + [f"0,{s},,{v}" for s, v in scores.items()] + ["0,3,0.5,"]
        (root / "csv" / "metrics.csv").write_text("\n".join(lines) + "\n")
    (root / ".hydra").mkdir()
    (root / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides or []))
    return root


@pytest.fixture(scope="module")
def sweep(tiny_dirs, perturb, tmp_path_factory):
    base, _ = tiny_dirs
    root = tmp_path_factory.mktemp("sweep")
    runs = [fake_run(root / str(i), base, perturb, seed=i, scores={2: 50.0 + i * 10, 4: 55.0},
                     overrides=["experiment=x", f"task_mix.ir_share={share}"])
            for i, share in enumerate((0.25, 0.5, 0.75))]
    (root / "multirun.yaml").write_text("{}\n")
    return root, runs


def weights(path: Path) -> dict:
    return load_file(str(path / "model.safetensors"))


def test_runs_select_last_is_the_delta_formula_by_hand(sweep, tmp_path):
    _, runs = sweep
    report = merge_from_config({"method": "delta", "runs": [str(r) for r in runs], "select": "last",
                                "output": str(tmp_path / "fused")}, user_overrides=[])
    w0 = weights(runs[0] / "checkpoints" / "initial")[NAME]
    deltas = torch.stack([weights(r / "checkpoints" / "step_000004")[NAME] - w0 for r in runs])
    a = deltas.abs() / deltas.abs().sum(0)
    torch.testing.assert_close(weights(tmp_path / "fused")[NAME], w0 + (a * deltas).sum(0), rtol=1e-5, atol=1e-6)
    # element [0, 0] by hand: weights proportional to |d_k|
    d = [float(deltas[k, 0, 0]) for k in range(3)]
    by_hand = float(w0[0, 0]) + sum(abs(x) * x for x in d) / sum(abs(x) for x in d)
    assert float(weights(tmp_path / "fused")[NAME][0, 0]) == pytest.approx(by_hand, rel=1e-5, abs=1e-7)
    assert report["base"] == str(runs[0] / "checkpoints" / "initial")
    assert [m["trajectory"] for m in report["members"]] == \
        ["0 (task_mix.ir_share=0.25)", "1 (task_mix.ir_share=0.5)", "2 (task_mix.ir_share=0.75)"]
    layers = report["layers"]
    assert layers["groups"] == [m["trajectory"] for m in report["members"]]
    assert list(layers["layers"])[:3] == ["embeddings", "layer 0", "layer 1"]
    for entry in layers["layers"].values():  # delta weights sum to 1 wherever some delta is non-zero
        assert sum(entry["mean_weight"]) == pytest.approx(1.0, abs=1e-4)
        assert entry["dominant_group"] in layers["groups"]
    # larger perturbations dominate: run 2 has the largest noise? all the same scale here, so shares are ~1/3
    assert all(0.2 < s < 0.45 for s in layers["overall"]["dominant_fraction"])
    saved = json.loads((tmp_path / "fused" / "merge_report.json").read_text())
    assert saved["layers"] == json.loads(json.dumps(layers)) and (tmp_path / "fused" / "merge_report.png").is_file()
    card = (tmp_path / "fused" / "README.md").read_text()
    assert all(m["trajectory"] in card for m in report["members"]) and "dominates which layers" in card


def open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts open files through /proc")
def test_checking_the_runs_leaves_no_file_open(sweep, tmp_path):
    """Fusing a sweep opens every export's weights; each must be closed again (it once opened one descriptor per
    tensor and closed one per file, so a 3-run sweep of a tiny model leaked hundreds)."""
    root, _ = sweep

    def fuse(name: str):
        merge_from_config({"method": "delta", "runs": [str(root)], "select": "all", "output": str(tmp_path / name)},
                          user_overrides=[])
    fuse("warm-up")  # matplotlib keeps its font files open once it has drawn the report
    before = open_descriptors()
    resolve_members([root], select="all")
    fuse("fused")
    assert open_descriptors() == before


def test_sweep_dir_and_select_all_and_best_val(sweep, tmp_path):
    root, runs = sweep
    assert find_runs([root]) == runs and find_runs(str(root)) == runs
    _, every = resolve_members([root], "all")
    assert [(m.run.name, m.step) for m in every] == [(r.name, s) for r in runs for s in (2, 4)]
    _, best = resolve_members([root], "best_val")
    # run 0 scores 50 at step 2 and 55 at step 4; runs 1 and 2 score 60/70 at step 2
    assert [(m.run.name, m.step, m.score) for m in best] == [("0", 4, 55.0), ("1", 2, 60.0), ("2", 2, 70.0)]
    report = merge_from_config({"method": "uniform", "runs": str(root), "select": "all",
                                "output": str(tmp_path / "u")}, user_overrides=[])
    exports = [r / "checkpoints" / f"step_{s:06d}" for r in runs for s in (2, 4)]
    torch.testing.assert_close(weights(tmp_path / "u")[NAME],
                               sum(weights(e)[NAME] for e in exports) / 6, rtol=1e-5, atol=1e-6)
    assert len(report["members"]) == 6 and report["select"] == "all"


@pytest.mark.parametrize("method", ["ties", "dare", "task_arithmetic"])
def test_every_method_works_on_runs(sweep, tmp_path, method):
    root, _ = sweep
    report = merge_from_config({"method": method, "runs": [str(root)], "output": str(tmp_path / method)},
                               user_overrides=[])
    assert report["method"] == method and len(report["checkpoints"]) == 3


def test_best_val_without_scores_says_what_to_do(tiny_dirs, perturb, tmp_path):
    base, _ = tiny_dirs
    run = fake_run(tmp_path / "r", base, perturb, seed=1)
    with pytest.raises(ConfigError, match="no validation score"):
        resolve_members([run], "best_val")
    with pytest.raises(ConfigError, match="neither a training run"):
        find_runs([tmp_path])  if False else find_runs([run / "checkpoints"])


def test_odd_runs_are_refused_by_name(sweep, tiny_dirs, perturb, tmp_path):
    _, runs = sweep
    base, _ = tiny_dirs
    other_base = perturb(base, tmp_path / "other-base", seed=99)
    odd = fake_run(tmp_path / "odd-weights", other_base, perturb, seed=5)
    with pytest.raises(MergeError, match=r"odd-weights has other initial weights"):
        resolve_members([*runs, odd])
    arch = fake_run(tmp_path / "odd-arch", base, perturb, seed=6)
    for d in [arch / "checkpoints" / "initial", *(arch / "checkpoints").glob("step_*")]:
        config = json.loads((d / "config.json").read_text())
        (d / "config.json").write_text(json.dumps({**config, "num_hidden_layers": 3}))
    with pytest.raises(MergeError, match=r"odd-arch has another architecture"):
        resolve_members([runs[0], arch, runs[1]])
    tok = fake_run(tmp_path / "odd-tok", base, perturb, seed=7)
    vocab = tok / "checkpoints" / "initial" / "tokenizer.json"
    data = json.loads(vocab.read_text())
    data["added_tokens"] = (data.get("added_tokens") or []) + [{"id": 511, "content": "[ODD]"}]
    vocab.write_text(json.dumps(data))
    with pytest.raises(MergeError, match=r"odd-tok has another tokenizer"):
        resolve_members([runs[0], runs[1], tok])


def test_tied_contributions_are_shared_not_credited_to_the_first(tiny_dirs, tmp_path):
    """Identical deltas (e.g. weight decay alone on unused embedding rows) tie: each checkpoint gets 1/K."""
    from codiemb.merge import merge_models

    base, ckpts = tiny_dirs
    report = merge_models(base, [ckpts[0], ckpts[0], ckpts[0]], tmp_path / "m", method="delta")
    for stats in report["tensors"].values():
        assert stats["dominant_fraction"] == pytest.approx([(1 - stats["unchanged_fraction"]) / 3] * 3)
