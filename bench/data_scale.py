"""Data at scale: synthetic unified JSONL of N rows, time to first batch and peak RSS of every process.

    python bench/data_scale.py all --rows 100000 1000000 --dir /tmp/ds     # everything below, one at a time
    python bench/data_scale.py make --rows 1000000 --prefix /tmp/ds/r1000000
    python bench/data_scale.py readjson /tmp/ds/r1000000                    # pyarrow.json.read_json reference
    python bench/data_scale.py run /tmp/ds/r1000000 --cache /tmp/ds/cache --ranks 2 --workers 2
    python bench/data_scale.py all --rows 100000 1000000 --dir /tmp/ds --only-cached --before /tmp/rev/src  # vs rev

``make`` writes ``<prefix>-ir.jsonl`` (3/4 of the rows: a query, one positive of 20-80 words, 0-3 negatives) and
``<prefix>-sts.jsonl`` (1/4: scored pairs). ``run`` times, in a fresh process: the data module's ``load()``
(building or mapping the Arrow store), the sampler, the MiniLM tokenizer and the first batch of a DataLoader
with ``--workers`` workers; the peak RSS (VmHWM) of the process and of each DataLoader worker is read from
/proc while the workers live. ``--ranks 2`` does what ``trainer=ddp_cpu_sim`` does: the main process loads, then
two spawned ranks receive the pickled data module, build their sampler slice and draw their first batch.
Every number is printed with ``torch.backends.cpu.get_cpu_capability()``; ``all`` also writes them to
``<dir>/results.json`` (``rows``, after the provenance keys of ``bench/provenance.py``).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

from provenance import write_result

ROOT = Path(__file__).resolve().parents[1]


def status_kb(pid: int | str, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def pss_kb(pid: int | str) -> int:
    """Proportional set size: shared pages (the mapped table, forked parent pages) divided among their users."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def mb(kb: int) -> float:
    return round(kb / 1024, 1)


def make(rows: int, prefix: str) -> None:
    rng = random.Random(0)
    vocab = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 9))) for _ in range(5000)]

    def text(lo, hi):
        return " ".join(rng.choices(vocab, k=rng.randint(lo, hi)))
    with open(prefix + "-ir.jsonl", "w") as ir, open(prefix + "-sts.jsonl", "w") as sts:
        for i in range(rows):
            if i % 4 == 3:
                sts.write(json.dumps({"query": text(5, 20), "positives": [text(5, 20)],
                                      "score": round(rng.uniform(0, 5), 2)}) + "\n")
            else:
                ir.write(json.dumps({"query": text(4, 16), "positives": [text(20, 80)],
                                     "negatives": [text(20, 80) for _ in range(rng.randint(0, 3))]}) + "\n")


def readjson(prefix: str) -> dict:
    """The reference: pyarrow.json.read_json of both files (parsing only, no validation, all in memory)."""
    import pyarrow.json as pj
    import torch

    started, rows = time.perf_counter(), 0
    for part in ("-ir.jsonl", "-sts.jsonl"):
        rows += pj.read_json(prefix + part).num_rows
    return {"label": "pyarrow.json.read_json", "rows": rows, "seconds": round(time.perf_counter() - started, 2),
            "main_peak_rss_mb": mb(status_kb("self", "VmHWM")),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "loadavg": os.getloadavg()[0]}


def _old_loader(dm, sampler):
    """A revision before ``CoDiEmbDataModule.loader`` (``--old``): the DataLoader its train_dataloader built."""
    from torch.utils.data import DataLoader

    return DataLoader(dm.dataset, batch_sampler=sampler, collate_fn=dm.collator, num_workers=dm.num_workers)


def _first_batch(dm, world: int, rank: int) -> dict:
    started = time.perf_counter()
    sampler = dm.build_sampler(world_size=world, rank=rank)
    loader = dm.loader(sampler) if hasattr(dm, "loader") else _old_loader(dm, sampler)
    iterator = iter(loader)
    batch = next(iterator)
    out = {"sampler_and_first_batch_s": round(time.perf_counter() - started, 2), "batch_task": batch["task"],
           "steps": len(sampler)}
    workers = [w.pid for w in getattr(iterator, "_workers", [])]
    for _ in range(3):  # let every worker fetch its prefetched batches, then read its peak while it lives
        next(iterator)
    out["worker_peak_rss_mb"] = [mb(status_kb(pid, "VmHWM")) for pid in workers]
    out["worker_rss_mb"] = [mb(status_kb(pid, "VmRSS")) for pid in workers]
    out["worker_pss_mb"] = [mb(pss_kb(pid)) for pid in workers]
    del iterator
    return out


def _rank(rank: int, dm, world: int, queue) -> None:
    os.environ["LOCAL_RANK"] = str(rank)
    result = _first_batch(dm, world, rank)
    result.update(rank=rank, peak_rss_mb=mb(status_kb("self", "VmHWM")), pss_mb=mb(pss_kb("self")))
    queue.put(result)


def run(prefix: str, cache: str, ranks: int, workers: int, old: bool = False) -> dict:
    import torch
    import torch.multiprocessing as mp
    from transformers import AutoTokenizer

    from codiemb.data.datamodule import CoDiEmbDataModule
    from codiemb.models.resolve import bundled_minilm_path
    from codiemb.prompts import DEFAULT_INSTRUCTION_TEMPLATE

    started = time.perf_counter()
    specs = [{"name": "ir", "task": "ir", "format": "jsonl", "path": prefix + "-ir.jsonl"},
             {"name": "sts", "task": "sts", "format": "jsonl", "path": prefix + "-sts.jsonl"}]
    options = {} if old else {"cache_dir": cache}  # old: the in-memory loader of an earlier checkout
    dm = CoDiEmbDataModule(specs, ir_batch_size=16, sts_batch_size=32, num_workers=workers, **options)
    dm.load()
    load_s = time.perf_counter() - started
    tokenizer = AutoTokenizer.from_pretrained(str(bundled_minilm_path()))
    dm.attach_tokenizer(tokenizer, {"max_query_length": 64, "max_passage_length": 256,
                                    "instruction_template": DEFAULT_INSTRUCTION_TEMPLATE})
    result = {"rows": sum(s.size for s in dm.sources), "ranks": ranks, "workers": workers, "load_s": round(load_s, 2),
              "cpu_capability": torch.backends.cpu.get_cpu_capability(), "old_path": old}
    if ranks == 1:
        result.update(_first_batch(dm, 1, 0))
        result["per_rank"] = []
    else:
        ctx = mp.get_context("spawn")  # trainer=ddp_cpu_sim spawns its ranks and pickles the data module to them
        queue = ctx.Queue()
        procs = [ctx.Process(target=_rank, args=(r, dm, ranks, queue)) for r in range(ranks)]
        for p in procs:
            p.start()
        result["per_rank"] = sorted((queue.get(timeout=900) for _ in procs), key=lambda r: r["rank"])
        for p in procs:
            p.join()
    result["time_to_first_batch_s"] = round(time.perf_counter() - started, 2)
    result["main_peak_rss_mb"] = mb(status_kb("self", "VmHWM"))
    result["main_pss_mb"] = mb(pss_kb("self"))
    result["loadavg"] = os.getloadavg()[0]
    return result


def all_runs(rows: list[int], directory: str, workers: int, old: str | None, before: str | None = None,
             only_cached: bool = False) -> None:
    started_at = time.time()
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    me = [sys.executable, str(Path(__file__).resolve())]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    results = []
    for n in rows:
        prefix = str(directory / f"r{n}")
        if not Path(prefix + "-ir.jsonl").is_file():
            subprocess.run(me + ["make", "--rows", str(n), "--prefix", prefix], check=True)
        results.append(json.loads(subprocess.run(me + ["readjson", prefix], env=env, check=True,
                                                 capture_output=True, text=True).stdout.splitlines()[-1]))
        print(json.dumps(results[-1]), flush=True)
        cache = directory / f"cache-{n}"
        subprocess.run(["rm", "-rf", str(cache)], check=True)
        runs = [(1, "first (builds)", env), (1, "second (cached)", env), (2, "cached, 2 ranks", env)]
        if only_cached:
            runs = runs[:2]
        if before:  # the same cached start with an earlier revision's src/, side by side
            runs.append((1, "second (cached), before", {**env, "PYTHONPATH": before}))
        for ranks, label, run_env in runs:
            out = subprocess.run(me + ["run", prefix, "--cache", str(cache), "--ranks", str(ranks), "--workers",
                                       str(workers)], env=run_env, check=True, capture_output=True, text=True)
            results.append({"label": label, **json.loads(out.stdout.splitlines()[-1])})
            print(json.dumps(results[-1]), flush=True)
        if old and n <= 100_000:  # the in-memory loader of an earlier checkout, for comparison
            out = subprocess.run(me + ["run", prefix, "--cache", str(cache), "--workers", str(workers), "--old"],
                                 env={**env, "PYTHONPATH": old}, check=True, capture_output=True, text=True)
            results.append({"label": "old in-memory path", **json.loads(out.stdout.splitlines()[-1])})
            print(json.dumps(results[-1]), flush=True)
    write_result(directory / "results.json", {"rows": results}, started_at)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("make")
    p.add_argument("--rows", type=int, required=True)
    p.add_argument("--prefix", required=True)
    p = sub.add_parser("readjson")
    p.add_argument("prefix")
    p = sub.add_parser("run")
    p.add_argument("prefix")
    p.add_argument("--cache", required=True)
    p.add_argument("--ranks", type=int, default=1)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--old", action="store_true")
    p = sub.add_parser("all")
    p.add_argument("--rows", type=int, nargs="+", default=[100_000, 1_000_000])
    p.add_argument("--dir", required=True)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--old", help="PYTHONPATH of an earlier checkout's src/ (git archive HEAD src) to compare with")
    p.add_argument("--before", help="PYTHONPATH of an earlier checkout's src/: its cached start beside this one's")
    p.add_argument("--only-cached", action="store_true", help="skip the 2-rank run")
    args = parser.parse_args()
    if args.cmd == "make":
        make(args.rows, args.prefix)
    elif args.cmd == "readjson":
        print(json.dumps(readjson(args.prefix)))
    elif args.cmd == "run":
        print(json.dumps(run(args.prefix, args.cache, args.ranks, args.workers, args.old)))
    else:
        all_runs(args.rows, args.dir, args.workers, args.old, args.before, args.only_cached)


if __name__ == "__main__":
    main()
