"""Merge exported checkpoints, or fuse training runs, into one model (CoDiEmb delta merge or a baseline).

    python merge.py merge.base=<dir> merge.checkpoints=[<dir>,<dir>] merge.output=<dir>
    python merge.py merge.runs=[<run dir>,<run dir>] merge.select=last merge.output=<dir>   # fuse trajectories
    python merge.py merge.runs=<multirun dir> merge.select=all merge.method=uniform merge.output=<dir>
    python merge.py merge=ties merge.density=0.3 merge.base=... merge.checkpoints=[...] merge.output=...
    python merge.py merge=greedy_soup eval=real_dev merge.base=... merge.checkpoints=[...] merge.output=...
    python merge.py ... merge.evaluate=true     # score base, checkpoints and result; print one table

The output loads with SentenceTransformer(dir) and holds a model card, merge_report.json / merge_report.png.
"""

from __future__ import annotations

import os
import sys

import hydra
from omegaconf import DictConfig

import codiemb.run.resolvers  # noqa: F401  (registers the resolvers the configs use)
import codiemb.utils.quiet  # noqa: F401  (drops known third-party console noise)

os.environ.setdefault("PROJECT_ROOT", os.path.dirname(os.path.abspath(__file__)))


@hydra.main(version_base="1.3", config_path="configs", config_name="merge")
def main(cfg: DictConfig) -> dict | None:
    from codiemb.errors import CodiembError
    from codiemb.merge import merge_from_config
    from codiemb.merge.config import check_merge_config
    from codiemb.merge.report import format_layers

    try:
        merge = check_merge_config(cfg.merge)  # the command line's overrides decide which options count
        needs_evaluator = merge.get("evaluate") or merge.get("method") == "greedy_soup"
        evaluator = hydra.utils.instantiate(cfg.evaluator) if needs_evaluator and cfg.get("evaluator") else None
        report = merge_from_config(cfg.merge, evaluate_fn=evaluator)
    except CodiembError as exc:  # an impossible config or inputs that cannot be merged: one line
        print(f"codiemb: error: {exc}", file=sys.stderr)
        sys.exit(1)
    if report is None:
        print("merge=none: nothing merged")
        return None
    summary = report["summary"]
    print(f"merged {len(report['checkpoints'])} checkpoints ({report['method']}) into {report['output']}")
    for i, (weight, share) in enumerate(zip(summary["mean_weight"], summary["dominant_fraction"]), start=1):
        member = (report.get("members") or [{}] * len(summary["mean_weight"]))[i - 1]
        name = f" {member['trajectory']} @ step {member['step']}" if member else ""
        print(f"  ckpt {i}{name}: mean weight {weight:.4f}, dominates {share:.1%} of elements")
    if report.get("members"):
        print(format_layers(report["layers"]))
    if report.get("greedy_soup"):
        print(f"  greedy soup members (0-based): {report['greedy_soup']['members']}")
    if report.get("evaluation"):
        print(report["evaluation"]["table"])
    return report


if __name__ == "__main__":
    main()
