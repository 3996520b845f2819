"""One short check of codiemb on one CUDA GPU (about 3-5 minutes on an H100; exits 2 at once without CUDA).

    python bench/gpu_check.py [--steps 40] [--warmup 5] [--rounds 2] [--batch 64] [--max-length 128]
                              [--output bench/results/gpu_check.json]

Each part runs in its own child process (its own CUDA context, so peak memory is per part):

1. **recipe**: the default recipe (``python train.py`` = example data, IR + STS, CoDiEmb losses, periodic
   exports, delta merge) with ``trainer=gpu trainer.precision=bf16-mixed trainer.max_steps=<steps>`` through
   :func:`codiemb.run.train.train`. Recorded: step times (the interval between optimizer-step ends, as in
   ``bench/train_throughput.py``), peak GPU memory (``torch.cuda.max_memory_allocated``), the final metrics. Then
   the last export and the merged model are loaded with ``SentenceTransformer(dir, device="cuda")`` and with
   ``Encoder.from_pretrained``; their fp32 embeddings of the same texts (queries and passages, with prompts) must
   agree (max |diff| <= 1e-4).
2. **codiemb vs sentence-transformers**: ``bench/train_throughput.py``'s like-for-like comparison moved to the
   GPU in bf16: the same IR rows (1 positive + 3 hard negatives; its MedQuAD sample when ``../shared/data`` has
   it, else the example data's IR rows), InfoNCE at t = 0.05 = ``MultipleNegativesRankingLoss(scale=20)``, same
   batch, max length, AdamW, clipping, 1 DataLoader worker; sides interleaved A B per round; median step time
   after ``--warmup`` steps; speed-up = sentence-transformers / codiemb step time (> 1: codiemb faster).

Writes ``--output`` with ``bench/provenance.py``'s :func:`write_result` (command, git revision, CPU capability,
...) plus ``device`` (``torch.cuda.get_device_name()``) and CUDA versions. Exit 0 when the export parity holds,
1 when it does not (the numbers are written either way), 2 without CUDA.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import train_throughput as tt  # bench/ is not a package

ROOT = tt.ROOT
DEFAULT_OUTPUT = ROOT / "bench" / "results" / "gpu_check.json"
PARITY_ATOL = 1e-4
PARITY_TEXTS = ["how do I reset my router", "A man is playing a guitar.", "What causes high blood pressure?",
                "Hold the reset button for ten seconds until the lights flash; the router restarts with defaults.",
                "Hypertension is often linked to salt intake, weight, inactivity, stress and genetics."]
CHILD_TIMEOUT_S = 300
DEVICE = "cuda"  # where the parity check and the sentence-transformers side run (a CPU dry run patches it)


def require_cuda() -> None:
    import torch

    if not torch.cuda.is_available():
        print(f"gpu_check: no CUDA device (torch {torch.__version__}: torch.cuda.is_available() is False); "
              "run it on a machine with an NVIDIA GPU and a CUDA build of torch", file=sys.stderr)
        sys.exit(2)


# ---------------------------------------------------------------- data for the like-for-like comparison
def comparison_data(min_rows: int) -> tuple[Path, str]:
    """train_throughput's MedQuAD IR sample when ../shared/data has it; else the example data's IR rows (1
    positive, 3 negatives), repeated to ``min_rows``."""
    if (tt.DATA / "medquad" / "medquad-qa.jsonl").exists():
        return tt.build_medquad_ir(), "medquad (bench/train_throughput.py's 2,000-row sample)"
    rows = []
    for name in ("ir_support.jsonl", "ir_knowledge.jsonl"):
        for line in (ROOT / "data" / "example" / name).open(encoding="utf-8"):
            row = json.loads(line)
            if row.get("positives") and len(row.get("negatives", [])) >= 3:
                rows.append({"task": "ir", "query": row["query"], "positives": row["positives"][:1],
                             "negatives": row["negatives"][:3]})
    rows = list(itertools.islice(itertools.cycle(rows), max(min_rows, len(rows))))
    target = tt.WORK / f"example-ir-{len(rows)}.jsonl"
    tt.WORK.mkdir(parents=True, exist_ok=True)
    target.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return target, f"data/example IR rows ({len(rows)} rows, repeated)"


# ---------------------------------------------------------------- child processes
class CudaStepTimer:
    """train_throughput's timing callback (perf_counter at every optimizer-step end), after a CUDA synchronize
    so that a step's time is the GPU's work, not the host's queueing; both sides time steps this way."""

    def on_train_batch_end(self, *args, **kwargs) -> None:
        import torch

        torch.cuda.synchronize()
        tt.STEP_ENDS.append(time.perf_counter())


def add_step_timer(cfg, only: bool = False) -> None:
    """Add :class:`CudaStepTimer` to ``cfg.callbacks`` (``only``: as the sole callback, as train_throughput does:
    no export, validation or progress bar)."""
    import lightning as L
    from omegaconf import open_dict

    globals()["StepTimer"] = type("StepTimer", (CudaStepTimer, L.Callback), {})
    timer = {"_target_": f"{__name__}.StepTimer"}
    with open_dict(cfg):
        if only:
            cfg.callbacks = {"step_timer": timer}
        else:
            cfg.callbacks["step_timer"] = timer


def step_times(warmup: int) -> list[float]:
    return [b - a for a, b in itertools.pairwise(tt.STEP_ENDS)][warmup:]


def parity(directory: Path) -> dict:
    """fp32 embeddings of :data:`PARITY_TEXTS` from SentenceTransformer(dir) vs Encoder.from_pretrained(dir)."""
    import torch
    from sentence_transformers import SentenceTransformer

    from codiemb.models.encoder import Encoder

    torch.set_float32_matmul_precision("highest")  # no TF32 on either side
    ours_model = Encoder.from_pretrained(str(directory)).to(DEVICE)
    theirs_model = SentenceTransformer(str(directory), device=DEVICE)
    diffs, cosines = [], []
    for kind, prompt_name in (("query", "query"), ("passage", "document")):
        ours = ours_model.encode(PARITY_TEXTS, kind=kind)
        theirs = theirs_model.encode(PARITY_TEXTS, prompt_name=prompt_name, convert_to_tensor=True).float().cpu()
        diffs.append(float((ours - theirs).abs().max()))
        cosines.append(float(torch.nn.functional.cosine_similarity(ours, theirs, dim=-1).min()))
    del ours_model, theirs_model
    return {"model": str(directory), "max_abs_diff": max(diffs), "min_cosine": min(cosines),
            "ok": max(diffs) <= PARITY_ATOL}


def child_recipe(args) -> dict:
    import torch

    from codiemb.run.train import train

    output_dir = Path(tempfile.mkdtemp(prefix="codiemb-gpu-check-"))
    overrides = ["trainer=gpu", "trainer.precision=bf16-mixed", f"trainer.max_steps={args.steps}"]
    cfg = tt.compose_train(overrides, output_dir)
    add_step_timer(cfg)
    torch.cuda.reset_peak_memory_stats()
    result = train(cfg)
    peak = torch.cuda.max_memory_allocated()
    exports = sorted(p for p in (output_dir / "checkpoints").glob("step_*") if p.is_dir())
    checks = [parity(exports[-1])] if exports else []
    if result.get("merged"):
        checks.append(parity(Path(result["merged"])))
    return {"overrides": overrides, "steps": step_times(args.warmup), "peak_memory_bytes": peak,
            "precision": result.get("precision"), "metrics": result.get("metrics", {}),
            "train_wall_time_s": result.get("wall_time_s"), "parity": checks, "output_dir": str(output_dir)}


def child_codiemb(args) -> dict:
    import torch

    from codiemb.run.train import train

    data_path, _ = comparison_data(args.steps * args.batch)
    overrides = [o for o in tt.codiemb_overrides(args, data_path) if not o.startswith("trainer=")]
    overrides += ["trainer=gpu", "trainer.precision=bf16-mixed", "trainer.max_epochs=-1"]
    cfg = tt.compose_train(overrides, Path(tempfile.mkdtemp(prefix="codiemb-gpu-bench-")))
    add_step_timer(cfg, only=True)
    torch.cuda.reset_peak_memory_stats()
    train(cfg)
    return {"steps": step_times(args.warmup), "peak_memory_bytes": torch.cuda.max_memory_allocated(),
            "overrides": overrides}


def child_st(args) -> dict:
    """train_throughput.run_sentence_transformers on the GPU (bf16 autocast)."""
    import torch
    from datasets import Dataset
    from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer
    from sentence_transformers import SentenceTransformerTrainingArguments as Arguments
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
    from transformers import TrainerCallback

    from codiemb.models.resolve import bundled_minilm_path

    class Timer(TrainerCallback):
        def on_step_end(self, *a, **k):
            torch.cuda.synchronize()  # only for the timestamps: the optimizer step has been queued, not run
            tt.STEP_ENDS.append(time.perf_counter())

    data_path, _ = comparison_data(args.steps * args.batch)
    rows = [json.loads(line) for line in data_path.open(encoding="utf-8")]
    columns = {"anchor": [r["query"] for r in rows], "positive": [r["positives"][0] for r in rows]}
    for k in range(3):
        columns[f"negative_{k + 1}"] = [r["negatives"][k] for r in rows]
    model = SentenceTransformer(bundled_minilm_path(), device=DEVICE)
    model.max_seq_length = args.max_length
    arguments = Arguments(output_dir=tempfile.mkdtemp(prefix="st-gpu-bench-"), bf16=True, use_cpu=DEVICE == "cpu",
                          per_device_train_batch_size=args.batch, max_steps=args.steps, learning_rate=5e-5,
                          weight_decay=0.01, warmup_steps=max(1, args.steps // 10), max_grad_norm=1.0,
                          logging_steps=5, save_strategy="no", report_to=[], disable_tqdm=True,
                          dataloader_num_workers=1, dataloader_drop_last=True, seed=42)
    torch.cuda.reset_peak_memory_stats()
    trainer = SentenceTransformerTrainer(model=model, args=arguments, train_dataset=Dataset.from_dict(columns),
                                         loss=MultipleNegativesRankingLoss(model, scale=20.0), callbacks=[Timer()])
    trainer.train()
    return {"steps": step_times(args.warmup), "peak_memory_bytes": torch.cuda.max_memory_allocated()}


def child(args) -> None:
    require_cuda()
    run = {"recipe": child_recipe, "codiemb": child_codiemb, "st": child_st}[args.side]
    print("RESULT " + json.dumps(run(args)), flush=True)


# ---------------------------------------------------------------- the parent
def run_child(side: str, args) -> dict:
    command = [sys.executable, __file__, "--side", side, "--steps", str(args.steps), "--warmup", str(args.warmup),
               "--batch", str(args.batch), "--max-length", str(args.max_length)]
    env = dict(os.environ, HF_HUB_OFFLINE="1", WANDB_MODE="offline", TOKENIZERS_PARALLELISM="false")
    started = time.perf_counter()
    try:
        done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT, check=False,
                              timeout=CHILD_TIMEOUT_S)
    except subprocess.TimeoutExpired as exc:
        sys.exit(f"gpu_check: {side} ran past {CHILD_TIMEOUT_S} s:\n{(exc.stderr or b'')[-3000:]!r}")
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode or not lines:
        sys.exit(f"gpu_check: {side} failed (exit {done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    result = json.loads(lines[-1][len("RESULT "):])
    result["child_wall_s"] = round(time.perf_counter() - started, 1)
    return result


def gib(n: int) -> float:
    return round(n / 2**30, 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=5, help="step intervals dropped at the start")
    parser.add_argument("--rounds", type=int, default=2, help="codiemb / sentence-transformers A B rounds")
    parser.add_argument("--batch", type=int, default=64, help="queries per IR step (x 1 positive + 3 negatives)")
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--output", default=str(DEFAULT_OUTPUT))
    parser.add_argument("--side", choices=["recipe", "codiemb", "st"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.precision, args.extra = "bf16", []  # what train_throughput.codiemb_overrides reads
    if args.side:
        return child(args)
    require_cuda()
    import torch
    from provenance import write_result

    started_at = time.time()
    device = torch.cuda.get_device_name(0)
    print(f"gpu_check on {device}: recipe {args.steps} steps bf16, then codiemb vs sentence-transformers "
          f"(batch {args.batch}, max length {args.max_length}, {args.rounds} rounds)", flush=True)
    recipe = run_child("recipe", args)
    recipe_step = statistics.median(recipe["steps"])
    print(f"recipe: median step {recipe_step * 1000:.1f} ms, peak memory {gib(recipe['peak_memory_bytes'])} GiB, "
          f"parity " + ", ".join(f"{Path(p['model']).name} max|diff| {p['max_abs_diff']:.2e}" for p in recipe["parity"]),
          flush=True)
    _, data_name = comparison_data(args.steps * args.batch)
    pairs, peaks = [], {"codiemb": 0, "st": 0}
    for _ in range(args.rounds):
        st, ours = run_child("st", args), run_child("codiemb", args)
        pairs.append((st["steps"], ours["steps"]))
        peaks = {"st": max(peaks["st"], st["peak_memory_bytes"]),
                 "codiemb": max(peaks["codiemb"], ours["peak_memory_bytes"])}
    summary = tt.summarise("sentence-transformers", "codiemb", pairs, args.batch)
    speedups = [statistics.median(s) / statistics.median(c) for s, c in pairs]
    print(f"bf16: {summary}; peak memory codiemb {gib(peaks['codiemb'])} GiB, sentence-transformers "
          f"{gib(peaks['st'])} GiB", flush=True)
    ok = bool(recipe["parity"]) and all(p["ok"] for p in recipe["parity"])
    payload = {
        "device": device, "cuda": torch.version.cuda, "device_capability": list(torch.cuda.get_device_capability(0)),
        "ok": ok,
        "recipe": {"overrides": recipe["overrides"], "steps": args.steps, "warmup_dropped": args.warmup,
                   "median_step_s": recipe_step, "step_s": recipe["steps"], "precision": recipe["precision"],
                   "peak_memory_gib": gib(recipe["peak_memory_bytes"]), "metrics": recipe["metrics"],
                   "train_wall_time_s": recipe["train_wall_time_s"], "export_parity": recipe["parity"],
                   "parity_atol": PARITY_ATOL},
        "vs_sentence_transformers": {
            "data": data_name, "batch": args.batch, "max_length": args.max_length, "steps": args.steps,
            "warmup_dropped": args.warmup, "precision": "bf16",
            "median_step_s": {"codiemb": statistics.median(statistics.median(c) for _, c in pairs),
                              "sentence_transformers": statistics.median(statistics.median(s) for s, _ in pairs)},
            "speedup_median": statistics.median(speedups), "speedup_rounds": speedups,
            "peak_memory_gib": {k: gib(v) for k, v in peaks.items()}, "summary": summary},
    }
    write_result(args.output, payload, started_at)
    print(f"{'ok' if ok else 'FAILED: an export does not match SentenceTransformer'}; wrote {args.output}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
