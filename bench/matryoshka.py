"""Matryoshka training against the same recipe without it: ``experiment=real_cpu`` with
``loss.matryoshka_dims=[384,256,128,64]``, its delivered model scored at every size on validation.

    OMP_NUM_THREADS=1 python bench/matryoshka.py --seed 43     # bench/results/matryoshka/real_cpu_seed43.json
    python bench/matryoshka.py --test --seed 43                # the test read (once, when the comparison is done)
    python bench/matryoshka.py --table                         # BENCHMARKS section 12 from the result files

The "without it" row of each seed is the same recipe's delivered model from bench/peer.py (same seed, its
``codiemb_seed<S>.json`` at full size and ``codiemb_merged_val_at_128`` in ``seed<S>.json``), so each pair is one
recipe on one machine class; the table says which CPU trained each. Weights are deleted afterwards.
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
from peer import ENV  # noqa: E402  (bench/ is on sys.path when run as a script; one thread each, offline)
from provenance import KEYS, write_result  # noqa: E402
from rss import measure  # noqa: E402

DIMS = (384, 256, 128, 64)
OUT = ROOT / "bench" / "results" / "matryoshka"
PEER = ROOT / "bench" / "results" / "peer"


def evaluate(model: Path, eval_group: str, dim: int, work: Path) -> dict:
    """``python eval.py model_path=<model> eval=<group> truncate_dim=<dim>``: its results.json and wall time."""
    run_dir = work / f"eval_{eval_group}_{dim}"
    cmd = ["eval.py", f"model_path={model}", f"eval={eval_group}", f"truncate_dim={dim}", f"hydra.run.dir={run_dir}"]
    started = time.time()
    done = subprocess.run([sys.executable, *cmd], cwd=ROOT, env=ENV, capture_output=True, text=True, check=False)
    if done.returncode:
        sys.exit(f"eval failed ({done.returncode}): {done.stderr[-2000:]}")
    result = json.loads((run_dir / "results.json").read_text())
    return {"command": "OMP_NUM_THREADS=1 python " + " ".join(cmd[:-1]), "wall_s": round(time.time() - started, 1),
            "raw": result}


def main_scores(raw: dict) -> tuple[float, float]:
    """(STS-B Spearman, SciFact nDCG@10) of one eval.py results.json, whatever the model's key."""
    model = next(iter(raw["models"].values()))
    sets = model["sets"]
    sts = next(v["main_score"] for k, v in sets.items() if k.startswith("stsb"))
    ir = next(v["main_score"] for k, v in sets.items() if k.startswith("scifact"))
    return sts, ir


def table() -> str:
    rows = ["| seed | CPU (training) | model | size | STS-B dev | SciFact holdout | validation mean |",
            "|---|---|---|---|---|---|---|"]
    for path in sorted(OUT.glob("real_cpu_seed*.json")):
        run = json.loads(path.read_text())
        seed = run["seed"]
        for dim in DIMS:
            sts, ir = main_scores(run["by_size"][str(dim)]["raw"])
            rows.append(f"| {seed} | {run['cpu_capability']} | with `loss.matryoshka_dims` | {dim} | {sts:.2f} | "
                        f"{ir:.2f} | {(sts + ir) / 2:.2f} |")
        peer = PEER / f"seed{seed}.json"
        if peer.is_file():
            bench = json.loads(peer.read_text())
            scores = json.loads((PEER / f"codiemb_seed{seed}.json").read_text())["groups"]["real_holdout"]["sets"]
            full = scores["stsb_dev"]["main_score"], scores["scifact_holdout"]["main_score"]
            at128 = main_scores(bench["codiemb_merged_val_at_128"])
            for dim, (sts, ir) in ((384, full), (128, at128)):
                rows.append(f"| {seed} | {bench['cpu_capability']} | without (bench/peer.py) | {dim} | {sts:.2f} | "
                            f"{ir:.2f} | {(sts + ir) / 2:.2f} |")
    return "\n".join(rows)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, default=43)
    parser.add_argument("--test", action="store_true", help="score the kept model on eval=real_test at 384 and 128")
    parser.add_argument("--table", action="store_true")
    parser.add_argument("--work", default=str(ROOT / "logs" / "bench" / "matryoshka"))
    args = parser.parse_args(argv)
    if args.table:
        return print(table())
    started_at = time.time()
    work = Path(args.work) / f"seed{args.seed}"
    out = OUT / f"real_cpu_seed{args.seed}.json"
    if args.test:
        payload = json.loads(out.read_text())
        model = Path(payload["delivered"])
        payload["test"] = {str(dim): evaluate(model, "real_test", dim, work) for dim in (384, 128)}
        payload["test_provenance"] = {k: payload.pop(k) for k in KEYS}  # the training's, kept; the file's are the read's
        write_result(out, payload, started_at)
        for weights in [*work.rglob("*.safetensors"), *work.rglob("*.ckpt")]:
            weights.unlink()
        return None
    work.mkdir(parents=True, exist_ok=True)
    overrides = ["experiment=real_cpu", "loss.matryoshka_dims=[384,256,128,64]", f"seed={args.seed}"]
    train = [sys.executable, "train.py", *overrides, f"hydra.run.dir={work / 'run'}"]
    payload: dict = {"seed": args.seed, "train_command": "OMP_NUM_THREADS=1 python train.py " + " ".join(overrides),
                     "load_average_start": os.getloadavg(), "train": measure(train, work / "train.log", ROOT, ENV)}
    payload["train"]["samples"] = payload["train"]["samples"][::5]
    if payload["train"]["returncode"]:
        sys.exit(f"training failed; see {work / 'train.log'}")
    summary = json.loads((work / "run" / "summary.json").read_text())
    delivered = (summary.get("delivered") or {}).get("model") or str(work / "run" / "merged")
    payload.update(summary=summary, delivered=delivered)
    payload["by_size"] = {str(dim): evaluate(Path(delivered), "real_holdout", dim, work) for dim in DIMS}
    write_result(out, payload, started_at)  # weights stay for --test; delete logs/bench/matryoshka afterwards


if __name__ == "__main__":
    main()
