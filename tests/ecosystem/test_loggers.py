"""W&B offline, CSV and TensorBoard together (`logger=many`): the keys the issue lists reach the run files."""

from __future__ import annotations

import csv
import socket
import time
from pathlib import Path

import pytest

from codiemb.run.resolvers import wandb_offline
from codiemb.run.train import train
from tests.ecosystem.helpers import FAST, finished_wandb_records

EXPECTED_HISTORY = {"train/loss", "train/ir_loss", "train/sts_loss", "train/ir/infonce", "train/sts/pearson",
                    "lr-AdamW/pg1", "sampler/steps_ir", "sampler/steps_sts", "sampler/steps/support",
                    "sampler/steps/sts_general", "val/mean", "val/sts_spearman", "val/ir_ndcg@10",
                    "events/export_step", "events/merge", "merge/val/mean"}


def test_offline_unless_a_key_is_configured(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    assert wandb_offline() is True
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    with socket.create_server(("127.0.0.1", 0)) as server:  # a W&B server that answers
        monkeypatch.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{server.getsockname()[1]}")
        assert wandb_offline() is False
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert wandb_offline() is True


def test_a_key_without_network_falls_back_to_offline_within_seconds(monkeypatch, caplog):
    """With WANDB_API_KEY set and no network, logger=wandb waited 112 s, then raised a CommError."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]  # closed again below: nothing listens there
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    monkeypatch.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{port}")
    started = time.perf_counter()
    assert wandb_offline() is True
    assert time.perf_counter() - started < 5
    assert any("logging offline instead" in r.getMessage() for r in caplog.records)


def test_many_loggers_record_losses_sampler_events_merge_and_media(compose_cfg, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    cfg = compose_cfg(FAST + ["model=tiny", "logger=many", "merge=delta", "merge.evaluate=true", "callbacks.validation.every_n_steps=1"])
    assert cfg.logger.wandb.offline is True
    started = time.perf_counter()
    result = train(cfg)
    assert time.perf_counter() - started < 120  # offline: no network wait anywhere
    output = Path(cfg.paths.output_dir)

    (run_file,) = output.glob("wandb/offline-run-*/run-*.wandb")
    history, config, artifacts, media = set(), set(), [], set()
    records = finished_wandb_records(run_file)
    for record in records:
        kind = record.WhichOneof("record_type")
        if kind == "history":
            history |= {item.key or "/".join(item.nested_key) for item in record.history.item}
        elif kind == "config":
            config |= {item.key or "/".join(item.nested_key) for item in record.config.update}
        elif kind == "artifact":
            artifacts.append(record.artifact)
        elif kind == "files":
            media |= {f.path for f in record.files.files}
    kinds = sorted(r.WhichOneof("record_type") for r in records)
    assert EXPECTED_HISTORY <= history, (EXPECTED_HISTORY - history, run_file.stat().st_size, kinds)
    # Media are history entries with typed sub-keys; their files are listed in a files record.
    assert {"merge/evaluation/_type", "merge/plots/_type"} <= history
    assert any(p.startswith("media/table/merge/evaluation") for p in media), media
    assert {"model", "loss", "task_mix", "data", "module", "seed"} <= config
    (artifact,) = [a for a in artifacts if a.type == "merge_report"]
    assert {e.path for e in artifact.manifest.contents} >= {"merge_report.json", "merge_report.png", "README.md"}
    assert any(p.startswith("media/images/merge/plots") for p in media), media

    with open(output / "csv" / "metrics.csv") as fh:
        csv_keys = {k for row in csv.DictReader(fh) for k, v in row.items() if v}
    assert {"events/export_step", "events/merge", "sampler/steps/sts_general", "val/mean"} <= csv_keys
    assert list((output / "tensorboard").rglob("events.out.tfevents.*"))

    card = (Path(result["merged"]) / "README.md").read_text()
    for text in ("| support | ir | 96 |", "| sts_general | sts | 180 |", "task mix | balanced", "InfoNCELoss",
                 "CoDiEmbSTSLoss", "| method | delta |", "## Evaluation", "merged (delta)"):
        assert text in card, text


@pytest.mark.parametrize("logger", ["csv", "tensorboard", "wandb", "many", "none"])
def test_every_logger_config_composes(compose_cfg, logger):
    cfg = compose_cfg([f"logger={logger}"])
    expected = {"csv": {"csv"}, "tensorboard": {"tensorboard"}, "wandb": {"wandb"},
                "many": {"csv", "tensorboard", "wandb"}, "none": set()}[logger]
    assert set(cfg.get("logger") or {}) == expected
