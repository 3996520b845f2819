"""One cheap real-data run for the official-fidelity switches, result as JSON.

    python bench/studies/fidelity.py NAME [train.py overrides ...]

Runs ``train.py experiment=real_cpu trainer.max_steps=60 merge=none`` (``$FIDELITY_STEPS`` steps) plus the
overrides from a snapshot of ``src/`` and ``configs/`` (so editing the tree while it runs changes nothing), one
OpenMP thread, validation only at the end (STS-B dev + the held-out SciFact train queries, ``val=real_holdout``;
never a test split), and writes ``bench/results/fidelity/NAME.json``: the provenance keys of
``bench/provenance.py``, the train.py command, a hash of the uncommitted diff and the final ``val/*`` metrics.
Mined negatives are cached in ``$FIDELITY_DIR/logs/mined``.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))

from provenance import write_result  # bench/ is not a package

WORK = Path(os.environ.get("FIDELITY_DIR", "/tmp/codiemb-fidelity"))
STEPS = int(os.environ.get("FIDELITY_STEPS", "60"))
BASE = ["experiment=real_cpu", f"trainer.max_steps={STEPS}", "merge=none", "checkpoint_every_n_steps=100000",
        "callbacks.validation.every_n_steps=100000", "callbacks.model_export.export_initial=false",
        "callbacks.progress_bar.refresh_rate=20"]


def save(name: str, started_at: float, metrics: dict, **extra) -> dict:
    """``bench/results/fidelity/<name>.json``: provenance, a hash of the uncommitted diff, the load average and
    the metrics; also printed. Shared with ``bench/studies/fidelity_eval.py``."""
    diff = subprocess.run(["git", "diff", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=False).stdout
    payload = {"name": name, **extra, "uncommitted_diff_sha1": hashlib.sha1(diff.encode()).hexdigest(),
               "load_average": os.getloadavg(), "metrics": metrics}
    record = write_result(ROOT / "bench" / "results" / "fidelity" / f"{name}.json", payload, started_at)
    print(json.dumps(record, indent=1))
    return record


def final_metrics(run_dir: Path) -> dict[str, float]:
    values: dict[str, float] = {}
    for file in run_dir.glob("**/metrics.csv"):
        with open(file) as handle:
            for row in csv.DictReader(handle):
                values.update({k: float(v) for k, v in row.items() if k.startswith("val/") and v not in ("", None)})
    return values


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] in ("-h", "--help"):
        print(__doc__)
        return
    started_at = time.time()
    name, overrides = sys.argv[1], sys.argv[2:]
    snap, run_dir = WORK / "snap" / name, WORK / "runs" / name
    shutil.rmtree(snap, ignore_errors=True)
    shutil.rmtree(run_dir, ignore_errors=True)
    for part in ("src", "configs"):
        shutil.copytree(ROOT / part, snap / part, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    shutil.copy(ROOT / "train.py", snap / "train.py")
    env = dict(os.environ, PYTHONPATH=str(snap / "src"), PROJECT_ROOT=str(snap), OMP_NUM_THREADS="1",
               HF_HUB_OFFLINE="1", WANDB_MODE="offline", TOKENIZERS_PARALLELISM="false")
    env.setdefault("HF_DATASETS_CACHE", str(WORK / "hf-datasets"))
    cmd = [sys.executable, "train.py", *BASE, *overrides, f"paths.log_dir={WORK / 'logs'}",
           f"paths.shared_data_dir={ROOT.parent / 'shared' / 'data'}", f"hydra.run.dir={run_dir}"]
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(WORK / f"{name}.log", "w") as log:
        rc = subprocess.run(cmd, cwd=snap, env=env, stdout=log, stderr=subprocess.STDOUT, check=False).returncode
    save(name, started_at, final_metrics(run_dir), train_command=" ".join(["python train.py", *BASE, *overrides]),
         returncode=rc, omp_threads=1)


if __name__ == "__main__":
    main()
