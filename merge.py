"""Merge exported checkpoints into one model (CoDiEmb delta merge or a baseline).

    python merge.py merge.base=<dir> merge.checkpoints=[<dir>,<dir>] merge.output=<dir>
    python merge.py merge=ties merge.density=0.3 merge.base=... merge.checkpoints=[...] merge.output=...
    python merge.py merge=greedy_soup eval=real_dev merge.base=... merge.checkpoints=[...] merge.output=...
    python merge.py ... merge.evaluate=true     # score base, checkpoints and result; print one table

The output loads with SentenceTransformer(dir) and holds merge_report.json / merge_report.png.
"""

from __future__ import annotations

import os

import hydra
from omegaconf import DictConfig

os.environ.setdefault("PROJECT_ROOT", os.path.dirname(os.path.abspath(__file__)))


@hydra.main(version_base="1.3", config_path="configs", config_name="merge")
def main(cfg: DictConfig) -> dict | None:
    from codiemb.merge import merge_from_config

    needs_evaluator = cfg.merge.get("evaluate") or cfg.merge.method == "greedy_soup"
    evaluator = hydra.utils.instantiate(cfg.evaluator) if needs_evaluator and cfg.get("evaluator") else None
    report = merge_from_config(cfg.merge, evaluate_fn=evaluator)
    if report is None:
        print("merge=none: nothing merged")
        return None
    summary = report["summary"]
    print(f"merged {len(report['checkpoints'])} checkpoints ({report['method']}) into {report['output']}")
    for i, (weight, share) in enumerate(zip(summary["mean_weight"], summary["dominant_fraction"]), start=1):
        print(f"  ckpt {i}: mean weight {weight:.4f}, dominates {share:.1%} of elements")
    if report.get("greedy_soup"):
        print(f"  greedy soup members (0-based): {report['greedy_soup']['members']}")
    if report.get("evaluation"):
        print(report["evaluation"]["table"])
    return report


if __name__ == "__main__":
    main()
