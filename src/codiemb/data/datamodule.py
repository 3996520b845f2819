"""LightningDataModule: validate every configured dataset up front into the Arrow record store
(:mod:`codiemb.data.store`), and serve task-homogeneous batches read from it by index."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader

from codiemb.data.collator import Collator
from codiemb.data.holdout import BUCKETS, capped_fraction
from codiemb.data.quality import format_warnings
from codiemb.data.readers import ReadResult, get_reader
from codiemb.data.sampler import Source, TaskBatchSampler, check_positive
from codiemb.data.store import Part, RecordStore, default_cache_dir, ensure_built
from codiemb.errors import ConfigError, DataError

log = logging.getLogger(__name__)


class CoDiEmbDataModule(L.LightningDataModule):
    """``datasets`` is a list of ``{name, task, format, path, ...reader options}``; see ``configs/data/``.

    Two options work for every format: ``max_rows`` (a seeded subsample) and ``holdout: {fraction: f}``
    (drop the queries that :mod:`codiemb.data.holdout` reserves for validation; ``max: n`` also caps them at
    ``n`` rows, :func:`codiemb.data.holdout.capped_fraction`). How many rows each holdout took is in
    ``load_report[name]["held_out"]``.

    Every dataset is read once into a memory-mapped Arrow table under ``cache_dir`` (:mod:`codiemb.data.store`;
    a training run passes ``$CODIEMB_DATA_CACHE`` or ``<paths.log_dir>/cache/data`` from
    ``configs/data/base/default.yaml``, which every data config starts from; without one ``$CODIEMB_DATA_CACHE``
    or ``~/.cache/codiemb/data``); later runs, other ranks and DataLoader workers map the same file. ``length_grouping`` makes each step's rows similar in length (:mod:`codiemb.data.sampler`).
    """

    def __init__(self, datasets: Sequence[dict], task_mix: str = "balanced", ir_batch_size: int = 16,
                 sts_batch_size: int = 32, max_positives: int = 2, num_negatives: int = 3,
                 query_max_length: int | None = None, passage_max_length: int | None = None,
                 sts_positive_threshold: float = 0.8, accumulate_grad_batches: int = 1, num_workers: int = 1,
                 seed: int = 42, on_error: str = "raise", ir_share: float = 0.5, fixed_group_size: bool = False,
                 cache_dir: str | None = None, length_grouping: bool = True):
        super().__init__()
        self.ir_share = float(ir_share)  # task_mix=balanced only: the fraction of optimizer steps that are IR
        self.dataset_specs = [dict(spec) for spec in datasets]
        self.task_mix, self.seed, self.on_error = task_mix, seed, on_error
        self.batch_size = {"ir": int(ir_batch_size), "sts": int(sts_batch_size)}
        self.accumulate = int(accumulate_grad_batches)
        check_positive(self.batch_size, accumulate=self.accumulate)  # before any data is read
        self.num_workers = num_workers
        self.collator_options = {"max_positives": max_positives, "num_negatives": num_negatives,
                                 "sts_positive_threshold": sts_positive_threshold, "seed": seed,
                                 "fixed_group_size": fixed_group_size}  # official: groups filled with replacement
        self.max_lengths = {"query_max_length": query_max_length, "passage_max_length": passage_max_length}
        self.cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
        self.length_grouping = bool(length_grouping)
        self.sources: list[Source] = []
        self.dataset: RecordStore | None = None
        self.sampler: TaskBatchSampler | None = None
        self.collator: Collator | None = None
        self.load_report: dict[str, dict[str, Any]] = {}
        self._pending_state: dict | None = None

    # ------------------------------------------------------------ loading (before the model exists)
    def load(self) -> None:
        """Read and validate every dataset. Runs once; cheap to call again."""
        if self.dataset is not None:
            return
        names = [spec.get("name") for spec in self.dataset_specs]
        if len(set(names)) != len(names) or None in names:
            raise ConfigError(f"every dataset needs a unique 'name'; got {names}")
        parts, self.sources, self.load_report = [], [], {}  # a load that raised may be called again
        for spec in self.dataset_specs:
            spec = dict(spec)
            name, fmt, path = spec.pop("name"), spec.pop("format", "jsonl"), str(spec.pop("path"))
            spec.setdefault("on_error", self.on_error)
            max_rows, holdout = spec.pop("max_rows", None), spec.pop("holdout", None)
            get_reader(fmt)  # an unknown format is a ConfigError before anything is built
            target = ensure_built(fmt, path, name, spec, self.cache_dir)
            # holdout e.g. {fraction: 0.1}: those queries are the validation slice (eval sets use keep: val)
            fraction, held_out = holdout_fraction(target, holdout), 0
            part = Part.open(target, holdout=fraction, max_rows=max_rows, seed=self.seed)
            if fraction:
                held_out = int((part.table.data.table.column("bucket").to_numpy() < fraction * BUCKETS).sum())
                log.info("%s: %d rows held back for validation (holdout fraction %.4g)", name, held_out, fraction)
            skipped = part.meta["skipped"]
            if not len(part.rows):
                raise DataError(f"dataset '{name}' is empty after loading ({sum(skipped.values())} rows skipped)",
                                source=path)
            parts.append(part)
            self.sources.append(Source(name, part.task, len(part.rows)))
            self.load_report[name] = {"task": part.task, "rows": len(part.rows), "skipped": skipped,
                                      "warnings": part.meta["warnings"], "cache": str(target)}
            if fraction:
                self.load_report[name]["held_out"] = held_out
            log.info(ReadResult(range(len(part.rows)), Counter(skipped)).summary(name))
        skipped = {name: info["skipped"] for name, info in self.load_report.items() if info["skipped"]}
        if skipped:  # on_error=skip: one report at the end of loading, per dataset and reason
            log.warning("skipped bad rows (data.on_error=skip): %s", "; ".join(
                f"{name}: {sum(counts.values())} ({', '.join(f'{r}: {c}' for r, c in sorted(counts.items()))})"
                for name, counts in skipped.items()))
        suspicious = format_warnings({name: info["warnings"] for name, info in self.load_report.items()})
        if suspicious:
            log.warning("suspicious rows (kept; duplicates weigh double, a negative equal to a positive is a false "
                        "negative): %s", suspicious)
        self.dataset = RecordStore(parts)

    def build_sampler(self, world_size: int = 1, rank: int = 0) -> TaskBatchSampler:
        self.load()
        return TaskBatchSampler(self.sources, self.batch_size, policy=self.task_mix, seed=self.seed,
                                world_size=world_size, rank=rank, accumulate=self.accumulate,
                                ir_share=self.ir_share,
                                lengths=self.dataset.lengths() if self.length_grouping else None)

    def attach_tokenizer(self, tokenizer, settings: dict) -> None:
        """Give the collator the model's tokenizer and prompts (the data side never imports the model)."""
        lengths = {"query_max_length": self.max_lengths["query_max_length"] or settings["max_query_length"],
                   "passage_max_length": self.max_lengths["passage_max_length"] or settings["max_passage_length"]}
        self.collator = Collator(tokenizer, query_prompt=settings.get("query_prompt", ""),
                                 passage_prompt=settings.get("passage_prompt", ""),
                                 instruction_template=settings["instruction_template"],
                                 **lengths, **self.collator_options)

    # ------------------------------------------------------------ Lightning hooks
    def setup(self, stage: str | None = None) -> None:
        if self.sampler is None:
            trainer = self.trainer
            world, rank = (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)
            self.sampler = self.build_sampler(world, rank)
            if self._pending_state:
                self.sampler.load_state_dict(self._pending_state)

    def train_dataloader(self) -> DataLoader:
        if self.collator is None:
            raise RuntimeError("call attach_tokenizer(...) before training")
        self.setup("fit")
        return self.loader(self.sampler)

    def loader(self, sampler) -> DataLoader:
        """The training DataLoader over ``sampler`` (``train_dataloader``'s, and the data benchmark's)."""
        # Its own generator: creating a DataLoader iterator draws a seed, which must not move the global RNG
        # (a resumed run creates one more iterator than the uninterrupted run; dropout would then differ).
        return DataLoader(self.dataset, batch_sampler=sampler, collate_fn=self.collator,
                          num_workers=self.num_workers, persistent_workers=self.num_workers > 0,
                          generator=torch.Generator().manual_seed(self.seed))

    def state_dict(self) -> dict:
        return {"sampler": self.sampler.state_dict()} if self.sampler is not None else {}

    def load_state_dict(self, state: dict) -> None:
        if "sampler" in state:
            self._pending_state = state["sampler"]
            if self.sampler is not None:
                self.sampler.load_state_dict(state["sampler"])

    def mark_consumed(self, position: int) -> None:
        if self.sampler is not None:
            self.sampler.mark_consumed(position)


def holdout_fraction(target: Path, holdout: dict | None) -> float | None:
    """The fraction of a dataset's hash space held back for validation: ``holdout.fraction``, lowered so that at
    most ``holdout.max`` rows fall in it (the validation set computes the same from the same rows)."""
    if not holdout or not holdout.get("fraction"):
        return None
    fraction = float(holdout["fraction"])
    if not holdout.get("max"):
        return fraction
    table = Part.open(target).table.data.table
    return capped_fraction(table.column("bucket").to_numpy().tolist(), fraction, int(holdout["max"]))
