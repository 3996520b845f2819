"""Train a joint IR + STS encoder: `python train.py model=minilm task_mix=balanced loss=codiemb`."""

import sys

import hydra
from omegaconf import DictConfig

import codiemb.utils.resolvers  # noqa: F401  (registers the resolvers the configs use)
from codiemb.errors import CodiembError


@hydra.main(version_base="1.3", config_path="configs", config_name="train")
def main(cfg: DictConfig) -> float | None:
    from codiemb.training import train

    try:
        result = train(cfg)
    except CodiembError as exc:  # bad data or an impossible config: one line saying what to change
        print(f"codiemb: error: {exc}", file=sys.stderr)
        sys.exit(1)
    # Returned so Hydra sweepers (Optuna) can optimise it.
    return result.get("metrics", {}).get(cfg.get("optimized_metric")) if result else None


if __name__ == "__main__":
    main()
