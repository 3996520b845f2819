"""Encode throughput: codiemb ``Encoder.encode`` vs ``SentenceTransformer.encode`` on the SciFact corpus.

Same model weights, batch size, max length (256) and precision; the two runs alternate (A/B/A/B...) so
drift in machine load hits both. Prints docs/s for each, the ratio codiemb / sentence-transformers, and
the padding waste (padded tokens / real tokens) of each library's batching, plus a check that both give
the same embeddings.

    python bench/encode_throughput.py --limit 1000 --rounds 3 --batch-size 64 [--device cuda] [--fp16]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Mapping
from pathlib import Path

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]


def count_padding(module, counts: dict) -> None:
    """Record, from the batches the library really forms, padded vs real tokens. ``module`` takes the
    tokenizer's feature dict (codiemb's Encoder, sentence-transformers' Transformer module)."""
    def hook(_, args, kwargs):
        for value in (*args, *kwargs.values()):
            if isinstance(value, Mapping) and "attention_mask" in value:  # BatchEncoding is no dict
                counts["padded"] += value["attention_mask"].numel()
                counts["real"] += int(value["attention_mask"].sum())
    module.register_forward_pre_hook(hook, with_kwargs=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(ROOT / ".." / "shared" / "data" / "scifact"))
    parser.add_argument("--model", default="bundled:all-MiniLM-L6-v2")
    parser.add_argument("--limit", type=int, default=None, help="first N documents only (CPU runs)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--fp16", action="store_true", help="half precision for both (GPU)")
    args = parser.parse_args()

    from sentence_transformers import SentenceTransformer

    from codiemb.data.readers.beir import load_beir
    from codiemb.models.encoder import Encoder
    from codiemb.models.resolve import resolve_model_path

    corpus, _, _ = load_beir(args.data, "test")
    texts = list(corpus.values())[:args.limit]
    ours = Encoder.from_pretrained(args.model, max_passage_length=256).to(args.device).eval()
    theirs = SentenceTransformer(resolve_model_path(args.model), device=args.device)
    theirs.max_seq_length = 256
    if args.fp16:
        ours.half()
        theirs.half()

    padding = {"codiemb": {"padded": 0, "real": 0}, "sentence-transformers": {"padded": 0, "real": 0}}
    count_padding(ours, padding["codiemb"])
    count_padding(theirs[0], padding["sentence-transformers"])
    runs = {
        "codiemb": lambda: ours.encode(texts, kind="passage", batch_size=args.batch_size),
        "sentence-transformers": lambda: torch.as_tensor(theirs.encode(
            texts, batch_size=args.batch_size, convert_to_numpy=True, normalize_embeddings=True)),
    }
    times: dict[str, list[float]] = {name: [] for name in runs}
    outputs = {}
    for _ in range(args.rounds):
        for name, fn in runs.items():
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            start = time.perf_counter()
            outputs[name] = fn()
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            times[name].append(time.perf_counter() - start)

    print(f"{len(texts)} SciFact docs, batch {args.batch_size}, device {args.device}, "
          f"{'fp16' if args.fp16 else 'fp32'}, {args.rounds} interleaved rounds, threads {torch.get_num_threads()}")
    for name, ts in times.items():
        median = statistics.median(ts)
        print(f"  {name:22s} median {median:7.2f} s  ({len(texts) / median:7.1f} docs/s)  runs {[f'{t:.2f}' for t in ts]}")
    ratio = statistics.median(times["sentence-transformers"]) / statistics.median(times["codiemb"])
    print(f"  throughput ratio codiemb / sentence-transformers = {ratio:.3f}")
    print("  padding waste (padded / real tokens): " + ", ".join(
        f"{name} {c['padded'] / c['real']:.3f}" for name, c in padding.items()))
    cos = torch.nn.functional.cosine_similarity(outputs["codiemb"].float(), outputs["sentence-transformers"].float().cpu())
    print(f"  embedding agreement: min cosine {cos.min():.6f}")


if __name__ == "__main__":
    main()
