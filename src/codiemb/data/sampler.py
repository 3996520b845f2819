"""Task-homogeneous batch sampling: every optimizer step sees one task and one source dataset on every rank.

The plan for an epoch is drawn from ``seed + epoch`` alone, so every rank computes the same global batches and
takes its own slice; nothing has to be communicated. An optimizer step covers ``accumulate`` micro-batches, all
cut from the same global batch, so gradient accumulation never mixes tasks.

Policies (``task_mix``):

* ``balanced``: IR and STS get the same number of optimizer steps per epoch; the smaller task's data is
  reshuffled and reused until it matches the larger one. Step order is shuffled. ``ir_share`` (default 0.5)
  tilts it: the epoch keeps its length (twice the larger task's steps) and ``round(ir_share * length)`` of its
  steps are IR, the rest STS; each task's data is reshuffled and reused, or cut, to fill its share.
* ``proportional``: every dataset is seen once per epoch, so steps follow data size (the official release).
* ``round_robin``: tasks alternate IR, STS, IR, ... and the epoch ends when the smaller task runs out
  (as sentence-transformers' ``RoundRobinBatchSampler``).
* ``mixed``: the naive co-training baseline: rows of all datasets are pooled and batches mix tasks.
* ``ir_only`` / ``sts_only``: one task, proportional over its datasets.

Length grouping (``lengths`` given, ``data.length_grouping=true``): each pass over a source is shuffled, then
sorted by row length inside windows of ``GROUP_WINDOW_STEPS`` steps and cut into steps, and the steps are shuffled
again; so the rows of a step (and each rank's slice of it) have similar lengths and pad little. Still drawn from
(seed, epoch) alone: DDP slicing and resumes are unchanged.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from codiemb.errors import ConfigError

GROUP_WINDOW_STEPS = 50  # length grouping sorts rows by length inside windows of this many steps
POLICIES = ("balanced", "proportional", "round_robin", "mixed", "ir_only", "sts_only")
MIXED = "mixed"


def check_positive(batch_size: dict, accumulate: int = 1, world_size: int = 1) -> None:
    """Batch sizes, accumulation and world size must be positive integers (-4 would make a balanced epoch top
    itself up forever, 0 divide by zero): a ConfigError naming the setting."""
    settings = {f"data.{task}_batch_size": size for task, size in batch_size.items()}
    settings.update({"accumulate_grad_batches": accumulate, "world_size": world_size})
    for name, value in settings.items():
        try:
            ok = not isinstance(value, bool) and int(value) == value and value >= 1
        except (TypeError, ValueError, OverflowError):
            ok = False
        if not ok:
            raise ConfigError(f"{name} must be a positive integer, got {value!r}")


@dataclass(frozen=True)
class Source:
    name: str
    task: str
    size: int


@dataclass(frozen=True)
class Step:
    """One optimizer step: a task, a source, and the global row indices of all its micro-batches."""

    task: str
    source: str
    rows: np.ndarray


class TaskBatchSampler:
    """Yields, for this rank, lists of ``(position, global_row_index)`` per micro-batch.

    ``position`` is the micro-batch's index within the epoch; it travels with the batch so the training loop
    can record exactly how far the epoch got (prefetching workers run ahead of it) and resume there.
    """

    def __init__(self, sources: Sequence[Source], batch_size: dict[str, int], policy: str = "balanced",
                 seed: int = 0, world_size: int = 1, rank: int = 0, accumulate: int = 1, ir_share: float = 0.5,
                 lengths: np.ndarray | None = None):
        if policy not in POLICIES:
            raise ConfigError(f"task_mix must be one of {POLICIES}, got {policy!r}")
        if not 0.0 <= float(ir_share) <= 1.0 or (float(ir_share) != 0.5 and policy != "balanced"):
            raise ConfigError(f"task_mix.ir_share must lie in [0, 1] and applies to task_mix=balanced only, "
                              f"got {ir_share!r} with task_mix={policy}")
        self.ir_share = float(ir_share)
        self.sources, self.policy, self.seed = list(sources), policy, int(seed)
        self.world_size, self.rank, self.accumulate = int(world_size), int(rank), int(accumulate)
        self.batch_size = {task: int(size) for task, size in batch_size.items()}
        check_positive(batch_size, accumulate=accumulate, world_size=world_size)
        self.offsets = np.cumsum([0] + [s.size for s in self.sources])[:-1]
        # length grouping: one length per global row (None: off); see _group_by_length
        self.lengths = None if lengths is None else np.asarray(lengths)
        if self.lengths is not None and len(self.lengths) != sum(s.size for s in self.sources):
            raise ValueError(f"{len(self.lengths)} lengths for {sum(s.size for s in self.sources)} rows")
        self.epoch, self.consumed = 0, 0
        self._cached_plan: tuple[int, list[Step]] | None = None
        self._check()

    # ------------------------------------------------------------ validation
    def _active(self) -> list[int]:
        wanted = {"ir_only": {"ir"}, "sts_only": {"sts"}}.get(self.policy, {"ir", "sts"})
        return [i for i, s in enumerate(self.sources) if s.task in wanted]

    def rows_per_step(self, task: str) -> int:
        size = self.batch_size["ir" if task == MIXED else task]
        return size * self.world_size * self.accumulate

    def _check(self) -> None:
        active = self._active()
        tasks = {self.sources[i].task for i in active}
        if not active:
            raise ConfigError(f"task_mix={self.policy} needs data for its task(s), but none was configured; "
                              "add a dataset of that task or pick another task_mix")
        if self.policy in ("balanced", "round_robin") and tasks != {"ir", "sts"}:
            missing = ({"ir", "sts"} - tasks).pop()
            raise ConfigError(f"task_mix={self.policy} needs both tasks but there is no {missing} dataset; "
                              f"add one or use task_mix={'sts' if missing == 'ir' else 'ir'}_only")
        if self.policy == MIXED:
            total, need = sum(self.sources[i].size for i in active), self.rows_per_step(MIXED)
            if total < need:
                raise ConfigError(f"task_mix=mixed needs {need} rows per step but all datasets hold {total}; "
                                  "lower data.ir_batch_size")
            return
        for i in active:
            source, need = self.sources[i], self.rows_per_step(self.sources[i].task)
            if source.size < need:
                raise ConfigError(
                    f"dataset '{source.name}' has {source.size} rows but one {source.task} step needs {need} "
                    f"(batch {self.batch_size[source.task]} x {self.world_size} ranks x {self.accumulate} "
                    f"accumulation); lower data.{source.task}_batch_size or add data")

    # ------------------------------------------------------------ planning
    def plan(self, epoch: int | None = None) -> list[Step]:
        """All optimizer steps of an epoch, identical on every rank."""
        epoch = self.epoch if epoch is None else int(epoch)
        if self._cached_plan is None or self._cached_plan[0] != epoch:
            self._cached_plan = (epoch, self._draw_plan(np.random.default_rng([self.seed, epoch])))
        return self._cached_plan[1]

    def _draw_plan(self, rng: np.random.Generator) -> list[Step]:
        active = self._active()
        if self.policy == MIXED:
            rows = np.concatenate([self.offsets[i] + np.arange(self.sources[i].size) for i in active])
            return [Step(MIXED, MIXED, chunk) for chunk in self._chunks(rng.permutation(rows), MIXED)]
        by_task = {task: [i for i in active if self.sources[i].task == task] for task in ("ir", "sts")}
        by_task = {task: ids for task, ids in by_task.items() if ids}
        if self.policy in ("proportional", "ir_only", "sts_only"):
            steps = [step for ids in by_task.values() for step in self._one_pass(ids, rng)]
            return [steps[i] for i in rng.permutation(len(steps))]
        passes = {task: self._one_pass(ids, rng) for task, ids in by_task.items()}
        if self.policy == "round_robin":
            n = min(len(p) for p in passes.values())
            return [passes[task][k] for k in range(n) for task in ("ir", "sts")]
        # balanced: top each task up to its share with fresh reshuffled passes, then interleave at random
        length = 2 * max(len(p) for p in passes.values())
        n_ir = int(round(self.ir_share * length))
        for task, steps in passes.items():
            target = n_ir if task == "ir" else length - n_ir
            while len(steps) < target:
                steps.extend(self._one_pass(by_task[task], rng))
            del steps[target:]
        steps = passes["ir"] + passes["sts"]
        return [steps[i] for i in rng.permutation(len(steps))]

    def _one_pass(self, source_ids: list[int], rng: np.random.Generator) -> list[Step]:
        steps = []
        for i in source_ids:
            source = self.sources[i]
            rows = self.offsets[i] + rng.permutation(source.size)
            if self.lengths is not None:
                rows = self._group_by_length(rows, source.task)
            steps += [Step(source.task, source.name, chunk) for chunk in self._chunks(rows, source.task)]
        return [steps[k] for k in rng.permutation(len(steps))]

    def _group_by_length(self, rows: np.ndarray, task: str) -> np.ndarray:
        """Shuffled ``rows`` sorted by length inside windows of ``GROUP_WINDOW_STEPS`` steps, so consecutive rows
        (one step, and every rank's slice of it) have similar lengths; ``_one_pass`` then shuffles the steps.
        Ties keep the shuffled order (stable sort), so the result depends on (seed, epoch) only."""
        window = GROUP_WINDOW_STEPS * self.rows_per_step(task)
        return np.concatenate([w[np.argsort(self.lengths[w], kind="stable")]
                               for w in np.split(rows, range(window, len(rows), window))]) if len(rows) else rows

    def _chunks(self, rows: np.ndarray, task: str) -> list[np.ndarray]:
        size = self.rows_per_step(task)
        return [rows[k * size:(k + 1) * size] for k in range(len(rows) // size)]  # drop the ragged tail

    def micro_batches(self, step: Step) -> list[np.ndarray]:
        """This rank's slice of each micro-batch of a step."""
        per_rank = self.batch_size["ir" if step.task == MIXED else step.task]
        global_micro = per_rank * self.world_size
        return [step.rows[m * global_micro:(m + 1) * global_micro][self.rank * per_rank:(self.rank + 1) * per_rank]
                for m in range(self.accumulate)]

    # ------------------------------------------------------------ iteration and state
    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        # Lightning calls set_epoch on a DataLoader's sampler, never on its batch sampler, and after a resume from
        # an end-of-epoch checkpoint its epoch count and ours can differ: so the sampler moves itself on once
        # every micro-batch of its epoch was trained on. (Runs when iteration starts, after the last mark.)
        if self.consumed >= len(self):
            self.epoch, self.consumed = self.epoch + 1, 0
        position = 0
        start = self.consumed
        for step in self.plan():
            for micro in self.micro_batches(step):
                if position >= start:
                    yield [(position, int(row)) for row in micro]
                position += 1

    def __len__(self) -> int:
        return len(self.plan()) * self.accumulate

    def set_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:  # a resumed run calls this with the saved epoch: keep its position
            self.epoch, self.consumed = int(epoch), 0

    def mark_consumed(self, position: int) -> None:
        self.consumed = int(position) + 1

    def state_dict(self) -> dict:
        # The settings that decide the batch order travel along: a resume with other ones is refused.
        return {"epoch": self.epoch, "consumed": self.consumed, "seed": self.seed, "policy": self.policy,
                "ir_share": self.ir_share, "batch_size": dict(self.batch_size), "accumulate": self.accumulate,
                "world_size": self.world_size, "sources": [[s.name, s.task, int(s.size)] for s in self.sources],
                "length_grouping": self.lengths is not None}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.consumed = int(state["epoch"]), int(state["consumed"])

    def source_of(self, row: int) -> Source:
        return self.sources[int(np.searchsorted(self.offsets, row, side="right")) - 1]
