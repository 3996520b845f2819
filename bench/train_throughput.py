"""Training throughput, codiemb vs sentence-transformers, same model / data / batch / length / precision / loss.

    python bench/train_throughput.py [--rounds 2] [--steps 12] [--warmup 3] [--batch 16] [--max-length 128]
                                     [--threads 1] [--precisions fp32 bf16]

Data: 2,000 MedQuAD rows (``../shared/data/medquad``), each query with 1 positive answer and 3 hard negatives
(the answers of other questions about the same document), written once to ``/tmp/codiemb-bench/``.
Loss: InfoNCE with hard negatives at temperature 0.05 on both sides, i.e. sentence-transformers'
``MultipleNegativesRankingLoss`` (scale 20 = 1 / 0.05; candidates = every positive and negative of the batch).
Both sides: all-MiniLM-L6-v2, mean pooling, max length L for queries and passages, AdamW (lr 5e-5, wd 0.01,
10 % linear warm-up), grad-norm clip 1.0, 1 DataLoader worker that tokenises, no progress bar, no checkpoints.

Each side runs in its own subprocess (``--side codiemb|st``), sides interleaved A B A B, with
``torch.set_num_threads(threads)`` on both. Step time = the interval between consecutive optimizer-step ends
(so data loading, logging and every hook count), after ``warmup`` steps; samples/s = batch / median step time.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / ".." / "shared" / "data"
WORK = Path(tempfile.gettempdir()) / "codiemb-bench"
STEP_ENDS: list[float] = []  # filled by the timing callbacks of the child process


def build_medquad_ir(rows: int = 2000, negatives: int = 3, seed: int = 0) -> Path:
    """Unified JSONL: query, 1 positive, ``negatives`` same-document hard negatives; seeded sample of rows."""
    target = WORK / f"medquad-ir-{rows}x{negatives}.jsonl"
    if target.exists():
        return target
    source = DATA / "medquad" / "medquad-qa.jsonl"
    if not source.exists():
        sys.exit(f"{source} not found: the benchmark needs ../shared/data/medquad")
    raw = [json.loads(line) for line in source.open(encoding="utf-8")]
    answer_of = {r["qid"]: r["pos"][0] for r in raw if r.get("pos")}
    usable = []
    for r in raw:
        negs = [answer_of[q] for q in r.get("neg_qids", []) if q in answer_of and answer_of[q] != r["pos"][0]]
        if r.get("pos") and len(negs) >= negatives:
            usable.append({"task": "ir", "query": r["query"], "positives": [r["pos"][0]],
                           "negatives": negs[:negatives]})
    chosen = random.Random(seed).sample(usable, rows)
    WORK.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in chosen), encoding="utf-8")
    tmp.replace(target)
    return target


# ---------------------------------------------------------------- the two sides (child processes)
class LightningStepTimer:
    """Lightning callback: perf_counter at each train batch end (1 batch = 1 optimizer step here)."""

    def on_train_batch_end(self, *args, **kwargs) -> None:
        STEP_ENDS.append(time.perf_counter())


def codiemb_overrides(args, data_path: Path) -> list[str]:
    return [f"data.datasets=[{{name: medquad_ir, task: ir, format: jsonl, path: '{data_path}'}}]",
            "task_mix=ir_only", "loss=infonce", "loss.ir.temperature=0.05",
            "trainer=" + ("cpu" if args.precision == "bf16" else "default"), f"trainer.max_steps={args.steps}",
            "+trainer.enable_progress_bar=false", "+trainer.enable_model_summary=false",
            "merge=none", "callbacks=none", "logger=none", "val.sets=[]",
            "data.max_positives=1", "data.num_negatives=3", f"data.ir_batch_size={args.batch}",
            f"data.query_max_length={args.max_length}", f"data.passage_max_length={args.max_length}",
            "data.num_workers=1", *args.extra]


def compose_train(overrides: list[str], output_dir: Path):
    sys.path.insert(0, str(ROOT))
    from tests.conftest import compose

    return compose("train", overrides, output_dir)


def run_codiemb(args, data_path: Path) -> None:
    import lightning as L
    from omegaconf import open_dict

    from codiemb.run.train import train

    cfg = compose_train(codiemb_overrides(args, data_path), Path(tempfile.mkdtemp(prefix="codiemb-bench-")))
    with open_dict(cfg):
        cfg.callbacks = {"step_timer": {"_target_": f"{__name__}.StepTimer"}}
    globals()["StepTimer"] = type("StepTimer", (LightningStepTimer, L.Callback), {})
    train(cfg)


def run_sentence_transformers(args, data_path: Path) -> None:
    from datasets import Dataset
    from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer
    from sentence_transformers import SentenceTransformerTrainingArguments as Arguments
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
    from transformers import TrainerCallback

    from codiemb.models.resolve import bundled_minilm_path

    class Timer(TrainerCallback):
        def on_step_end(self, *a, **k):
            STEP_ENDS.append(time.perf_counter())

    rows = [json.loads(line) for line in data_path.open(encoding="utf-8")]
    columns = {"anchor": [r["query"] for r in rows], "positive": [r["positives"][0] for r in rows]}
    for k in range(3):
        columns[f"negative_{k + 1}"] = [r["negatives"][k] for r in rows]
    model = SentenceTransformer(bundled_minilm_path(), device="cpu")
    model.max_seq_length = args.max_length
    arguments = Arguments(output_dir=tempfile.mkdtemp(prefix="st-bench-"), use_cpu=True, bf16=args.precision == "bf16",
                          per_device_train_batch_size=args.batch, max_steps=args.steps, learning_rate=5e-5,
                          weight_decay=0.01, warmup_steps=max(1, args.steps // 10), max_grad_norm=1.0,
                          logging_steps=5, save_strategy="no", report_to=[], disable_tqdm=True,
                          dataloader_num_workers=1, dataloader_drop_last=True, seed=42)
    trainer = SentenceTransformerTrainer(model=model, args=arguments, train_dataset=Dataset.from_dict(columns),
                                         loss=MultipleNegativesRankingLoss(model, scale=20.0), callbacks=[Timer()])
    trainer.train()


def child(args) -> None:
    import torch

    torch.set_num_threads(args.threads)
    data_path = build_medquad_ir()
    (run_codiemb if args.side == "codiemb" else run_sentence_transformers)(args, data_path)
    steps = [b - a for a, b in itertools.pairwise(STEP_ENDS)][args.warmup:]
    print("RESULT " + json.dumps({"side": args.side, "precision": args.precision, "steps": steps,
                                  "threads": torch.get_num_threads(), "recorded": len(STEP_ENDS)}))


# ---------------------------------------------------------------- the parent: interleave, summarise
def run_child(side: str, precision: str, args, extra: list[str] | None = None) -> list[float]:
    command = [sys.executable, __file__, "--side", side, "--precision", precision, "--steps", str(args.steps),
               "--warmup", str(args.warmup), "--batch", str(args.batch), "--max-length", str(args.max_length),
               "--threads", str(args.threads), *(["--extra", *extra] if extra else [])]
    env = dict(os.environ, HF_HUB_OFFLINE="1", WANDB_MODE="offline", TOKENIZERS_PARALLELISM="false",
               OMP_NUM_THREADS=str(args.threads))
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT, check=False)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode or not lines:
        sys.exit(f"{side}/{precision} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT "):])["steps"]


def summarise(name_a: str, name_b: str, pairs: list[tuple[list[float], list[float]]], batch: int) -> str:
    """Ratio = median step time of B / median step time of A, per round; min/max over rounds."""
    ratios = [statistics.median(b) / statistics.median(a) for a, b in pairs]
    med_a = statistics.median(statistics.median(a) for a, _ in pairs)
    med_b = statistics.median(statistics.median(b) for _, b in pairs)
    # The fastest step of each side is the least disturbed by other load on a shared machine: a second view.
    fastest = min(min(b) for _, b in pairs) / min(min(a) for a, _ in pairs)
    return (f"{name_a} {med_a:.3f} s/step ({batch / med_a:.1f} samples/s), {name_b} {med_b:.3f} s/step "
            f"({batch / med_b:.1f} samples/s); {name_b}/{name_a} step time = {statistics.median(ratios):.3f}x "
            f"(min {min(ratios):.3f}, max {max(ratios):.3f}, rounds {len(ratios)}; "
            f"fastest step {name_b}/{name_a} = {fastest:.3f}x)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--warmup", type=int, default=3, help="step intervals dropped at the start")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"])
    parser.add_argument("--side", choices=["codiemb", "st"], help=argparse.SUPPRESS)
    parser.add_argument("--precision", choices=["fp32", "bf16"], help=argparse.SUPPRESS)
    parser.add_argument("--extra", nargs="*", default=[], help="extra Hydra overrides for the codiemb side")
    args = parser.parse_args()
    if args.side:
        return child(args)
    build_medquad_ir()
    print(f"batch {args.batch} (x 1 query + 4 passages), max length {args.max_length}, {args.steps} steps "
          f"({args.warmup} dropped), torch threads {args.threads}, rounds {args.rounds}, A B A B")
    for precision in args.precisions:
        pairs = []
        for _ in range(args.rounds):
            pairs.append((run_child("st", precision, args), run_child("codiemb", precision, args, args.extra)))
        speedups = [statistics.median(s) / statistics.median(c) for s, c in pairs]
        print(f"{precision}: " + summarise("sentence-transformers", "codiemb", pairs, args.batch))
        fastest = min(min(s) for s, _ in pairs) / min(min(c) for _, c in pairs)
        print(f"{precision}: codiemb speed-up = {statistics.median(speedups):.3f}x "
              f"(min {min(speedups):.3f}, max {max(speedups):.3f}; fastest-step ratio {fastest:.3f}x); "
              f"target >= 1.15x")


if __name__ == "__main__":
    main()
