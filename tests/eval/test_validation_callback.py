"""The validation callback in a tiny Lightning run of its own (no dependency on the project's module)."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from torch.utils.data import DataLoader

from codiemb.callbacks.validation import ValidationCallback
from codiemb.eval.runner import evaluate, summarize

from .conftest import tiny_encoder


class TinyModule(L.LightningModule):
    """Pulls two texts together with a cosine loss: just enough to change the weights between checks."""

    def __init__(self):
        super().__init__()
        self.encoder = tiny_encoder()

    def training_step(self, batch, batch_idx):
        features = self.encoder.tokenize(["a cat sits on the mat", "dogs bark loudly"], "passage")
        emb = self.encoder(features)
        loss = 1 - (emb[0] * emb[1]).sum()
        self.log("train/loss", loss)
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.5)


def run(tmp_path, sets, callbacks, max_steps=4, accumulate=1):
    trainer = L.Trainer(max_steps=max_steps, accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, default_root_dir=tmp_path, callbacks=callbacks,
                        accumulate_grad_batches=accumulate)
    module = TinyModule()
    trainer.fit(module, DataLoader(range(64), batch_size=1))
    return trainer, module


def test_logs_the_numbers_evaluate_gives_and_scores_the_final_weights(tmp_path, tiny_sets):
    callback = ValidationCallback(tiny_sets, every_n_steps=2, batch_size=4)
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", monitor="val/mean", mode="max", every_n_train_steps=2,
                                 save_top_k=1)
    trainer, module = run(tmp_path, tiny_sets, [callback, checkpoint], max_steps=5)
    assert callback._last_step == 5  # steps 2 and 4 by schedule, 5 at train end
    results = evaluate(module.encoder, tiny_sets, batch_size=4)
    summary = summarize(results, tiny_sets)
    metrics = trainer.callback_metrics
    assert float(metrics["val/mean"]) == pytest.approx(summary["mean"], abs=1e-3)
    assert float(metrics["val/sts_spearman"]) == pytest.approx(results["tiny_sts"]["spearman"], abs=1e-3)
    assert float(metrics["val/ir_ndcg@10"]) == pytest.approx(results["tiny_ir"]["ndcg@10"], abs=1e-3)
    assert float(metrics["val/tiny_ir/mrr@10"]) == pytest.approx(results["tiny_ir"]["mrr@10"], abs=1e-3)
    assert checkpoint.best_model_path  # the monitored metric was available to ModelCheckpoint


def test_gradient_accumulation_evaluates_once_per_optimizer_step(tmp_path, tiny_sets, monkeypatch):
    callback = ValidationCallback(tiny_sets, every_n_steps=1, on_train_end=False)
    steps = []
    monkeypatch.setattr(callback, "compute", lambda module: steps.append(module.trainer.global_step) or {"val/mean": 1.0})
    run(tmp_path, tiny_sets, [callback], max_steps=3, accumulate=2)
    assert steps == [1, 2, 3]


def test_rejects_a_zero_interval(tiny_sets):
    with pytest.raises(ValueError):
        ValidationCallback(tiny_sets, every_n_steps=0)


def _spy(monkeypatch):
    """Record the ``autocast_dtype`` every validation passes to ``evaluate`` (and still evaluate)."""
    import codiemb.callbacks.validation as validation

    seen = []

    def spy(*args, **kwargs):
        seen.append(kwargs.get("autocast_dtype"))
        return evaluate(*args, **kwargs)

    monkeypatch.setattr(validation, "evaluate", spy)
    return seen


def run_in(tmp_path, callback, precision):
    trainer = L.Trainer(max_steps=2, accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, default_root_dir=tmp_path, callbacks=[callback],
                        precision=precision)
    module = TinyModule()
    trainer.fit(module, DataLoader(range(64), batch_size=1))
    return trainer, module


def test_a_bf16_run_validates_in_bf16_and_logs_what_bf16_encoding_gives(tmp_path, tiny_sets, monkeypatch):
    # Lightning's autocast covers training_step only: before the fix the callback encoded in fp32 (None here)
    seen = _spy(monkeypatch)
    trainer, module = run_in(tmp_path, ValidationCallback(tiny_sets, every_n_steps=1, batch_size=4), "bf16-mixed")
    assert seen == [torch.bfloat16, torch.bfloat16]  # steps 1 and 2; the final one is step 2 again
    bf16 = summarize(evaluate(module.encoder, tiny_sets, batch_size=4, autocast_dtype=torch.bfloat16), tiny_sets)
    assert float(trainer.callback_metrics["val/mean"]) == pytest.approx(bf16["mean"], abs=1e-3)


def test_an_fp32_run_validates_in_fp32_and_an_explicit_setting_wins(tmp_path, tiny_sets, monkeypatch):
    seen = _spy(monkeypatch)
    run_in(tmp_path / "a", ValidationCallback(tiny_sets, every_n_steps=2, on_train_end=False), "32-true")
    run_in(tmp_path / "b", ValidationCallback(tiny_sets, every_n_steps=2, on_train_end=False, precision="fp32"),
           "bf16-mixed")
    run_in(tmp_path / "c", ValidationCallback(tiny_sets, every_n_steps=2, on_train_end=False, precision="bf16"),
           "32-true")
    assert seen == [None, None, torch.bfloat16]


def test_rejects_an_unknown_precision_naming_the_key(tiny_sets):
    with pytest.raises(ValueError, match=r"callbacks\.validation\.precision .*'fp16'"):
        ValidationCallback(tiny_sets, precision="fp16")


def test_the_merged_model_is_scored_in_the_precision_the_exports_were(tmp_path, tiny_sets, monkeypatch):
    # merge/val/* (the merge stage's candidates and the merged model) used fp32 beside bf16 export scores
    from types import SimpleNamespace

    import codiemb.eval.runner as runner
    from codiemb.run.delivery import score_merged, validation_dtype

    callback = ValidationCallback(tiny_sets, every_n_steps=2, batch_size=4, on_train_end=False)
    trainer, module = run_in(tmp_path, callback, "bf16-mixed")
    module.encoder.save(tmp_path / "merged")
    seen = []
    real = runner.evaluate

    def spy(*args, **kwargs):
        seen.append(kwargs.get("autocast_dtype"))
        return real(*args, **kwargs)

    monkeypatch.setattr(runner, "evaluate", spy)
    dtype = validation_dtype(SimpleNamespace(peers=[callback]), module)
    scores = score_merged(tiny_sets, str(tmp_path / "merged"), {}, dtype)
    assert dtype is torch.bfloat16 and seen == [torch.bfloat16]
    bf16 = summarize(real(module.encoder, tiny_sets, batch_size=64, autocast_dtype=torch.bfloat16), tiny_sets)
    assert scores["merge/val/mean"] == pytest.approx(bf16["mean"], abs=1e-3)
    assert validation_dtype(SimpleNamespace(peers=[]), module) is None  # no validation callback: fp32


def test_the_heap_goes_back_after_each_validation_during_training_and_not_after_steps(tmp_path, tiny_sets):
    from codiemb.callbacks.memory import ReturnFreedMemory

    trimmer, calls = ReturnFreedMemory(), []
    trimmer._trim = calls.append
    run(tmp_path, tiny_sets, [trimmer, ValidationCallback(tiny_sets, every_n_steps=2, batch_size=4)], max_steps=5)
    assert calls == [0, 0]  # after the validations of steps 2 and 4; none after steps, none after the final one
