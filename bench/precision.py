"""fp32 vs bf16 on this CPU, side by side in one run: MiniLM encode throughput and the whole default run.

    OMP_NUM_THREADS=1 python bench/precision.py [--full auto 32-true bf16-mixed] [--out bench/results/precision]
    OMP_NUM_THREADS=1 python bench/precision.py --full --validation    # the validation callback's work only
    # an AVX2-only CPU imitated on an AVX-512 one (torch and oneDNN limited to AVX2 kernels):
    ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 OMP_NUM_THREADS=1 python bench/precision.py

* encode: all-MiniLM-L6-v2 on 64 SciFact abstracts at 256 tokens (the issue's probe), forward only, best of 3;
* ``--full``: the whole default ``python train.py`` (``trainer.precision=<p>``; ``auto`` is what a user gets),
  as a subprocess: wall time, time inside ``train()``, steps. Per-step times on real batches, interleaved:
  ``bench/step_time.py``.
* ``--validation``: one validation of ``experiment=real_cpu`` (its ``val.sets``: STS-B dev, SciFact holdout) with
  the base model, fp32 and bf16 in A-B-B-A order: wall and process CPU seconds, and the scores in each.

Prints ``torch.backends.cpu.get_cpu_capability()`` and what ``precision: auto`` chose beside every timing, and
writes ``<out>/<capability>-<date>.json``. On CPUs without native bf16 (AVX2) the ratio inverts: bf16 is
emulated there and several times slower, which is why ``auto`` exists.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from provenance import write_result

from codiemb.utils.precision import choose_precision, cpu_bf16_features, forward_seconds


def abstracts(n: int = 64) -> list[str]:
    corpus = ROOT.parent / "shared" / "data" / "scifact" / "corpus.jsonl"
    texts = []
    with corpus.open() as fh:
        for line in fh:
            row = json.loads(line)
            texts.append(f"{row.get('title', '')} {row['text']}")
            if len(texts) == n:
                break
    return texts


def encode_seconds(texts: list[str]) -> dict[str, float]:
    from codiemb.models.encoder import Encoder

    encoder = Encoder.from_pretrained("bundled:all-MiniLM-L6-v2")
    batch = encoder.tokenizer(texts, padding=True, truncation=True, max_length=256, return_tensors="pt")
    return forward_seconds(encoder.backbone, batch)


def validation_seconds(rounds: int = 2) -> dict:
    """``evaluate()`` on ``experiment=real_cpu``'s validation sets (``eval@val: real_holdout``), as the validation
    callback calls it, under fp32 and bf16 autocast in A-B-B-A order (so a drifting machine load falls on both)."""
    sys.path.insert(0, str(ROOT / "bench" / "studies"))
    from guard_eval import compose_sets

    from codiemb.eval.runner import evaluate, summarize
    from codiemb.models.encoder import Encoder

    sets = compose_sets("real_holdout")
    encoder, cache = Encoder.from_pretrained("bundled:all-MiniLM-L6-v2"), {}
    evaluate(encoder, sets, batch_size=64, cache=cache)  # reads the files once (not timed)
    out: dict = {"sets": [s["name"] for s in sets], "fp32": [], "bf16": []}
    for name in ["fp32", "bf16", "bf16", "fp32"] * (rounds // 2):
        wall, cpu = time.perf_counter(), time.process_time()
        scores = summarize(evaluate(encoder, sets, batch_size=64, cache=cache,
                                    autocast_dtype=torch.bfloat16 if name == "bf16" else None), sets)
        out[name].append({"wall_s": round(time.perf_counter() - wall, 1), "cpu_s": round(time.process_time() - cpu, 1),
                          "scores": scores})
    return out


def run_train(args: list[str], run_dir: Path) -> dict:
    """The default ``python train.py`` (plus ``args``) as a subprocess: wall time, time inside train(), steps."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline", "TOKENIZERS_PARALLELISM": "false"}
    start, cpu_before = time.perf_counter(), _children_cpu_s()
    result = subprocess.run([sys.executable, "train.py", *args, f"hydra.run.dir={run_dir}"], cwd=ROOT, env=env,
                            capture_output=True, text=True, check=False)
    wall, cpu = time.perf_counter() - start, _children_cpu_s() - cpu_before
    if result.returncode:
        raise SystemExit(result.stderr[-3000:])
    summary = json.loads((run_dir / "summary.json").read_text())
    steps = max(int(r["step"]) for r in csv.DictReader((run_dir / "csv" / "metrics.csv").open()) if r.get("step"))
    # cpu_s (user + sys of the run): what the wall time would be on an idle core at one thread; on a shared
    # machine the wall time also counts waiting for the core
    return {"args": args, "wall_s": round(wall, 1), "cpu_s": round(cpu, 1), "train_wall_s": round(summary["wall_time_s"], 1),
            "precision": summary.get("precision"), "steps": steps,
            "merge/val/mean": summary["metrics"].get("merge/val/mean")}


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--full", nargs="*", default=["auto"],
                        help="trainer.precision values to time the whole default `python train.py` with "
                             "(auto = what a user gets; e.g. --full auto 32-true bf16-mixed; none: skip)")
    parser.add_argument("--validation", action="store_true", help="also time one validation in fp32 and bf16")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "precision"))
    parser.add_argument("--scratch", default=str(ROOT / "logs" / "bench_precision"))
    args = parser.parse_args()
    started_at = time.time()
    capability = torch.backends.cpu.get_cpu_capability()
    auto = choose_precision("cpu")
    print(f"cpu capability {capability}, bf16 features {cpu_bf16_features()}, threads {torch.get_num_threads()}, "
          f"precision auto -> {auto.describe()}", flush=True)
    scratch = Path(args.scratch) / time.strftime("%Y%m%d-%H%M%S")
    record = {"features": cpu_bf16_features(), "auto": auto.short()}
    enc = encode_seconds(abstracts())
    record["encode_64_abstracts_s"] = enc
    print(f"[{capability}] encode 64 abstracts @256: fp32 {enc['fp32']:.2f} s, bf16 {enc['bf16']:.2f} s, "
          f"bf16/fp32 time ratio {enc['bf16'] / enc['fp32']:.2f}", flush=True)
    if args.validation:
        val = record["validation"] = validation_seconds()
        cpu = {name: sum(r["cpu_s"] for r in val[name]) / len(val[name]) for name in ("fp32", "bf16")}
        wall = {name: sum(r["wall_s"] for r in val[name]) / len(val[name]) for name in ("fp32", "bf16")}
        print(f"[{capability}] validation of experiment=real_cpu ({', '.join(val['sets'])}), base model: "
              f"fp32 {wall['fp32']:.0f} s wall / {cpu['fp32']:.0f} s CPU, bf16 {wall['bf16']:.0f} s / "
              f"{cpu['bf16']:.0f} s; bf16/fp32 CPU-time ratio {cpu['bf16'] / cpu['fp32']:.2f}; val/mean fp32 "
              f"{val['fp32'][0]['scores']['mean']:.2f}, bf16 {val['bf16'][0]['scores']['mean']:.2f}", flush=True)
    runs = {}
    for precision in args.full:
        extra = [] if precision == "auto" else [f"trainer.precision={precision}"]
        runs[precision] = run_train(extra, scratch / f"full-{precision}")
        print(f"[{capability}] full default `python train.py {' '.join(extra)}` ({runs[precision]['precision']}): "
              f"{runs[precision]['wall_s']:.0f} s wall ({runs[precision]['cpu_s']:.0f} s CPU), "
              f"{runs[precision]['train_wall_s']:.0f} s in train(), "
              f"{runs[precision]['steps']} steps, merge/val/mean {runs[precision]['merge/val/mean']}", flush=True)
    record["default_run"] = runs
    file = Path(args.out) / f"{capability}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    write_result(file, record, started_at)
    print(f"wrote {file}")


if __name__ == "__main__":
    main()
