"""Framework overhead: codiemb's training step vs a bare PyTorch loop on the same pre-tokenised batches.

    python bench/overhead.py [--rounds 2] [--steps 12] [--warmup 3] [--batch 16] [--max-length 128]
                             [--threads 1] [--precisions bf16] [--profile]

codiemb side: ``codiemb.run.train.train`` exactly as in ``bench/train_throughput.py`` (same data, InfoNCE at
t = 0.05, 1 positive + 3 hard negatives, 1 tokenising DataLoader worker, Lightning, clipping, scheduler, logging).
Bare side: the same batches, produced up front by codiemb's own DataModule/Collator (so padded exactly as codiemb
pads them) and kept in memory; the timed loop is only ``backbone forward -> mean pool -> L2 normalise ->
cross-entropy over q @ p^T / t -> backward -> AdamW.step -> zero_grad`` (fused AdamW, as codiemb's
optimiser). Ratio = codiemb median step time / bare median step time, per round, A B A B in subprocesses.

``--profile`` runs one extra codiemb child under cProfile and prints where its step time goes;
``--padding`` only prints how much of each batch is padding (the length-grouping lever).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import pstats
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import train_throughput as tt  # bench/ is not a package


def bare_loop(args) -> list[float]:
    import torch
    from hydra.utils import instantiate

    cfg = tt.compose_train(tt.codiemb_overrides(args, tt.build_medquad_ir()), Path(tempfile.mkdtemp()))
    torch.manual_seed(42)
    datamodule = instantiate(cfg.data)
    datamodule.load()
    encoder = instantiate(cfg.module.encoder)
    datamodule.attach_tokenizer(encoder.tokenizer, encoder.settings())
    loader = iter(datamodule.train_dataloader())
    batches = [next(loader) for _ in range(args.steps)]
    backbone, temperature = encoder.backbone.train(), 0.05
    # fused=True: what CoDiEmbModule.configure_optimizers picks for CPU and CUDA parameters.
    optimizer = torch.optim.AdamW(backbone.parameters(), lr=5e-5, weight_decay=0.01, fused=True)

    def embed(features):
        mask = features["attention_mask"]
        hidden = backbone(input_ids=features["input_ids"], attention_mask=mask,
                          token_type_ids=features.get("token_type_ids")).last_hidden_state
        summed = (hidden * mask[..., None].to(hidden.dtype)).sum(1) / mask.sum(1, keepdim=True).clamp_min(1)
        return torch.nn.functional.normalize(summed.float(), dim=-1)

    targets = [b["positive_mask"].float().argmax(1) for b in batches]  # 1 positive per query
    ends = []
    for batch, target in zip(batches, targets):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.precision == "bf16"):
            query, passages = embed(batch["query"]), embed(batch["passages"])
        loss = torch.nn.functional.cross_entropy(query @ passages.T / temperature, target)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        ends.append(time.perf_counter())
    return ends


# (file suffix, function) -> cumulative seconds, read from cProfile; the rows below are what a step consists of.
PROFILED = {"step": ("training_epoch_loop.py", "advance"), "optimizer": ("adam.py", "step"),
            "closure": ("automatic.py", "closure"), "forward": ("module.py", "compute_loss"),
            "backward": ("precision.py", "backward"), "clip": ("module.py", "configure_gradient_clipping"),
            "log": ("module.py", "log"), "batch_end": ("module.py", "on_train_batch_end")}


def profile_breakdown(stats: pstats.Stats) -> str:
    """Where codiemb's training steps spend their time (all steps, warm-up included), as shares of the step."""
    found = {}
    for (path, _, name), (_, _, _, cumulative, _) in stats.stats.items():
        for key, (suffix, function) in PROFILED.items():
            if name == function and path.endswith(suffix):
                found[key] = found.get(key, 0.0) + cumulative
    step = found.get("step", 0.0) or 1.0
    rows = {"encoder forward + loss": found.get("forward", 0.0), "backward": found.get("backward", 0.0),
            "gradient clipping": found.get("clip", 0.0),
            "AdamW step (fused) + LR scheduler": found.get("optimizer", 0.0) - found.get("closure", 0.0),
            "self.log calls": found.get("log", 0.0), "on_train_batch_end (sampler bookkeeping)":
            found.get("batch_end", 0.0)}
    rows["rest of the Lightning loop (batch fetch from the worker, hooks, logger connector)"] = (
        step - found.get("optimizer", 0.0) - found.get("batch_end", 0.0))
    lines = [f"profile (cProfile, every step incl. warm-up; total {step:.2f} s):"]
    lines += [f"  {name}: {seconds:.3f} s ({100 * seconds / step:.2f} %)" for name, seconds in rows.items()]
    return "\n".join(lines)


def padding_report(args) -> None:
    """Share of padded positions: codiemb's own IR batches of this benchmark, and STS-B train pairs (batch 32)
    in random order vs length-grouped (sorted inside windows of 50 batches, then batches shuffled)."""
    import random

    import torch
    from hydra.utils import instantiate

    torch.set_num_threads(args.threads)
    cfg = tt.compose_train(tt.codiemb_overrides(args, tt.build_medquad_ir()), Path(tempfile.mkdtemp()))
    datamodule = instantiate(cfg.data)
    datamodule.load()
    datamodule.num_workers = 0
    encoder = instantiate(cfg.module.encoder)
    datamodule.attach_tokenizer(encoder.tokenizer, encoder.settings())
    loader, real, padded = iter(datamodule.train_dataloader()), {}, {}
    for _ in range(30):
        batch = next(loader)
        for part in ("query", "passages"):
            mask = batch[part]["attention_mask"]
            real[part], padded[part] = real.get(part, 0) + int(mask.sum()), padded.get(part, 0) + mask.numel()
    for part, tokens in real.items():
        print(f"padding, medquad IR {part} (30 batches of {args.batch}, L={args.max_length}): "
              f"{100 * (1 - tokens / padded[part]):.1f} %")
    path = tt.DATA / "stsbenchmark" / "sts-train.csv"
    if not path.exists():
        return
    from codiemb.data.readers import read_dataset

    records = read_dataset("stsb", str(path), name="stsb", task="sts").records
    lengths = [(len(encoder.tokenizer(r.query, truncation=True, max_length=args.max_length)["input_ids"]),
                len(encoder.tokenizer(r.positives[0], truncation=True, max_length=args.max_length)["input_ids"]))
               for r in records]
    rng, size, window = random.Random(0), 32, 50
    order = list(range(len(lengths)))
    rng.shuffle(order)
    grouped = []
    for start in range(0, len(order), size * window):
        chunk = sorted(order[start:start + size * window], key=lambda i: max(lengths[i]))
        grouped += [chunk[k:k + size] for k in range(0, len(chunk), size)]
    rng.shuffle(grouped)
    for name, batches in (("random", [order[k:k + size] for k in range(0, len(order), size)]),
                          ("length-grouped", grouped)):
        real = sum(sum(lengths[i]) for b in batches for i in b)
        total = sum(len(b) * (max(lengths[i][0] for i in b) + max(lengths[i][1] for i in b)) for b in batches)
        print(f"padding, STS-B train pairs, batch {size}, {name}: {100 * (1 - real / total):.1f} % "
              f"({total} padded positions)")
    time_grouping(encoder, records[:256], size, args.repeats)


def time_grouping(encoder, records, size: int, repeats: int) -> None:
    """MiniLM fwd + bwd (bf16) over the same pairs, batched in random order vs sorted by length; A B A B."""
    import random

    import torch

    encoder.train()
    shuffled = random.Random(0).sample(records, len(records))
    by_length = sorted(records, key=lambda r: len(r.query) + len(r.positives[0]))
    layouts = {name: [(encoder.tokenize([r.query for r in rows[k:k + size]]),
                       encoder.tokenize([r.positives[0] for r in rows[k:k + size]]))
                      for k in range(0, len(rows), size)] for name, rows in (("random", shuffled),
                                                                             ("sorted", by_length))}

    def epoch(batches) -> float:
        started = time.perf_counter()
        for first, second in batches:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                loss = (encoder(first) * encoder(second)).sum()
            loss.backward()
            encoder.zero_grad(set_to_none=True)
        return time.perf_counter() - started
    times = {name: [] for name in layouts}
    for _ in range(repeats):
        for name, batches in layouts.items():
            times[name].append(epoch(batches))
    ratios = [r / s for r, s in zip(times["random"], times["sorted"])]
    print(f"STS-B, {len(records)} pairs in batches of {size}, fwd+bwd bf16: random {min(times['random']):.2f} s, "
          f"sorted by length {min(times['sorted']):.2f} s; random/sorted = {statistics.median(ratios):.2f}x "
          f"(min {min(ratios):.2f}, max {max(ratios):.2f}, repeats {repeats})")


def child(args) -> None:
    import torch

    torch.set_num_threads(args.threads)
    if args.side == "bare":
        tt.STEP_ENDS.extend(bare_loop(args))
    elif args.profile:
        profiler = cProfile.Profile()
        profiler.runcall(tt.run_codiemb, args, tt.build_medquad_ir())
        print(profile_breakdown(pstats.Stats(profiler, stream=io.StringIO())))
    else:
        tt.run_codiemb(args, tt.build_medquad_ir())
    steps = [b - a for a, b in zip(tt.STEP_ENDS, tt.STEP_ENDS[1:])][args.warmup:]
    print("RESULT " + json.dumps({"side": args.side, "steps": steps}))


def run_child(side: str, args, profile: bool = False) -> list[float]:
    import os
    import subprocess

    command = [sys.executable, __file__, "--side", side, "--precision", args.precision, "--steps", str(args.steps),
               "--warmup", str(args.warmup), "--batch", str(args.batch), "--max-length", str(args.max_length),
               "--threads", str(args.threads), *(["--profile"] if profile else [])]
    env = dict(os.environ, HF_HUB_OFFLINE="1", WANDB_MODE="offline", TOKENIZERS_PARALLELISM="false",
               OMP_NUM_THREADS=str(args.threads))
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=tt.ROOT, check=False)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode or not lines:
        sys.exit(f"{side} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    if profile:
        print(done.stdout[done.stdout.find("profile (cProfile"):done.stdout.find("RESULT")].rstrip())
    return json.loads(lines[-1][len("RESULT "):])["steps"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--precisions", nargs="+", default=["bf16"])
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--padding", action="store_true", help="only the padding / length-grouping check")
    parser.add_argument("--repeats", type=int, default=2, help="A B repeats of the length-grouping timing")
    parser.add_argument("--side", choices=["codiemb", "bare"], help=argparse.SUPPRESS)
    parser.add_argument("--precision", default="bf16", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.extra = []
    if args.side:
        return child(args)
    if args.padding:
        return padding_report(args)
    tt.build_medquad_ir()
    print(f"batch {args.batch}, max length {args.max_length}, {args.steps} steps ({args.warmup} dropped), "
          f"torch threads {args.threads}, rounds {args.rounds}, A B A B")
    for precision in args.precisions:
        args.precision = precision
        pairs = [(run_child("bare", args), run_child("codiemb", args)) for _ in range(args.rounds)]
        print(f"{precision}: " + tt.summarise("bare loop", "codiemb", pairs, args.batch) + "; target <= 1.05x")
        if args.profile:
            run_child("codiemb", args, profile=True)


if __name__ == "__main__":
    main()
