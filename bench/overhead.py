"""Framework overhead: codiemb's training step vs a bare PyTorch loop on the same pre-tokenised batches.

    python bench/overhead.py [--rounds 2] [--steps 12] [--warmup 3] [--batch 16] [--max-length 128]
                             [--threads 1] [--precisions bf16] [--profile]

codiemb side: ``codiemb.training.train`` exactly as in ``bench/train_throughput.py`` (same data, InfoNCE at
t = 0.05, 1 positive + 3 hard negatives, 1 tokenising DataLoader worker, Lightning, clipping, scheduler, logging).
Bare side: the same batches, produced up front by codiemb's own DataModule/Collator (so padded exactly as codiemb
pads them) and kept in memory; the timed loop is only ``backbone forward -> mean pool -> L2 normalise ->
cross-entropy over q @ p^T / t -> backward -> AdamW.step -> zero_grad`` (fused AdamW, as codiemb's
optimiser). Ratio = codiemb median step time / bare median step time, per round, A B A B in subprocesses.

``--profile`` runs one extra codiemb child under cProfile and prints where its step time goes.
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
import train_throughput as tt  # noqa: E402  (bench/ is not a package)


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


def child(args) -> None:
    import torch

    torch.set_num_threads(args.threads)
    if args.side == "bare":
        tt.STEP_ENDS.extend(bare_loop(args))
    elif args.profile:
        profiler = cProfile.Profile()
        profiler.runcall(tt.run_codiemb, args, tt.build_medquad_ir())
        text = io.StringIO()
        pstats.Stats(profiler, stream=text).sort_stats("cumulative").print_stats(45)
        print(text.getvalue())
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
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=tt.ROOT)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode or not lines:
        sys.exit(f"{side} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    if profile:
        print(done.stdout[done.stdout.find("ncalls") - 200:done.stdout.find("RESULT")])
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
    parser.add_argument("--side", choices=["codiemb", "bare"], help=argparse.SUPPRESS)
    parser.add_argument("--precision", default="bf16", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.extra = []
    if args.side:
        return child(args)
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
