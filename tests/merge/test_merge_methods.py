"""Hand-worked numeric examples for every merge rule (values worked out in the comments)."""

import math

import pytest
import torch

from codiemb.errors import ConfigError
from codiemb.merge.methods import (
    ChunkContext,
    dare,
    delta_coefficients,
    delta_merge,
    make_rule,
    task_arithmetic,
    ties,
    uniform,
)

W0 = torch.tensor([0.0, 0.0, 1.0, 2.0])
W1 = torch.tensor([1.0, -2.0, 1.0, 2.0])   # d1 = [1, -2, 0, 0]
W2 = torch.tensor([3.0, 2.0, 1.0, 4.0])    # d2 = [3,  2, 0, 2]


def close(actual, expected):
    torch.testing.assert_close(actual, torch.tensor(expected, dtype=actual.dtype), rtol=1e-6, atol=1e-6)


def test_delta_element_hand_worked():
    # el0: a = (1/4, 3/4) -> 0 + 1/4*1 + 3/4*3 = 2.5;  el1: a = (1/2, 1/2) -> -1 + 1 = 0
    # el2: both deltas 0 -> keeps w0 = 1;               el3: a = (0, 1) -> 2 + 2 = 4
    close(delta_merge(W0, [W1, W2]), [2.5, 0.0, 1.0, 4.0])


def test_delta_power_and_lambda():
    # p = 2, el0: a = (1, 9) / 10 -> 0.1*1 + 0.9*3 = 2.8; lam = 0.5 halves the merged delta.
    close(delta_merge(W0, [W1, W2], p=2), [2.8, 0.0, 1.0, 4.0])
    close(delta_merge(W0, [W1, W2], p=2, lam=0.5), [1.4, 0.0, 1.0, 3.0])
    # p = 0: every a_k = 1/2 -> the uniform average.
    close(delta_merge(W0, [W1, W2], p=0), [2.0, 0.0, 1.0, 3.0])


def test_delta_tensor_granularity_uses_whole_tensor_norm():
    n1, n2 = math.sqrt(5), math.sqrt(17)  # ||d1||, ||d2||
    a1, a2 = n1 / (n1 + n2), n2 / (n1 + n2)
    expected = [a1 * 1 + a2 * 3, a1 * -2 + a2 * 2, 1.0, 2 + a2 * 2]
    close(delta_merge(W0, [W1, W2], granularity="tensor"), expected)
    # Element and tensor granularity differ exactly where the per-element shares differ from the global ones.
    assert not torch.allclose(delta_merge(W0, [W1, W2]), delta_merge(W0, [W1, W2], granularity="tensor"))


def test_delta_row_granularity_on_a_matrix():
    w0 = torch.zeros(2, 2)
    w1 = torch.tensor([[3.0, 4.0], [1.0, 0.0]])   # row norms 5, 1
    w2 = torch.tensor([[0.0, 5.0], [0.0, 3.0]])   # row norms 5, 3
    # row 0: a = (1/2, 1/2) -> [1.5, 4.5]; row 1: a = (1/4, 3/4) -> [0.25, 2.25]
    close(delta_merge(w0, [w1, w2], granularity="row"), [[1.5, 4.5], [0.25, 2.25]])
    # element granularity, row 0 col 0: a = (1, 0) -> 3 (differs from row's 1.5)
    assert delta_merge(w0, [w1, w2])[0, 0].item() == pytest.approx(3.0)
    # a 1-D tensor's rows are its elements
    torch.testing.assert_close(delta_merge(W0, [W1, W2], granularity="row"), delta_merge(W0, [W1, W2]))


def test_delta_tensor_norms_from_context_match_whole_tensor():
    deltas = torch.stack([W1 - W0, W2 - W0])
    whole = delta_coefficients(deltas, granularity="tensor")
    norms = torch.linalg.vector_norm(deltas, dim=1)
    chunk = delta_coefficients(deltas[:, :2], granularity="tensor", norms=norms)
    torch.testing.assert_close(chunk.expand(2, 2), whole.expand(2, 4)[:, :2])


def test_uniform_and_task_arithmetic():
    close(uniform(W0, [W1, W2]), [2.0, 0.0, 1.0, 3.0])            # (w1 + w2) / 2
    close(task_arithmetic(W0, [W1, W2], lam=0.5), [2.0, 0.0, 1.0, 3.0])  # w0 + 0.5 (d1 + d2)
    close(task_arithmetic(W0, [W1, W2]), [4.0, 0.0, 1.0, 4.0])     # w0 + d1 + d2


def test_ties_hand_worked():
    # density 0.5 keeps ceil(0.5*4) = 2 magnitudes per checkpoint (ties with the cut-off kept):
    # d1 keeps {el0: 1, el1: -2}; d2's 2nd largest |d| is 2, so it keeps {el0: 3, el1: 2, el3: 2}.
    # el0: sign +, mean(1, 3) = 2; el1: -2 + 2 = 0 -> no elected sign -> stays 0; el3: only d2 -> 2 + 2 = 4.
    close(ties(W0, [W1, W2], density=0.5), [2.0, 0.0, 1.0, 4.0])
    # density 0.25 keeps 1 each: d1 {el1: -2}, d2 {el0: 3}; el1 elected -, mean = -2.
    close(ties(W0, [W1, W2], density=0.25), [3.0, -2.0, 1.0, 2.0])


def test_ties_sign_election_drops_the_minority():
    w0 = torch.zeros(1)
    ws = [torch.tensor([3.0]), torch.tensor([-1.0]), torch.tensor([1.0])]
    # sum = 3 > 0 -> sign +; agreeing kept deltas 3 and 1 -> mean 2 (the -1 is dropped)
    close(ties(w0, ws, density=1.0), [2.0])
    close(ties(w0, ws, density=1.0, lam=0.5), [1.0])


def test_dare_with_given_masks():
    masks = torch.tensor([[1, 0, 1, 1], [0, 1, 1, 1]])
    # p = 0.5 -> survivors x2: d~1 = [2, 0, 0, 0], d~2 = [0, 4, 0, 4]
    close(dare(W0, [W1, W2], p=0.5, keep_masks=masks), [2.0, 4.0, 1.0, 6.0])
    # TIES on d~: el0 only d~1 -> 2; el1 only d~2 -> 4; el3 -> 2 + 4 = 6 (one agreeing delta each)
    close(dare(W0, [W1, W2], p=0.5, combine="ties", keep_masks=masks), [2.0, 4.0, 1.0, 6.0])
    both = torch.ones(2, 4, dtype=torch.long)
    # nothing dropped, p = 0.5 doubles: TIES el0 mean(2, 6) = 4; el1 (-4 + 4) -> 0; el3 4 -> 6
    close(dare(W0, [W1, W2], p=0.5, combine="ties", keep_masks=both), [4.0, 0.0, 1.0, 6.0])


def test_dare_random_drop_rate_and_unbiased():
    w0 = torch.zeros(200_000)
    w1 = torch.ones(200_000)
    merged = dare(w0, [w1], p=0.3, seed=1)
    assert ((merged == 0).float().mean().item()) == pytest.approx(0.3, abs=0.01)
    assert merged.mean().item() == pytest.approx(1.0, abs=0.01)  # E[mask / (1-p)] = 1
    torch.testing.assert_close(merged, dare(w0, [w1], p=0.3, seed=1))   # seeded
    assert not torch.equal(merged, dare(w0, [w1], p=0.3, seed=2))


@pytest.mark.parametrize("method", ["delta", "uniform", "task_arithmetic", "ties", "dare"])
def test_identical_checkpoints_merge_to_that_checkpoint(method):
    torch.manual_seed(0)
    w0, w = torch.randn(5, 7), torch.randn(5, 7)
    options = {"task_arithmetic": {"lam": 1 / 3}, "ties": {"density": 1.0, "lam": 1.0},
               "dare": {"p": 0.0, "lam": 1 / 3}}.get(method, {})
    rule = make_rule(method, **options)
    deltas = torch.stack([w - w0] * 3)
    merged = w0 + (rule.coefficients(deltas, ChunkContext(name="t")) * deltas).sum(0)
    torch.testing.assert_close(merged, w, rtol=1e-5, atol=1e-5)


def test_delta_with_one_checkpoint_returns_it():
    torch.manual_seed(1)
    w0, w1 = torch.randn(4, 3), torch.randn(4, 3)
    for granularity in ("element", "row", "tensor"):
        torch.testing.assert_close(delta_merge(w0, [w1], granularity=granularity), w1)


def test_dtype_follows_last_checkpoint():
    out = delta_merge(W0, [W1, W2.to(torch.bfloat16)])
    assert out.dtype == torch.bfloat16


def test_bad_options_raise():
    with pytest.raises(ConfigError, match="granularity"):
        make_rule("delta", granularity="layer")
    with pytest.raises(ConfigError, match="do not apply"):
        make_rule("ties", p=1.0, granularity="element")
    with pytest.raises(ConfigError, match="drop rate"):
        make_rule("dare", p=1.0)
    with pytest.raises(ConfigError, match="unknown merge method"):
        make_rule("slerp")
    assert make_rule("delta", **{"lambda": 0.5}).options["lam"] == 0.5
