"""Train a joint IR + STS encoder: `python train.py model=minilm task_mix=balanced loss=codiemb`."""

import os
import sys

import hydra
from omegaconf import DictConfig

import codiemb.run.resolvers  # noqa: F401  (registers the resolvers the configs use)
import codiemb.utils.quiet  # noqa: F401  (drops known third-party console noise)
from codiemb.errors import CodiembError, RunInterrupted
from codiemb.utils.summary import objective

# Paths in the configs are relative to this directory (configs/paths/default.yaml).
os.environ.setdefault("PROJECT_ROOT", os.path.dirname(os.path.abspath(__file__)))


@hydra.main(version_base="1.3", config_path="configs", config_name="train")
def main(cfg: DictConfig) -> float | None:
    from codiemb.run.run_dir import record_in_log_files
    from codiemb.run.train import train

    try:
        result = train(cfg)
    except RunInterrupted as exc:  # SIGTERM / Ctrl-C: how to continue, and a non-zero exit (143 / 130)
        record_in_log_files(f"codiemb: interrupted: {exc}")
        print(f"codiemb: interrupted: {exc}", file=sys.stderr, flush=True)
        sys.exit(exc.exit_code)
    except CodiembError as exc:  # bad data or an impossible config: one line saying what to change
        record_in_log_files(f"codiemb: error: {exc}")  # train.log says why the run stopped
        print(f"codiemb: error: {exc}", file=sys.stderr)
        sys.exit(1)
    # Returned so Hydra sweepers (Optuna) can optimise it: the delivered (merged) model's score by default.
    return objective(result, cfg.get("optimized_metric"))


if __name__ == "__main__":
    from codiemb.run.run_dir import with_saved_overrides

    sys.argv = with_saved_overrides(sys.argv)  # resume=auto hydra.run.dir=<run>: the run's own overrides first
    main()
    from codiemb.sweep.fuse import FAILURES

    sys.exit(1 if FAILURES else 0)  # a sweep whose fusion failed (said once, above) is not a success
