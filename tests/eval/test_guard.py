"""The out-of-distribution guard (issue #19): pair-classification metrics against hand-worked values and a
brute-force reference, per-source STS sets, leave-one-source-out splits, the base comparison, and the
``eval=guard`` group on the real shared data."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from codiemb.data.readers.stsb import load_stsb_pairs
from codiemb.errors import ConfigError
from codiemb.eval.guard import compare_with_base, loso_splits
from codiemb.eval.pairs import average_precision, max_f1, pair_scores
from codiemb.eval.runner import evaluate, summarize
from codiemb.eval.sets import (
    EvalSet,
    STSData,
    load_set,
    load_stsb_genre_pairs,
    parse_sets,
    shrink_pairs,
    stsb_genre,
)

from .conftest import SHARED

ROOT = Path(__file__).resolve().parents[2]


# ---- pair classification -------------------------------------------------------------------------------

def brute_force_ap(scores, labels):
    """AP by its definition: for every distinct threshold t (high to low), precision of "score >= t" times
    the recall it adds."""
    positives = sum(labels)
    ap, previous_recall = 0.0, 0.0
    for t in sorted(set(scores), reverse=True):
        chosen = [y for s, y in zip(scores, labels) if s >= t]
        recall = sum(chosen) / positives
        ap += (recall - previous_recall) * sum(chosen) / len(chosen)
        previous_recall = recall
    return ap


def brute_force_max_f1(scores, labels):
    best = 0.0
    for t in set(scores):
        tp = sum(y for s, y in zip(scores, labels) if s >= t)
        predicted = sum(1 for s in scores if s >= t)
        if tp:
            precision, recall = tp / predicted, tp / sum(labels)
            best = max(best, 2 * precision * recall / (precision + recall))
    return best


def test_average_precision_hand_worked():
    # ranks 1..4 = +, -, +, -: AP = (1/1 + 2/3) / 2
    assert average_precision([0.9, 0.8, 0.7, 0.6], [1, 0, 1, 0]) == pytest.approx(5 / 6)
    # a tie between a positive and a negative enters together: P = 1/2 at R = 1/2, then 2/3 at R = 1
    assert average_precision([0.5, 0.5, 0.2], [1, 0, 1]) == pytest.approx(0.5 * 0.5 + 0.5 * 2 / 3)
    assert average_precision([0.1, 0.9], [1, 1]) == 1.0
    assert average_precision([0.3, 0.2], [0, 0]) == 0.0
    # max F1 on the first example: threshold 0.7 -> P 2/3, R 1 -> F1 0.8
    assert max_f1([0.9, 0.8, 0.7, 0.6], [1, 0, 1, 0]) == pytest.approx(0.8)
    with pytest.raises(ValueError):
        average_precision([0.1], [1, 0])


@pytest.mark.parametrize("seed", range(5))
def test_pair_metrics_match_brute_force_and_sklearn(seed):
    rng = random.Random(seed)
    n = rng.randint(5, 60)
    scores = [round(rng.random(), 1) for _ in range(n)]  # one decimal: many ties
    labels = [int(rng.random() < 0.4) for _ in range(n)]
    labels[0] = 1
    assert average_precision(scores, labels) == pytest.approx(brute_force_ap(scores, labels))
    assert max_f1(scores, labels) == pytest.approx(brute_force_max_f1(scores, labels))
    sklearn = pytest.importorskip("sklearn.metrics")
    assert average_precision(scores, labels) == pytest.approx(sklearn.average_precision_score(labels, scores))
    assert pair_scores(scores, labels)["ap"] == pytest.approx(100 * brute_force_ap(scores, labels))


# ---- per-source STS sets, subsampling, LOSO --------------------------------------------------------------

STSB_ROWS = [("main-news", "4.0", "a b", "a c"), ("main-captions", "1.0", "dog runs", "cat sits"),
             ("main-forums", "2.5", 'he said "x"', "she said y"), ("main-news", "0.5", "p q", "r s"),
             ("main-forum", "3.0", "m n", "m o")]


def write_stsb(path: Path):
    path.write_text("".join(f"{g}\tfile\t2012\t{i}\t{s}\t{a}\t{b}\n" for i, (g, s, a, b) in enumerate(STSB_ROWS)))
    return path


def test_stsb_genres_partition_the_file_and_normalise_forum(tmp_path):
    path = write_stsb(tmp_path / "sts.csv")
    assert stsb_genre("main-forums") == stsb_genre("main-forum") == "forum" and stsb_genre("main-news") == "news"
    news = load_stsb_genre_pairs(str(path), ["news"])
    assert news == (["a b", "p q"], ["a c", "r s"], [4.0, 0.5])
    forum = load_stsb_genre_pairs(str(path), "forum")
    assert forum[0] == ['he said "x"', "m n"]  # both spellings, quotes kept (QUOTE_NONE)
    union = [load_stsb_genre_pairs(str(path), [g]) for g in ("news", "captions", "forum")]
    assert sorted(zip(*load_stsb_pairs(str(path)))) == sorted(p for part in union for p in zip(*part))
    with pytest.raises(ConfigError, match="genres present"):
        load_stsb_genre_pairs(str(path), ["headlines"])
    spec = EvalSet.from_config({"name": "n", "task": "sts", "format": "stsb", "path": str(path), "genres": ["news"]})
    assert load_set(spec).scores == [4.0, 0.5]
    with pytest.raises(ConfigError, match="needs format stsb"):
        load_set(EvalSet.from_config({"name": "n", "task": "sts", "format": "jsonl", "path": str(path),
                                      "genres": ["news"]}))


def test_shrink_pairs_is_seeded_and_keeps_file_order():
    data = STSData([f"a{i}" for i in range(50)], [f"b{i}" for i in range(50)], [float(i) for i in range(50)])
    small = shrink_pairs(data, 10, seed=1)
    assert len(small.scores) == 10 and small.scores == sorted(small.scores)
    assert all(f"a{int(s)}" == a and f"b{int(s)}" == b for a, b, s in zip(small.sentences1, small.sentences2,
                                                                         small.scores))
    assert shrink_pairs(data, 10, seed=1) == small and shrink_pairs(data, 10, seed=2) != small
    assert shrink_pairs(data, 100) is data and shrink_pairs(data, None) is data


def test_loso_splits():
    assert loso_splits(["news", "captions", "forum"]) == [("news", ["captions", "forum"]),
                                                        ("captions", ["news", "forum"]),
                                                        ("forum", ["news", "captions"])]
    for held, kept in loso_splits("abcd"):
        assert held not in kept and len(kept) == 3
    with pytest.raises(ValueError):
        loso_splits(["a"])
    with pytest.raises(ValueError):
        loso_splits(["a", "a"])


def test_loso_on_a_tiny_semeval_directory(tmp_path):
    """Each source read alone (the reader's ``subsets``), and the sources together give the whole directory."""
    sources = {"A": [("x y", "x z", 4.0), ("p", "q", 1.0)], "B": [("m n", "m n", 5.0)], "C": [("u", "v", 2.0)]}
    for name, rows in sources.items():
        (tmp_path / f"STS.input.{name}.txt").write_text("".join(f"{a}\t{b}\n" for a, b, _ in rows))
        (tmp_path / f"STS.gs.{name}.txt").write_text("".join(f"{s}\n" for *_, s in rows))
    spec = lambda subsets: EvalSet.from_config({"name": "s", "task": "sts", "format": "semeval_sts",  # noqa: E731
                                                "path": str(tmp_path), "subsets": subsets})
    for held, kept in loso_splits(sorted(sources)):
        held_data, kept_data = load_set(spec([held])), load_set(spec(kept))
        assert held_data.sentences1 == [a for a, _, _ in sources[held]]
        assert set(kept_data.sentences1) == {a for s in kept for a, _, _ in sources[s]}
        assert not set(held_data.sentences1) & set(kept_data.sentences1)


# ---- pairs task in the runner, and the base comparison ---------------------------------------------------

def write_mrpc(path: Path) -> Path:
    rows = [("1", "a cat sits on the mat", "a cat is on the mat"), ("0", "the sun is hot", "stocks fell sharply"),
            ("1", "dogs run in parks", "dogs run outside"), ("0", "rain falls today", "a cat sleeps")]
    path.write_text("\ufeffQuality\t#1 ID\t#2 ID\t#1 String\t#2 String\n" +
                    "".join(f"{q}\t{i}\t{i + 100}\t{a}\t{b}\n" for i, (q, a, b) in enumerate(rows)))
    return path


def test_pairs_set_in_the_runner(tmp_path, hash_encoder, tiny_sets):
    mrpc = write_mrpc(tmp_path / "msr_paraphrase_test.txt")
    sets = tiny_sets + [{"name": "mrpc", "task": "pairs", "format": "mrpc", "path": str(mrpc)}]
    data = load_set(parse_sets(sets)[-1])
    assert data.scores == [1.0, 0.0, 1.0, 0.0]
    results = evaluate(hash_encoder, sets)
    cosines = [float(hash_encoder.vector(a) @ hash_encoder.vector(b)) for a, b in zip(data.sentences1,
                                                                                         data.sentences2)]
    assert results["mrpc"]["ap"] == pytest.approx(100 * brute_force_ap(cosines, data.scores), abs=1e-4)
    assert results["mrpc"]["main_score"] == results["mrpc"]["ap"] and results["mrpc"]["pairs"] == 4
    summary = summarize(results, sets)
    assert summary["pairs_ap"] == results["mrpc"]["ap"]
    assert summary["mean"] == pytest.approx((summary["sts_spearman"] + summary["ir_ndcg@10"] + summary["pairs_ap"]) / 3)


def test_compare_with_base_hand_worked():
    sets = [{"name": "s", "task": "sts", "format": "jsonl", "path": "p"},
            {"name": "i", "task": "ir", "format": "beir", "path": "p"},
            {"name": "m", "task": "pairs", "format": "mrpc", "path": "p"}]
    base = {"s": {"spearman": 80.0}, "i": {"ndcg@10": 50.0}, "m": {"ap": 90.0}}
    model = {"s": {"spearman": 83.0}, "i": {"ndcg@10": 49.0}, "m": {"ap": 89.9}}
    verdict = compare_with_base(model, base, sets)
    assert verdict["delta"] == pytest.approx({"s": 3.0, "i": -1.0, "m": -0.1})
    assert verdict["mean_delta"] == pytest.approx(1.9 / 3) and verdict["mean"] == pytest.approx((83 + 49 + 89.9) / 3)
    assert verdict["below"] == ["i", "m"] and verdict["worst"] == ("i", pytest.approx(-1.0))
    assert compare_with_base(model, base, sets, tolerance=0.2)["below"] == ["i"]
    assert compare_with_base(model, base, sets, only=["s"])["below"] == []


# ---- the eval=guard group on the real data ---------------------------------------------------------------

def compose_guard(config: str, overrides: list[str]):
    with initialize_config_dir(str(ROOT / "configs"), version_base="1.3"):
        return compose(config, overrides=overrides, return_hydra_config=True)


def test_guard_group_composes_for_eval_and_for_validation_with_shrink_options():
    cfg = compose_guard("eval", ["eval=guard", "eval.max_pairs=100"])
    sets = OmegaConf.to_container(cfg.eval.sets, resolve=True)
    assert {s["task"] for s in sets} == {"sts", "ir", "pairs"}
    assert all(s.get("max_pairs") == (2000 if s["name"] == "snli_test_graded" else 100)
               for s in sets if s["task"] != "ir")
    train = compose_guard("train", ["eval@val=guard", "val.max_queries=20"])
    val_sets = OmegaConf.to_container(train.callbacks.validation, resolve=True)["sets"]
    assert [s["name"] for s in val_sets] == [s["name"] for s in sets]
    assert all(s.get("max_queries") == 20 for s in val_sets if s["task"] == "ir" and s["name"] != "noveleval")


@pytest.mark.skipif(not (SHARED / "mrpc").is_dir(), reason="../shared/data not present")
def test_guard_sets_load_from_the_shared_data():
    cfg = compose_guard("eval", ["eval=guard", f"paths.root_dir={ROOT}"])
    sizes = {}
    for spec in parse_sets(cfg.eval.sets):
        data = load_set(spec)
        sizes[spec.name] = len(data.scores) if spec.task != "ir" else (len(data.qrels), len(data.corpus))
    assert sizes["sts12_msrpar"] == 750 and sizes["sts12_msrvid"] == 750 and sizes["sts12_smteuroparl"] == 734
    assert sizes["stsb_dev_news"] == 500 and sizes["stsb_dev_captions"] == 625 and sizes["stsb_dev_forum"] == 375
    assert sizes["snli_test_graded"] == 2000 and sizes["snli_test_pooled"][0] == 2921
    assert sizes["mrpc_test"] == 1725 and sizes["noveleval"] == (21, 420) and sizes["wikiqa_test_pooled"][0] == 243
    mrpc = load_set([s for s in parse_sets(cfg.eval.sets) if s.name == "mrpc_test"][0])
    assert set(mrpc.scores) == {0.0, 1.0} and sum(mrpc.scores) == 1147  # MRPC test: 1147 paraphrases


def test_snli_read_as_graded_pairs(tmp_path):
    (tmp_path / "s1.test").write_text("a man sleeps . \nthe dog runs .\nthe dog runs .\n")
    (tmp_path / "s2.test").write_text("a person rests .\na cat sits .\nan animal moves .\n")
    (tmp_path / "labels.test").write_text("entailment\ncontradiction\nneutral\n")
    spec = EvalSet.from_config({"name": "snli", "task": "sts", "format": "snli", "split": "test",
                                "path": str(tmp_path)})
    data = load_set(spec)
    assert data.sentences1 == ["a man sleeps .", "the dog runs .", "the dog runs ."]
    assert data.scores == [2.0, 0.0, 1.0]
    (tmp_path / "labels.test").write_text("entailment\nmaybe\nneutral\n")
    with pytest.raises(ConfigError, match="unknown SNLI labels"):
        load_set(spec)
