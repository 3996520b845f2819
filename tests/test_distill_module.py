"""Distillation in the training step (issue #24 part 3): ``loss.ir.distill`` (teacher scores in the data) and
``module.self_distill`` (a frozen copy of the starting model)."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from codiemb.data.collator import Collator
from codiemb.data.schema import Record
from codiemb.errors import ConfigError
from codiemb.losses import CoDiEmbSTSLoss, InfoNCELoss, distill_kl
from codiemb.losses.ir_distill import ir_distill_term
from codiemb.models.module import CoDiEmbModule
from codiemb.run.train import train
from tests.conftest import tiny_encoder

NEG_INF = float("-inf")
FAST = ["model=tiny", "trainer=default", "trainer.max_steps=4", "trainer.log_every_n_steps=1",
        "checkpoint_every_n_steps=2", "data.num_workers=0", "merge=none"]


# ---------------------------------------------------------------- the term on a hand-built batch
STUDENT = torch.tensor([[0.9, 0.1, 0.3, 0.5, 0.2],
                        [0.4, 0.3, 0.8, 0.1, 0.6]])
TEACHER = torch.tensor([[5.0, 1.0, 2.0, NEG_INF, NEG_INF],   # query 0 owns columns 0-2 (0 positive)
                        [NEG_INF, NEG_INF, NEG_INF, 4.0, 3.0]])  # query 1 owns columns 3-4 (3 positive)
POSITIVE = torch.tensor([[True, False, False, False, False],
                         [False, False, False, True, False]])


def test_kl_is_over_each_querys_own_candidates():
    t = 0.5
    expected = 0.0
    for row, cols in ((0, [0, 1, 2]), (1, [3, 4])):
        p = torch.softmax(TEACHER[row, cols] / t, 0)
        q = torch.softmax(STUDENT[row, cols] / t, 0)
        expected += (p * (p.log() - q.log())).sum().item() / 2
    got = ir_distill_term("kl", STUDENT, TEACHER, POSITIVE, t)
    assert got.item() == pytest.approx(expected, rel=1e-5)
    assert got.item() == pytest.approx(distill_kl(STUDENT, TEACHER, t).item(), rel=1e-6)


def test_margin_mse_is_over_each_querys_positive_negative_pairs():
    # query 0: positive col 0 vs negatives 1, 2; query 1: positive col 3 vs negative 4 (three pairs in all)
    pairs = [(0, 0, 1), (0, 0, 2), (1, 3, 4)]
    expected = sum(((STUDENT[r, p] - STUDENT[r, n]) - (TEACHER[r, p] - TEACHER[r, n])).item() ** 2
                   for r, p, n in pairs) / len(pairs)
    got = ir_distill_term("margin_mse", STUDENT, TEACHER, POSITIVE, 1.0)
    assert got.item() == pytest.approx(expected, rel=1e-5)


def test_margin_mse_gradient_reaches_only_own_candidates_and_is_finite():
    student = STUDENT.clone().requires_grad_(True)
    ir_distill_term("margin_mse", student, TEACHER, POSITIVE, 1.0).backward()
    assert torch.isfinite(student.grad).all()
    assert (student.grad[TEACHER == NEG_INF] == 0).all() and (student.grad[TEACHER > NEG_INF] != 0).all()


# ---------------------------------------------------------------- in the module
def records(scored: bool = True) -> list[Record]:
    scores = {"pos_scores": (9.0,), "neg_scores": (3.0, 1.0)} if scored else {}
    return [Record("ir", "what is dna", ("dna is a molecule",), ("rna is a molecule", "a helix"), dataset="d",
                   **scores),
            Record("ir", "reset my password", ("open settings and click reset",), ("a cat",), dataset="d",
                   **({"pos_scores": (7.0,), "neg_scores": (-1.0,)} if scored else {}))]


def collated(tokenizer, scored=True) -> dict:
    return Collator(tokenizer, max_positives=1, num_negatives=2)(list(enumerate(records(scored))))


def make_module(**kwargs) -> CoDiEmbModule:
    torch.manual_seed(0)
    module = CoDiEmbModule(tiny_encoder(), InfoNCELoss(temperature=0.05), CoDiEmbSTSLoss(), **kwargs)
    module.setup("fit")
    return module.eval()


@pytest.mark.parametrize("kind", ["kl", "margin_mse"])
def test_the_ir_loss_adds_weight_times_the_term(kind):
    module = make_module(ir_distill={"kind": kind, "weight": 0.5, "temperature": 0.05})
    plain = make_module()
    batch = collated(module.encoder.tokenizer)
    with torch.no_grad():
        loss, components = module.compute_loss(batch)
        base, _ = plain.compute_loss(batch)
        q, p = F.normalize(module.embed(batch["query"]), dim=-1), F.normalize(module.embed(batch["passages"]), dim=-1)
    term = ir_distill_term(kind, q @ p.T, batch["teacher_scores"], batch["positive_mask"], 0.05)
    assert components["distill"].item() == pytest.approx(term.item(), rel=1e-5)
    assert loss.item() == pytest.approx(base.item() + 0.5 * term.item(), rel=1e-5)


def test_a_batch_without_teacher_scores_adds_nothing():
    module = make_module(ir_distill={"kind": "kl", "weight": 0.5, "temperature": 0.05})
    batch = collated(module.encoder.tokenizer, scored=False)
    with torch.no_grad():
        loss, components = module.compute_loss(batch)
        base, _ = make_module().compute_loss(batch)
    assert "distill" not in components and loss.item() == pytest.approx(base.item(), rel=1e-6)


@pytest.mark.parametrize(("spec", "message"), [
    ({"kind": "kld", "weight": 1.0, "temperature": 0.05}, "loss.ir.distill.kind='kld' must be one of"),
    ({"kind": "kl", "weight": -1.0, "temperature": 0.05}, "loss.ir.distill.weight=-1.0 must be a finite number >= 0"),
    ({"kind": "kl", "weight": 1.0, "temperature": 0.0}, "loss.ir.distill.temperature=0.0 must be a finite number > 0"),
    ({"kind": "kl", "weight": 1.0, "temp": 0.05}, "loss.ir.distill has unknown key 'temp'"),
])
def test_bad_distill_settings_are_one_line(spec, message):
    with pytest.raises(ConfigError, match="^" + message.replace("(", r"\(").replace(".", r"\.")):
        make_module(ir_distill=spec)


def test_bad_self_distill_settings_are_one_line():
    with pytest.raises(ConfigError, match=r"^module\.self_distill\.temperature=-1 must be a finite number > 0"):
        make_module(self_distill={"weight": 0.3, "temperature": -1})


def test_distill_off_by_kind_null_or_weight_zero():
    for spec in (None, {"kind": None, "weight": 1.0, "temperature": 0.02}, {"kind": "kl", "weight": 0, "temperature": 1}):
        assert make_module(ir_distill=spec).distiller.ir is None
    for spec in (None, {"weight": 0.0, "temperature": 0.05}, {"weight": None, "temperature": 0.05}):
        module = make_module(self_distill=spec)
        assert module.distiller.self is None and module.distiller.base is None


# ---------------------------------------------------------------- self-distillation
def test_the_frozen_copy_is_frozen_and_out_of_state_dict_and_optimizer():
    module = make_module(self_distill={"weight": 0.3, "temperature": 0.05})
    base = module.distiller.base
    assert base is not None and base is not module.encoder and not base.training
    assert all(not p.requires_grad for p in base.parameters())
    assert not any("base_encoder" in k for k in module.state_dict())
    assert {id(p) for p in module.parameters()}.isdisjoint({id(p) for p in base.parameters()})
    named = dict(module.encoder.named_parameters())
    assert all(torch.equal(p, named[n]) for n, p in base.named_parameters())  # the starting weights


@pytest.mark.parametrize("task", ["ir", "sts"])
def test_self_distill_is_zero_at_the_start_and_trains_only_the_student(task):
    module = make_module(self_distill={"weight": 0.3, "temperature": 0.05})
    tokenizer = module.encoder.tokenizer
    if task == "ir":
        batch = collated(tokenizer, scored=False)
    else:
        pairs = [Record("sts", "a cat sits", ("a cat is sitting",), score=4.0, dataset="s"),
                 Record("sts", "a man runs", ("the stock fell",), score=0.5, dataset="s"),
                 Record("sts", "it rains", ("rain is falling",), score=4.5, dataset="s")]
        batch = Collator(tokenizer)(list(enumerate(pairs)))
    loss, components = module.compute_loss(batch)  # eval mode: no dropout, student == teacher
    assert components["self_distill"].item() == pytest.approx(0.0, abs=1e-6)
    with torch.no_grad():  # move the student: the term becomes positive
        for p in module.encoder.parameters():
            p.add_(0.05 * torch.randn_like(p))
    loss, components = module.compute_loss(batch)
    assert components["self_distill"].item() > 1e-4
    loss.backward()
    assert all(p.grad is None for p in module.distiller.base.parameters())


def write_scored_jsonl(path: Path) -> Path:
    rows = []
    for i in range(24):
        rows.append({"query": f"question number {i} about topic {i % 5}",
                     "positives": [f"answer {i} explains topic {i % 5}", f"another answer for {i}"],
                     "negatives": [f"unrelated text {i} {j}" for j in range(3)],
                     "pos_scores": [0.9 - 0.01 * (i % 7), 0.8], "neg_scores": [0.3, 0.2 + 0.01 * (i % 3), -0.1]})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def scored_data(tmp_path: Path) -> list[str]:
    path = write_scored_jsonl(tmp_path / "scored.jsonl")
    return [f"data.datasets=[{{name: scored, task: ir, format: jsonl, path: '{path}'}}]", "task_mix=ir_only",
            "data.ir_batch_size=4"]


def logged(output_dir: Path, key: str) -> list[float]:
    with open(output_dir / "csv" / "metrics.csv") as fh:
        return [float(r[key]) for r in csv.DictReader(fh) if r.get(key)]


@pytest.mark.parametrize("kind", ["kl", "margin_mse"])
def test_a_tiny_run_distils_from_teacher_scores(compose_cfg, tmp_path, kind):
    cfg = compose_cfg(FAST + scored_data(tmp_path) + [f"loss.ir.distill.kind={kind}", "loss.ir.distill.weight=2.0"])
    result = train(cfg)
    values = logged(Path(cfg.paths.output_dir), "train/ir/distill")
    assert len(values) == 4 and all(math.isfinite(v) and v > 0 for v in values)
    assert math.isfinite(result["metrics"]["train/loss"])


def test_a_tiny_run_self_distils_and_resumes_to_the_same_weights(compose_cfg, tmp_path):
    from safetensors.torch import load_file

    overrides = FAST + ["module.self_distill.weight=0.3", "~callbacks.validation",
                        "callbacks.model_checkpoint.save_top_k=-1",  # keep step 2's .ckpt, after the run too
                        "callbacks.model_checkpoint.keep_after_finish=true"]
    first = compose_cfg(overrides)
    result = train(first)
    out = Path(first.paths.output_dir)
    for task in ("ir", "sts"):
        values = logged(out, f"train/{task}/self_distill")
        assert values and all(math.isfinite(v) and v >= 0 for v in values)
    ckpt = torch.load(out / "checkpoints" / "step_000002.ckpt", weights_only=True, map_location="cpu")
    assert not any("base_encoder" in k for k in ckpt["state_dict"])
    assert ckpt["hyper_parameters"]["self_distill"] == {"weight": 0.3, "temperature": 0.05}
    # resumed from step 2 in a new directory: the frozen copy is rebuilt from the pre-trained weights, so the
    # run ends where the uninterrupted one did
    from tests.conftest import compose

    second = compose("train", overrides + [f"ckpt_path={out / 'checkpoints' / 'step_000002.ckpt'}"],
                     tmp_path / "resumed")
    resumed = train(second)
    a = load_file(Path(result["exports"][-1]) / "model.safetensors")
    b = load_file(Path(resumed["exports"][-1]) / "model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6, msg=key)
