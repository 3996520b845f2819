"""Fusion across training trajectories: merge the runs of a sweep, score every row on the test sets.

    python bench/studies/fusion.py --sweep seed --runs logs/fusion_runs/seed42 logs/fusion_runs/seed43 \
        logs/fusion_runs/seed44
    python bench/studies/fusion.py --sweep leaning --runs logs/fusion_runs/ir75 logs/fusion_runs/seed42 \
        logs/fusion_runs/sts25

Rows: each trajectory's last export; the uniform soup of those; delta fusion (element and row granularity);
TIES; DARE; delta over every export of every trajectory (``merge.select=all``). Merges go through
``merge_from_config`` exactly as ``python merge.py merge.runs=[...]`` would. Test scoring is the ablation's
(``bench/ablation.py``'s ``evaluate_model``: STS-B test, SciFact, Vaswani, bf16 autocast), cached per model under
``--work``, so a rerun only scores what is new; ``--val`` adds the validation sets (STS-B dev + held-out SciFact
train queries) used to choose settings. Writes ``bench/results/fusion/<sweep>.json`` (the provenance keys of
``bench/provenance.py``, metrics, training commands and wall times); ``bench/studies/fusion_table.py`` builds the
tables from those files.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))

from ablation import evaluate_model  # the ablation's test scoring, reused as is
from provenance import write_json, write_result

# row key -> (label, merge config); "last" rows are added per run
MERGES = {
    "uniform": ("uniform soup", {"method": "uniform"}),
    "delta": ("delta fusion (element)", {"method": "delta", "p": 1.0, "granularity": "element", "lam": 1.0}),
    "delta_row": ("delta fusion (row)", {"method": "delta", "p": 1.0, "granularity": "row", "lam": 1.0}),
    "ties": ("TIES (density 0.2)", {"method": "ties", "density": 0.2, "lam": 1.0}),
    "dare": ("DARE (p 0.5, linear, lam 1/K)", {"method": "dare", "p": 0.5, "combine": "linear", "seed": 0}),
    "delta_all": ("delta fusion of all exports of all trajectories", {"method": "delta", "select": "all"}),
}
VAL_SETS = [
    {"name": "stsb_dev", "task": "sts", "format": "stsb", "path": "../shared/data/stsbenchmark/sts-dev.csv"},
    {"name": "scifact_holdout", "task": "ir", "format": "beir", "path": "../shared/data/scifact", "split": "train",
     "holdout_fraction": 0.1, "max_corpus": 1000},
]


PRECISION = "training: bf16 autocast (trainer=cpu); test encoding: bf16 autocast (as the ablation)"


def run_info(run: Path) -> dict:
    log = run.parent / f"{run.name}.log"
    command = (run.parent / f"{run.name}.cmd").read_text().strip() if (run.parent / f"{run.name}.cmd").is_file() else None
    done = run / "DONE"
    rev = run.parent / "git_rev.txt"  # written by the runner when the trajectories were started
    info = {"run": str(run.relative_to(ROOT)) if run.is_relative_to(ROOT) else str(run), "command": command,
            "wall_s": float(done.read_text()) if done.is_file() else None,
            "git_at_training": rev.read_text().split()[0] if rev.is_file() else None}
    if log.is_file():
        text = log.read_text(errors="replace")
        info["val_at_end"] = {line.split()[0]: float(line.split()[1]) for line in text.splitlines()
                              if line.startswith("val/") and len(line.split()) >= 2}
        info["mined_in_this_run"] = "mining hard negatives" in text and "started" in text
    return info


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sweep", required=True, help="experiment name: the result file's name")
    parser.add_argument("--runs", nargs="+", type=Path, required=True)
    parser.add_argument("--work", type=Path, default=ROOT / "logs" / "fusion_eval")
    parser.add_argument("--rows", nargs="*", default=["last", *MERGES], help="which rows (last + MERGES keys)")
    parser.add_argument("--val", action="store_true", help="also score every row on the validation sets")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "fusion")
    parser.add_argument("--cached-only", action="store_true",
                        help="only collect rows already scored (no merging, no scoring): assemble the result file")
    args = parser.parse_args()
    started_at = time.time()
    os.chdir(ROOT)
    import torch

    from codiemb.merge.api import merge_from_config
    from codiemb.merge.runs import exports

    runs = [r.resolve() for r in args.runs]
    work = args.work / args.sweep
    work.mkdir(parents=True, exist_ok=True)
    cache, val_cache, rows = {}, {}, []
    result_file = args.out / f"{args.sweep}.json"
    previous = json.loads(result_file.read_text()) if result_file.is_file() else {}
    print(f"[fusion] cpu capability {torch.backends.cpu.get_cpu_capability()}, threads {torch.get_num_threads()}",
          flush=True)

    def score(key: str, label: str, path: Path, extra: dict) -> None:
        cached = args.work / "eval" / (label.replace(" ", "_").replace("/", "_").replace(",", "") + ".json")
        if args.cached_only and not cached.is_file():  # ablation.evaluate_model's cache file
            return
        row = evaluate_model(label, str(path), args.work, cache, 128, True)
        row = {**row, "key": key, **extra, "path": str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)}
        if args.val:
            row["val"] = validation(path, val_cache, args.work, label)
        rows.append(row)
        write()

    def write() -> None:
        payload = {"sweep": args.sweep, "precision": PRECISION, "runs": [run_info(r) for r in runs],
                   "rows": rows, "merges": merges}
        write_result(result_file, payload, started_at)

    merges: dict = previous.get("merges", {})
    finished = [r for r in runs if (r / "DONE").is_file()]
    if "last" in args.rows:
        for run in finished:
            # one label per run, whatever the sweep: a trajectory shared by two sweeps is scored once
            score("last", f"{run.name} last", exports(run)[-1], {"trajectory": run.name})
    for key in [k for k in args.rows if k in MERGES and len(finished) == len(runs)]:
        label, cfg = MERGES[key]
        output = work / key
        cfg = {"select": "last", **cfg, "runs": [str(r) for r in runs], "output": str(output)}
        if cfg["method"] == "dare":
            cfg["lam"] = 1.0 / len(runs)  # DARE's linear sum rescaled to an average over the K trajectories
        if args.cached_only and not (output / "merge_report.json").is_file():
            continue
        if not (output / "merge_report.json").is_file():
            started = time.perf_counter()
            merge_from_config(cfg, user_overrides=[])
            merges[key] = {"config": cfg, "merge_s": round(time.perf_counter() - started, 1)}
        report = json.loads((output / "merge_report.json").read_text())
        merges.setdefault(key, {"config": cfg})["layers"] = {
            "groups": report["layers"]["groups"], "overall": report["layers"]["overall"],
            "dominant_group": {k: v["dominant_group"] for k, v in report["layers"]["layers"].items()},
            "dominant_fraction": {k: v["dominant_fraction"] for k, v in report["layers"]["layers"].items()},
            "mean_weight": {k: v["mean_weight"] for k, v in report["layers"]["layers"].items()}}
        score(key, f"{args.sweep}: {label}", output, {"members": len(report["checkpoints"])})
    write()
    print(f"[fusion] wrote {result_file}")


def validation(path: Path, cache: dict, work: Path, label: str) -> dict:
    """Validation scores (x100) of one model, cached beside the test scores."""
    import torch

    from codiemb.eval.runner import evaluate, summarize
    from codiemb.eval.sets import parse_sets
    from codiemb.models.encoder import Encoder

    file = work / "val" / (label.replace(" ", "_").replace("/", "_").replace(",", "").replace(":", "") + ".json")
    if file.exists():
        return json.loads(file.read_text())
    specs = parse_sets(VAL_SETS)
    results = evaluate(Encoder.from_pretrained(str(path)), specs, batch_size=128, cache=cache,
                       autocast_dtype=torch.bfloat16)
    row = {k: float(v) for k, v in summarize(results, specs).items()}
    write_json(file, row)
    return row


if __name__ == "__main__":
    main()
