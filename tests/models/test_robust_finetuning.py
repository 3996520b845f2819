"""module.l2sp_weight and module.freeze_embeddings: the robust fine-tuning hooks of issue #19."""

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from codiemb.run.train import train
from tests import dist_worker

FAST = ["model=tiny", "trainer=default", "trainer.max_steps=4", "trainer.log_every_n_steps=1",
        "checkpoint_every_n_steps=2", "data.num_workers=0", "merge=none"]


def module_with(**options):
    from codiemb.losses import CoDiEmbSTSLoss, InfoNCELoss
    from codiemb.models.module import CoDiEmbModule
    from tests.conftest import tiny_encoder

    torch.manual_seed(0)
    return CoDiEmbModule(tiny_encoder(), InfoNCELoss(temperature=0.05), CoDiEmbSTSLoss(temperature=0.05),
                         **options).train(False)


@pytest.mark.parametrize("task", ["ir", "sts"])
def test_l2sp_adds_twice_the_weighted_distance_to_every_gradient(task):
    plain, regular = module_with(), module_with(l2sp_weight=0.5)
    with torch.no_grad():  # move away from the pre-trained weights, identically in both
        for (_, p), (_, q) in zip(plain.encoder.named_parameters(), regular.encoder.named_parameters()):
            noise = 0.01 * torch.randn_like(p)
            p.add_(noise)
            q.add_(noise)
    anchors = {n: p.detach() for n, p in module_with().encoder.named_parameters()}  # the starting weights
    batch = dist_worker.collate(plain, dist_worker.records(task))
    g_plain, g_reg = dist_worker.gradients(plain, batch), dist_worker.gradients(regular, batch)
    for name, p in regular.encoder.named_parameters():
        expected = g_plain[f"encoder.{name}"] + 2 * 0.5 * (p.detach() - anchors[name])
        torch.testing.assert_close(g_reg[f"encoder.{name}"], expected, rtol=1e-4, atol=1e-6)
    _, components = regular.compute_loss(batch)
    by_hand = sum(float((p.detach() - anchors[n]).pow(2).sum()) for n, p in regular.encoder.named_parameters())
    assert float(components["l2sp"]) == pytest.approx(by_hand, rel=1e-5)


def test_without_l2sp_there_is_no_penalty_and_no_copy_of_the_weights():
    module = module_with()
    _, components = module.compute_loss(dist_worker.collate(module, dist_worker.records("sts")))
    assert "l2sp" not in components and module._anchors == {}


def test_a_run_with_frozen_embeddings_and_l2sp_keeps_the_embedding_table(compose_cfg):
    cfg = compose_cfg(FAST + ["module.freeze_embeddings=true", "module.l2sp_weight=0.1"])
    result = train(cfg)
    exports = [Path(p) for p in result["exports"]]
    initial = load_file(exports[0].parent / "initial" / "model.safetensors")
    final = load_file(exports[-1] / "model.safetensors")
    table = [k for k in initial if k.endswith("word_embeddings.weight")]
    assert len(table) == 1 and torch.equal(initial[table[0]], final[table[0]])
    assert any(not torch.equal(initial[k], final[k]) for k in initial if k not in table)
    log = (Path(cfg.paths.output_dir) / "csv" / "metrics.csv").read_text().splitlines()[0].split(",")
    assert any(column.endswith("/l2sp") for column in log)


def test_a_negative_l2sp_weight_is_refused_before_anything_loads(compose_cfg):
    from codiemb.errors import ConfigError

    with pytest.raises(ConfigError, match="module.l2sp_weight"):
        train(compose_cfg(FAST + ["module.l2sp_weight=-1"]))
