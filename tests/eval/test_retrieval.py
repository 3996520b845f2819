"""Exact search and IR metrics against plainly written brute-force references."""

from __future__ import annotations

import math
import random

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from codiemb.eval.retrieval import drop_identical_ids, evaluate_retrieval, exact_search, retrieval_metrics


def brute_force_top_k(q, d, doc_ids, query_ids, k):
    out = {}
    for i, qid in enumerate(query_ids):
        scores = [(float(q[i] @ d[j]), doc_ids[j]) for j in range(len(doc_ids))]
        scores.sort(key=lambda x: -x[0])
        out[qid] = {doc: s for s, doc in scores[:k]}
    return out


@settings(max_examples=25, deadline=None)
@given(n_queries=st.integers(1, 6), n_docs=st.integers(1, 40), chunk=st.integers(1, 17), k=st.integers(1, 50),
       seed=st.integers(0, 10_000))
def test_chunked_search_equals_brute_force(n_queries, n_docs, chunk, k, seed):
    g = torch.Generator().manual_seed(seed)
    q, d = torch.randn(n_queries, 8, generator=g), torch.randn(n_docs, 8, generator=g)
    doc_ids, query_ids = [f"d{i}" for i in range(n_docs)], [f"q{i}" for i in range(n_queries)]
    chunks = (d[i:i + chunk] for i in range(0, n_docs, chunk))
    got = exact_search(q, chunks, doc_ids, query_ids, top_k=k, query_block=2)
    want = brute_force_top_k(q, d, doc_ids, query_ids, k)
    assert got.keys() == want.keys()
    for qid in want:
        assert got[qid].keys() == want[qid].keys()
        for doc in want[qid]:
            assert got[qid][doc] == pytest.approx(want[qid][doc], abs=1e-5)


def reference_metrics(qrels, run):
    """nDCG@10 (linear gain, log2 discount), MRR@10, Recall@100, AP written out by hand."""
    totals = {"ndcg@10": 0.0, "mrr@10": 0.0, "recall@100": 0.0, "map": 0.0}
    for qid, judged in qrels.items():
        ranking = [doc for doc, _ in sorted(run[qid].items(), key=lambda x: (x[1], x[0]), reverse=True)]
        relevant = {d for d, g in judged.items() if g > 0}
        dcg = sum(judged.get(doc, 0) / math.log2(i + 2) for i, doc in enumerate(ranking[:10]))
        ideal = sorted((g for g in judged.values() if g > 0), reverse=True)[:10]
        idcg = sum(g / math.log2(i + 2) for i, g in enumerate(ideal))
        totals["ndcg@10"] += dcg / idcg if idcg else 0.0
        first = next((i for i, doc in enumerate(ranking[:10]) if doc in relevant), None)
        totals["mrr@10"] += 1.0 / (first + 1) if first is not None else 0.0
        totals["recall@100"] += len(relevant & set(ranking[:100])) / len(relevant) if relevant else 0.0
        hits, precision_sum = 0, 0.0
        for i, doc in enumerate(ranking):
            if doc in relevant:
                hits += 1
                precision_sum += hits / (i + 1)
        totals["map"] += precision_sum / len(relevant) if relevant else 0.0
    return {k: 100 * v / len(qrels) for k, v in totals.items()}


@pytest.mark.parametrize("seed", range(5))
def test_metrics_match_hand_written_reference_with_graded_relevance(seed):
    rng = random.Random(seed)
    docs = [f"d{i}" for i in range(150)]
    qrels, run = {}, {}
    for q in range(8):
        judged = rng.sample(docs, rng.randint(1, 12))
        qrels[f"q{q}"] = {d: rng.choice([0, 1, 2, 3]) for d in judged}
        qrels[f"q{q}"][judged[0]] = rng.choice([1, 2, 3])  # at least one relevant
        scores = rng.sample(range(10_000), 120)  # distinct scores: no tie ambiguity
        run[f"q{q}"] = {d: s / 10_000 for d, s in zip(rng.sample(docs, 120), scores)}
    got, want = retrieval_metrics(qrels, run), reference_metrics(qrels, run)
    for name in want:
        assert got[name] == pytest.approx(want[name], abs=1e-4), name


def test_hand_worked_example():
    # Ranking d3 (rel 0), d1 (rel 2), d2 (rel 1): DCG = 2/log2(3) + 1/2, IDCG = 2 + 1/log2(3).
    qrels = {"q": {"d1": 2, "d2": 1, "d3": 0}}
    run = {"q": {"d3": 0.9, "d1": 0.8, "d2": 0.7}}
    m = retrieval_metrics(qrels, run)
    assert m["ndcg@10"] == pytest.approx(100 * (2 / math.log2(3) + 0.5) / (2 + 1 / math.log2(3)))
    assert m["mrr@10"] == pytest.approx(50.0)
    assert m["recall@100"] == pytest.approx(100.0)
    assert m["map"] == pytest.approx(100 * (1 / 2 + 2 / 3) / 2)


def test_ignore_identical_ids_drops_the_query_itself(hash_encoder):
    corpus = {"a": "cats purr", "b": "cats sleep", "c": "dogs bark"}
    queries = {"a": "cats purr"}  # same id and text as doc "a": it would rank first
    qrels = {"a": {"b": 1}}
    kept, run_kept = evaluate_retrieval(hash_encoder, corpus, queries, qrels, top_k=2, return_run=True)
    dropped, run = evaluate_retrieval(hash_encoder, corpus, queries, qrels, top_k=2, ignore_identical_ids=True,
                                      return_run=True)
    assert "a" in run_kept["a"] and "a" not in run["a"] and len(run["a"]) == 2
    assert dropped["mrr@10"] == 100.0 and kept["mrr@10"] == 50.0
    assert drop_identical_ids({"x": {"x": 1.0, "y": 0.5}}) == {"x": {"y": 0.5}}


def test_evaluate_retrieval_encodes_queries_and_passages_separately_in_chunks(hash_encoder):
    corpus = {f"d{i}": f"text number {i}" for i in range(10)}
    queries = {"q1": "text number 3", "q2": "unjudged query"}
    evaluate_retrieval(hash_encoder, corpus, queries, {"q1": {"d3": 1}}, corpus_chunk_size=4)
    assert hash_encoder.calls == [("query", 1), ("passage", 4), ("passage", 4), ("passage", 2)]
