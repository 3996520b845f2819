"""docs/extending.md, proved: a loss, a data reader and a logger added from outside the package each train a
real (tiny) run; the merge method's proof is tests/merge/test_merge_registry.py."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from lightning.pytorch.loggers.logger import Logger
from torch import Tensor, nn

from codiemb.data.readers.base import ReadResult, RowPolicy, check_file, row_errors
from codiemb.data.schema import parse_record
from codiemb.errors import DataError
from codiemb.run.train import train

FAST = ["model=tiny", "trainer=default", "trainer.max_steps=4", "checkpoint_every_n_steps=2", "data.num_workers=0",
        "merge=none", "~callbacks.validation", "~callbacks.progress_bar", "+trainer.enable_progress_bar=false"]


# ---------------------------------------------------------------------------------------------- a loss
def cosine_mse(a: Tensor, b: Tensor, scores: Tensor) -> Tensor:
    """``mean_i (cos(a_i, b_i) - y_i)^2``: the plain regression loss (sentence-transformers' CosineSimilarityLoss)."""
    return ((nn.functional.cosine_similarity(a.float(), b.float(), dim=-1) - scores.float()) ** 2).mean()


class CosineMSELoss(nn.Module):
    needs_middle_layer = False

    def forward(self, a, b, scores, a_mid=None, b_mid=None):
        loss = cosine_mse(a, b, scores)
        return loss, {"cosine_mse": loss.detach()}


def test_a_loss_from_outside_the_package_trains(compose_cfg):
    a, b = torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    assert cosine_mse(a, b, torch.tensor([1.0, 1.0])).item() == 0.5  # (1-1)^2 and (0-1)^2, by hand
    cfg = compose_cfg(FAST + ["loss=cosent", "task_mix=sts_only", "loss.sts._target_=tests.test_extending.CosineMSELoss",
                              "~loss.sts.scale", "trainer.log_every_n_steps=1"])
    result = train(cfg)
    assert "train/sts/cosine_mse" in result["metrics"]


# ---------------------------------------------------------------------------------------------- a reader
def read_tsv_pairs(path: str, *, name: str, task: str | None = None, on_error: str = "raise",
                   **_: object) -> ReadResult:
    """``sentence<TAB>sentence<TAB>score (0-5)`` per line: an STS format the package does not know."""
    policy, records = RowPolicy(on_error), []
    for line_no, line in enumerate(check_file(path).read_text().splitlines(), start=1):
        try:
            with row_errors(path, line_no):
                first, second, score = line.split("\t")
                records.append(parse_record({"task": "sts", "query": first, "positives": [second],
                                             "score": float(score)}, dataset=name, source=path, line=line_no))
        except DataError as exc:  # row_errors turned any error of the row into one naming file and line
            policy.handle(exc)
    return ReadResult(records, policy.skipped)


def test_a_reader_registered_by_name_feeds_a_run(compose_cfg, monkeypatch, tmp_path):
    from codiemb.data import readers

    pairs = tmp_path / "pairs.tsv"
    pairs.write_text("".join(f"a cat sat on mat {i}\ta cat is on the mat {i}\t{i % 6}\n" for i in range(80)))
    monkeypatch.setitem(readers.FORMATS, "tsv_pairs", "tests.test_extending:read_tsv_pairs")
    cfg = compose_cfg(FAST + ["task_mix=sts_only", f"data.cache_dir={tmp_path / 'cache'}",
                              f"data.datasets=[{{name: mine, task: sts, format: tsv_pairs, path: '{pairs}'}}]"])
    result = train(cfg)
    assert result["data"]["mine"]["rows"] == 80


# ---------------------------------------------------------------------------------------------- a logger
class JsonLinesLogger(Logger):
    """Every metrics row as one JSON line in ``<save_dir>/metrics.jsonl``."""

    def __init__(self, save_dir: str):
        super().__init__()
        self.file = Path(save_dir) / "metrics.jsonl"

    @property
    def name(self) -> str:
        return "jsonl"

    @property
    def version(self) -> str:
        return "0"

    def log_hyperparams(self, params, *args, **kwargs) -> None:
        pass

    def log_metrics(self, metrics, step=None) -> None:
        self.file.parent.mkdir(parents=True, exist_ok=True)
        with self.file.open("a") as fh:
            fh.write(json.dumps({"step": step, **{k: float(v) for k, v in metrics.items()}}) + "\n")


def test_a_logger_from_outside_the_package_records_the_run(compose_cfg):
    cfg = compose_cfg(FAST + ["logger=none", "+logger.jsonl._target_=tests.test_extending.JsonLinesLogger",
                              "+logger.jsonl.save_dir=${paths.output_dir}", "trainer.log_every_n_steps=1"])
    train(cfg)
    rows = [json.loads(line) for line in (Path(cfg.paths.output_dir) / "metrics.jsonl").read_text().splitlines()]
    assert any("train/loss" in row for row in rows) and any("events/export_step" in row for row in rows)
