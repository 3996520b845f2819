"""Factor study (gains that travel): train one variant at a time, score it on the out-of-distribution guard.

    python bench/studies/guard_factors.py --runs sts_codiemb_stsb sts_cosent_stsb sts_angle_stsb sts_codiemb_full
    python bench/studies/guard_factors.py --loso cosent     # STS-B genres left out one at a time (STS only)
    python bench/studies/guard_factors.py --wise logs/fusion_runs/seed42 --lams 0.5 0.7 1.0   # WiSE-FT on a run
    python bench/studies/guard_factors.py --fuse joint_sts32_proportional sts_codiemb_full_bs32 --lams 1.0 --val

Runs are `python train.py experiment=real_cpu` + the run's overrides (one process, seed 42), written to
logs/guard/runs/<name> (a run with a DONE file is reused). --wise merges a finished run's periodic exports
with delta fusion at each lam (lam < 1 = WiSE-FT: the fused delta scaled back towards the pre-trained
weights) into logs/guard/wise/<run>_lam<lam> and scores each on the guard and the recipe's validation sets.
--fuse trains (or reuses) the named runs and fuses their last exports across trajectories (`merge.runs`, delta
fusion at each lam) into logs/guard/fuse/<run>+<run>_lam<lam>, scored the same way.
Scores go to bench/results/guard/<label>.json through bench/studies/guard_eval.py; `in_domain` there names the
guard sets whose source the model trained on (left out of the verdict). Table: bench/studies/guard_table.py.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))

import guard_eval  # bench/ is not a package; guard_eval.py sits beside this file
from provenance import write_json

STSB_DEV = ["stsb_dev_news", "stsb_dev_captions", "stsb_dev_forum"]
STS12 = ["sts12_msrpar", "sts12_msrvid", "sts12_smteuroparl"]
# STS-B train holds 498 of STS12 train's 750 MSRpar pairs and 511 of its 750 MSRvid pairs (STS-B was built
# from the SemEval data), so those two guard sets are in-domain for any run that trains on STS-B train;
# SMTeuroparl shares 2 of 734 pairs.
STSB_TRAINED = STSB_DEV + ["sts12_msrpar", "sts12_msrvid"]
STSB_TRAIN = "{name:stsb_train,task:sts,format:stsb,path:${paths.shared_data_dir}/stsbenchmark/sts-train.csv}"
STSB_ONLY = f"data.datasets=[{STSB_TRAIN}]"
# No validation during the run: every model is scored afterwards by guard_eval. (on_export=false was added after
# sts_codiemb_full_bs32; runs before it also validated at each export, ~3.5 min each, inside their train_s.)
COMMON = ["experiment=real_cpu", "merge=none", "callbacks.validation.every_n_steps=100000",
          "callbacks.validation.on_train_end=false", "callbacks.validation.on_export=false",
          "callbacks.progress_bar.refresh_rate=50", "seed=42"]

STS32 = ["data.sts_batch_size=32", "task_mix=proportional"]  # STS batches of 32, one pass over each task's data


def seeded(name: str, overrides: list[str], note: str, seeds=(42, 43)) -> dict:
    """A joint-recipe run at each seed: ``name`` for seed 42 (COMMON's), ``name_seed<N>`` with ``seed=N`` else."""
    return {name if seed == 42 else f"{name}_seed{seed}": (
        overrides + ([] if seed == 42 else [f"seed={seed}"]), STSB_DEV + STS12, f"{note}, seed {seed}")
        for seed in seeds}


# name -> (overrides, guard sets trained on, note)
RUNS = {
    "sts_codiemb_stsb": (["task_mix=sts_only", "loss=codiemb", STSB_ONLY], STSB_TRAINED,
                         "STS only, STS-B train, CoDiEmb STS composite"),
    "sts_cosent_stsb": (["task_mix=sts_only", "loss=cosent", STSB_ONLY], STSB_TRAINED, "STS only, STS-B train, CoSENT"),
    "sts_angle_stsb": (["task_mix=sts_only", "loss=angle", STSB_ONLY], STSB_TRAINED, "STS only, STS-B train, AnglE"),
    "sts_codiemb_stsb_lr2e-5": (["task_mix=sts_only", "loss=codiemb", STSB_ONLY, "module.lr=2e-5"], STSB_TRAINED,
                                "STS only, STS-B train, CoDiEmb STS composite, lr 2e-5 (recipe: 5e-5)"),
    "sts_cosent_stsb_lr2e-5": (["task_mix=sts_only", "loss=cosent", STSB_ONLY, "module.lr=2e-5"], STSB_TRAINED,
                               "STS only, STS-B train, CoSENT, lr 2e-5 (recipe: 5e-5)"),
    "sts_codiemb_stsb_nomid": (["task_mix=sts_only", "loss=codiemb", STSB_ONLY, "loss.sts.middle_infonce_weight=0"],
                               STSB_TRAINED, ("STS only, STS-B train, CoDiEmb STS composite without the "
                                              "middle-layer InfoNCE term")),
    "sts_codiemb_full": (["task_mix=sts_only", "loss=codiemb"], STSB_DEV + STS12,
                         "STS only, STS-B + STS12 train (the recipe's STS data), CoDiEmb STS composite"),
    # issue #24 part 2: the same-data peer (CoSENT, batch 32) beats the joint recipe on STS-B test; without the IR
    # steps, is it the loss or the batch size? (the pair above/below: the recipe's STS data, STS steps only)
    "sts_cosent_full": (["task_mix=sts_only", "loss=cosent"], STSB_DEV + STS12,
                        "STS only, STS-B + STS12 train (the recipe's STS data), CoSENT (scale 20), batch 64"),
    "sts_cosent_full_bs32": (["task_mix=sts_only", "loss=cosent", "data.sts_batch_size=32"], STSB_DEV + STS12,
                             "STS only, the recipe's STS data, CoSENT, batch 32 (the peer's)"),
    "sts_codiemb_full_bs32": (["task_mix=sts_only", "loss=codiemb", "data.sts_batch_size=32"], STSB_DEV + STS12,
                              "STS only, the recipe's STS data, CoDiEmb STS composite, batch 32"),
    "sts_codiemb_full_bs32_scale5": (["task_mix=sts_only", "loss=codiemb", "data.sts_batch_size=32",
                                      "loss.sts.score_scale=5"], STSB_DEV + STS12,
                                     "STS only, the recipe's STS data, composite, batch 32, PRO on 0-5 scores"),
    "sts_codiemb_full_bs32_nomid": (["task_mix=sts_only", "loss=codiemb", "data.sts_batch_size=32",
                                     "loss.sts.middle_infonce_weight=0"], STSB_DEV + STS12,
                                    "STS only, the recipe's STS data, composite, batch 32, no middle-layer InfoNCE"),
    # the joint recipe (experiment=real_cpu: STS-B + STS12 train, SciFact + PubMedQA + Climate-FEVER + MedQuAD)
    "joint_recipe": ([], STSB_DEV + STS12, "joint recipe (experiment=real_cpu), lr 5e-5"),
    "joint_lr2e-5": (["module.lr=2e-5"], STSB_DEV + STS12, "joint recipe, lr 2e-5 (recipe: 5e-5)"),
    "joint_l2sp": (["module.l2sp_weight=0.1"], STSB_DEV + STS12,
                   "joint recipe, L2-SP: + 0.1 * ||w - w0||^2 over the encoder's weights"),
    "joint_l2sp1": (["module.l2sp_weight=1.0"], STSB_DEV + STS12,
                    "joint recipe, L2-SP: + 1.0 * ||w - w0||^2 over the encoder's weights"),
    "joint_freeze_emb": (["module.freeze_embeddings=true"], STSB_DEV + STS12,
                         "joint recipe, embedding layer frozen"),
    # length-grouped batches change the in-batch negatives; does quality hold?
    "joint_lengroup": (["data.length_grouping=true"], STSB_DEV + STS12,
                       "joint recipe, length-grouped batches (data.length_grouping=true)"),
    # retrieval transfer falls most when STS dominates (STS-only runs: WikiQA -3.6); more IR steps?
    "joint_ir70": (["task_mix.ir_share=0.7"], STSB_DEV + STS12,
                   "joint recipe, 70 % of optimizer steps IR (task_mix.ir_share=0.7; recipe: 0.5)"),
    # the composite's middle-layer InfoNCE term cost SNLI graded 0.8 in the STS-only runs
    "joint_nomid": (["loss.sts.middle_infonce_weight=0"], STSB_DEV + STS12,
                    "joint recipe without the STS composite's middle-layer InfoNCE term"),
    # the same recipe on another seed: how far two runs differ by chance
    "joint_seed43": (["seed=43"], STSB_DEV + STS12, "joint recipe, seed 43 (recipe runs: seed 42)"),
    # the recipe as it is since experiment=real_cpu dropped attention dropout (joint_recipe/joint_seed43 ran
    # with it): the baseline the self-distillation runs are judged against, same revision, same seeds
    **seeded("joint_attn0", [], "joint recipe (experiment=real_cpu, no attention dropout)"),
    # issue #24 part 2, next: STS batches of 32 (the STS-only pair above gained on every in-domain STS set) in the
    # joint recipe. task_mix=balanced would cycle the IR data twice (its epoch is twice the larger task's steps);
    # proportional keeps one pass over both (246 STS + 123 IR steps), as the same-data peer samples
    **seeded("joint_sts32_proportional", STS32,
             "joint recipe, STS batches of 32, proportional task sampling (one pass each)"),
    # ... and without the composite's middle-layer InfoNCE term (the STS-only pair at batch 32 gained without it)
    "joint_sts32_proportional_nomid": ([*STS32, "loss.sts.middle_infonce_weight=0"], STSB_DEV + STS12,
                                       "joint recipe, STS batches of 32, proportional, no middle-layer InfoNCE"),
    # ... and with self-distillation at weight 1.0 (the guard's best lever, 2.4) against its larger STS drift
    **seeded("joint_sts32_proportional_selfdistill1.0", [*STS32, "module.self_distill.weight=1.0"],
             "joint recipe, STS batches of 32, proportional, self-distillation 1.0"),
    # ... and both guard levers at once: self-distillation 1.0 without the middle-layer term (each alone: guard
    # -0.50 / -0.44 on seed 42), or with a lower learning rate for every step (joint_lr2e-5: guard -0.38)
    **seeded("joint_sts32_proportional_selfdistill1.0_nomid",
             [*STS32, "module.self_distill.weight=1.0", "loss.sts.middle_infonce_weight=0"],
             "joint recipe, STS batches of 32, proportional, self-distillation 1.0, no middle-layer InfoNCE"),
    **seeded("joint_sts32_proportional_selfdistill1.0_lr3e-5",
             [*STS32, "module.self_distill.weight=1.0", "module.lr=3e-5"],
             "joint recipe, STS batches of 32, proportional, self-distillation 1.0, lr 3e-5 (recipe: 5e-5)"),
    # ... or a lower learning rate for the STS steps only (module.task_lr_scale): batch 32's twice as many STS
    # steps then move the weights about as far as batch 64's did, with the IR steps as they were
    **seeded("joint_sts32_proportional_selfdistill1.0_stslr0.5",
             [*STS32, "module.self_distill.weight=1.0", "module.task_lr_scale.sts=0.5"],
             "joint recipe, STS batches of 32, proportional, self-distillation 1.0, STS steps at half the lr"),
    # self-distillation from the frozen base model (issue #24 part 3): keeps the function, not the weights
    **{name: run for w in (0.1, 0.3, 1.0) for name, run in seeded(
        f"joint_selfdistill{w}", [f"module.self_distill.weight={w}"],
        f"joint recipe + self-distillation from the base model, weight {w}").items()},
}


LOSO_SOURCES = ("news", "captions", "forum", "MSRpar", "MSRvid")  # STS-B genres, then STS-B/STS12 files


def loso_runs(loss: str, sources=LOSO_SOURCES) -> dict:
    """STS only on STS-B train with one source removed: a genre (column 0) or a SemEval file (column 1, e.g.
    MSRpar, whose pairs STS12 train shares). The filtered copy goes to logs/guard/loso/ (never into the
    repository). The guard sets whose source is gone from the training rows are the run's out-of-distribution
    STS sets; the rest stay in-domain."""
    from codiemb.eval.guard import loso_splits
    from codiemb.eval.sets import stsb_genre

    lines = (ROOT / ".." / "shared" / "data" / "stsbenchmark" / "sts-train.csv").read_text(
        encoding="utf-8").splitlines(keepends=True)
    runs = {}
    for held, _ in loso_splits(sources):
        kept = [line for line in lines
                if held.lower() not in (stsb_genre(line.split("\t")[0]), line.split("\t")[1].lower())]
        path = ROOT / "logs" / "guard" / "loso" / f"stsb-train-without-{held}.csv"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("".join(kept), encoding="utf-8")
        genres = {stsb_genre(line.split("\t")[0]) for line in kept}
        files = {line.split("\t")[1] for line in kept}
        in_domain = [f"stsb_dev_{g}" for g in ("news", "captions", "forum") if g in genres] + \
            [f"sts12_{f.lower()}" for f in ("MSRpar", "MSRvid") if f in files]
        data = f"data.datasets=[{{name:stsb_train,task:sts,format:stsb,path:{path}}}]"
        runs[f"loso_{loss}_no_{held}"] = (["task_mix=sts_only", f"loss={loss}", data], in_domain,
                                          (f"STS only, STS-B train without {held} ({len(lines) - len(kept)} "
                                           f"of {len(lines)} pairs removed), loss={loss}"))
    return runs


def train(name: str, overrides: list[str]) -> tuple[Path, float, str]:
    run_dir = ROOT / "logs" / "guard" / "runs" / name
    log_file, cmd_file = run_dir.parent / f"{name}.log", run_dir.parent / f"{name}.cmd"  # names may hold dots
    overridden = {o.split("=", 1)[0] for o in overrides}
    common = [c for c in COMMON if c.split("=", 1)[0] not in overridden]  # Hydra refuses a key given twice
    cmd = [sys.executable, "train.py", *common, *overrides, f"hydra.run.dir={run_dir}"]
    shown = "python " + " ".join(c if " " not in c else repr(c) for c in cmd[1:])
    done = run_dir / "DONE"
    if not done.exists():
        run_dir.mkdir(parents=True, exist_ok=True)
        print(f"[guard] {shown}", flush=True)
        started = time.perf_counter()
        with open(log_file, "w") as log:
            subprocess.run(cmd, cwd=ROOT, check=True, stdout=log, stderr=subprocess.STDOUT)
        done.write_text(f"{time.perf_counter() - started:.1f}")
        cmd_file.write_text(shown + "\n")
    # the command as actually run (a run started by hand or by an earlier version of this script)
    shown = cmd_file.read_text().strip() if cmd_file.exists() else shown
    return run_dir, float(done.read_text()), shown


def last_export(run_dir: Path) -> Path:
    return max((run_dir / "checkpoints").glob("step_*/"))


def score(label: str, model: Path | str, in_domain: list[str], note: str, cmd: str, train_s, val: bool):
    argv = ["--label", label, "--model", str(model), "--note", note, "--cmd", cmd] + \
        (["--train-s", str(train_s)] if train_s is not None else []) + (["--val"] if val else [])
    payload = guard_eval.main(argv)
    if payload.get("in_domain") != in_domain:  # the file keeps the provenance of its scoring
        payload["in_domain"] = in_domain
        write_json(Path(guard_eval.RESULTS) / f"{label}.json", payload)


def wise(run_dir: Path, lams: list[float], val: bool):
    """Delta fusion of every periodic export of ``run_dir`` at each lam, scored on the guard (+ validation)."""
    exports = sorted(str(p) for p in (run_dir / "checkpoints").glob("step_*/"))
    base = run_dir / "checkpoints" / "initial"
    name = run_dir.name
    # a run of this script keeps its own in-domain sets; anything else is taken to be experiment=real_cpu
    in_domain = RUNS[name][1] if name in RUNS else STSB_DEV + STS12
    prefix = name if name in RUNS else f"fusion_{name}"
    if name not in RUNS:
        score(f"{prefix}_last", exports[-1], in_domain, f"real_cpu run {name}, last export", "", None, val)
    for lam in lams:
        merge_and_score(f"{prefix}_delta_lam{lam}", ROOT / "logs" / "guard" / "wise" / f"{name}_lam{lam}",
                        [f"merge.base={base}", f"merge.checkpoints=[{','.join(exports)}]", f"merge.lam={lam}"],
                        in_domain, f"run {name}: delta fusion of its {len(exports)} exports, lam {lam}", val)


def merge_and_score(label: str, out: Path, options: list[str], in_domain: list[str], note: str, val: bool):
    """``python merge.py <options>`` into ``out`` (skipped when it is there), then score it as ``label``."""
    cmd = [sys.executable, "merge.py", *options, f"merge.output={out}", f"hydra.run.dir={out}_hydra"]
    if not (out / "model.safetensors").exists():
        subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    score(label, out, in_domain, note, "python " + " ".join(cmd[1:]), None, val)


def fuse(names: list[str], lams: list[float], val: bool):
    """Delta fusion of the last exports of the study runs ``names`` (trajectories from the same base weights)
    through ``merge.runs``, at each lam; scored on the guard (+ validation). In-domain: the union of the runs'."""
    run_dirs = [train(name, RUNS[name][0])[0] for name in names]
    in_domain = list(dict.fromkeys(sum((RUNS[name][1] for name in names), [])))
    joined = "+".join(names)
    for lam in lams:
        merge_and_score(f"fuse_{joined}_lam{lam}", ROOT / "logs" / "guard" / "fuse" / f"{joined}_lam{lam}",
                        [f"merge.runs=[{','.join(map(str, run_dirs))}]", "merge.select=last", f"merge.lam={lam}"],
                        in_domain, f"delta fusion across trajectories ({', '.join(names)}: last exports), lam {lam}",
                        val)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", nargs="*", default=[], choices=list(RUNS))
    parser.add_argument("--loso", nargs="*", default=[], help="losses to run leave-one-source-out with")
    parser.add_argument("--loso-sources", nargs="*", default=list(LOSO_SOURCES))
    parser.add_argument("--wise", nargs="*", default=[], help="finished real_cpu run directories")
    parser.add_argument("--fuse", nargs="*", default=[], choices=list(RUNS),
                        help="study runs whose last exports are fused across trajectories (merge.runs)")
    parser.add_argument("--lams", nargs="*", type=float, default=[0.5, 0.7, 1.0])
    parser.add_argument("--val", action="store_true", help="also score the STS/LOSO runs on eval=real_holdout")
    args = parser.parse_args(argv)
    runs = {name: RUNS[name] for name in args.runs}
    for loss in args.loso:
        runs.update(loso_runs(loss, args.loso_sources))
    for name, (overrides, in_domain, note) in runs.items():
        run_dir, seconds, shown = train(name, overrides)
        score(name, last_export(run_dir), in_domain, note, shown, seconds, args.val)
    for run in args.wise:
        wise(Path(run).resolve(), args.lams, val=args.val or Path(run).name not in RUNS)
    if args.fuse:
        fuse(args.fuse, args.lams, val=args.val)


if __name__ == "__main__":
    main()
