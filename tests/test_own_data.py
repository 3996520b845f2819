"""Training on your own data, as the README tells a user to: a data config in a config directory of their own
(``python train.py --config-dir <dir> data=mydata``, Hydra's search path), the README's ``mydata.yaml`` as
written, rows in sentence-transformers' column names, and validation on a slice of the user's data held back
when the data config names no validation sets (never silently on the bundled example sets).

Every run here is ``train.py`` in a subprocess from the repository root, sized down with ``model=tiny`` and
``trainer.max_steps``; ``paths.log_dir`` points into a temporary folder and ``HOME`` too, so the data cache is
checked where the README says it goes (``<log dir>/cache/data``) and not under ``~/.cache``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "data" / "example"
SIZE = ["model=tiny", "trainer.max_steps=4"]

# The README's configs/data/mydata.yaml, as written there (only the /data/... paths differ).
README_MYDATA = """\
_target_: codiemb.data.datamodule.CoDiEmbDataModule
datasets:
  - {name: faq, task: ir, format: jsonl, path: DATA/faq.jsonl}
  - {name: tickets, task: ir, format: hf, path: parquet, load_kwargs: {data_files: DATA/tickets.parquet},
     columns: {question: query, answers: positives}}
  - {name: sts, task: sts, format: jsonl, path: DATA/sts.jsonl, score_range: [0, 5]}
task_mix: ${task_mix.policy}
ir_batch_size: 16
sts_batch_size: 32
accumulate_grad_batches: ${trainer.accumulate_grad_batches}
seed: ${seed}
"""

# The shortest data config: the datasets and nothing else (the rest is wired in by the training config).
MINIMAL_MYDATA = """\
datasets:
  - {name: pairs, task: ir, format: jsonl, path: DATA/st_pairs.jsonl}
  - {name: similar, task: sts, format: jsonl, path: DATA/st_sts.jsonl}
"""


def rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def write_jsonl(path: Path, records: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


@pytest.fixture(scope="module")
def user(tmp_path_factory) -> Path:
    """A user's folder: data in their own files and formats, configs in ``cfg/data/``."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    home = tmp_path_factory.mktemp("user")
    data = home / "data"
    data.mkdir()
    support, knowledge, sts = (rows(EXAMPLE / f"{n}.jsonl") for n in ("ir_support", "ir_knowledge", "sts_general"))
    write_jsonl(data / "faq.jsonl", [{k: v for k, v in r.items() if k != "task"} for r in support])
    pq.write_table(pa.table({"question": [r["query"] for r in knowledge],
                             "answers": [r["positives"] for r in knowledge]}), data / "tickets.parquet")
    write_jsonl(data / "sts.jsonl", sts)
    # sentence-transformers' column names: (anchor, positive, negative) triplets and (sentence1, sentence2, score)
    write_jsonl(data / "st_pairs.jsonl", [{"anchor": r["query"], "positive": r["positives"][0],
                                          **({"negative": r["negatives"][0]} if r.get("negatives") else {})}
                                         for r in support + knowledge])
    write_jsonl(data / "st_sts.jsonl", [{"sentence1": r["query"], "sentence2": r["positives"][0],
                                        "score": r["score"]} for r in sts])
    (home / "cfg" / "data").mkdir(parents=True)
    (home / "cfg" / "data" / "mydata.yaml").write_text(README_MYDATA.replace("DATA", str(data)))
    (home / "cfg" / "data" / "minimal.yaml").write_text(MINIMAL_MYDATA.replace("DATA", str(data)))
    (home / "home").mkdir()
    return home


def train(user: Path, log_dir: str, *args: str) -> tuple[subprocess.CompletedProcess, Path | None]:
    """``python train.py --config-dir <user>/cfg <args>`` from the repository root, as the user types it."""
    env = {k: v for k, v in os.environ.items() if k not in ("PROJECT_ROOT", "CODIEMB_DATA_CACHE")}
    env.update(HF_HUB_OFFLINE="1", WANDB_MODE="offline", OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false",
               HOME=str(user / "home"))
    logs = user / log_dir
    result = subprocess.run([sys.executable, "train.py", "--config-dir", str(user / "cfg"), *args, *SIZE,
                             f"paths.log_dir={logs}"], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=600)
    runs = sorted((logs / "train" / "runs").glob("*")) if (logs / "train" / "runs").is_dir() else []
    return result, (runs[-1] if runs else None)


def summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


def val_set_names(metrics: dict) -> set[str]:
    return {k.split("/")[1] for k in metrics if k.startswith("val/") and k.count("/") == 2}


@pytest.fixture(scope="module")
def readme_run(user):
    result, run_dir = train(user, "logs_readme", "data=mydata")
    assert result.returncode == 0, result.stderr[-3000:]
    return result, run_dir


def test_the_readme_data_config_trains_from_the_users_config_dir(readme_run):
    result, run_dir = readme_run
    assert "codiemb: training finished" in result.stdout
    data = summary(run_dir)["data"]
    assert set(data) == {"faq", "tickets", "sts"}
    assert data["tickets"]["task"] == "ir" and data["sts"]["task"] == "sts"


def test_the_data_cache_lands_under_the_log_dir_not_home(user, readme_run):
    cache = user / "logs_readme" / "cache" / "data"
    caches = [p for p in cache.iterdir() if p.is_dir()] if cache.is_dir() else []
    assert len(caches) == 3, caches  # one Arrow table per dataset
    assert not (user / "home" / ".cache" / "codiemb").exists()


def test_own_data_validates_on_a_held_back_slice_of_it_and_says_so(readme_run):
    result, run_dir = readme_run
    info = summary(run_dir)
    validation = info["validation"]
    assert validation["source"] == "holdout"
    assert validation["sets"] == ["faq_holdout", "tickets_holdout", "sts_holdout"]
    names = val_set_names(info["metrics"])
    assert names == {"faq_holdout", "tickets_holdout", "sts_holdout"}, names
    assert not any("example" in name for name in names)
    # the held-back rows are out of training, and the log and summary say how many
    assert all(info["data"][name]["held_out"] > 0 for name in ("faq", "tickets", "sts")), info["data"]
    assert info["data"]["faq"]["rows"] + info["data"]["faq"]["held_out"] == 96
    log_text = (run_dir / "train.log").read_text()
    assert "held back" in log_text and "faq_holdout" in log_text
    assert "validation" in result.stdout and "held back" in result.stdout


def test_sentence_transformers_columns_load_with_a_data_config_of_datasets_only(user):
    result, run_dir = train(user, "logs_minimal", "data=minimal")
    assert result.returncode == 0, result.stderr[-3000:]
    info = summary(run_dir)
    assert info["data"]["pairs"]["task"] == "ir" and info["data"]["similar"]["task"] == "sts"
    assert info["data"]["similar"]["rows"] + info["data"]["similar"]["held_out"] == 180
    assert info["validation"]["sets"] == ["pairs_holdout", "similar_holdout"]
    assert list((user / "logs_minimal" / "cache" / "data").glob("*"))


@pytest.mark.slow
def test_named_validation_sets_win_over_the_holdout(user):
    result, run_dir = train(user, "logs_named", "data=minimal", "eval@val=example")
    assert result.returncode == 0, result.stderr[-3000:]
    info = summary(run_dir)
    assert info["validation"]["source"] == "config"
    assert val_set_names(info["metrics"]) == {"example_sts", "example_ir"}
    assert all(not d.get("held_out") for d in info["data"].values())  # nothing held back from training


def test_unified_reader_maps_sentence_transformers_columns(tmp_path):
    from codiemb.data.readers.unified import read_jsonl

    path = tmp_path / "st.jsonl"
    write_jsonl(path, [{"anchor": "q", "positive": "p", "negative": "n"},
                       {"anchor": "q2", "positive": "p2", "negative_1": "n1", "negative_2": "n2"},
                       {"sentence1": "a", "sentence2": "b", "score": 3.5}])
    ir = read_jsonl(str(path), name="x", on_error="skip").records
    assert [(r.task, r.query, r.positives, r.negatives) for r in ir[:2]] == [
        ("ir", "q", ("p",), ("n",)), ("ir", "q2", ("p2",), ("n1", "n2"))]
    assert (ir[2].task, ir[2].query, ir[2].positives, ir[2].score) == ("sts", "a", ("b",), 3.5)


def test_rows_with_other_column_names_get_one_line_naming_what_to_write(tmp_path):
    from codiemb.data.readers.unified import read_jsonl
    from codiemb.errors import DataError

    path = tmp_path / "other.jsonl"
    write_jsonl(path, [{"question": "q", "answer": "a"}])
    with pytest.raises(DataError) as info:
        read_jsonl(str(path), name="x", task="ir")
    message = str(info.value)
    assert "\n" not in message and "'query'" in message and "question, answer" in message
    assert "anchor" in message and "sentence1" in message
