"""Eval-set specs, loading, shrinking, the runner's summary, and the result files."""

from __future__ import annotations

import json

import pytest

from codiemb.data.schema import Record
from codiemb.errors import ConfigError
from codiemb.eval.report import write_results
from codiemb.eval.runner import evaluate, summarize
from codiemb.eval.sets import EvalSet, IRData, load_set, parse_sets, records_to_ir, shrink_ir
from codiemb.eval.sts import evaluate_sts


def test_specs_validate_and_reject_duplicates():
    spec = EvalSet.from_config({"name": "x", "task": "sts", "format": "jsonl", "path": "p", "score_range": [0, 1]})
    assert spec.options == {"score_range": [0, 1]}
    with pytest.raises(ConfigError, match="lacks path"):
        EvalSet.from_config({"name": "x", "task": "sts", "format": "jsonl"})
    with pytest.raises(ConfigError, match="task must be"):
        EvalSet.from_config({"name": "x", "task": "clf", "format": "jsonl", "path": "p"})
    with pytest.raises(ConfigError, match="repeated: x"):
        parse_sets([spec, spec])
    with pytest.raises(ConfigError, match="does not exist"):
        load_set(EvalSet("y", "ir", "beir", "/nonexistent"))


def test_records_to_ir_shares_documents_between_queries():
    records = [Record("ir", "q one", ("p shared", "p1"), ("n1",)), Record("ir", "q two", ("p shared",), ())]
    data = records_to_ir(records)
    assert data.corpus == {"d0": "p shared", "d1": "p1", "d2": "n1"}
    assert data.qrels == {"q0": {"d0": 1, "d1": 1, "d2": 0}, "q1": {"d0": 1}}


def test_shrink_keeps_judged_documents_and_the_requested_sizes():
    corpus = {f"d{i}": f"t{i}" for i in range(100)}
    qrels = {f"q{i}": {f"d{i}": 1, f"d{i + 50}": 0} for i in range(20)}
    data = IRData(corpus, {q: q for q in qrels}, qrels)
    small = shrink_ir(data, max_queries=5, max_corpus=7, seed=3)
    assert len(small.qrels) == 5 and small.queries.keys() == small.qrels.keys()
    judged = {d for docs in small.qrels.values() for d in docs}
    assert judged <= small.corpus.keys() and len(small.corpus) == len(judged) + 7
    assert shrink_ir(data, 5, 7, seed=3).corpus == small.corpus  # deterministic


def test_runner_and_summary_match_direct_calls(hash_encoder, tiny_sets):
    results = evaluate(hash_encoder, tiny_sets)
    sts = load_set(parse_sets(tiny_sets)[0])
    direct = evaluate_sts(hash_encoder, sts.sentences1, sts.sentences2, sts.scores)
    assert results["tiny_sts"]["spearman"] == pytest.approx(direct["spearman"])
    assert results["tiny_ir"]["queries"] == 3 and results["tiny_ir"]["docs"] == 6
    summary = summarize(results, tiny_sets)
    assert summary["mean"] == pytest.approx((results["tiny_sts"]["spearman"] + results["tiny_ir"]["ndcg@10"]) / 2)
    assert set(summarize({"tiny_ir": results["tiny_ir"]}, tiny_sets)) == {"ir_ndcg@10", "mean"}


def test_result_files_hold_every_number(tmp_path, hash_encoder, tiny_sets):
    results = evaluate(hash_encoder, tiny_sets)
    models = {"base": {"path": "b", "sets": results, "summary": summarize(results, tiny_sets)},
              "trained": {"path": "t", "sets": results, "summary": summarize(results, tiny_sets)}}
    table = write_results(tmp_path, models, tiny_sets)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["models"]["base"]["sets"]["tiny_ir"]["ndcg@10"] == pytest.approx(results["tiny_ir"]["ndcg@10"])
    assert f"{results['tiny_sts']['spearman']:.2f}" in table and "+0.00" in table
    assert table in (tmp_path / "results.md").read_text()
