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

from provenance import write_json, write_result

ROOT = Path(__file__).resolve().parents[1]

# name -> train.py overrides (on top of experiment=real_cpu); cheapest first so partial results come early
RUNS = {
    "codiemb": ["task_mix=balanced", "loss=codiemb", "merge=delta"],
    "sts_only": ["task_mix=sts_only", "merge=none"],
    "ir_only": ["task_mix=ir_only", "merge=none"],
    # mixed batches of 32 rows: one pass over all data in about as many steps as the balanced run
    "naive_mixed": ["task_mix=mixed", "loss=infonce", "merge=none", "data.ir_batch_size=32"],
    "codiemb_proportional": ["task_mix=proportional", "loss=codiemb", "merge=none"],
}
LABELS = {"naive_mixed": "naive co-training (mixed, one InfoNCE)", "ir_only": "IR only", "sts_only": "STS only",
          "codiemb_proportional": "CoDiEmb proportional"}
TEST_SETS = [
    {"name": "stsb_test", "task": "sts", "format": "stsb", "path": "../shared/data/stsbenchmark/sts-test.csv"},
    {"name": "scifact", "task": "ir", "format": "beir", "path": "../shared/data/scifact", "split": "test"},
    {"name": "vaswani", "task": "ir", "format": "beir", "path": "../shared/data/vaswani", "split": "test"},
]


def train(name: str, out: Path, experiment: str, extra: list[str]) -> tuple[Path, float]:
    run_dir = out / name
    done = run_dir / "DONE"
    if done.exists():
        return run_dir, float(done.read_text())
    cmd = [sys.executable, "train.py", f"experiment={experiment}", *RUNS[name], *extra, f"hydra.run.dir={run_dir}",
           "callbacks.progress_bar.refresh_rate=50"]
    print(f"[ablation] {' '.join(cmd[1:])}", flush=True)
    started = time.perf_counter()
    with open(out / f"{name}.log", "w") as log:
        subprocess.run(cmd, cwd=ROOT, check=True, stdout=log, stderr=subprocess.STDOUT)
    seconds = time.perf_counter() - started
    done.write_text(f"{seconds:.1f}")
    return run_dir, seconds


def final_export(run_dir: Path) -> Path:
    return max((run_dir / "checkpoints").glob("step_*/"))


def evaluate_model(label: str, path: str, out: Path, cache: dict, batch_size: int, bf16: bool) -> dict:
    """Test-set scores of one model, cached in <out>/eval/ so a rerun only evaluates what is new."""
    import torch

    from codiemb.eval.runner import evaluate, summarize
    from codiemb.eval.sets import parse_sets
    from codiemb.models.encoder import Encoder

    file = out / "eval" / (label.replace(" ", "_").replace("/", "_").replace(",", "") + ".json")
    if file.exists():
        return json.loads(file.read_text())
    specs = parse_sets(TEST_SETS)
    started = time.perf_counter()
    results = evaluate(Encoder.from_pretrained(path), specs, batch_size=batch_size, cache=cache,
                       autocast_dtype=torch.bfloat16 if bf16 else None)
    ir = [results["scifact"]["ndcg@10"], results["vaswani"]["ndcg@10"]]
    row = {"model": label, "path": path, "stsb_test": results["stsb_test"]["spearman"], "scifact": ir[0],
           "vaswani": ir[1], "sts_mean": summarize(results, specs)["sts_spearman"], "ir_mean": sum(ir) / 2,
           "eval_s": time.perf_counter() - started}
    row["mean"] = (row["sts_mean"] + row["ir_mean"]) / 2
    write_json(file, row)
    print(f"[ablation] {label}: {json.dumps({k: round(v, 2) for k, v in row.items() if isinstance(v, float)})}",
          flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "logs" / "ablation" / time.strftime("%Y-%m-%d_%H-%M-%S"))
    parser.add_argument("--runs", nargs="*", default=list(RUNS))
    parser.add_argument("--experiment", default="real_cpu", help="the recipe every run starts from")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--fp32-eval", action="store_true", help="encode test sets in fp32 (default: bf16 autocast)")
    parser.add_argument("--no-train", action="store_true", help="only tabulate runs that already finished")
    parser.add_argument("extra", nargs="*", help="extra train.py overrides for every run")
    args = parser.parse_args()
    started_at = time.time()
    args.out.mkdir(parents=True, exist_ok=True)
    os.chdir(ROOT)
    from codiemb.merge.api import merge_models

    cache: dict = {}
    bf16 = not args.fp32_eval

    def score(label: str, path) -> dict:
        return evaluate_model(label, str(path), args.out, cache, args.batch_size, bf16)

    rows = [score("base (no training)", "bundled:all-MiniLM-L6-v2")]
    times = {}
    for name in args.runs:
        if args.no_train and not (args.out / name / "DONE").exists():
            continue
        run_dir, times[name] = train(name, args.out, args.experiment, args.extra)
        if name != "codiemb":
            rows.append(score(LABELS[name], final_export(run_dir)))
            continue
        checkpoints = sorted((run_dir / "checkpoints").glob("step_*/"))
        uniform = run_dir / "merged_uniform"
        if not uniform.exists():
            merge_models(run_dir / "checkpoints" / "initial", checkpoints, uniform, method="uniform")
        rows.append(score("CoDiEmb balanced, last checkpoint", checkpoints[-1]))
        rows.append(score("CoDiEmb + uniform soup", uniform))
        rows.append(score("CoDiEmb + delta fusion", run_dir / "merged"))
        lam = float(json.loads((run_dir / "merged" / "merge_report.json").read_text())["options"].get("lam", 1.0))
        if lam != 1.0:  # the recipe's lam pulls towards the base weights; show what plain delta (lam 1) does
            plain = run_dir / "merged_delta_lam1"
            if not plain.exists():
                merge_models(run_dir / "checkpoints" / "initial", checkpoints, plain, method="delta")
            rows[-1]["model"] += f" (lam {lam:g})"
            rows.append(score("CoDiEmb + delta fusion (lam 1)", plain))

    write_result(args.out / "ablation.json", {"rows": rows, "train_seconds": times}, started_at)
    table = ["| model | STS-B test | SciFact nDCG@10 | Vaswani nDCG@10 | STS mean | IR mean | overall |",
             "|---|---|---|---|---|---|---|"]
    table += [f"| {r['model']} | {r['stsb_test']:.2f} | {r['scifact']:.2f} | {r['vaswani']:.2f} | "
              f"{r['sts_mean']:.2f} | {r['ir_mean']:.2f} | {r['mean']:.2f} |" for r in rows]
    table += ["", "test-set encoding: " + ("bf16 autocast" if bf16 else "fp32"),
              "train wall time (s): " + ", ".join(f"{k} {v:.0f}" for k, v in times.items())]
    (args.out / "ablation.md").write_text("\n".join(table) + "\n")
    print("\n".join(table))


if __name__ == "__main__":
    main()
