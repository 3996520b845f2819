"""Merge methods are entries of one registry: a toy method added in a test merges through the normal API."""

import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from codiemb.errors import ConfigError
from codiemb.merge import merge_from_config
from codiemb.merge.config import check_merge_config
from codiemb.merge.methods import ChunkContext, MergeRule, make_rule
from codiemb.merge.registry import METHODS, MergeMethod, merge_method, register, unregister

ROOT = Path(__file__).resolve().parents[2]
BUILT_IN = {"delta", "uniform", "greedy_soup", "task_arithmetic", "ties", "dare"}


@pytest.fixture
def first_method():
    """``first``: w = w0 + lam * d_1, i.e. the first checkpoint when lam = 1 (coefficients [lam, 0, ..., 0])."""
    def check(options):
        if options["lam"] < 0:
            raise ConfigError(f"merge.lam of 'first' must be >= 0, got {options['lam']}")

    @merge_method("first", defaults={"lam": 1.0}, check=check, formula="w = w0 + lam * d_1")
    def first(deltas, options, ctx):
        c = torch.zeros(deltas.shape[0], dtype=deltas.dtype)
        c[0] = options["lam"]
        return c.reshape(-1, *([1] * (deltas.dim() - 1)))

    try:
        yield METHODS["first"]
    finally:
        unregister("first")


def test_built_in_methods_are_registered():
    assert BUILT_IN <= set(METHODS)
    assert all(isinstance(m, MergeMethod) and m.name == name for name, m in METHODS.items())


def test_a_toy_method_merges_through_merge_from_config(first_method, tiny_dirs, tmp_path):
    base, ckpts = tiny_dirs
    cfg = {"method": "first", "base": str(base), "checkpoints": [str(ckpts[1]), str(ckpts[2])],
           "output": str(tmp_path / "m")}
    report = merge_from_config(cfg, user_overrides=[])  # as merge.py would with merge.method=first
    assert report["method"] == "first" and report["options"] == {"lam": 1.0}
    merged = load_file(str(tmp_path / "m" / "model.safetensors"))
    w1, w2 = (load_file(str(c / "model.safetensors")) for c in ckpts[1:])
    for name, tensor in merged.items():
        torch.testing.assert_close(tensor, w1[name], rtol=0, atol=1e-6)  # w0 + (w1 - w0) in float32
    assert not torch.allclose(merged["embeddings.LayerNorm.weight"], w2["embeddings.LayerNorm.weight"])
    assert report["summary"]["mean_weight"] == pytest.approx([1.0, 0.0])
    assert "w = w0 + lam * d_1" in (tmp_path / "m" / "README.md").read_text()
    # lam = 0.5: halfway from w0 to w1 (worked by hand per element)
    merge_from_config({**cfg, "lam": 0.5}, user_overrides=["merge.lam=0.5"])
    w0 = load_file(str(base / "model.safetensors"))
    name = "encoder.layer.1.attention.self.query.weight"
    torch.testing.assert_close(load_file(str(tmp_path / "m" / "model.safetensors"))[name],
                               w0[name] + 0.5 * (w1[name] - w0[name]), rtol=1e-6, atol=1e-6)


def test_a_toy_methods_checks_and_the_common_checks_apply(first_method):
    with pytest.raises(ConfigError, match="must be >= 0"):
        check_merge_config({"method": "first", "lam": -1.0}, ["merge.lam=-1"])
    with pytest.raises(ConfigError, match=r"merge\.lam must be a finite number"):
        check_merge_config({"method": "first", "lam": math.nan}, ["merge.lam=nan"])
    with pytest.raises(ConfigError, match="do not apply"):
        check_merge_config({"method": "first", "density": 0.3}, ["merge.density=0.3"])


def test_unregistered_or_unknown_methods_are_refused_with_the_registered_names(first_method):
    assert check_merge_config({"method": "first"}, [])["method"] == "first"
    unregister("first")
    for call in (lambda: check_merge_config({"method": "first"}, []), lambda: make_rule("first")):
        with pytest.raises(ConfigError, match="unknown merge method 'first'") as info:
            call()
        assert all(name in str(info.value) for name in BUILT_IN)
    register(first_method)  # the fixture unregisters it again


def test_coefficients_dispatch_through_the_registry_without_fall_through():
    deltas = torch.ones(2, 3)
    with pytest.raises(ConfigError, match="unknown merge method 'slerp'"):
        MergeRule("slerp", {"p": 0.5, "combine": "linear", "lam": 1.0, "seed": 0}).coefficients(deltas)
    torch.testing.assert_close(make_rule("task_arithmetic", lam=0.5).coefficients(deltas, ChunkContext()),
                               torch.full((2, 1), 0.5))


def test_registering_a_taken_name_is_refused():
    with pytest.raises(ValueError, match="already registered"):
        register(MergeMethod("delta", lambda d, o, c: d, {}))
