"""Eval-only check for ``model.pool_prompt`` (issue #16, item 2): the base all-MiniLM-L6-v2 with an instruction
prompt on queries (and both STS sentences), prompt tokens pooled or not, on the validation sets of the real
recipe (STS-B dev, held-out SciFact train queries; ``configs/eval/real_holdout.yaml``). One thread, fp32.

    python bench/fidelity_eval.py NAME POOL_PROMPT("true"|"false") [PROMPT]

Writes ``bench/results/fidelity/NAME.json`` (command, git revision, wall time, CPU capability, metrics x100).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
PROMPT = "Instruction: Given a web search query, retrieve relevant passages that answer the query Query: "
SETS = [{"name": "stsb_dev", "task": "sts", "format": "stsb", "path": str(SHARED / "stsbenchmark" / "sts-dev.csv")},
        {"name": "scifact_holdout", "task": "ir", "format": "beir", "path": str(SHARED / "scifact"), "split": "train",
         "holdout_fraction": 0.1, "max_corpus": 1000}]


def main() -> None:
    from codiemb.eval.runner import evaluate, summarize
    from codiemb.models.encoder import Encoder

    name, pool_prompt = sys.argv[1], sys.argv[2] == "true"
    prompt = sys.argv[3] if len(sys.argv) > 3 else PROMPT
    torch.set_num_threads(1)
    started = time.perf_counter()
    encoder = Encoder.from_pretrained("bundled:all-MiniLM-L6-v2", query_prompt=prompt, pool_prompt=pool_prompt)
    results = evaluate(encoder, SETS, batch_size=64)
    summary = summarize(results, SETS)
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=False).stdout.strip()
    out = {"name": name, "command": f"python bench/fidelity_eval.py {name} {sys.argv[2]} '{prompt}'",
           "git_revision": git("rev-parse", "HEAD"),
           "uncommitted_diff_sha1": hashlib.sha1(git("diff", "HEAD").encode()).hexdigest(),
           "wall_time_s": round(time.perf_counter() - started, 1),
           "cpu_capability": torch.backends.cpu.get_cpu_capability(), "omp_threads": 1,
           "load_average": os.getloadavg(),
           "metrics": {**{f"val/{k}": v for k, v in summary.items()},
                       **{f"val/{s}/{k}": v for s, r in results.items() for k, v in r.items()}}}
    path = ROOT / "bench" / "results" / "fidelity" / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
