"""``eval.py`` refuses options and sets that cannot give a meaningful score, in one ``codiemb: error:`` line and
before the model loads; an undefined score (NaN) is written as ``null`` with a warning.

Run through the real command line (``python eval.py ...``) with the bundled MiniLM, offline.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from codiemb.errors import ConfigError
from codiemb.eval.checks import check_eval_options, nan_to_null
from tests.conftest import ROOT

EXAMPLE_IR = {"name": "example_ir", "task": "ir", "format": "beir", "path": str(ROOT / "data/example/val/ir"),
              "split": "dev"}


def hydra_list(sets: list[dict]) -> str:
    items = [",".join(f"{k}:'{v}'" for k, v in spec.items()) for spec in sets]
    return "[" + ",".join("{" + item + "}" for item in items) + "]"


def eval_py(run_dir: Path, *overrides: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "eval.py", "model_path=bundled:all-MiniLM-L6-v2", "device=cpu",
                           f"hydra.run.dir={run_dir}", *overrides], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300, check=False)


def one_error_line(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 1, (proc.returncode, proc.stdout[-2000:], proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    lines = [line for line in proc.stderr.splitlines() if line.startswith("codiemb: error:")]
    assert len(lines) == 1, proc.stderr[-3000:]
    return lines[0]


@pytest.mark.parametrize("override, message", [
    ("batch_size=-3", "codiemb: error: batch_size=-3 must be an integer >= 1"),
    ("batch_size=0", "codiemb: error: batch_size=0 must be an integer >= 1"),
    ("batch_size=abc", "codiemb: error: batch_size=abc must be an integer >= 1"),
])
def test_eval_py_refuses_a_bad_batch_size_before_the_model_loads(tmp_path, override, message):
    proc = eval_py(tmp_path / "run", override)
    assert one_error_line(proc) == message
    assert not (tmp_path / "run" / "results.json").exists()


@pytest.mark.parametrize("options, message", [
    ({"batch_size": 1.5}, "batch_size=1.5 must be an integer >= 1"),
    ({"batch_size": True}, "batch_size=True must be an integer >= 1"),
    ({"precision": "fp16"}, "precision=fp16 must be one of auto, bf16, fp32"),
    ({"device": "gpu"}, "device=gpu is not a device"),
    ({"device": "cuda:99"}, "device=cuda:99 but"),
    ({"geometry": True, "geometry_max_pairs": 1}, "report.max_pairs=1 must be an integer >= 2"),
])
def test_eval_option_preflight(options, message):
    with pytest.raises(ConfigError) as raised:
        check_eval_options(**{"batch_size": 8, **options})
    assert str(raised.value).startswith(message) and "\n" not in str(raised.value)


def test_eval_set_limits_are_checked():
    from codiemb.eval.sets import EvalSet

    with pytest.raises(ConfigError, match=r"eval set 'x': max_pairs=0 must be an integer >= 2"):
        EvalSet("x", "sts", "jsonl", "x.jsonl", max_pairs=0)
    with pytest.raises(ConfigError, match=r"eval set 'y': max_queries=-1 must be an integer >= 1"):
        EvalSet("y", "ir", "beir", "y", max_queries=-1)


def sts_file(path: Path, rows: list[tuple[str, str, float]]) -> Path:
    path.write_text("".join(json.dumps({"task": "sts", "query": a, "positives": [b], "score": s}) + "\n"
                            for a, b, s in rows))
    return path


def unjudged_beir(root: Path) -> Path:
    (root / "qrels").mkdir(parents=True)
    (root / "corpus.jsonl").write_text('{"_id": "d1", "text": "cats sleep"}\n{"_id": "d2", "text": "dogs bark"}\n')
    (root / "queries.jsonl").write_text('{"_id": "q1", "text": "do cats sleep"}\n')
    (root / "qrels" / "dev.tsv").write_text("query-id\tcorpus-id\tscore\n")
    return root


@pytest.mark.parametrize("case", ["empty", "one_row", "unjudged"])
def test_eval_py_refuses_a_set_that_cannot_be_scored(tmp_path, case):
    if case == "empty":
        spec = {"name": "empty_sts", "task": "sts", "format": "jsonl", "path": str(sts_file(tmp_path / "e.jsonl", []))}
        expected = f"codiemb: error: {spec['path']}: eval set 'empty_sts' is empty (no pairs); task sts needs at least 2 pairs"
    elif case == "one_row":
        spec = {"name": "one_sts", "task": "sts", "format": "jsonl",
                "path": str(sts_file(tmp_path / "o.jsonl", [("a cat sits", "a cat is sitting", 4.0)]))}
        expected = f"codiemb: error: {spec['path']}: eval set 'one_sts' has 1 pair; task sts needs at least 2 pairs"
    else:
        spec = {"name": "unjudged", "task": "ir", "format": "beir", "path": str(unjudged_beir(tmp_path / "ir")),
                "split": "dev"}
        expected = (f"codiemb: error: {tmp_path / 'ir' / 'qrels' / 'dev.tsv'}: eval set 'unjudged' has no queries; "
                    "a retrieval set needs queries with at least one judgement of grade >= 1")
    proc = eval_py(tmp_path / "run", f"eval.sets={hydra_list([spec, EXAMPLE_IR])}")
    assert one_error_line(proc).startswith(expected)
    assert not (tmp_path / "run" / "results.json").exists()


def test_a_nan_score_is_written_as_null_with_a_warning(tmp_path):
    """Constant gold scores: Spearman is undefined. results.json must stay valid JSON (no bare NaN)."""
    rows = [("a cat sits on the mat", "a cat is on the mat", 3.0), ("a man plays guitar", "stocks fell", 3.0),
            ("dogs run in parks", "dogs run outside", 3.0)]
    spec = {"name": "const_sts", "task": "sts", "format": "jsonl", "path": str(sts_file(tmp_path / "c.jsonl", rows))}
    proc = eval_py(tmp_path / "run", f"eval.sets={hydra_list([spec, EXAMPLE_IR])}", "batch_size=4")
    assert proc.returncode == 0, proc.stderr[-3000:]

    def no_bare_constants(name):
        raise AssertionError(f"results.json holds a bare {name}")

    text = (tmp_path / "run" / "results.json").read_text()
    saved = json.loads(text, parse_constant=no_bare_constants)
    scores = saved["models"]["all-MiniLM-L6-v2"]["sets"]
    assert scores["const_sts"]["spearman"] is None and scores["const_sts"]["main_score"] is None
    assert scores["example_ir"]["ndcg@10"] > 0
    output = proc.stdout + proc.stderr
    assert "undefined scores written as null" in output and "const_sts.spearman" in output


def test_nan_to_null_reports_each_value():
    found: list[str] = []
    out = nan_to_null({"a": {"spearman": float("nan"), "n": 3.0}, "b": [float("inf"), 1]}, found)
    assert out == {"a": {"spearman": None, "n": 3.0}, "b": [None, 1]}
    assert found == ["a.spearman: nan", "b[0]: inf"]

