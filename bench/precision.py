"""fp32 vs bf16 on this CPU, side by side in one run: MiniLM encode throughput and the default run's step time.

    OMP_NUM_THREADS=1 python bench/precision.py [--steps 6] [--full] [--out bench/results/precision]

* encode: all-MiniLM-L6-v2 on 64 SciFact abstracts at 256 tokens (the issue's probe), forward only, best of 3;
* step: ``python train.py trainer.max_steps=N trainer.precision=<p>`` as a subprocess (the default data and
  model), seconds per optimizer step from the run's own timing, model loading excluded;
* ``--full``: the whole default ``python train.py`` with ``precision=auto`` (what a user runs), wall time.

Prints ``torch.backends.cpu.get_cpu_capability()`` and what ``precision: auto`` chose beside every timing, and
writes ``<out>/<capability>-<date>.json``. On CPUs without native bf16 (AVX2) the ratio inverts: bf16 is
emulated there and several times slower, which is why ``auto`` exists.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from codiemb.utils.precision import choose_precision, cpu_bf16_features  # noqa: E402


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
    out = {}
    with torch.inference_mode():
        for name, dtype in (("fp32", None), ("bf16", torch.bfloat16)):
            best = float("inf")
            for _ in range(3):
                start = time.perf_counter()
                with torch.autocast("cpu", dtype=dtype or torch.float32, enabled=dtype is not None):
                    encoder.backbone(**batch)
                best = min(best, time.perf_counter() - start)
            out[name] = best
    return out


def run_train(args: list[str], run_dir: Path) -> dict:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline", "TOKENIZERS_PARALLELISM": "false"}
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "train.py", *args, f"hydra.run.dir={run_dir}"], cwd=ROOT, env=env,
                            capture_output=True, text=True)
    wall = time.perf_counter() - start
    if result.returncode:
        raise SystemExit(result.stderr[-3000:])
    summary = json.loads((run_dir / "summary.json").read_text())
    return {"wall_s": wall, "train_wall_s": summary["wall_time_s"], "precision": summary.get("precision"),
            "steps": _steps(run_dir)}


def _steps(run_dir: Path) -> int:
    rows = list(csv.DictReader((run_dir / "csv" / "metrics.csv").open()))
    return max(int(r["step"]) for r in rows if r.get("step"))


def step_seconds(steps: int, out: Path) -> dict[str, dict]:
    """Two short default runs, fp32 and bf16; the difference of 1 and N steps cancels model load and export."""
    found = {}
    for name, value in (("fp32", "32-true"), ("bf16", "bf16-mixed")):
        common = ["trainer.precision=" + value, "merge=none", "callbacks.validation.on_train_end=false",
                  "checkpoint_every_n_steps=0"]
        one = run_train(["trainer.max_steps=1", *common], out / f"{name}-1")
        many = run_train([f"trainer.max_steps={steps}", *common], out / f"{name}-{steps}")
        found[name] = {"s_per_step": (many["train_wall_s"] - one["train_wall_s"]) / (steps - 1),
                       "run_1_step_s": one["wall_s"], f"run_{steps}_steps_s": many["wall_s"]}
    return found


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--full", action="store_true", help="also time the whole default `python train.py`")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "precision"))
    parser.add_argument("--scratch", default=str(ROOT / "logs" / "bench_precision"))
    args = parser.parse_args()
    capability = torch.backends.cpu.get_cpu_capability()
    auto = choose_precision("cpu")
    print(f"cpu capability {capability}, bf16 features {cpu_bf16_features()}, threads {torch.get_num_threads()}, "
          f"precision auto -> {auto.describe()}", flush=True)
    scratch = Path(args.scratch) / time.strftime("%Y%m%d-%H%M%S")
    record = {"capability": capability, "features": cpu_bf16_features(), "auto": auto.short(),
              "threads": torch.get_num_threads(), "git": _git(), "command": " ".join(sys.argv)}
    enc = encode_seconds(abstracts())
    record["encode_64_abstracts_s"] = enc
    print(f"[{capability}] encode 64 abstracts @256: fp32 {enc['fp32']:.2f} s, bf16 {enc['bf16']:.2f} s, "
          f"bf16/fp32 time ratio {enc['bf16'] / enc['fp32']:.2f}", flush=True)
    steps = step_seconds(args.steps, scratch)
    record["default_run_step"] = steps
    print(f"[{capability}] default run, s/step: fp32 {steps['fp32']['s_per_step']:.2f}, "
          f"bf16 {steps['bf16']['s_per_step']:.2f}, ratio {steps['bf16']['s_per_step'] / steps['fp32']['s_per_step']:.2f}",
          flush=True)
    if args.full:
        full = run_train([], scratch / "full-auto")
        record["default_run_full"] = full
        print(f"[{capability}] full default `python train.py` ({full['precision']}): {full['wall_s']:.0f} s, "
              f"{full['steps']} steps", flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    file = out / f"{capability}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    file.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {file}")


def _git() -> str:
    rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True).stdout
    return rev + ("+uncommitted" if dirty.strip() else "")


if __name__ == "__main__":
    main()
