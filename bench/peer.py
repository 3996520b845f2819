"""The same-data peer: sentence-transformers' trainer on exactly ``experiment=real_cpu``'s training rows, trained
beside ``python train.py experiment=real_cpu`` in one run on one machine, both scored the same way.

    python bench/peer.py                          # seed 42: bench/results/peer/seed42.json (+ one scores file each)
    python bench/peer.py --seed 43
    python bench/peer.py --max-steps 3 --no-eval --out /tmp/peer-smoke   # a smoke run of the whole driver

The peer is what a sentence-transformers user builds from the same rows (its documentation's choices):
STS-B train + STS12 train as (sentence1, sentence2, score in [0, 1]) with CoSENTLoss; every IR dataset as
(anchor, positive, negative) triplets with MultipleNegativesRankingLoss (first positive; one of the row's hard
negatives, seeded, as codiemb's collator draws one per step; SciFact/PubMedQA with the negatives codiemb mined,
SciFact without its held-back validation queries); proportional multi-dataset sampling, the no-duplicates batch
sampler, batch 32, one epoch, lr 5e-5, warm-up 0.1, max length 256, bf16 where the CPU has it natively.

Both trainers run at the same time, one OpenMP thread each (the 2-core machine's fair split); each process
tree's RSS is sampled every second (the codiemb timeline is the memory profile over the run). Then each
model (codiemb's delivered model: its last export, or merged/ with a merge stage) is scored by
bench/studies/guard_eval.py on the recipe's validation sets, the guard, and the test sets (read once per finished
recipe), and codiemb's at 128 dimensions on validation (the Matryoshka comparison's "trained without it" row).
Weights are deleted afterwards.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
from provenance import write_result  # noqa: E402  (bench/ is on sys.path when run as a script)
from rss import measure  # noqa: E402

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline"}


def recipe(overrides: list[str]):
    """``train.py``'s config with ``overrides`` and its dataset specs with every mined cache resolved (mines once,
    here, before anything runs concurrently). Also bench/step_memory.py's."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from codiemb.mining.cache import resolve_mined_specs
    from codiemb.run import resolvers

    resolvers.register()
    with initialize_config_dir(str(ROOT / "configs"), version_base="1.3"):
        cfg = compose("train", overrides=[f"paths.root_dir={ROOT}", *overrides], return_hydra_config=True)
    specs = resolve_mined_specs(OmegaConf.to_container(cfg.data.datasets, resolve=True),
                                OmegaConf.to_container(cfg.model, resolve=True))
    return cfg, specs


def peer_rows(specs: list[dict], cache_dir: str, seed: int, out: Path) -> dict:
    """The rows codiemb trains on (its own loader: same holdout, max_rows, validation), in the peer's columns."""
    from datasets import Dataset, DatasetDict

    from codiemb.data.datamodule import CoDiEmbDataModule

    dm = CoDiEmbDataModule(datasets=specs, seed=seed, cache_dir=cache_dir)
    dm.load()
    rng, columns, counts = random.Random(seed), {}, {}
    for record in dm.dataset.records():
        name = record.dataset
        if record.task == "sts":
            low, high = record.score_range
            row = {"sentence1": record.query, "sentence2": record.positives[0],
                   "score": (float(record.score) - low) / (high - low)}
        elif record.negatives:
            row = {"anchor": record.query, "positive": record.positives[0], "negative": rng.choice(record.negatives)}
        else:  # a query without a hard negative: (anchor, positive), a dataset of its own (one column set each)
            name, row = f"{name}_pairs", {"anchor": record.query, "positive": record.positives[0]}
        table = columns.setdefault(name, {key: [] for key in row})
        for key, value in row.items():
            table[key].append(value)
        counts[name] = counts.get(name, 0) + 1
    DatasetDict({name: Dataset.from_dict(table) for name, table in columns.items()}).save_to_disk(str(out))
    return counts


def train_peer(data: Path, output: Path, seed: int, max_steps: int) -> None:
    """The peer's training (a child process of this script, so its memory is its own)."""
    from datasets import load_from_disk
    from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer, losses
    from sentence_transformers import SentenceTransformerTrainingArguments as Arguments
    from sentence_transformers.training_args import BatchSamplers, MultiDatasetBatchSamplers

    from codiemb.models.resolve import bundled_minilm_path
    from codiemb.utils.precision import choose_precision

    model = SentenceTransformer(bundled_minilm_path(), device="cpu")
    model.max_seq_length = 256
    train = load_from_disk(str(data))
    loss = {name: losses.CoSENTLoss(model) if "score" in ds.column_names else losses.MultipleNegativesRankingLoss(model)
            for name, ds in train.items()}
    bf16 = choose_precision("cpu").bf16
    args = Arguments(output_dir=str(output.with_name(output.name + "_trainer")), num_train_epochs=1,
                     max_steps=max_steps if max_steps > 0 else -1, per_device_train_batch_size=32,
                     learning_rate=5e-5, warmup_ratio=0.1, bf16=bf16, use_cpu=True, seed=seed,
                     batch_sampler=BatchSamplers.NO_DUPLICATES,
                     multi_dataset_batch_sampler=MultiDatasetBatchSamplers.PROPORTIONAL,
                     save_strategy="no", report_to="none", logging_steps=25, dataloader_num_workers=0)
    SentenceTransformerTrainer(model=model, args=args, train_dataset=train, loss=loss).train()
    model.save(str(output))
    print(f"peer precision: {'bf16' if bf16 else 'fp32'}", flush=True)


def run_both(commands: dict[str, list[str]], work: Path) -> dict[str, dict]:
    """Each command under bench/rss.py's sampler, all at once (one thread each waits on its process)."""
    results: dict[str, dict] = {}

    def one(side: str) -> None:
        results[side] = measure(commands[side], work / f"{side}.log", ROOT, ENV)
        results[side]["command"] = "OMP_NUM_THREADS=1 python " + " ".join(commands[side][1:])

    threads = [threading.Thread(target=one, args=(side,)) for side in commands]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def score(label: str, model: Path, note: str, cmd: str, train_s: float, out: Path) -> subprocess.Popen:
    args = [sys.executable, "bench/studies/guard_eval.py", "--label", label, "--model", str(model), "--note", note,
            "--cmd", cmd, "--train-s", str(train_s), "--val", "--test", "--out", str(out), "--force"]
    return subprocess.Popen(args, cwd=ROOT, env=ENV, stdout=open(out / f"{label}.log", "w"),  # noqa: SIM115
                            stderr=subprocess.STDOUT)


def table(out: Path) -> str:
    """Markdown rows from the result files: the base (bench/results/guard/base.json; its test scores are the
    MTEB anchors of BENCHMARKS section 5), then codiemb and the peer for every seed scored."""
    sys.path.insert(0, str(ROOT / "bench" / "studies"))
    from guard_factors import STS12, STSB_DEV
    from guard_table import verdict

    base = json.loads((ROOT / "bench" / "results" / "guard" / "base.json").read_text())
    rows = ["| model | seed | STS-B test | SciFact | Vaswani | val: STS-B dev | val: SciFact holdout | guard mean "
            "delta (6 unseen sets) | sets below base | worst set | training wall | training peak PSS (RSS) |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|"]

    def main_scores(payload: dict, group: str, names: list[str]) -> list[str]:
        sets = payload["groups"].get(group, {}).get("sets", {})
        return [f"{sets[n]['main_score']:.2f}" if n in sets else "-" for n in names]

    base_val = main_scores(base, "real_holdout", ["stsb_dev", "scifact_holdout"])
    rows.append(f"| base all-MiniLM-L6-v2 | - | 82.03 | 64.51 | 43.35 | {' | '.join(base_val)} | 0 | - | - | - | - |")
    for run in sorted(out.glob("seed*.json")):
        bench = json.loads(run.read_text())
        for side in ("codiemb", "peer"):
            scores = out / f"{side}_seed{bench['seed']}.json"
            if not scores.is_file():
                continue
            payload = {**json.loads(scores.read_text()), "in_domain": STSB_DEV + STS12}  # both trained on them
            v = verdict(payload, base, 0.0)
            test = main_scores(payload, "real_test", ["stsb_test", "scifact", "vaswani"])
            val = main_scores(payload, "real_holdout", ["stsb_dev", "scifact_holdout"])
            worst = v["worst"]
            train = bench[side]
            rows.append(f"| {side} | {bench['seed']} | {' | '.join(test)} | {' | '.join(val)} | "
                        f"{v['mean_delta']:+.2f} | {len(v['below'])} of {v['n_ood']} | {worst[0]} {worst[1]:+.2f} | "
                        f"{train['wall_s'] / 60:.1f} min | {train['peak_tree_pss_mib'] / 1024:.2f} GiB "
                        f"({train['peak_tree_rss_mib'] / 1024:.2f}) |")
    return "\n".join(rows)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--max-steps", type=int, default=0, help="cap both trainers (smoke runs); 0 = one epoch")
    parser.add_argument("--no-eval", action="store_true", help="train and measure only")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "peer"))
    parser.add_argument("--work", default=str(ROOT / "logs" / "bench" / "peer"), help="runs and models (deleted)")
    parser.add_argument("--table", action="store_true", help="print the table from the result files in --out")
    parser.add_argument("--child-peer", nargs=2, metavar=("DATA", "OUTPUT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.table:
        return print(table(Path(args.out)))
    if args.child_peer:
        return train_peer(Path(args.child_peer[0]), Path(args.child_peer[1]), args.seed, args.max_steps)

    started_at = time.time()
    out, work = Path(args.out), Path(args.work) / f"seed{args.seed}"
    out.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    cfg, specs = recipe(["experiment=real_cpu", f"seed={args.seed}"])
    counts = peer_rows(specs, str(cfg.data.cache_dir), args.seed, work / "peer_data")
    limit = [f"trainer.max_steps={args.max_steps}", "checkpoint_every_n_steps=2", "~callbacks.validation",
             "merge=uniform"] if args.max_steps else []  # a smoke run: no validation, the quickest merge
    ours_cmd = [sys.executable, "train.py", "experiment=real_cpu", f"seed={args.seed}", *limit,
                f"hydra.run.dir={work / 'codiemb'}"]
    peer_cmd = [sys.executable, "bench/peer.py", "--seed", str(args.seed), "--max-steps", str(args.max_steps),
                "--child-peer", str(work / "peer_data"), str(work / "peer_model")]
    payload = {"seed": args.seed, "peer_rows": counts, "load_average_start": os.getloadavg(),
               **run_both({"codiemb": ours_cmd, "peer": peer_cmd}, work)}
    payload["peer"]["log_tail"] = (work / "peer.log").read_text()[-1500:]
    for side in ("codiemb", "peer"):  # phases were computed from every sample; the file keeps one in five
        payload[side]["samples"] = payload[side]["samples"][::5]
    summary = work / "codiemb" / "summary.json"
    if summary.is_file():
        payload["codiemb"]["summary"] = json.loads(summary.read_text())
    name = f"seed{args.seed}" if not args.max_steps else f"smoke_seed{args.seed}"
    write_result(out / f"{name}.json", payload, started_at)
    failed = [side for side in ("codiemb", "peer") if payload[side]["returncode"]]
    if failed:
        sys.exit(f"{', '.join(failed)} failed; logs under {work}")
    if not args.no_eval:
        # the delivered model: the last export (experiment=real_cpu has merge=none since BENCHMARKS 2.7), or merged/
        delivered = payload["codiemb"].get("summary", {}).get("delivered") or {}
        ours, peer_model = Path(delivered.get("model") or work / "codiemb" / "merged"), work / "peer_model"
        kind = delivered.get("kind", "merged")
        jobs = [score(f"codiemb_seed{args.seed}", ours, f"experiment=real_cpu, the delivered model ({kind})",
                      payload["codiemb"]["command"], payload["codiemb"]["wall_s"], out),
                score(f"peer_seed{args.seed}", peer_model, "sentence-transformers trainer, same rows",
                      payload["peer"]["command"], payload["peer"]["wall_s"], out)]
        truncated = work / "eval_128"
        rc = subprocess.run([sys.executable, "eval.py", f"model_path={ours}", "eval=real_holdout", "truncate_dim=128",
                             f"hydra.run.dir={truncated}"], cwd=ROOT, env=ENV, capture_output=True, check=False)
        if rc.returncode == 0:
            payload["codiemb_merged_val_at_128"] = json.loads((truncated / "results.json").read_text())
        payload["scores"] = {f"{side}_seed{args.seed}": job.wait() for side, job in zip(("codiemb", "peer"), jobs)}
        write_result(out / f"{name}.json", payload, started_at)
    for weights in [*work.rglob("*.safetensors"), *work.rglob("*.ckpt")]:
        weights.unlink()


if __name__ == "__main__":
    main()
