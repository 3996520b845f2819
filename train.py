"""Train a joint IR + STS encoder: `python train.py model=minilm task_mix=balanced loss=codiemb`."""

import hydra
from omegaconf import DictConfig

import codiemb.utils.resolvers  # noqa: F401  (registers the resolvers the configs use)


@hydra.main(version_base="1.3", config_path="configs", config_name="train")
def main(cfg: DictConfig) -> float | None:
    from codiemb.training import train

    result = train(cfg)
    # Returned so Hydra sweepers (Optuna) can optimise it.
    metric = result.get("metrics", {}).get(cfg.get("optimized_metric")) if result else None
    return metric


if __name__ == "__main__":
    main()
