"""Exact dense retrieval over a whole corpus, scored with trec_eval's arithmetic (``pytrec_eval``).

Search: every query is scored against every document (cosine = dot product of normalised embeddings);
the corpus is encoded and scored in chunks of ``corpus_chunk_size`` documents and only a running top-k
per query is kept (:func:`codiemb.utils.topk.running_top_k`), so memory is ``O(queries x (k + chunk))``
instead of ``O(queries x corpus)``.

Metrics (x100, averaged over judged queries, as MTEB/BEIR report them):

* ``ndcg@10`` (primary): ``DCG@10 / IDCG@10`` with ``DCG@10 = sum_{i<=10} rel_i / log2(i + 1)``
  (trec_eval's ``ndcg_cut``: linear gain = the graded judgement, rank i from 1);
* ``mrr@10``: reciprocal rank of the first relevant (grade >= 1) document within the top 10;
* ``recall@100``: share of relevant documents found in the top 100;
* ``map``: mean average precision over the retrieved top-k (k = 1000, MTEB's ``map_at_1000``).

Why pytrec_eval: it is the reference trec_eval C code, BEIR and MTEB score with it, so the anchors match
by construction (torchmetrics' retrieval metrics differ on ties and on queries without relevant docs).
Ties are broken as trec_eval does: by score, then by document id, both descending.
"""

from __future__ import annotations

import pytrec_eval
import torch

from codiemb.utils.topk import running_top_k

MEASURES = {"ndcg_cut.10": "ndcg@10", "recall.100": "recall@100", "map": "map"}


def exact_search(query_embeddings: torch.Tensor, corpus_embeddings, doc_ids: list[str], query_ids: list[str],
                 top_k: int = 1000, *, query_block: int = 1024) -> dict[str, dict[str, float]]:
    """Top-k documents per query by dot product; ``corpus_embeddings`` may be a tensor or an iterator of
    chunk tensors (in ``doc_ids`` order), which is how a large corpus is streamed."""
    best_scores, best_index, offset = running_top_k(query_embeddings, corpus_embeddings, top_k,
                                                    query_block=query_block)
    if offset != len(doc_ids):
        raise ValueError(f"{offset} corpus embeddings for {len(doc_ids)} document ids")
    return {qid: {doc_ids[j]: float(s) for j, s in zip(best_index[row].tolist(), best_scores[row].tolist())}
            for row, qid in enumerate(query_ids)}


def drop_identical_ids(run: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    """BEIR's ``ignore_identical_ids``: a query never retrieves the document with its own id (sets such as
    ArguAna or Quora share ids between queries and corpus)."""
    return {qid: {d: s for d, s in docs.items() if d != qid} for qid, docs in run.items()}


def ranked(docs: dict[str, float]) -> list[tuple[str, float]]:
    """trec_eval's order: score descending, ties by document id descending."""
    return sorted(docs.items(), key=lambda item: (item[1], item[0]), reverse=True)


def retrieval_metrics(qrels: dict[str, dict[str, int]], run: dict[str, dict[str, float]]) -> dict[str, float]:
    """nDCG@10, MRR@10, Recall@100, MAP (x100), averaged over queries present in both qrels and run."""
    qrels = {q: {d: int(g) for d, g in docs.items()} for q, docs in qrels.items()}
    run = {q: docs for q, docs in run.items() if q in qrels}
    if not run:
        raise ValueError("no judged query in the run")
    per_query = pytrec_eval.RelevanceEvaluator(qrels, set(MEASURES)).evaluate(run)
    # trec_eval's recip_rank has no cut-off, so MRR@10 scores the run truncated to its top 10.
    top10 = {q: dict(ranked(docs)[:10]) for q, docs in run.items()}
    reciprocal = pytrec_eval.RelevanceEvaluator(qrels, {"recip_rank"}).evaluate(top10)
    out = {}
    for measure, name in MEASURES.items():
        key = measure.replace(".", "_")
        out[name] = 100.0 * sum(v[key] for v in per_query.values()) / len(per_query)
    out["mrr@10"] = 100.0 * sum(v["recip_rank"] for v in reciprocal.values()) / len(reciprocal)
    return {name: out[name] for name in ("ndcg@10", "mrr@10", "recall@100", "map")}


def iter_corpus_embeddings(encoder, texts: list[str], *, chunk_size: int, batch_size: int, **encode_kwargs):
    """Encode the corpus ``chunk_size`` documents at a time (each chunk length-sorted by ``encode``)."""
    for start in range(0, len(texts), chunk_size):
        yield encoder.encode(texts[start:start + chunk_size], kind="passage", batch_size=batch_size,
                             **encode_kwargs)


def evaluate_retrieval(encoder, corpus: dict[str, str], queries: dict[str, str],
                       qrels: dict[str, dict[str, int]], *, batch_size: int = 64, top_k: int = 1000,
                       corpus_chunk_size: int = 50_000, ignore_identical_ids: bool = False,
                       return_run: bool = False, **encode_kwargs):
    """Encode queries (``kind="query"``) and corpus (``kind="passage"``), search, score."""
    query_ids = [q for q in queries if q in qrels]
    doc_ids = list(corpus)
    query_emb = encoder.encode([queries[q] for q in query_ids], kind="query", batch_size=batch_size,
                               **encode_kwargs)
    corpus_emb = iter_corpus_embeddings(encoder, [corpus[d] for d in doc_ids], chunk_size=corpus_chunk_size,
                                        batch_size=batch_size, **encode_kwargs)
    # One extra hit per query keeps k documents after a query's own id is dropped.
    run = exact_search(query_emb, corpus_emb, doc_ids, query_ids, top_k + int(ignore_identical_ids))
    if ignore_identical_ids:
        run = {q: dict(ranked(drop_identical_ids({q: docs})[q])[:top_k]) for q, docs in run.items()}
    metrics = retrieval_metrics(qrels, run)
    return (metrics, run) if return_run else metrics
