"""Mine hard negatives: `python mine.py input.path=<data> input.format=<fmt> output=<file.jsonl>`
[`teacher=<model dir>`: also write teacher scores (pos_scores / neg_scores) for loss.ir.distill]."""

import os
import sys

import hydra
from omegaconf import DictConfig, OmegaConf

import codiemb.run.resolvers  # noqa: F401  (registers the resolvers the configs use)
import codiemb.utils.quiet  # noqa: F401  (drops known third-party console noise)

# Paths in the configs are relative to this directory (configs/paths/default.yaml).
os.environ.setdefault("PROJECT_ROOT", os.path.dirname(os.path.abspath(__file__)))


@hydra.main(version_base="1.3", config_path="configs", config_name="mine")
def main(cfg: DictConfig) -> None:
    from codiemb.errors import CodiembError
    from codiemb.mining.miner import mine_dataset

    try:
        report = mine_dataset(
            model_path=cfg.model_path, encoder_options=OmegaConf.to_container(cfg.encoder),
            input_format=cfg.input.format, input_path=cfg.input.path, split=cfg.input.split, name=cfg.input.name,
            reader_options=OmegaConf.to_container(cfg.input.options), corpus_path=cfg.corpus_path,
            output=cfg.output, limit=cfg.limit, with_scores=cfg.with_scores, teacher=cfg.get("teacher"),
            range_min=cfg.range_min, range_max=cfg.range_max, num_negatives=cfg.num_negatives,
            absolute_margin=cfg.absolute_margin, relative_margin=cfg.relative_margin, max_score=cfg.max_score,
            sampling=cfg.sampling, seed=cfg.seed, batch_size=cfg.batch_size, chunk_size=cfg.chunk_size,
            corpus_block=cfg.corpus_block, precision=cfg.precision,
            keep_existing_negatives=cfg.keep_existing_negatives, show_progress=cfg.show_progress)
    except CodiembError as exc:  # bad data, options or model: one line saying what to change
        print(f"codiemb: error: {exc}", file=sys.stderr)
        sys.exit(1)
    print(f"wrote {cfg.output}: {report.summary()}; seconds {report.seconds}")


if __name__ == "__main__":
    main()
