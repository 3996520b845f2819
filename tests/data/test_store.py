"""The Arrow record store under the data module: cache keys, per-row errors, ranks, resume, length grouping."""

from __future__ import annotations

import json
import multiprocessing
import os
import pickle
import time
from pathlib import Path

import numpy as np
import pytest

import codiemb.data.store as store
from codiemb.data.datamodule import CoDiEmbDataModule
from codiemb.data.holdout import apply_holdout
from codiemb.data.readers import read_dataset
from codiemb.data.sampler import Source, TaskBatchSampler
from codiemb.errors import DataError

ROOT = Path(__file__).resolve().parents[2]
SUPPORT = ROOT / "data" / "example" / "ir_support.jsonl"
STS = ROOT / "data" / "example" / "sts_general.jsonl"


def write_rows(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def module(tmp_path: Path, specs: list[dict], **options) -> CoDiEmbDataModule:
    return CoDiEmbDataModule(specs, **{"num_workers": 0, "ir_batch_size": 2, "sts_batch_size": 2,
                                       "cache_dir": str(tmp_path / "cache"), **options})


def count_builds(monkeypatch) -> list:
    calls, real = [], store.build

    def counted(*args, **kwargs):
        calls.append(args[2])
        return real(*args, **kwargs)
    monkeypatch.setattr(store, "build", counted)
    return calls


def queries(dm: CoDiEmbDataModule) -> list[str]:
    return [r.query for r in dm.dataset.records()]


def ir_rows(n: int, tag: str = "q") -> list[dict]:
    return [{"query": f"{tag} {i}", "positives": [f"passage {i} " + "x " * (i % 7)]} for i in range(n)]


# ---------------------------------------------------------------- the cache: reuse and invalidation
def test_an_unchanged_input_is_mapped_not_rebuilt(tmp_path, monkeypatch):
    builds = count_builds(monkeypatch)
    path = write_rows(tmp_path / "a.jsonl", ir_rows(6))
    spec = [{"name": "a", "task": "ir", "path": str(path)}]
    first = module(tmp_path, spec)
    first.load()
    again = module(tmp_path, spec)
    again.load()
    assert builds == ["a"] and queries(again) == queries(first) == [f"q {i}" for i in range(6)]
    assert again.load_report["a"]["cache"] == first.load_report["a"]["cache"]


def test_a_changed_file_is_rebuilt(tmp_path, monkeypatch):
    builds = count_builds(monkeypatch)
    path = write_rows(tmp_path / "a.jsonl", ir_rows(6))
    spec = [{"name": "a", "task": "ir", "path": str(path)}]
    module(tmp_path, spec).load()
    write_rows(path, ir_rows(7, tag="new"))
    dm = module(tmp_path, spec)
    dm.load()
    assert builds == ["a", "a"] and queries(dm) == [f"new {i}" for i in range(7)]
    # same size, new content, new mtime: rebuilt too
    write_rows(path, ir_rows(7, tag="wen"))
    os.utime(path, ns=(time.time_ns() + 10**9, time.time_ns() + 10**9))
    dm = module(tmp_path, spec)
    dm.load()
    assert len(builds) == 3 and queries(dm)[0] == "wen 0"


def test_changed_reader_options_or_policy_are_rebuilt(tmp_path, monkeypatch):
    builds = count_builds(monkeypatch)
    path = write_rows(tmp_path / "s.jsonl", [{"query": "a", "positives": ["b"], "score": 0.5},
                                             {"query": "c", "positives": ["d"], "score": 4.0},
                                             {"query": "e", "positives": ["f"], "score": 0.9}])
    spec = {"name": "s", "task": "sts", "path": str(path)}
    dm = module(tmp_path, [spec])
    dm.load()
    assert dm.load_report["s"]["rows"] == 3
    dm = module(tmp_path, [{**spec, "score_range": [0, 1]}], on_error="skip")
    dm.load()
    assert dm.load_report["s"] == {**dm.load_report["s"], "rows": 2, "skipped": {"bad score": 1}}
    assert [r.normalized_score for r in dm.dataset.records()] == [0.5, 0.9]
    module(tmp_path, [{**spec, "score_range": [0, 1]}], on_error="skip").load()  # same again: mapped
    assert len(builds) == 2
    # holdout and max_rows act on the mapped table: they never rebuild it
    module(tmp_path, [{**spec, "max_rows": 2}]).load()
    assert len(builds) == 2


def test_a_failed_build_leaves_no_cache(tmp_path):
    path = write_rows(tmp_path / "a.jsonl", ir_rows(3) + [{"query": "x", "positives": []}])
    with pytest.raises(DataError):
        module(tmp_path, [{"name": "a", "task": "ir", "path": str(path)}]).load()
    assert [p.name for p in (tmp_path / "cache").iterdir() if not p.name.endswith(".lock")] == []


# ---------------------------------------------------------------- per-row errors come out of the build
def test_row_errors_name_file_and_line_through_the_store(tmp_path):
    rows = ir_rows(3) + ["", '{"query": "a"', *ir_rows(2, "z"), {"query": "b", "positives": [""]}]
    path = write_rows(tmp_path / "a.jsonl", rows)
    spec = [{"name": "a", "task": "ir", "path": str(path)}]
    with pytest.raises(DataError) as info:
        module(tmp_path, spec).load()
    assert str(info.value) == f"{path}, line 5: malformed JSON: Expecting ',' delimiter (column 14)"
    dm = module(tmp_path, spec, on_error="skip")
    dm.load()
    assert dm.load_report["a"]["skipped"] == {"malformed row": 1, "bad positives[0]": 1}
    assert queries(dm) == ["q 0", "q 1", "q 2", "z 0", "z 1"]


def test_a_big_file_is_written_in_several_batches_with_the_right_line_numbers(tmp_path, monkeypatch):
    monkeypatch.setattr(store, "BATCH_ROWS", 7)
    rows = ir_rows(40)
    rows[33] = {"query": "bad", "positives": ["p"], "negatives": [5]}
    path = write_rows(tmp_path / "a.jsonl", rows)
    with pytest.raises(DataError, match=rf"^{path}, line 34, field 'negatives\[0\]': expected a string, got int$"):
        module(tmp_path, [{"name": "a", "task": "ir", "path": str(path)}]).load()
    dm = module(tmp_path, [{"name": "a", "task": "ir", "path": str(path)}], on_error="skip")
    dm.load()
    assert queries(dm) == [f"q {i}" for i in range(40) if i != 33]


# ---------------------------------------------------------------- every format, holdout and max_rows
def test_store_rows_equal_the_reader_records_after_holdout_and_max_rows(tmp_path):
    dm = module(tmp_path, [{"name": "support", "task": "ir", "path": str(SUPPORT), "holdout": {"fraction": 0.3}},
                           {"name": "sts", "task": "sts", "path": str(STS), "max_rows": 50}], seed=7)
    dm.load()
    support = apply_holdout(read_dataset("jsonl", str(SUPPORT), name="support", task="ir").records, 0.3, "train")
    sts = read_dataset("jsonl", str(STS), name="sts", task="sts").records
    import random
    sts = [sts[i] for i in sorted(random.Random(7).sample(range(len(sts)), 50))]
    assert list(dm.dataset.records()) == support + sts  # Record equality: task, texts, score, range, dataset
    assert [s.size for s in dm.sources] == [len(support), 50]


def test_public_formats_go_through_the_store(tmp_path):
    stsb = tmp_path / "sts-train.csv"
    stsb.write_text("main-captions\tMSRvid\t2012test\t0001\t5.000\tA plane is taking off.\tAn air plane is taking off.\n"
                    "main-captions\tMSRvid\t2012test\t0004\t3.800\tA man plays a flute.\tA man plays the flute.\n")
    beir = tmp_path / "beir"
    (beir / "qrels").mkdir(parents=True)
    write_rows(beir / "corpus.jsonl", [{"_id": "d1", "title": "T", "text": "one"}, {"_id": "d2", "text": "two"}])
    write_rows(beir / "queries.jsonl", [{"_id": "q1", "text": "first"}, {"_id": "q2", "text": "second"}])
    (beir / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td2\t1\n")
    dm = module(tmp_path, [{"name": "stsb", "format": "stsb", "path": str(stsb)},
                           {"name": "beir", "task": "ir", "format": "beir", "path": str(beir), "split": "train"}])
    dm.load()
    got = [(r.dataset, r.task, r.query, r.positives, r.score) for r in dm.dataset.records()]
    assert got == [("stsb", "sts", "A plane is taking off.", ("An air plane is taking off.",), 5.0),
                   ("stsb", "sts", "A man plays a flute.", ("A man plays the flute.",), 3.8),
                   ("beir", "ir", "first", ("T one",), None), ("beir", "ir", "second", ("two",), None)]


# ---------------------------------------------------------------- processes: rank 0 builds, rank 1 waits
def _rank_main(rank: int, path: str, cache: str, out: str) -> None:
    os.environ["LOCAL_RANK"] = str(rank)
    if rank == 0:  # rank 0 is slow to start building, so rank 1 is certainly waiting meanwhile
        real = store.build

        def slow(*args, **kwargs):
            time.sleep(2.0)
            return real(*args, **kwargs)
        store.build = slow
    else:
        time.sleep(0.3)
    started = time.monotonic()
    dm = CoDiEmbDataModule([{"name": "a", "task": "ir", "path": path}], num_workers=0, ir_batch_size=2,
                           sts_batch_size=2, cache_dir=cache, task_mix="ir_only")
    dm.load()
    Path(out).write_text(json.dumps({"pid": os.getpid(), "seconds": time.monotonic() - started,
                                     "queries": queries(dm), "cache": dm.load_report["a"]["cache"]}))


def test_rank_zero_builds_while_rank_one_waits_then_both_map_the_same_table(tmp_path):
    path = write_rows(tmp_path / "a.jsonl", ir_rows(9))
    ctx = multiprocessing.get_context("spawn")  # as trainer=ddp_cpu_sim starts its ranks
    procs = [ctx.Process(target=_rank_main, args=(rank, str(path), str(tmp_path / "cache"), str(tmp_path / f"{rank}.json")))
             for rank in (0, 1)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0]
    zero, one = (json.loads((tmp_path / f"{rank}.json").read_text()) for rank in (0, 1))
    meta = json.loads((Path(zero["cache"]) / "meta.json").read_text())
    assert meta["built_by_pid"] == zero["pid"] != one["pid"]
    assert one["cache"] == zero["cache"] and one["queries"] == zero["queries"] == [f"q {i}" for i in range(9)]
    assert one["seconds"] > 1.0  # it waited for rank 0's build instead of building itself


def test_the_store_pickles_by_path_for_spawned_ranks_and_workers(tmp_path):
    rows = [{"query": f"q {i}", "positives": ["p " * 200]} for i in range(2000)]
    dm = module(tmp_path, [{"name": "a", "task": "ir", "path": str(write_rows(tmp_path / "a.jsonl", rows))}])
    dm.load()
    blob = pickle.dumps(dm.dataset)
    assert len(blob) < 100_000 < (tmp_path / "a.jsonl").stat().st_size  # the rows are not in the pickle
    again = pickle.loads(blob)
    assert again[(4, 1999)] == dm.dataset[(4, 1999)] and again[(4, 1999)][1].query == "q 1999"


# ---------------------------------------------------------------- exact resume on top of the store
def test_resume_on_the_store_continues_with_the_same_rows(tmp_path):
    specs = [{"name": "support", "task": "ir", "path": str(SUPPORT)}, {"name": "sts", "task": "sts", "path": str(STS)}]

    def batches(dm):
        sampler = dm.build_sampler()
        return sampler, [[(r.dataset, r.query) for _, r in dm.dataset.__getitems__(mb)] for mb in sampler]

    for grouping in (False, True):
        full_dm = module(tmp_path, specs, ir_batch_size=4, sts_batch_size=4, length_grouping=grouping)
        full_dm.load()
        sampler, full = batches(full_dm)
        sampler.mark_consumed(9)
        state = sampler.state_dict()
        resumed_dm = module(tmp_path, specs, ir_batch_size=4, sts_batch_size=4, length_grouping=grouping)
        resumed_dm.load()
        resumed = resumed_dm.build_sampler()
        resumed.load_state_dict(state)
        assert [[(r.dataset, r.query) for _, r in resumed_dm.dataset.__getitems__(mb)] for mb in resumed] == full[10:]
        assert state["length_grouping"] is grouping


# ---------------------------------------------------------------- length grouping
def test_length_grouping_makes_steps_uniform_and_stays_deterministic_and_rank_sliced():
    rng = np.random.default_rng(0)
    sources = [Source("ir_a", "ir", 3000), Source("sts_a", "sts", 1000)]
    lengths = rng.integers(10, 1000, size=4000)
    sizes = {"ir": 8, "sts": 8}

    def spread(sampler):
        return np.mean([np.ptp(lengths[step.rows]) for step in sampler.plan()])
    plain = TaskBatchSampler(sources, sizes, seed=1, world_size=2)
    grouped = TaskBatchSampler(sources, sizes, seed=1, world_size=2, lengths=lengths)
    assert spread(grouped) < spread(plain) / 10  # each step's rows have similar lengths
    again = TaskBatchSampler(sources, sizes, seed=1, world_size=2, lengths=lengths)
    assert all(np.array_equal(a.rows, b.rows) for a, b in zip(grouped.plan(), again.plan()))  # (seed, epoch)
    assert not all(np.array_equal(a.rows, b.rows) for a, b in zip(grouped.plan(0), grouped.plan(1)))
    for step in grouped.plan():  # still one task and one source per step, rows of that source only
        assert {grouped.source_of(r).name for r in step.rows} == {step.source}
    ranks = [TaskBatchSampler(sources, sizes, seed=1, world_size=2, rank=r, lengths=lengths) for r in (0, 1)]
    for k, step in enumerate(grouped.plan()):  # the two ranks' slices make up the global step
        parts = [np.concatenate(s.micro_batches(s.plan()[k])) for s in ranks]
        assert np.array_equal(np.concatenate(parts), step.rows)
    seen = np.concatenate([s.rows for s in grouped.plan() if s.source == "ir_a"])
    assert len(np.unique(seen)) > 2900  # balanced: the IR pass still covers the source (ragged tail dropped)


def test_hf_datasets_go_through_the_store_and_their_data_files_key_the_cache(tmp_path, monkeypatch):
    builds = count_builds(monkeypatch)
    data = write_rows(tmp_path / "pairs.json", [{"question": "q1", "answer": ["a1"]}, {"question": "q2", "answer": "a2"}])
    spec = [{"name": "hfset", "task": "ir", "format": "hf", "path": "json",
             "load_kwargs": {"data_files": str(data), "cache_dir": str(tmp_path / "hf")},
             "columns": {"question": "query", "answer": "positives"}}]
    dm = module(tmp_path, spec)
    dm.load()
    assert [(r.query, r.positives) for r in dm.dataset.records()] == [("q1", ("a1",)), ("q2", ("a2",))]
    module(tmp_path, spec).load()
    assert builds == ["hfset"]
    write_rows(data, [{"question": "q3", "answer": ["a3"]}])
    dm = module(tmp_path, spec)
    dm.load()
    assert builds == ["hfset", "hfset"] and queries(dm) == ["q3"]
