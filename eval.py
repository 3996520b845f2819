"""Evaluate an exported checkpoint, a merged model or a hub model on a list of sets.

    python eval.py model_path=<dir | hub name | bundled:all-MiniLM-L6-v2> eval=real_test
    python eval.py model_path=<trained dir> compare_with=bundled:all-MiniLM-L6-v2 report.geometry=true

Prints the table and writes results.json / results.md (and geometry PNGs) into the Hydra run directory.
"""

from __future__ import annotations

import os
import sys

import hydra
from omegaconf import DictConfig

import codiemb.run.resolvers  # noqa: F401  (registers the resolvers the configs use)
import codiemb.utils.quiet  # noqa: F401  (drops known third-party console noise)

os.environ.setdefault("PROJECT_ROOT", os.path.dirname(os.path.abspath(__file__)))


@hydra.main(version_base="1.3", config_path="configs", config_name="eval")
def main(cfg: DictConfig) -> dict:
    from codiemb.errors import CodiembError
    from codiemb.eval.app import run_eval

    try:
        return run_eval(cfg.model_path, cfg.eval.sets, cfg.paths.output_dir, compare_with=cfg.get("compare_with"),
                        batch_size=cfg.batch_size, geometry=cfg.report.geometry,
                        geometry_max_pairs=cfg.report.max_pairs, device=cfg.get("device"),
                        precision=cfg.get("precision", "auto"), truncate_dim=cfg.get("truncate_dim"))
    except CodiembError as exc:  # not a model, a bad eval set: one line saying what to change
        print(f"codiemb: error: {exc}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
