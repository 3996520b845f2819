"""Eval-only check for ``model.pool_prompt`` (fidelity item 2): the base all-MiniLM-L6-v2 with an instruction
prompt on queries (and both STS sentences), prompt tokens pooled or not, on the validation sets of the real
recipe (STS-B dev, held-out SciFact train queries; ``configs/eval/real_holdout.yaml``). One thread, fp32.

    python bench/studies/fidelity_eval.py NAME POOL_PROMPT("true"|"false") [PROMPT]

Writes ``bench/results/fidelity/NAME.json`` (provenance keys of ``bench/provenance.py``, metrics x100).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))

from fidelity import save  # the result-file format of bench/studies/fidelity.py

SHARED = ROOT.parent / "shared" / "data"
PROMPT = "Instruction: Given a web search query, retrieve relevant passages that answer the query Query: "
SETS = [{"name": "stsb_dev", "task": "sts", "format": "stsb", "path": str(SHARED / "stsbenchmark" / "sts-dev.csv")},
        {"name": "scifact_holdout", "task": "ir", "format": "beir", "path": str(SHARED / "scifact"), "split": "train",
         "holdout_fraction": 0.1, "max_corpus": 1000}]


def main() -> None:
    if len(sys.argv) < 3 or sys.argv[1] in ("-h", "--help"):
        print(__doc__)
        return
    from codiemb.eval.runner import evaluate, summarize
    from codiemb.models.encoder import Encoder

    name, pool_prompt = sys.argv[1], sys.argv[2] == "true"
    prompt = sys.argv[3] if len(sys.argv) > 3 else PROMPT
    torch.set_num_threads(1)
    started_at = time.time()
    encoder = Encoder.from_pretrained("bundled:all-MiniLM-L6-v2", query_prompt=prompt, pool_prompt=pool_prompt)
    results = evaluate(encoder, SETS, batch_size=64)
    summary = summarize(results, SETS)
    save(name, started_at, {**{f"val/{k}": v for k, v in summary.items()},
                            **{f"val/{s}/{k}": v for s, r in results.items() for k, v in r.items()}},
         pool_prompt=pool_prompt, prompt=prompt)


if __name__ == "__main__":
    main()
