"""Datasets with a ``mine:`` block: mined on first use exactly as ``mine_dataset`` would, then cached; a
changed option mines again; ranks > 0 never mine."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf, open_dict

import codiemb.mining.miner
from codiemb.data.holdout import is_held_out
from codiemb.errors import ConfigError
from codiemb.mining.cache import ENCODER_KEYS, resolve_mined_specs
from codiemb.run.train import train
from codiemb.utils.precision import resolve_short_precision

ROOT = Path(__file__).resolve().parents[1]
SUPPORT = str(ROOT / "data" / "example" / "ir_support.jsonl")
OPTIONS = {"range_min": 0, "range_max": 6, "num_negatives": 2, "keep_existing_negatives": False, "seed": 3}


@pytest.fixture
def tiny_model(compose_cfg):
    return OmegaConf.to_container(compose_cfg(["model=tiny"]).model, resolve=True)


def spec(output: Path, **options) -> dict:
    return {"name": "support", "task": "ir", "format": "jsonl", "path": SUPPORT, "holdout": {"fraction": 0.2},
            "mine": {"output": str(output), **OPTIONS, **options}}


def count_mining(monkeypatch) -> list:
    calls, real = [], codiemb.mining.miner.mine_dataset

    def counted(**kwargs):
        calls.append(kwargs)
        torch.manual_seed(0)  # the tiny model is randomly initialised: same seed, same weights
        return real(**kwargs)
    monkeypatch.setattr(codiemb.mining.miner, "mine_dataset", counted)
    return calls


def test_first_use_mines_like_mine_dataset_then_reads_the_cache(tmp_path, tiny_model, monkeypatch):
    calls = count_mining(monkeypatch)
    out = tmp_path / "mined" / "support.jsonl"
    resolved = resolve_mined_specs([spec(out)], tiny_model)
    assert resolved == [{"name": "support", "task": "ir", "holdout": {"fraction": 0.2}, "format": "jsonl",
                         "path": str(out)}]
    assert len(calls) == 1
    # the reference: the same mining called directly, as `python mine.py` does
    monkeypatch.undo()
    torch.manual_seed(0)
    reference = tmp_path / "reference.jsonl"
    codiemb.mining.miner.mine_dataset(model_path=tiny_model["name_or_path"], input_format="jsonl", input_path=SUPPORT,
                                output=str(reference), name="support", show_progress=False,
                                encoder_options={k: tiny_model[k] for k in ENCODER_KEYS
                                                 if tiny_model.get(k) is not None}, **OPTIONS)
    assert out.read_text() == reference.read_text()
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert all(len(r["negatives"]) == 2 and not set(r["negatives"]) & set(r["positives"]) for r in rows)
    meta = json.loads((tmp_path / "mined" / "support.jsonl.meta.json").read_text())
    # precision: auto is recorded as what it resolved to on this machine (bf16 and fp32 caches differ)
    resolved_precision = resolve_short_precision("auto", "cpu")
    assert meta["options"] == {**OPTIONS, "precision": resolved_precision}
    assert meta["input"] == {"format": "jsonl", "path": SUPPORT}


def test_a_matching_cache_is_reused_and_a_changed_option_mines_again(tmp_path, tiny_model, monkeypatch):
    calls = count_mining(monkeypatch)
    out = tmp_path / "support.jsonl"
    resolve_mined_specs([spec(out)], tiny_model)
    first = out.read_text()
    resolve_mined_specs([spec(out)], tiny_model)
    assert len(calls) == 1 and out.read_text() == first
    resolve_mined_specs([spec(out, num_negatives=1)], tiny_model)
    assert len(calls) == 2
    assert all(len(json.loads(line)["negatives"]) == 1 for line in out.read_text().splitlines())


def test_a_dropout_override_reuses_the_cache_and_another_config_override_mines_again(tmp_path, tiny_model,
                                                                                     monkeypatch):
    """Mining encodes in eval mode, where dropout does nothing: a recipe that only changes a dropout rate reads
    the same negatives (it re-mined for 20 minutes); any other config override still mines again."""
    calls = count_mining(monkeypatch)
    out = tmp_path / "support.jsonl"
    resolve_mined_specs([spec(out)], tiny_model)
    first = out.read_text()
    no_dropout = {**tiny_model, "config_overrides": {**tiny_model["config_overrides"],
                                                     "attention_probs_dropout_prob": 0.0}}
    resolve_mined_specs([spec(out)], no_dropout)
    assert len(calls) == 1 and out.read_text() == first
    wider = {**tiny_model, "config_overrides": {**tiny_model["config_overrides"], "intermediate_size": 48}}
    resolve_mined_specs([spec(out)], wider)
    assert len(calls) == 2


def test_specs_without_mine_pass_through_and_other_ranks_never_mine(tmp_path, tiny_model):
    plain = {"name": "support", "task": "ir", "format": "jsonl", "path": SUPPORT}
    assert resolve_mined_specs([plain], tiny_model) == [plain]
    out = tmp_path / "support.jsonl"
    with pytest.raises(ConfigError) as info:
        resolve_mined_specs([spec(out)], tiny_model, rank=1)
    assert str(info.value) == (
        f"dataset 'support': the mined cache {out} is missing or stale and rank 1 does not mine; mine it first "
        "with one process (python train.py on one device, or python mine.py) so every rank reads the same file")
    assert not out.exists()


def test_train_mines_then_trains_on_the_mined_rows(compose_cfg, tmp_path):
    cfg = compose_cfg(["model=tiny", "trainer=default", "trainer.max_steps=2", "data.num_workers=0", "merge=none",
                       "~callbacks.validation", "~callbacks.progress_bar", "+trainer.enable_progress_bar=false",
                       "task_mix=ir_only"])
    out = tmp_path / "mined.jsonl"
    with open_dict(cfg):
        cfg.data.datasets = [spec(out)]
    result = train(cfg)
    rows = out.read_text().splitlines()
    assert result["data"]["support"]["rows"] == sum(not is_held_out(json.loads(line)["query"], 0.2) for line in rows)
    assert result["data"]["support"]["rows"] < len(rows)  # the holdout applies after mining


def test_an_unknown_mining_precision_is_refused(tmp_path, tiny_model):
    with pytest.raises(ConfigError, match=r"^mining precision must be one of \['auto', 'bf16', 'fp32'\], got 'fp16'$"):
        resolve_mined_specs([spec(tmp_path / "m.jsonl", precision="fp16")], tiny_model)


def test_a_cache_whose_meta_write_failed_is_never_read_as_current(tmp_path, tiny_model, monkeypatch):
    """Options X mined and cached; options Y mine again but die before their meta is written. The file now
    holds Y's negatives beside X's meta: a later run with X must mine again, not read Y's rows as X's."""
    import codiemb.mining.cache as mined_data

    calls = count_mining(monkeypatch)
    out = tmp_path / "support.jsonl"
    resolve_mined_specs([spec(out)], tiny_model)
    first = out.read_text()
    real_write = mined_data.atomic_write_text

    def failing_meta(path, text):
        if str(path).endswith(".meta.json"):
            raise OSError("disk full")
        return real_write(path, text)
    monkeypatch.setattr(mined_data, "atomic_write_text", failing_meta)
    with pytest.raises(OSError, match="disk full"):
        resolve_mined_specs([spec(out, num_negatives=1)], tiny_model)
    monkeypatch.setattr(mined_data, "atomic_write_text", real_write)
    assert len(calls) == 2 and out.read_text() != first  # Y's rows are in the file, X's meta beside it
    resolve_mined_specs([spec(out)], tiny_model)
    assert len(calls) == 3 and out.read_text() == first  # mined again with X
