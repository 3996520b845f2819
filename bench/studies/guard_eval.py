"""Score models on the out-of-distribution guard and write one result JSON per model.

    python bench/studies/guard_eval.py --label base --model bundled:all-MiniLM-L6-v2
    python bench/studies/guard_eval.py --label sts_cosent \
        --model logs/guard/runs/sts_cosent_stsb/checkpoints/step_000089 \
        --note "STS only, STS-B train, loss=cosent" --cmd "python train.py ..." --train-s 512
    python bench/studies/guard_eval.py ... --val    # also the recipe's validation sets (eval=real_holdout)
    python bench/studies/guard_eval.py ... --test   # also the test sets (read once per finished recipe only)

Writes bench/results/guard/<label>.json: the provenance keys of bench/provenance.py (command, git revision,
CPU capability, threads, wall time, ...), the command that made the model (--cmd), the arguments this scoring
got, wall time per group, every metric of every set.
An existing file is kept (pass --force to redo). Evaluation in fp32 (deterministic; bf16 autocast moves
scores by up to ~0.15 between runs, which is the size of the effects read here).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))

from provenance import provenance, write_json, write_result  # bench/ is not a package

RESULTS = ROOT / "bench" / "results" / "guard"


def compose_sets(group: str, overrides: list[str] | None = None) -> list[dict]:
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    with initialize_config_dir(str(ROOT / "configs"), version_base="1.3"):
        cfg = compose("eval", overrides=[f"eval={group}", f"paths.root_dir={ROOT}", *(overrides or [])],
                      return_hydra_config=True)
    return OmegaConf.to_container(cfg.eval.sets, resolve=True)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--label", required=True)
    parser.add_argument("--model", required=True, help="exported dir, merged dir or bundled:all-MiniLM-L6-v2")
    parser.add_argument("--note", default="")
    parser.add_argument("--cmd", default="", help="the command that produced the model")
    parser.add_argument("--train-s", type=float, default=None, help="wall time of that command")
    parser.add_argument("--val", action="store_true", help="also eval=real_holdout (STS-B dev, SciFact holdout)")
    parser.add_argument("--test", action="store_true", help="also eval=real_test (STS-B test, SciFact, Vaswani)")
    parser.add_argument("--no-guard", action="store_true", help="only the --val/--test groups (e.g. the one test "
                        "read of a finished recipe, written with --out bench/results/guard/test)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--out", default=str(RESULTS))
    parser.add_argument("--force", action="store_true")
    parser.add_argument("--add", action="store_true", help="score only the guard sets missing from an existing "
                        "result file and add them (after a set was added to the guard)")
    parser.add_argument("overrides", nargs="*", help="eval-config overrides, e.g. eval.max_pairs=400")
    args = parser.parse_args(argv)
    started_at = time.time()

    import torch

    from codiemb.eval.runner import evaluate, summarize
    from codiemb.models.encoder import Encoder

    out = Path(args.out) / f"{args.label}.json"
    if out.exists() and args.add:
        return add_missing(out, args, started_at)
    if out.exists() and not args.force:
        print(f"[guard] {out} exists (use --force)")
        return json.loads(out.read_text())
    groups = ([] if args.no_guard else ["guard"]) + (["real_holdout"] if args.val else []) + \
        (["real_test"] if args.test else [])
    torch.manual_seed(0)
    encoder = Encoder.from_pretrained(args.model).eval()
    # guard_eval_args: what this scoring got, also when called in-process (guard_factors.py, merge_tuning.py)
    payload = {"label": args.label, "model": args.model, "note": args.note, "train_cmd": args.cmd,
               "train_s": args.train_s, "guard_eval_args": list(sys.argv[1:] if argv is None else argv),
               "precision": "fp32", "groups": {}}
    capability = torch.backends.cpu.get_cpu_capability()
    print(f"[guard] {args.label}: {args.model}  cpu capability {capability}, "
          f"{torch.get_num_threads()} thread(s)", flush=True)
    for group in groups:
        sets = compose_sets(group, args.overrides if group == "guard" else None)
        started = time.perf_counter()
        with torch.inference_mode():
            results = evaluate(encoder, sets, batch_size=args.batch_size)
        payload["groups"][group] = {"sets": results, "summary": summarize(results, sets),
                                    "wall_s": time.perf_counter() - started, "overrides": args.overrides
                                    if group == "guard" else []}
        print(f"[guard] {group}: {payload['groups'][group]['summary']} "
              f"({payload['groups'][group]['wall_s']:.0f} s, cpu capability {capability})", flush=True)
    return write_result(out, payload, started_at)


def add_missing(out: Path, args, started_at: float) -> dict:
    """Score the guard sets that ``out`` lacks and merge them in (summary recomputed; ``added`` records it)."""
    import torch

    from codiemb.eval.runner import evaluate, summarize
    from codiemb.models.encoder import Encoder

    payload = json.loads(out.read_text())
    group = payload["groups"]["guard"]
    sets = compose_sets("guard", group.get("overrides") or None)
    missing = [s for s in sets if s["name"] not in group["sets"]]
    if not missing:
        return payload
    encoder = Encoder.from_pretrained(payload["model"]).eval()
    started = time.perf_counter()
    with torch.inference_mode():
        results = evaluate(encoder, missing, batch_size=args.batch_size)
    group["sets"].update(results)
    group["sets"] = {s["name"]: group["sets"][s["name"]] for s in sets if s["name"] in group["sets"]}
    group["summary"] = summarize(group["sets"], sets)
    group["wall_s"] += time.perf_counter() - started
    # the file keeps the provenance of its first scoring; each addition records its own
    payload.setdefault("added", []).append({"sets": [s["name"] for s in missing], **provenance(started_at)})
    write_json(out, payload)
    print(f"[guard] {args.label}: added {[s['name'] for s in missing]}: {group['summary']}", flush=True)
    return payload


if __name__ == "__main__":
    main()
