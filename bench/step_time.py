"""Training step time, fp32 vs bf16 autocast, for MiniLM on real batches (A B A B interleaved).

    python bench/step_time.py [--rounds 5] [--threads N]

One IR step = 16 SciFact train queries + their abstracts (256 tokens max); one STS step = 64 STS-B train pairs;
forward + loss + backward + AdamW step through CoDiEmbModule.compute_loss, exactly as in training.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from codiemb.data.collator import Collator
    from codiemb.data.readers import read_dataset
    from codiemb.losses import CoDiEmbSTSLoss, InfoNCELoss
    from codiemb.models.encoder import Encoder
    from codiemb.models.module import CoDiEmbModule

    module = CoDiEmbModule(Encoder.from_pretrained("bundled:all-MiniLM-L6-v2"), InfoNCELoss(), CoDiEmbSTSLoss())
    optimizer = torch.optim.AdamW(module.parameters(), lr=1e-5)
    ir = read_dataset("beir", str(DATA / "scifact"), name="scifact", task="ir", split="train").records[:16]
    sts = read_dataset("stsb", str(DATA / "stsbenchmark" / "sts-train.csv"), name="stsb", task="sts").records[:64]
    collate = Collator(module.encoder.tokenizer, query_max_length=64, passage_max_length=256)
    batches = {"ir": collate(list(enumerate(ir))), "sts": collate(list(enumerate(sts)))}

    def step(batch, bf16: bool) -> float:
        started = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss, _ = module.compute_loss(batch)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        return time.perf_counter() - started

    for batch in batches.values():  # warm-up
        step(batch, False), step(batch, True)
    print(f"torch threads: {torch.get_num_threads()}, rounds: {args.rounds}")
    for task, batch in batches.items():
        times = {"fp32": [], "bf16": []}
        for _ in range(args.rounds):
            times["fp32"].append(step(batch, False))
            times["bf16"].append(step(batch, True))
        ratios = [a / b for a, b in zip(times["fp32"], times["bf16"])]
        print(f"{task}: fp32 {statistics.median(times['fp32']):.2f} s/step, bf16 {statistics.median(times['bf16']):.2f}"
              f" s/step, fp32/bf16 = {statistics.median(ratios):.2f}x (min {min(ratios):.2f}, max {max(ratios):.2f})")


if __name__ == "__main__":
    main()
