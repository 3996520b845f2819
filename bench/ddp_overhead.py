"""Startup cost and step time of `trainer=ddp_cpu_sim` (2 gloo processes) vs one process, A B A B.

    python bench/ddp_overhead.py [--rounds 2] [--model tiny]

Each side runs `train.py` twice per round, with 2 and with 12 optimizer steps: the 2-step run's wall time is
the startup cost, and (t12 - t2) / 10 is the step time. Same global batch on both sides: the DDP ranks take
half of it each (data.ir_batch_size / sts_batch_size halved).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COMMON = ["task_mix=round_robin", "merge=none", "logger=none", "callbacks=none", "data.num_workers=0",
          "trainer.max_epochs=100"]
SIDES = {"single": ["trainer=default", "data.ir_batch_size=16", "data.sts_batch_size=32"],
         "ddp_cpu_sim": ["trainer=ddp_cpu_sim", "data.ir_batch_size=8", "data.sts_batch_size=16"]}


def run(side: str, steps: int, model: str) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "train.py", f"model={model}", *COMMON, *SIDES[side], f"trainer.max_steps={steps}",
               f"hydra.run.dir={tmp}"]
        started = time.perf_counter()
        subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True)
        return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--model", default="tiny")
    args = parser.parse_args()
    startup, step = {s: [] for s in SIDES}, {s: [] for s in SIDES}
    for _ in range(args.rounds):
        for side in SIDES:
            short, long = run(side, 2, args.model), run(side, 12, args.model)
            startup[side].append(short)
            step[side].append((long - short) / 10)
            print(f"{side}: 2 steps {short:.1f} s, 12 steps {long:.1f} s", flush=True)
    for side in SIDES:
        print(f"{side:12s} startup (2-step run) median {statistics.median(startup[side]):.1f} s, "
              f"step {statistics.median(step[side]):.3f} s")
    print(f"ddp_cpu_sim / single: startup {statistics.median(startup['ddp_cpu_sim']) / statistics.median(startup['single']):.2f}x, "
          f"step {statistics.median(step['ddp_cpu_sim']) / statistics.median(step['single']):.2f}x")


if __name__ == "__main__":
    main()
