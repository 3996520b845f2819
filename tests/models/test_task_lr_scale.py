"""module.task_lr_scale: each task's optimizer steps at lr x its factor, the schedule untouched."""

import lightning as L
import pytest
import torch

from codiemb.errors import ConfigError
from codiemb.models.optim import check_task_lr_scale, scaled_lr
from codiemb.run.train import train

FAST = ["model=tiny", "trainer=default", "trainer.max_steps=6", "checkpoint_every_n_steps=100", "data.num_workers=0",
        "merge=none", "task_mix=round_robin", "+callbacks.lr_seen._target_=tests.models.test_task_lr_scale.LrSeen"]


class LrSeen(L.Callback):
    """Per optimizer step: the task, the lr the optimizer applies, the scheduler's lr, and whether any weight moved."""

    steps: list[dict] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self._task = batch["task"]

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        self._before = [p.detach().clone() for p in pl_module.parameters() if p.requires_grad]
        self._applied = [group["lr"] for group in optimizer.param_groups]

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        after = [p.detach() for p in pl_module.parameters() if p.requires_grad]
        LrSeen.steps.append({"task": self._task, "applied": self._applied,
                             "scheduled": trainer.lr_scheduler_configs[0].scheduler.optimizer.param_groups[0]["lr"],
                             "moved": any(not torch.equal(a, b) for a, b in zip(self._before, after))})


def run(output_dir, overrides):
    from tests.conftest import compose

    LrSeen.steps = []
    train(compose("train", FAST + overrides, output_dir))
    return LrSeen.steps


def test_each_task_steps_at_its_scaled_lr_and_a_zero_scale_leaves_the_weights(tmp_path):
    plain = run(tmp_path / "plain", [])
    scaled = run(tmp_path / "scaled", ["module.task_lr_scale.sts=0", "module.task_lr_scale.ir=0.5"])
    assert [s["task"] for s in plain] == [s["task"] for s in scaled]
    assert {s["task"] for s in scaled} == {"ir", "sts"}  # round robin: both tasks in six steps
    for base, step in zip(plain, scaled):
        factor = {"ir": 0.5, "sts": 0.0}[step["task"]]
        # the scheduled value is the same with and without the scale; only the applied one changes
        assert step["scheduled"] == pytest.approx(base["scheduled"])
        assert step["applied"] == pytest.approx([lr * factor for lr in base["applied"]])
        assert base["moved"] and step["moved"] == (step["task"] == "ir")


def test_scaled_lr_restores_every_group():
    opt = torch.optim.SGD([{"params": [torch.zeros(1, requires_grad=True)], "lr": 0.1},
                           {"params": [torch.zeros(1, requires_grad=True)], "lr": 0.3}])
    with scaled_lr(opt, 0.5):
        assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.05, 0.15])
    assert [g["lr"] for g in opt.param_groups] == [0.1, 0.3]


@pytest.mark.parametrize("spec, message", [
    ({"sts": -1}, r"module.task_lr_scale.sts=-1 must be a finite number >= 0"),
    ({"retrieval": 0.5}, r"unknown task 'retrieval'; known: ir, sts, mixed"),
    ({"ir": True}, r"module.task_lr_scale.ir=True"),
    (0.5, r"must be a mapping"),
])
def test_a_bad_scale_is_one_line_naming_the_key(spec, message):
    with pytest.raises(ConfigError, match=message):
        check_task_lr_scale(spec)


def test_a_bad_scale_stops_the_run_before_training(tmp_path):
    with pytest.raises(ConfigError, match="module.task_lr_scale.sts"):
        run(tmp_path, ["module.task_lr_scale.sts=-0.5"])
    assert LrSeen.steps == []


def test_the_scale_is_a_plain_dict_in_the_hparams_so_a_checkpoint_loads_with_weights_only(tmp_path):
    from omegaconf import OmegaConf

    from codiemb.losses import CoDiEmbSTSLoss, InfoNCELoss
    from codiemb.models.module import CoDiEmbModule
    from tests.conftest import tiny_encoder

    module = CoDiEmbModule(tiny_encoder(), InfoNCELoss(), CoDiEmbSTSLoss(),
                           task_lr_scale=OmegaConf.create({"sts": 0.5}))  # as Hydra's instantiate passes it
    torch.save({"hyper_parameters": dict(module.hparams)}, tmp_path / "h.ckpt")
    loaded = torch.load(tmp_path / "h.ckpt", weights_only=True)
    assert loaded["hyper_parameters"]["task_lr_scale"] == {"sts": 0.5}
