"""Hard-negative mining: a brute-force reference on fixed embeddings, hand-worked margins, determinism,
and the Hydra app end to end with a tiny random encoder."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from codiemb.data.readers import read_dataset
from codiemb.data.schema import Record
from codiemb.errors import ConfigError
from codiemb.mining.miner import build_corpus, mine_from_embeddings, mine_records, write_jsonl

ROOT = Path(__file__).resolve().parents[1]
TINY = dict(hidden_size=128, num_hidden_layers=2, num_attention_heads=2, intermediate_size=256)


def reference(queries, corpus, positives, *, range_min, range_max, num_negatives, absolute_margin=None,
              relative_margin=None, max_score=None):
    """sentence-transformers' rule written out plainly: pool = top range_max + P by cosine; drop positives and
    margin/max_score failures; survivors ranked; window [range_min, range_max); the first num_negatives."""
    def cos(a, b):
        return sum(x * y for x, y in zip(a, b)) / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))

    out = []
    for q, pos in zip(queries, positives):
        scores = [cos(q, c) for c in corpus]
        ranked = sorted(range(len(corpus)), key=lambda i: -scores[i])[:range_max + len(set(pos))]
        s_plus = min(scores[p] for p in pos)
        survivors = [i for i in ranked if i not in pos
                     and not (absolute_margin is not None and scores[i] + absolute_margin > s_plus)
                     and not (relative_margin is not None and scores[i] > s_plus - abs(s_plus) * relative_margin)
                     and not (max_score is not None and scores[i] > max_score)]
        out.append([(i, scores[i]) for i in survivors[range_min:range_max][:num_negatives]])
    return out


def random_problem(seed=0, n_queries=9, n_corpus=60, dim=8):
    gen = torch.Generator().manual_seed(seed)
    queries, corpus = torch.randn(n_queries, dim, generator=gen), torch.randn(n_corpus, dim, generator=gen)
    positives = [torch.randperm(n_corpus, generator=gen)[:1 + q % 3].tolist() for q in range(n_queries)]
    return queries, corpus, positives


@pytest.mark.parametrize("options", [
    dict(range_min=0, range_max=5, num_negatives=5),
    dict(range_min=10, range_max=30, num_negatives=3),
    dict(range_min=2, range_max=20, num_negatives=4, absolute_margin=0.1),
    dict(range_min=2, range_max=20, num_negatives=4, relative_margin=0.3),
    dict(range_min=0, range_max=50, num_negatives=6, absolute_margin=0.0, max_score=0.2),
    dict(range_min=5, range_max=58, num_negatives=50, relative_margin=0.05),  # windows run short
])
@pytest.mark.parametrize("chunk_size,corpus_block,unit", [(1, 16384, False), (4, 16384, False), (100, 16384, False),
                                                          (4, 7, False), (100, 1, True), (3, 59, True)])
def test_top_sampling_matches_brute_force(options, chunk_size, corpus_block, unit):
    """Scanning the corpus in blocks (a running top-k), of raw or unit rows, changes nothing."""
    queries, corpus, positives = random_problem()
    if unit:
        queries, corpus = torch.nn.functional.normalize(queries, dim=-1), torch.nn.functional.normalize(corpus, dim=-1)
    got = mine_from_embeddings(queries, corpus, positives, sampling="top", chunk_size=chunk_size,
                               corpus_block=corpus_block, **options)
    want = reference(queries.tolist(), corpus.tolist(), positives, **options)
    assert [[i for i, _ in row] for row in got] == [[i for i, _ in row] for row in want]
    for got_row, want_row in zip(got, want):
        assert [s for _, s in got_row] == pytest.approx([s for _, s in want_row], abs=1e-5)


def test_scores_are_cosines_even_for_rows_a_hair_off_unit_length():
    """Rows of norm 1 + 5e-5 (an encoder's output after a cast) are normalised like any other: the scores are exact
    cosines, not dot products that differ in the fifth digit and reorder near-ties."""
    queries, corpus, positives = random_problem()
    queries, corpus = torch.nn.functional.normalize(queries, dim=-1), torch.nn.functional.normalize(corpus, dim=-1)
    options = dict(range_min=0, range_max=20, num_negatives=5, sampling="top")
    exact = mine_from_embeddings(queries, corpus, positives, **options)
    off = mine_from_embeddings(queries, corpus * (1 + 5e-5), positives, **options)
    assert [s for row in off for _, s in row] == pytest.approx([s for row in exact for _, s in row], abs=1e-6)


def test_random_sampling_draws_from_the_window_deterministically():
    queries, corpus, positives = random_problem(seed=1)
    options = dict(range_min=3, range_max=25, num_negatives=4, max_score=0.6)
    window = reference(queries.tolist(), corpus.tolist(), positives, **{**options, "num_negatives": 100})
    first = mine_from_embeddings(queries, corpus, positives, seed=7, chunk_size=2, **options)
    for row, allowed in zip(first, window):
        allowed_ids = [i for i, _ in allowed]
        assert len(row) == min(4, len(allowed_ids)) and {i for i, _ in row} <= set(allowed_ids)
        assert [s for _, s in row] == sorted((s for _, s in row), reverse=True)
    assert sum(map(len, first)) > 20  # the check below is not vacuous

    def ids(rows):  # scores may differ in the last bit between chunk sizes (BLAS blocking); ids may not
        return [[i for i, _ in row] for row in rows]

    assert ids(mine_from_embeddings(queries, corpus, positives, seed=7, chunk_size=50, **options)) == ids(first)
    assert ids(mine_from_embeddings(queries, corpus, positives, seed=8, chunk_size=2, **options)) != ids(first)


def test_margins_on_a_hand_worked_example():
    """Query (1, 0); unit vectors at cosines 0.8 (positive), 0.9, 0.78, 0.7, 0.5, 0.2."""
    cosines = [0.8, 0.9, 0.78, 0.7, 0.5, 0.2]
    corpus = torch.tensor([[c, math.sqrt(1 - c * c)] for c in cosines])
    query, positives = torch.tensor([[1.0, 0.0]]), [[0]]

    def mined(**margins):
        rows = mine_from_embeddings(query, corpus, positives, range_min=0, range_max=5, num_negatives=5,
                                    sampling="top", **margins)
        return [round(s, 4) for _, s in rows[0]]

    assert mined() == [0.9, 0.78, 0.7, 0.5, 0.2]
    assert mined(absolute_margin=0.05) == [0.7, 0.5, 0.2]     # 0.78 + 0.05 > 0.8
    assert mined(absolute_margin=0.15) == [0.5, 0.2]          # 0.7 + 0.15 > 0.8
    assert mined(relative_margin=0.05) == [0.7, 0.5, 0.2]     # threshold 0.8 - 0.04 = 0.76
    assert mined(relative_margin=0.2) == [0.5, 0.2]           # threshold 0.64
    assert mined(max_score=0.75) == [0.7, 0.5, 0.2]
    # range_min counts survivors, as in sentence-transformers: the two dropped ones do not use it up
    rows = mine_from_embeddings(query, corpus, positives, range_min=1, range_max=5, num_negatives=4,
                                sampling="top", absolute_margin=0.05)
    assert [round(s, 4) for _, s in rows[0]] == [0.5, 0.2]


@pytest.mark.parametrize("bad", [dict(range_min=5, range_max=5), dict(range_min=-1),
                                 dict(num_negatives=0), dict(range_min=0, range_max=2, num_negatives=3),
                                 dict(sampling="best")])
def test_bad_windows_raise(bad):
    queries, corpus, positives = random_problem()
    with pytest.raises(ConfigError):
        mine_from_embeddings(queries, corpus, positives, **{"range_min": 0, "range_max": 10, **bad})


@pytest.mark.parametrize("key", ["chunk_size", "corpus_block"])
def test_a_block_size_below_one_is_a_config_error(key):
    queries, corpus, positives = random_problem()
    with pytest.raises(ConfigError, match=key):
        mine_from_embeddings(queries, corpus, positives, **{key: 0})


@pytest.fixture(scope="module")
def tiny_encoder():
    from codiemb.models.encoder import Encoder

    torch.manual_seed(0)
    return Encoder.from_pretrained("bundled:all-MiniLM-L6-v2", random_init=True, config_overrides=TINY).eval()


def toy_records():
    topics = ["cats", "rivers", "stars", "bread", "chess", "rain", "trains", "music"]
    return [Record(task="ir", query=f"what about {t}?", positives=(f"{t} are discussed here.",),
                   negatives=("an old given negative.",) if i == 0 else (), dataset="toy")
            for i, t in enumerate(topics)]


def test_mine_records_with_an_encoder_round_trips_as_unified_jsonl(tiny_encoder, tmp_path):
    records = toy_records()
    corpus = [f"filler passage number {i}." for i in range(20)] + ["cats are discussed here."]  # a duplicate
    options = dict(corpus=corpus, range_min=1, range_max=10, num_negatives=3, seed=3, show_progress=False)
    mined = mine_records(records, tiny_encoder, **options)
    texts, _ = build_corpus(records, corpus)
    assert len(texts) == 20 + 8 + 1  # the duplicate positive counted once
    for before, after in zip(records, mined):
        new = after.negatives[len(before.negatives):]
        assert after.negatives[:len(before.negatives)] == before.negatives  # existing negatives kept first
        assert len(new) == 3 and not set(new) & set(before.positives) and set(new) <= set(texts)
    assert mine_records(records, tiny_encoder, **options) == mined  # same seed, same output
    out = tmp_path / "mined.jsonl"
    write_jsonl(mined, out, with_scores=True)
    back = read_dataset("jsonl", str(out), name="toy", task="ir").records
    assert [(r.query, r.positives, r.negatives) for r in back] == [(r.query, r.positives, r.negatives) for r in mined]
    assert all(len(json.loads(line)["mined_scores"]) == 3 for line in out.read_text().splitlines())


def test_hydra_app_end_to_end(tmp_path):
    data = tmp_path / "in.jsonl"
    data.write_text("".join(json.dumps({"query": r.query, "pos": list(r.positives)}) + "\n" for r in toy_records()))
    out = tmp_path / "out.jsonl"
    overrides = [f"input.path={data}", "input.format=jsonl", "input.split=null", f"output={out}",
                 "range_min=0", "range_max=4", "num_negatives=2", "seed=5", "show_progress=false",
                 "+encoder.random_init=true", *(f"+encoder.config_overrides.{k}={v}" for k, v in TINY.items()),
                 f"hydra.run.dir={tmp_path / 'run'}"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline", "PROJECT_ROOT": str(ROOT)}
    done = subprocess.run([sys.executable, str(ROOT / "mine.py"), *overrides], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 8 and all(len(r["negatives"]) == 2 and r["task"] == "ir" for r in rows)
    assert all(not set(r["negatives"]) & set(r["positives"]) for r in rows)


@pytest.mark.slow  # ~10 s alone, more on a loaded machine (builds a second model stack)
def test_agrees_with_sentence_transformers(tiny_encoder, tmp_path):
    """The same tiny model exported to the sentence-transformers layout, mined by its reference code."""
    from datasets import Dataset
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.util import mine_hard_negatives

    tiny_encoder.save(tmp_path / "tiny")
    st_model = SentenceTransformer(str(tmp_path / "tiny"), device="cpu")
    records = toy_records()
    corpus = [f"passage {i} about {w}." for i, w in enumerate("abcdefghijklmnopqrstuvwxyz")]
    options = dict(range_min=2, range_max=12, num_negatives=3, absolute_margin=0.0)
    ours = mine_records(records, tiny_encoder, corpus=corpus, sampling="top", keep_existing_negatives=False,
                        show_progress=False, **options)
    pairs = Dataset.from_dict({"query": [r.query for r in records], "answer": [r.positives[0] for r in records]})
    theirs = mine_hard_negatives(pairs, st_model, corpus=corpus + ["an old given negative."],
                                 sampling_strategy="top", output_format="n-tuple", verbose=False, **options)
    mined_by_st = {row["query"]: (row["negative_1"], row["negative_2"], row["negative_3"]) for row in theirs}
    assert len(mined_by_st) >= 4  # queries with fewer than 3 valid negatives are dropped by sentence-transformers
    assert all(mined_by_st[r.query] == r.negatives for r in ours if r.query in mined_by_st)
