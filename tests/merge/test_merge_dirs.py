"""Merging exported model directories: results match a plain in-memory computation, outputs load, bad inputs
are refused, interrupted merges leave nothing."""

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from codiemb.errors import ConfigError, MergeError
from codiemb.merge import api as merge_api
from codiemb.merge import merge_models


def weights(directory: Path) -> dict[str, torch.Tensor]:
    return load_file(str(Path(directory) / "model.safetensors"))


def reference_delta(base, ckpts, granularity="element"):
    """Brute force, whole tensors in memory: w0 + sum_k a_k d_k with a_k = n_k / sum_j n_j."""
    w0, ws = weights(base), [weights(c) for c in ckpts]
    out = {}
    for name, t0 in w0.items():
        d = torch.stack([w[name] for w in ws]) - t0
        if granularity == "tensor":
            n = torch.stack([dk.norm() for dk in d]).reshape(-1, *[1] * t0.dim())
        else:
            n = d.abs()
        total = n.sum(0)
        safe_total = torch.where(total > 0, total, torch.ones_like(total))
        a = torch.where(total > 0, n / safe_total, torch.zeros_like(n))
        out[name] = t0 + (a * d).sum(0)
    return out


@pytest.mark.parametrize("granularity", ["element", "tensor"])
def test_streamed_delta_matches_reference_and_loads(tiny_dirs, tmp_path, granularity):
    base, ckpts = tiny_dirs
    # chunk_elements=10_000 splits the larger tensors into row chunks, so chunking is exercised too
    report = merge_models(base, ckpts, tmp_path / "merged", granularity=granularity, chunk_elements=10_000)
    merged, expected = weights(tmp_path / "merged"), reference_delta(base, ckpts, granularity)
    assert merged.keys() == expected.keys()
    for name in expected:
        torch.testing.assert_close(merged[name], expected[name], rtol=1e-5, atol=1e-6, msg=name)
    # report: weights of a delta merge sum to 1 where something changed
    some = report["tensors"]["encoder.layer.0.intermediate.dense.weight"]
    assert sum(some["mean_weight"]) == pytest.approx(1.0, abs=1e-6)
    assert sum(some["dominant_fraction"]) + some["unchanged_fraction"] == pytest.approx(1.0)
    assert (tmp_path / "merged" / "merge_report.png").stat().st_size > 1000
    assert json.loads((tmp_path / "merged" / "merge_report.json").read_text())["method"] == "delta"


def test_output_loads_with_sentence_transformers(loadable_dirs, tmp_path):
    from sentence_transformers import SentenceTransformer

    base, ckpts = loadable_dirs
    merge_models(base, ckpts, tmp_path / "merged")
    model = SentenceTransformer(str(tmp_path / "merged"), device="cpu")
    vectors = model.encode(["a merged model", "still encodes"], convert_to_tensor=True)
    assert vectors.shape == (2, 128) and torch.isfinite(vectors).all()
    loaded = model[0].auto_model.state_dict()
    merged = weights(tmp_path / "merged")
    torch.testing.assert_close(loaded["encoder.layer.0.attention.self.query.weight"],
                               merged["encoder.layer.0.attention.self.query.weight"])


@pytest.mark.parametrize("method", ["delta", "uniform", "ties", "dare"])
def test_identical_checkpoints_give_that_checkpoint(tiny_dirs, tmp_path, method):
    base, ckpts = tiny_dirs
    copies = [ckpts[0]] * 3
    options = {"ties": {"density": 1.0}, "dare": {"p": 0.0, "lam": 1 / 3}}.get(method, {})
    merge_models(base, copies, tmp_path / "m", method=method, **options)
    expected, merged = weights(ckpts[0]), weights(tmp_path / "m")
    for name in expected:
        torch.testing.assert_close(merged[name], expected[name], rtol=1e-5, atol=1e-6, msg=name)


def test_task_arithmetic_and_uniform_match_formulas(tiny_dirs, tmp_path):
    base, ckpts = tiny_dirs
    merge_models(base, ckpts, tmp_path / "ta", method="task_arithmetic", lam=0.7)
    merge_models(base, ckpts, tmp_path / "u", method="uniform")
    w0, ws = weights(base), [weights(c) for c in ckpts]
    name = "encoder.layer.1.output.dense.weight"
    ta = w0[name] + 0.7 * sum(w[name] - w0[name] for w in ws)
    torch.testing.assert_close(weights(tmp_path / "ta")[name], ta, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(weights(tmp_path / "u")[name], sum(w[name] for w in ws) / 3,
                               rtol=1e-5, atol=1e-6)


def test_non_float_tensors_copied_from_last_checkpoint(tiny_dirs, tmp_path):
    base, ckpts = tiny_dirs
    ids = weights(base).get("embeddings.position_ids")
    extra = torch.arange(6, dtype=torch.int64)
    dirs = []
    for i, src in enumerate([base, *ckpts[:2]]):
        tensors = weights(src)
        tensors["counter"] = extra + i  # last checkpoint's copy is extra + 2
        target = tmp_path / f"in{i}"
        shutil.copytree(src, target)
        save_file(tensors, str(target / "model.safetensors"), metadata={"format": "pt"})
        dirs.append(target)
    report = merge_models(dirs[0], dirs[1:], tmp_path / "m")
    assert torch.equal(weights(tmp_path / "m")["counter"], extra + 2)
    assert "counter" in report["copied_from_last_checkpoint"]
    assert ids is None or torch.equal(weights(tmp_path / "m")["embeddings.position_ids"], ids)


def test_shape_mismatch_names_the_tensor(tiny_dirs, tmp_path, perturb):
    base, ckpts = tiny_dirs
    name = "encoder.layer.0.output.dense.bias"
    bad = perturb(ckpts[0], tmp_path / "bad", seed=9, **{name: torch.zeros(7)})
    with pytest.raises(MergeError, match=name.replace(".", r"\.")):
        merge_models(base, [ckpts[1], bad], tmp_path / "m")
    assert not (tmp_path / "m").exists()


def test_refuses_other_architecture_and_tokenizer(tiny_dirs, tmp_path):
    base, ckpts = tiny_dirs
    other = tmp_path / "other"
    shutil.copytree(ckpts[0], other)
    config = json.loads((other / "config.json").read_text())
    config["num_hidden_layers"] = 3
    (other / "config.json").write_text(json.dumps(config))
    with pytest.raises(MergeError, match="num_hidden_layers"):
        merge_models(base, [ckpts[1], other], tmp_path / "m")
    retok = tmp_path / "retok"
    shutil.copytree(ckpts[0], retok)
    tok = json.loads((retok / "tokenizer.json").read_text())
    tok["model"]["vocab"]["[unused0]"], tok["model"]["vocab"]["[unused1]"] = 2, 1  # swap two ids
    (retok / "tokenizer.json").write_text(json.dumps(tok))
    with pytest.raises(MergeError, match="tokenizer"):
        merge_models(base, [ckpts[1], retok], tmp_path / "m")


def test_interrupted_merge_leaves_no_output_and_keeps_old(tiny_dirs, tmp_path, monkeypatch):
    base, ckpts = tiny_dirs
    out = tmp_path / "m"
    merge_models(base, ckpts[:1], out)
    before = (out / "model.safetensors").read_bytes()

    def boom(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(merge_api, "write_report", boom)
    with pytest.raises(KeyboardInterrupt):
        merge_models(base, ckpts, out)
    assert (out / "model.safetensors").read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m"]  # no half-written temporary left behind


def test_sharded_input(tiny_dirs, tmp_path):
    base, ckpts = tiny_dirs
    sharded = tmp_path / "sharded"
    shutil.copytree(ckpts[0], sharded)
    tensors = weights(sharded)
    (sharded / "model.safetensors").unlink()
    names = sorted(tensors)
    halves = {"model-00001-of-00002.safetensors": names[::2], "model-00002-of-00002.safetensors": names[1::2]}
    for file, part in halves.items():
        save_file({n: tensors[n] for n in part}, str(sharded / file), metadata={"format": "pt"})
    index = {"metadata": {}, "weight_map": {n: f for f, part in halves.items() for n in part}}
    (sharded / "model.safetensors.index.json").write_text(json.dumps(index))
    merge_models(base, [ckpts[1], sharded], tmp_path / "a")
    merge_models(base, [ckpts[1], ckpts[0]], tmp_path / "b")
    a, b = weights(tmp_path / "a"), weights(tmp_path / "b")
    assert all(torch.equal(a[n], b[n]) for n in b)
    assert not any(p.name.startswith("model-0") for p in (tmp_path / "a").iterdir())


def test_greedy_soup_with_fake_evaluator(tiny_dirs, tmp_path, perturb):
    """Score = -distance of one bias to a target. Checkpoints set that bias to 0, 4, 1, 9 (target 2):
    individual scores -2, -2, -1, -7 -> order ckpt2 (1), ckpt0 (0), ckpt1 (4), ckpt3 (9) (stable on ties).
    soup {1}: -1; +0 -> mean 0.5: -1.5 (drop); +4 -> mean 2.5: -0.5 (keep); +9 -> mean 14/3: -2.67 (drop)."""
    base, _ = tiny_dirs
    name = "encoder.layer.0.output.dense.bias"
    ckpts = [perturb(base, tmp_path / f"g{v}", seed=v, **{name: torch.full((128,), float(v))})
             for v in (0, 4, 1, 9)]
    calls = []

    def score(model_dir):
        calls.append(model_dir)
        return -abs(weights(model_dir)[name].mean().item() - 2.0)

    report = merge_models(base, ckpts, tmp_path / "soup", method="greedy_soup", score_fn=score)
    assert report["greedy_soup"]["members"] == [2, 1]
    assert report["greedy_soup"]["score"] == pytest.approx(-0.5, abs=1e-5)
    torch.testing.assert_close(weights(tmp_path / "soup")[name], torch.full((128,), 2.5))
    assert report["summary"]["mean_weight"] == pytest.approx([0, 0.5, 0.5, 0], abs=1e-9)
    assert len(calls) == 4 + 3  # each checkpoint once, then each candidate soup once
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())  # scratch soups removed


def test_greedy_soup_needs_a_scorer(tiny_dirs, tmp_path):
    base, ckpts = tiny_dirs
    with pytest.raises(ConfigError, match="score_fn"):
        merge_models(base, ckpts, tmp_path / "m", method="greedy_soup")


def test_evaluate_fn_scores_inputs_and_result(tiny_dirs, tmp_path):
    base, ckpts = tiny_dirs
    name = "embeddings.LayerNorm.weight"

    def evaluate(model_dir):
        return {"val/mean": weights(model_dir)[name].mean().item()}

    report = merge_models(base, ckpts, tmp_path / "m", method="uniform", evaluate_fn=evaluate)
    rows = report["evaluation"]["rows"]
    labels = [r["model"].split(":")[0] for r in rows]
    assert labels == ["base", "ckpt 1", "ckpt 2", "ckpt 3", "merged (uniform)"]
    # uniform soup: its mean is the mean of the checkpoints' means
    assert rows[-1]["val/mean"] == pytest.approx(sum(r["val/mean"] for r in rows[1:4]) / 3, abs=1e-6)
    assert "merged (uniform)" in report["evaluation"]["table"]
    saved = json.loads((tmp_path / "m" / "merge_report.json").read_text())
    assert saved["evaluation"]["rows"] == rows
