"""Hard-negative mining at corpus scale (issue #17): peak memory and time against corpus size, this revision
beside an older one, in one run.

    python bench/mining_scale.py --sizes 100000 1000000 --queries 10000 --before <git rev>

Each (revision, size) is mined in a fresh process (`mine_records`, sampling "top", window [10, 100), 3
negatives) over a synthetic corpus: passages of 10-20 words (--words) drawn from the tokenizer's whole-word vocabulary;
every query is 6 words of one passage, which is its positive. The encoder is MiniLM's architecture with one
layer and random weights (hidden size 384, as all-MiniLM-L6-v2): memory and search cost depend on the corpus
size and embedding width, not on the weights. Peak RSS is the process's ru_maxrss. The older revision runs from a
git worktree under /tmp (never the repository). Writes bench/results/mining_scale.json.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import time
from pathlib import Path

from provenance import write_result

ROOT = Path(__file__).resolve().parents[1]
RESULT = ROOT / "bench" / "results" / "mining_scale.json"
CONFIG = {"hidden_size": 384, "num_hidden_layers": 1, "num_attention_heads": 6, "intermediate_size": 512}


def synthetic(size: int, queries: int, words_range=(10, 20), seed: int = 0):
    from transformers import AutoTokenizer

    from codiemb.models.resolve import resolve_model_path

    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path("bundled:all-MiniLM-L6-v2"))
    words = sorted(w for w in tokenizer.get_vocab() if w.isalpha() and w.isascii() and len(w) >= 3)
    rng = random.Random(seed)
    corpus = [" ".join(rng.choices(words, k=rng.randint(*words_range))) for _ in range(size)]
    picked = rng.sample(range(size), queries)
    return corpus, [(" ".join(rng.sample(corpus[i].split(), k=6)), corpus[i]) for i in picked]


def worker(size: int, queries: int, low: int, high: int) -> dict:
    """One measurement, in this process (run by main in a subprocess)."""
    import torch

    from codiemb.data.schema import Record
    from codiemb.mining.miner import MiningReport, mine_records
    from codiemb.models.encoder import Encoder

    torch.manual_seed(0)
    corpus, pairs = synthetic(size, queries, (low, high))
    records = [Record(task="ir", query=q, positives=(p,), dataset="synthetic") for q, p in pairs]
    rss_data = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    encoder = Encoder.from_pretrained("bundled:all-MiniLM-L6-v2", random_init=True, config_overrides=CONFIG,
                                      max_passage_length=64, max_query_length=32).eval()
    report = MiningReport()
    started = time.perf_counter()
    mined = mine_records(records, encoder, corpus=corpus, batch_size=256, show_progress=False, report=report,
                         precision="fp32", sampling="top", range_min=10, range_max=100, num_negatives=3)
    return {"corpus": size, "queries": queries, "mined_negatives": sum(len(r.negatives) for r in mined),
            "seconds": round(time.perf_counter() - started, 1), "phases_s": report.seconds,
            "peak_rss_gb_after_data": round(rss_data, 2),
            "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
            "embeddings_gb": round(size * CONFIG["hidden_size"] * 4 / 2**30, 2)}


def run(label: str, source: Path, size: int, queries: int, words: list[int]) -> dict:
    env = {**os.environ, "PYTHONPATH": f"{source / 'src'}:{source}", "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--worker", str(size), str(queries),
                          *map(str, words)],
                         env=env, cwd=source, capture_output=True, text=True, check=False)
    if out.returncode:
        return {"revision": label, "corpus": size, "failed": out.stderr.strip().splitlines()[-1:]}
    return {"revision": label, **json.loads(out.stdout.strip().splitlines()[-1])}


def git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", nargs="*", type=int, default=[100_000, 1_000_000])
    parser.add_argument("--queries", type=int, default=10_000)
    parser.add_argument("--before", help="an older revision to measure beside this one")
    parser.add_argument("--words", nargs=2, type=int, default=[10, 20], help="passage length range in words")
    parser.add_argument("--worker", nargs=4, type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(*args.worker)))
        return
    started_at = time.time()
    sources = {"this": ROOT}
    if args.before:
        tree = Path("/tmp") / f"codiemb-mining-{args.before}"
        if not tree.exists():
            git("worktree", "add", "--detach", str(tree), args.before)
        sources[args.before] = tree
    rows = []
    try:
        for size in args.sizes:
            for label, source in sources.items():
                rows.append(run(label, source, size, args.queries, args.words))
                print(json.dumps(rows[-1]), flush=True)
    finally:
        if args.before:
            git("worktree", "remove", "--force", str(sources[args.before]))
    payload = write_result(RESULT, {"worker_omp_num_threads": 1,
                                    "encoder": {"base": "all-MiniLM-L6-v2 architecture, random weights", **CONFIG},
                                    "rows": rows}, started_at)
    print(f"cpu capability {payload['cpu_capability']}, one thread per worker")
    print("| revision | corpus | queries | time s | encode s | search s | peak RSS GB | embeddings GB |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        if "failed" in r:
            print(f"| {r['revision']} | {r['corpus']:,} | failed: {r['failed']} |")
            continue
        print(f"| {r['revision']} | {r['corpus']:,} | {r['queries']:,} | {r['seconds']} | {r['phases_s'].get('encode')} "
              f"| {r['phases_s'].get('search')} | {r['peak_rss_gb']} | {r['embeddings_gb']} |")


if __name__ == "__main__":
    main()
