"""Memory of one training step of a recipe, by task: the process's RSS rise over a forward + backward on the
recipe's own batches (the largest of the first ones of each task), for the settings given on the command line.

    python bench/step_memory.py                                          # experiment=real_cpu as it is
    python bench/step_memory.py model.attn_implementation=eager          # any train.py override
    python bench/step_memory.py --steps 8 module.embed_chunk_size=16
    python bench/step_memory.py --against model.config_overrides.attention_probs_dropout_prob=0.1
        # step time only: the recipe and the recipe with those overrides, alternating on the same batches
        # (real_cpu trains without attention dropout; 0.1 is the checkpoint's)
    python bench/step_memory.py --steps 8 --bf16 --mallopt M_MMAP_THRESHOLD=4194304
        # under bf16 autocast (what precision: auto trains in on a CPU with native bf16), with glibc's
        # mallopt(M_MMAP_THRESHOLD, 4 MiB) set before the first step
    python bench/step_memory.py --steps 8 --bf16 --race-mallopt M_MMAP_THRESHOLD=4194304
        # step time only: glibc's default against that setting, alternating batch by batch in one process

Prints, per task, the batch's shape and the peak RSS above the RSS before the step (sampled every 2 ms by a
thread, so short peaks count) and after it (what the allocator kept). bench/rss.py profiles a whole run; this
looks inside its steps. Results for the record go to BENCHMARKS.md with the command, the CPU and the output.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import functools
import os
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
from peer import recipe  # noqa: E402  (bench/ is on sys.path when run as a script)


class Peak(threading.Thread):
    def __init__(self):
        super().__init__(daemon=True)
        import psutil

        self.proc, self.peak, self.stop = psutil.Process(), 0, threading.Event()

    def run(self):
        while not self.stop.is_set():
            self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(0.002)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=6, help="batches of each task to try (the longest counts)")
    parser.add_argument("--experiment", default="real_cpu")
    parser.add_argument("--against", nargs="+", default=None, metavar="OVERRIDE",
                        help="time each batch's step with and without these overrides, alternating (same weights)")
    parser.add_argument("--bf16", action="store_true", help="steps under bf16 autocast, as a bf16-mixed run")
    parser.add_argument("--mallopt", nargs="*", default=[], metavar="NAME=VALUE", help="glibc mallopt() first")
    parser.add_argument("--race-mallopt", nargs="*", default=None, metavar="NAME=VALUE",
                        help="time each batch's step with glibc as it is and with these mallopt() settings")
    parser.add_argument("--race-trim", action="store_true",
                        help="step time with glibc as it is and with malloc_trim(0) before each step, alternating")
    parser.add_argument("--trim", action="store_true", help="malloc_trim(0) after every step (timed with it)")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    for setting in args.mallopt:
        mallopt(setting)

    import psutil
    import torch
    from hydra.utils import instantiate
    from omegaconf import open_dict

    overrides = [f"experiment={args.experiment}", *args.overrides]
    cfg, specs = recipe(overrides)  # a dropout override reuses the recipe's mined negatives (mining/cache.py)
    with open_dict(cfg):
        cfg.data.datasets = specs
        cfg.data.num_workers = 0
    data = instantiate(cfg.data)
    data.load()
    module = instantiate(cfg.module)
    module.train()
    data.attach_tokenizer(module.encoder.tokenizer, module.encoder.settings())
    batches: dict[str, list] = {"ir": [], "sts": []}
    for batch in data.loader(data.build_sampler()):
        if len(batches[batch["task"]]) < args.steps:
            batches[batch["task"]].append(batch)
        if all(len(v) >= args.steps for v in batches.values()):
            break
    autocast = contextlib.nullcontext
    if args.bf16:
        autocast = functools.partial(torch.autocast, "cpu", dtype=torch.bfloat16)
    if args.race_mallopt is not None or args.race_trim:
        return race_mallopt(module, args.race_mallopt or [], batches, autocast, args.race_trim)
    if args.against:
        return race(module, recipe([*overrides, *args.against])[0], args.against, batches)
    optimizer = torch.optim.AdamW(module.parameters(), lr=1e-6)
    proc = psutil.Process()
    print(f"cpu {torch.backends.cpu.get_cpu_capability()}, threads {torch.get_num_threads()}, attention "
          f"{getattr(module.encoder.backbone.config, '_attn_implementation', '?')}, overrides {args.overrides}, "
          f"bf16 autocast {args.bf16}, mallopt {args.mallopt}, trim {args.trim}, THP_MEM_ALLOC_ENABLE "
          f"{os.environ.get('THP_MEM_ALLOC_ENABLE')}")
    times: dict[str, list[float]] = {}
    for task, items in batches.items():
        worst = None
        for batch in items:
            shapes = {k: tuple(batch[k]["input_ids"].shape) for k in ("query", "passages")}
            before = proc.memory_info().rss
            peak = Peak()
            peak.start()
            started = time.perf_counter()
            train_step(module, optimizer, batch, autocast)
            if args.trim:
                ctypes.CDLL(None).malloc_trim(0)
            seconds = time.perf_counter() - started
            peak.stop.set()
            peak.join()
            times.setdefault(task, []).append(seconds)
            row = (peak.peak - before, proc.memory_info().rss - before, seconds, shapes)
            worst = row if worst is None or row[0] > worst[0] else worst
            print(f"  {task}: {shapes}  peak +{(peak.peak - before) >> 20} MiB, kept "
                  f"+{(proc.memory_info().rss - before) >> 20} MiB, {seconds:.2f} s", flush=True)
        print(f"{task}: worst step peak +{worst[0] >> 20} MiB over the RSS before it ({worst[3]})")
    print(f"process RSS at the end {proc.memory_info().rss >> 20} MiB, peak {peak_rss() >> 20} MiB; step seconds "
          + ", ".join(f"{task} {sum(t):.1f}" for task, t in times.items())
          + f"; OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}")


MALLOPT = {"M_TRIM_THRESHOLD": -1, "M_TOP_PAD": -2, "M_MMAP_THRESHOLD": -3, "M_ARENA_MAX": -8}  # glibc malloc.h


def mallopt(setting: str) -> None:
    """``NAME=VALUE`` through glibc's ``mallopt`` (exits where it is refused)."""
    name, value = setting.split("=")
    if ctypes.CDLL(None).mallopt(MALLOPT[name], int(value)) != 1:
        sys.exit(f"mallopt({setting}) refused")


def peak_rss() -> int:
    """The process's peak RSS so far (bytes; Linux reports ru_maxrss in KiB)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss << 10


def train_step(module, optimizer, batch, autocast=contextlib.nullcontext) -> None:
    """One optimizer step on ``batch``: forward (under ``autocast``), backward, step."""
    with autocast():
        loss, _ = module.compute_loss(batch)
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def race_batches(batches: dict, sides: list) -> None:
    """Time ``sides[0](batch)`` and ``sides[1](batch)`` alternately on every batch (a loaded machine slows both
    alike); per task, the ratio is the sum of B's times over the sum of A's."""
    for task, items in batches.items():
        totals = [0.0, 0.0]
        for batch in items:
            seconds = []
            for k, side in enumerate(sides):
                started = time.perf_counter()
                side(batch)
                seconds.append(time.perf_counter() - started)
                totals[k] += seconds[-1]
            shapes = {k: tuple(batch[k]["input_ids"].shape) for k in ("query", "passages")}
            print(f"  {task}: {shapes}  A {seconds[0]:.2f} s, B {seconds[1]:.2f} s", flush=True)
        print(f"{task}: B/A step time {totals[1] / totals[0]:.3f} over {len(items)} batches")


def race_mallopt(module, settings: list[str], batches: dict, autocast, trim: bool = False) -> None:
    """Step time with glibc's default (its threshold once it has adapted: 32 MiB mmap, 64 MiB trim) against
    ``settings`` (and with ``trim``, ``malloc_trim(0)`` before B's step, timed with it), alternating batch by batch
    on one module (the same weights move a little; lr 1e-6)."""
    import torch

    optimizer = torch.optim.AdamW(module.parameters(), lr=1e-6)
    default = [] if trim and not settings else ["M_MMAP_THRESHOLD=33554432", "M_TRIM_THRESHOLD=67108864"]
    print(f"cpu {torch.backends.cpu.get_cpu_capability()}, threads {torch.get_num_threads()}, THP_MEM_ALLOC_ENABLE="
          f"{os.environ.get('THP_MEM_ALLOC_ENABLE')}; A = {default}, B = {settings} + malloc_trim before: {trim}")

    def side(chosen: list[str], trim_first: bool):
        def run(batch) -> None:
            for setting in chosen:
                mallopt(setting)
            if trim_first:
                ctypes.CDLL(None).malloc_trim(0)
            train_step(module, optimizer, batch, autocast)
        return run
    race_batches(batches, [side(default, False), side(settings, trim)])


def race(module, other_cfg, against: list[str], batches: dict) -> None:
    """Step time of ``module`` and of the same recipe with ``against`` (``other_cfg``), alternating batch by batch
    on the same weights."""
    import torch
    from hydra.utils import instantiate

    other = instantiate(other_cfg.module)
    other.load_state_dict(module.state_dict())
    other.train()
    optimizers = [torch.optim.AdamW(m.parameters(), lr=1e-6) for m in (module, other)]
    print(f"cpu {torch.backends.cpu.get_cpu_capability()}, threads {torch.get_num_threads()}; B = A + {against}")
    race_batches(batches, [functools.partial(train_step, m, o) for m, o in zip((module, other), optimizers)])


if __name__ == "__main__":
    main()
