"""STS evaluator against a plainly written Spearman/Pearson."""

from __future__ import annotations

import math

import pytest
import torch

from codiemb.eval.sts import evaluate_sts, pair_cosines


def average_ranks(values):
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def pearson(x, y):
    mx, my = sum(x) / len(x), sum(y) / len(y)
    cov = sum((a - mx) * (b - my) for a, b in zip(x, y))
    return cov / math.sqrt(sum((a - mx) ** 2 for a in x) * sum((b - my) ** 2 for b in y))


def test_spearman_and_pearson_of_cosines_match_reference(hash_encoder):
    s1 = ["a cat sits", "a dog runs", "the sun shines", "birds fly high", "kids play ball", "rain falls"]
    s2 = ["a cat sat", "a dog walks", "stocks fell", "birds fly", "kids play", "a cat sleeps"]
    gold = [4.5, 3.0, 0.5, 4.0, 4.0, 1.0]  # contains a tie
    scores, cosines = evaluate_sts(hash_encoder, s1, s2, gold, return_predictions=True)
    want_cos = [float(hash_encoder.vector(a) @ hash_encoder.vector(b)) for a, b in zip(s1, s2)]
    assert cosines.tolist() == pytest.approx(want_cos, abs=1e-6)
    assert scores["spearman"] == pytest.approx(100 * pearson(average_ranks(want_cos), average_ranks(gold)))
    assert scores["pearson"] == pytest.approx(100 * pearson(want_cos, gold))
    assert hash_encoder.calls == [("query", 12)]  # both sides in one call


def test_pair_cosines_do_not_need_normalised_inputs():
    a, b = torch.tensor([[3.0, 4.0], [1.0, 0.0]]), torch.tensor([[6.0, 8.0], [0.0, 2.0]])
    assert pair_cosines(a, b).tolist() == pytest.approx([1.0, 0.0])


def test_mismatched_lengths_raise(hash_encoder):
    with pytest.raises(ValueError):
        evaluate_sts(hash_encoder, ["a"], ["b", "c"], [1.0])
