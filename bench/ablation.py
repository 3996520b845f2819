"""The CoDiEmb ablation on real data (issue: real data and the proof).

    python bench/ablation.py                      # every run + the table, into logs/ablation/<timestamp>
    python bench/ablation.py --out logs/ablation/x --runs codiemb ir_only   # resume / subset

Trains each variant with `train.py experiment=real_cpu` (same data, same seed), then evaluates the base
model, every variant, and merges of the CoDiEmb run's checkpoints (last checkpoint, uniform soup, delta) on
the test sets (STS-B test, SciFact test, Vaswani), and writes `ablation.md` / `ablation.json`.
A run whose output already exists is reused, so an interrupted ablation continues where it stopped.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# name -> train.py overrides (on top of experiment=real_cpu)
RUNS = {
    "codiemb": ["task_mix=balanced", "loss=codiemb", "merge=delta"],
    "codiemb_proportional": ["task_mix=proportional", "loss=codiemb", "merge=none"],
    # mixed batches of 32 rows: one pass over all data in about as many steps as the balanced run
    "naive_mixed": ["task_mix=mixed", "loss=infonce", "merge=none", "data.ir_batch_size=32"],
    "ir_only": ["task_mix=ir_only", "merge=none"],
    "sts_only": ["task_mix=sts_only", "merge=none"],
}
TEST_SETS = [
    {"name": "stsb_test", "task": "sts", "format": "stsb", "path": "../shared/data/stsbenchmark/sts-test.csv"},
    {"name": "scifact", "task": "ir", "format": "beir", "path": "../shared/data/scifact", "split": "test"},
    {"name": "vaswani", "task": "ir", "format": "beir", "path": "../shared/data/vaswani", "split": "test"},
]


def train(name: str, out: Path, extra: list[str]) -> tuple[Path, float]:
    run_dir = out / name
    done = run_dir / "DONE"
    if done.exists():
        return run_dir, float(done.read_text())
    cmd = [sys.executable, "train.py", "experiment=real_cpu", *RUNS[name], *extra, f"hydra.run.dir={run_dir}",
           "callbacks.progress_bar.refresh_rate=50"]
    print(f"[ablation] {' '.join(cmd[1:])}", flush=True)
    started = time.perf_counter()
    with open(out / f"{name}.log", "w") as log:
        subprocess.run(cmd, cwd=ROOT, check=True, stdout=log, stderr=subprocess.STDOUT)
    seconds = time.perf_counter() - started
    done.write_text(f"{seconds:.1f}")
    return run_dir, seconds


def final_export(run_dir: Path) -> Path:
    return sorted((run_dir / "checkpoints").glob("step_*/"))[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "logs" / "ablation" / time.strftime("%Y-%m-%d_%H-%M-%S"))
    parser.add_argument("--runs", nargs="*", default=list(RUNS))
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("extra", nargs="*", help="extra train.py overrides for every run")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    os.chdir(ROOT)

    from codiemb.eval.runner import evaluate, summarize
    from codiemb.eval.sets import parse_sets
    from codiemb.merge.api import merge_models
    from codiemb.models.encoder import Encoder

    times = {name: train(name, args.out, args.extra) for name in args.runs}
    models: dict[str, str] = {"base (no training)": "bundled:all-MiniLM-L6-v2"}
    labels = {"naive_mixed": "naive co-training (mixed, one InfoNCE)", "ir_only": "IR only",
              "sts_only": "STS only", "codiemb_proportional": "CoDiEmb proportional"}
    for name, (run_dir, _) in times.items():
        if name != "codiemb":
            models[labels[name]] = str(final_export(run_dir))
    if "codiemb" in times:
        run_dir = times["codiemb"][0]
        checkpoints = sorted((run_dir / "checkpoints").glob("step_*/"))
        uniform = run_dir / "merged_uniform"
        if not uniform.exists():
            merge_models(run_dir / "checkpoints" / "initial", checkpoints, uniform, method="uniform")
        models["CoDiEmb balanced, last checkpoint"] = str(checkpoints[-1])
        models["CoDiEmb + uniform soup"] = str(uniform)
        models["CoDiEmb + delta fusion"] = str(run_dir / "merged")

    specs = parse_sets(TEST_SETS)
    cache: dict = {}
    rows = []
    for label, path in models.items():
        started = time.perf_counter()
        results = evaluate(Encoder.from_pretrained(path), specs, batch_size=args.batch_size, cache=cache)
        summary = summarize(results, specs)
        ir = [results["scifact"]["ndcg@10"], results["vaswani"]["ndcg@10"]]
        row = {"model": label, "path": path, "stsb_test": results["stsb_test"]["spearman"],
               "scifact": ir[0], "vaswani": ir[1], "sts_mean": summary["sts_spearman"],
               "ir_mean": sum(ir) / 2, "eval_s": time.perf_counter() - started}
        row["mean"] = (row["sts_mean"] + row["ir_mean"]) / 2
        rows.append(row)
        print(f"[ablation] {label}: {json.dumps({k: round(v, 2) for k, v in row.items() if isinstance(v, float)})}",
              flush=True)
    train_times = {name: seconds for name, (_, seconds) in times.items()}
    (args.out / "ablation.json").write_text(json.dumps({"rows": rows, "train_seconds": train_times}, indent=2))
    table = ["| model | STS-B test | SciFact nDCG@10 | Vaswani nDCG@10 | STS mean | IR mean | overall |",
             "|---|---|---|---|---|---|---|"]
    table += [f"| {r['model']} | {r['stsb_test']:.2f} | {r['scifact']:.2f} | {r['vaswani']:.2f} | "
              f"{r['sts_mean']:.2f} | {r['ir_mean']:.2f} | {r['mean']:.2f} |" for r in rows]
    table += ["", "train wall time (s): " + ", ".join(f"{k} {v:.0f}" for k, v in train_times.items())]
    (args.out / "ablation.md").write_text("\n".join(table) + "\n")
    print("\n".join(table))


if __name__ == "__main__":
    main()
