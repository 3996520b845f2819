"""Train a joint IR + STS encoder: `python train.py model=minilm task_mix=balanced loss=codiemb`."""

import os
import sys

import hydra
from omegaconf import DictConfig

import codiemb.run.resolvers  # noqa: F401  (registers the resolvers the configs use)
from codiemb.errors import CodiembError
from codiemb.utils.summary import objective


# Paths in the configs are relative to this directory (configs/paths/default.yaml).
os.environ.setdefault("PROJECT_ROOT", os.path.dirname(os.path.abspath(__file__)))


@hydra.main(version_base="1.3", config_path="configs", config_name="train")
def main(cfg: DictConfig) -> float | None:
    from codiemb.run.train import train

    try:
        result = train(cfg)
    except CodiembError as exc:  # bad data or an impossible config: one line saying what to change
        print(f"codiemb: error: {exc}", file=sys.stderr)
        sys.exit(1)
    # Returned so Hydra sweepers (Optuna) can optimise it: the delivered (merged) model's score by default.
    return objective(result, cfg.get("optimized_metric"))


if __name__ == "__main__":
    main()
