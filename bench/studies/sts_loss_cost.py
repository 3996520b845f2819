"""STS loss cost: CoDiEmb's composite (Pearson + rank-KL + PRO + middle-layer InfoNCE) vs InfoNCE alone.

    python bench/studies/sts_loss_cost.py [--sizes 32 64 128 256 512] [--repeats 20] [--threads 1] [--dim 384]

For each global batch size B: random final-layer and middle-layer embeddings ``[B, dim]`` (requires_grad) and
gold scores in [0, 1]; time forward + backward of ``CoDiEmbSTSLoss`` (the 4-part composite, PRO weighted) and of
``STSInfoNCELoss`` (InfoNCE alone) on the same tensors, A B A B interleaved, ``repeats`` times; report medians
and the composite/InfoNCE ratio with its min/max over repeats.

To say whether the loss can become the bottleneck, the script also times MiniLM forward + backward on 32 real
STS-B train pairs (bf16 autocast, max length 128) once, and prints the composite's cost as a share of the
encoder cost extrapolated linearly to B pairs (encoder work grows with B, the loss's ``[B, B]`` parts with B^2).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / ".." / "shared" / "data"


def timed(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def loss_step(loss_fn, a, b, scores, a_mid, b_mid):
    def run():
        loss, _ = loss_fn(a, b, scores, a_mid, b_mid)
        loss.backward()
        for t in (a, b, a_mid, b_mid):
            t.grad = None
    return run


def encoder_seconds_per_pair(pairs: int = 32) -> float | None:
    """MiniLM forward + backward (bf16 autocast) on real STS-B pairs, seconds per pair; None without the data."""
    path = DATA / "stsbenchmark" / "sts-train.csv"
    if not path.exists():
        return None
    from codiemb.data.readers import read_dataset
    from codiemb.models.encoder import Encoder

    records = read_dataset("stsb", str(path), name="stsb", task="sts").records[:pairs]
    encoder = Encoder.from_pretrained("bundled:all-MiniLM-L6-v2", max_query_length=128, max_passage_length=128)
    encoder.train()
    first = encoder.tokenize([r.query for r in records])
    second = encoder.tokenize([r.positives[0] for r in records])

    def run():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = (encoder(first) * encoder(second)).sum()
        loss.backward()
        encoder.zero_grad(set_to_none=True)
    run()  # warm-up
    return statistics.median(timed(run) for _ in range(3)) / pairs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[32, 64, 128, 256, 512])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--no-encoder", action="store_true", help="skip the MiniLM reference timing")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    from codiemb.losses import CoDiEmbSTSLoss, STSInfoNCELoss

    composite, infonce = CoDiEmbSTSLoss(), STSInfoNCELoss()
    per_pair = None if args.no_encoder else encoder_seconds_per_pair()
    print(f"torch threads {torch.get_num_threads()}, dim {args.dim}, repeats {args.repeats}, A B A B; "
          + (f"MiniLM fwd+bwd (bf16, len<=128): {per_pair * 1e3:.1f} ms/pair" if per_pair else "no encoder timing"))
    print("| B | InfoNCE ms | composite ms | composite / InfoNCE (min-max) | composite / encoder fwd+bwd |")
    print("|---|---|---|---|---|")
    for size in args.sizes:
        tensors = [torch.nn.functional.normalize(torch.randn(size, args.dim), dim=-1).requires_grad_()
                   for _ in range(4)]
        a, b, a_mid, b_mid = tensors
        scores = torch.rand(size)
        steps = {"composite": loss_step(composite, a, b, scores, a_mid, b_mid),
                 "infonce": loss_step(infonce, a, b, scores, a_mid, b_mid)}
        for run in steps.values():
            run()  # warm-up
        times = {name: [] for name in steps}
        for _ in range(args.repeats):
            for name, run in steps.items():
                times[name].append(timed(run))
        ratios = [c / i for c, i in zip(times["composite"], times["infonce"])]
        med = {name: statistics.median(t) for name, t in times.items()}
        share = f"{100 * med['composite'] / (per_pair * size):.2f} %" if per_pair else "n/a"
        print(f"| {size} | {med['infonce'] * 1e3:.2f} | {med['composite'] * 1e3:.2f} | "
              f"{statistics.median(ratios):.2f}x ({min(ratios):.2f}-{max(ratios):.2f}) | {share} |")


if __name__ == "__main__":
    main()
