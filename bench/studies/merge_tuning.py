"""Delta fusion's own settings, chosen on the validation sets only.

    python bench/studies/merge_tuning.py --run logs/guard/runs/joint_recipe --lam 0.7

Merges the run's periodic exports with `merge.method=delta` at every `merge.p` x `merge.granularity` of the
grid (and the uniform soup of the same exports, the reference the issue names) into logs/merge_tuning/, scores
each on `eval=real_holdout` (STS-B dev, SciFact holdout) in fp32 through bench/studies/guard_eval.py --no-guard
--val, and prints one table ranked by the validation mean. Result files: bench/results/merge_tuning/<label>.json
(merge command, provenance keys of bench/provenance.py) and table.json. The test sets are never read here.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))

import guard_eval  # bench/ is not a package; guard_eval.py sits beside this file
from provenance import write_result

RESULTS = ROOT / "bench" / "results" / "merge_tuning"


def merge_and_score(run: Path, label: str, overrides: list[str]) -> dict:
    exports = sorted(str(p) for p in (run / "checkpoints").glob("step_*/"))
    out = ROOT / "logs" / "merge_tuning" / label
    cmd = [sys.executable, "merge.py", f"merge.base={run / 'checkpoints' / 'initial'}",
           f"merge.checkpoints=[{','.join(exports)}]", f"merge.output={out}", *overrides,
           f"hydra.run.dir={out}_hydra"]
    if not (out / "model.safetensors").exists():
        subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    shown = "python " + " ".join(cmd[1:])
    return guard_eval.main(["--label", label, "--model", str(out), "--no-guard", "--val", "--out", str(RESULTS),
                            "--note", f"{run.name}: {len(exports)} exports, {' '.join(overrides)}", "--cmd", shown])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", default=str(ROOT / "logs" / "guard" / "runs" / "joint_recipe"))
    parser.add_argument("--lam", type=float, default=0.7)
    parser.add_argument("--p", nargs="*", type=float, default=[1.0, 2.0])
    parser.add_argument("--granularity", nargs="*", default=["element", "row", "tensor"])
    args = parser.parse_args(argv)
    started_at = time.time()
    run = Path(args.run).resolve()
    RESULTS.mkdir(parents=True, exist_ok=True)
    rows = []
    for p in args.p:
        for granularity in args.granularity:
            label = f"{run.name}_delta_p{p:g}_{granularity}_lam{args.lam:g}"
            payload = merge_and_score(run, label, ["merge=delta", f"merge.p={p}", f"merge.granularity={granularity}",
                                                   f"merge.lam={args.lam}"])
            rows.append((label, payload))
    rows.append((f"{run.name}_uniform", merge_and_score(run, f"{run.name}_uniform", ["merge=uniform"])))
    print(f"cpu capability {rows[0][1]['cpu_capability']}; validation only (eval=real_holdout), fp32")
    print("| merge | STS-B dev | SciFact holdout | validation mean |")
    print("|---|---|---|---|")
    for label, payload in sorted(rows, key=lambda r: -r[1]["groups"]["real_holdout"]["summary"]["mean"]):
        summary = payload["groups"]["real_holdout"]["summary"]
        print(f"| {label} | {summary['sts_spearman']:.2f} | {summary['ir_ndcg@10']:.2f} | {summary['mean']:.2f} |")
    write_result(RESULTS / "table.json",
                 {"rows": {label: payload["groups"]["real_holdout"]["summary"] for label, payload in rows}},
                 started_at)


if __name__ == "__main__":
    main()
