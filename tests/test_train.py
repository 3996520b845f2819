"""`train.py` end to end through the real configs, on a tiny model, a few steps each."""

import csv
from pathlib import Path

import pytest
import torch

from codiemb.run.train import train

FAST = ["model=tiny", "trainer=default", "trainer.max_steps=4", "trainer.log_every_n_steps=1", "checkpoint_every_n_steps=2",
        "data.num_workers=0"]


def logged_keys(output_dir: Path) -> set[str]:
    with open(output_dir / "csv" / "metrics.csv") as fh:
        rows = list(csv.DictReader(fh))
    return {key for row in rows for key, value in row.items() if value not in ("", None)}


@pytest.mark.parametrize("task_mix", ["balanced", "proportional", "round_robin", "mixed", "ir_only", "sts_only"])
def test_every_task_mix_trains_and_exports(compose_cfg, task_mix):
    cfg = compose_cfg(FAST + [f"task_mix={task_mix}", "merge=none"])
    result = train(cfg)
    exports = [Path(p) for p in result["exports"]]
    assert [p.name for p in exports] == ["step_000002", "step_000004"]
    assert (exports[0].parent / "initial" / "model.safetensors").is_file()
    assert (exports[0].parent / "finished.json").is_file()
    assert not list(exports[0].parent.glob("*.ckpt"))  # a finished run needs no .ckpt; its exports are the models
    keys = logged_keys(Path(cfg.paths.output_dir))
    assert "train/loss" in keys
    expected = {"balanced": {"train/ir_loss", "train/sts_loss"}, "mixed": {"train/mixed_loss"},
                "ir_only": {"train/ir_loss"}, "sts_only": {"train/sts_loss", "train/sts/pro"}}
    assert expected.get(task_mix, set()) <= keys
    assert torch.isfinite(torch.tensor(result["metrics"]["train/loss"]))


def test_each_tasks_loss_is_averaged_over_its_last_steps(compose_cfg):
    """``train/<task>_loss_avg`` (what the summary shows) is the mean of that task's last logged losses, not the
    last step's loss of whichever task came last."""
    from codiemb.models.module import LOSS_WINDOW

    cfg = compose_cfg(FAST + ["merge=none", "trainer.max_steps=6", "~callbacks.validation"])
    result = train(cfg)
    with open(Path(cfg.paths.output_dir) / "csv" / "metrics.csv") as fh:
        rows = list(csv.DictReader(fh))
    for task in ("ir", "sts"):
        # a row logs every metric seen so far; a step of this task is one whose train/loss is this task's
        losses = [float(r["train/loss"]) for r in rows if r.get("train/loss") and r["train/loss"] == r[f"train/{task}_loss"]]
        assert len(losses) >= 2
        expected = sum(losses[-LOSS_WINDOW:]) / len(losses[-LOSS_WINDOW:])
        assert result["metrics"][f"train/{task}_loss_avg"] == pytest.approx(expected, rel=1e-5)
        assert result["metrics"][f"train/{task}_loss_avg"] != pytest.approx(losses[-1])


@pytest.mark.parametrize("loss", ["cosent", "angle", "infonce"])
def test_baseline_losses_run(compose_cfg, loss):
    result = train(compose_cfg(FAST + [f"loss={loss}", "task_mix=sts_only", "merge=none",
                                       "trainer.max_steps=2"]))
    assert torch.isfinite(torch.tensor(result["metrics"]["train/loss"]))


def test_training_moves_weights_and_the_export_is_what_was_trained(compose_cfg):
    from safetensors.torch import load_file

    result = train(compose_cfg(FAST + ["merge=none"]))
    exports = [Path(p) for p in result["exports"]]
    initial = load_file(exports[0].parent / "initial" / "model.safetensors")
    final = load_file(exports[-1] / "model.safetensors")
    assert initial.keys() == final.keys()
    assert any(not torch.equal(initial[k], final[k]) for k in initial)


def test_real_minilm_trains_a_few_steps_in_bf16(compose_cfg):
    result = train(compose_cfg(["trainer=cpu", "trainer.max_steps=2", "checkpoint_every_n_steps=2",
                                "data.num_workers=0", "merge=none", "data.ir_batch_size=4",
                                "data.sts_batch_size=8"]))
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(result["exports"][-1], device="cpu")
    emb = model.encode(["a query about billing", "how do I reset my password"], convert_to_tensor=True)
    assert emb.shape == (2, 384)
