"""LightningDataModule: read every configured dataset, validate it up front, and serve task-homogeneous batches."""

from __future__ import annotations

import logging
import random
from typing import Any, Sequence

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from codiemb.data.collator import Collator
from codiemb.data.holdout import apply_holdout
from codiemb.data.readers import read_dataset
from codiemb.data.sampler import Source, TaskBatchSampler
from codiemb.data.schema import Record
from codiemb.errors import ConfigError, DataError

log = logging.getLogger(__name__)


class RecordDataset(Dataset):
    """All records of all sources, concatenated; indexed by ``(position, row)`` pairs from the sampler."""

    def __init__(self, records: Sequence[Record]):
        self.records = list(records)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, key: tuple[int, int]) -> tuple[int, Record]:
        position, row = key
        return position, self.records[row]


class CoDiEmbDataModule(L.LightningDataModule):
    """``datasets`` is a list of ``{name, task, format, path, ...reader options}``; see ``configs/data/``.

    Two options work for every format: ``max_rows`` (a seeded subsample) and ``holdout: {fraction: f}``
    (drop the queries that :mod:`codiemb.data.holdout` reserves for validation).
    """

    def __init__(self, datasets: Sequence[dict], task_mix: str = "balanced", ir_batch_size: int = 16,
                 sts_batch_size: int = 32, max_positives: int = 2, num_negatives: int = 3,
                 query_max_length: int | None = None, passage_max_length: int | None = None,
                 sts_positive_threshold: float = 0.8, accumulate_grad_batches: int = 1, num_workers: int = 1,
                 seed: int = 42, on_error: str = "raise"):
        super().__init__()
        self.dataset_specs = [dict(spec) for spec in datasets]
        self.task_mix, self.seed, self.on_error = task_mix, seed, on_error
        self.batch_size = {"ir": int(ir_batch_size), "sts": int(sts_batch_size)}
        self.accumulate = int(accumulate_grad_batches)
        self.num_workers = num_workers
        self.collator_options = {"max_positives": max_positives, "num_negatives": num_negatives,
                                 "sts_positive_threshold": sts_positive_threshold, "seed": seed}
        self.max_lengths = {"query_max_length": query_max_length, "passage_max_length": passage_max_length}
        self.sources: list[Source] = []
        self.dataset: RecordDataset | None = None
        self.sampler: TaskBatchSampler | None = None
        self.collator: Collator | None = None
        self.load_report: dict[str, dict[str, Any]] = {}
        self._pending_state: dict | None = None

    # ------------------------------------------------------------ loading (before the model exists)
    def load(self) -> None:
        """Read and validate every dataset. Runs once; cheap to call again."""
        if self.dataset is not None:
            return
        records: list[Record] = []
        names = [spec.get("name") for spec in self.dataset_specs]
        if len(set(names)) != len(names) or None in names:
            raise ConfigError(f"every dataset needs a unique 'name'; got {names}")
        for spec in self.dataset_specs:
            spec = dict(spec)
            name, fmt, path = spec.pop("name"), spec.pop("format", "jsonl"), spec.pop("path")
            spec.setdefault("on_error", self.on_error)
            max_rows, holdout = spec.pop("max_rows", None), spec.pop("holdout", None)
            result = read_dataset(fmt, str(path), name=name, **spec)
            if holdout:  # e.g. {fraction: 0.1}: those queries are the validation slice (eval sets use keep: val)
                result.records = apply_holdout(result.records, float(holdout["fraction"]), "train")
            if max_rows and len(result.records) > max_rows:  # a seeded subsample, for quick recipes
                keep = sorted(random.Random(self.seed).sample(range(len(result.records)), int(max_rows)))
                result.records = [result.records[i] for i in keep]
            if not result.records:
                raise DataError(f"dataset '{name}' is empty after loading "
                                f"({sum(result.skipped.values())} rows skipped)", source=str(path))
            self.sources.append(Source(name, result.records[0].task, len(result.records)))
            records.extend(result.records)
            self.load_report[name] = {"task": result.records[0].task, "rows": len(result.records),
                                      "skipped": dict(result.skipped)}
            log.info(result.summary(name))
        skipped = {name: info["skipped"] for name, info in self.load_report.items() if info["skipped"]}
        if skipped:  # on_error=skip: one report at the end of loading, per dataset and reason
            log.warning("skipped bad rows (data.on_error=skip): %s", "; ".join(
                f"{name}: {sum(counts.values())} ({', '.join(f'{r}: {c}' for r, c in sorted(counts.items()))})"
                for name, counts in skipped.items()))
        self.dataset = RecordDataset(records)

    def build_sampler(self, world_size: int = 1, rank: int = 0) -> TaskBatchSampler:
        self.load()
        return TaskBatchSampler(self.sources, self.batch_size, policy=self.task_mix, seed=self.seed,
                                world_size=world_size, rank=rank, accumulate=self.accumulate)

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
        # Its own generator: creating a DataLoader iterator draws a seed, which must not move the global RNG
        # (a resumed run creates one more iterator than the uninterrupted run; dropout would then differ).
        return DataLoader(self.dataset, batch_sampler=self.sampler, collate_fn=self.collator,
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
