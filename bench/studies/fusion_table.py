"""The fusion tables of BENCHMARKS.md, built from the committed result files (bench/results/fusion/*.json).

    python bench/studies/fusion_table.py    # markdown on stdout: one table per experiment + the targets

Targets: delta fusion of the trajectories >= best single trajectory + 0.5 overall, >= the uniform soup of the
same checkpoints, and on each task within 0.3 of (or above) the matching specialist of the ablation.
Reads both the provenance keys of ``bench/provenance.py`` and the ``environment`` block of older result files.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parents[2] / "bench" / "results" / "fusion"
# The ablation in BENCHMARKS.md (same data, same test scoring): the specialists and the single CoDiEmb run.
SECTION1 = {"STS only (STS-B test)": 86.08, "IR only (IR mean)": 57.46, "CoDiEmb balanced last (overall)": 71.23}
ORDER = ["last", "uniform", "delta", "delta_row", "ties", "dare", "delta_all"]


def fmt(value, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def table(result: dict) -> list[str]:
    rows = sorted(result["rows"], key=lambda r: (ORDER.index(r["key"]) if r["key"] in ORDER else 99))
    lasts = [r for r in rows if r["key"] == "last"]
    best = max(lasts, key=lambda r: r["mean"]) if lasts else None
    has_val = any("val" in r for r in rows)
    head = "| model | STS-B test | SciFact nDCG@10 | Vaswani nDCG@10 | STS mean | IR mean | overall |"
    lines = [head + (" val STS / IR |" if has_val else ""), "|---" * (7 + has_val) + "|"]

    def line(label: str, r: dict) -> str:
        cells = [label, fmt(r["stsb_test"]), fmt(r["scifact"]), fmt(r["vaswani"]), fmt(r["sts_mean"]),
                 fmt(r["ir_mean"]), fmt(r["mean"])]
        if has_val:
            val = r.get("val") or {}
            cells.append(f"{fmt(val.get('sts_spearman'))} / {fmt(val.get('ir_ndcg@10'))}")
        return "| " + " | ".join(cells) + " |"

    val = {Path(info["run"]).name: (info.get("val_at_end") or {}).get("val/mean") for info in result["runs"]}
    for r in rows:
        label = r["model"].split(": ", 1)[-1]  # "<sweep>: <row>" for merges, "<run> last" for trajectories
        if r["key"] != "last" and "members" in r:
            label += f" ({r['members']} checkpoints)"
        elif r["key"] == "last" and val.get(r.get("trajectory")) is not None:
            label += f" (val/mean {val[r['trajectory']]:.2f})"
        lines.append(line(label, r))
        if r is lasts[-1] and best is not None:
            known = [x for x in lasts if val.get(x.get("trajectory")) is not None]
            by_val = max(known, key=lambda x: val[x["trajectory"]]) if known else None
            lines.append(line(f"**best single trajectory** ({best['trajectory']}, by test overall)", best))
            if by_val is not None and by_val is not best:
                lines.append(line(f"best single trajectory by validation ({by_val['trajectory']})", by_val))
    return lines


def targets(result: dict) -> list[str]:
    by_key = {r["key"]: r for r in result["rows"] if r["key"] != "last"}
    lasts = [r for r in result["rows"] if r["key"] == "last"]
    delta, uniform = by_key.get("delta"), by_key.get("uniform")
    if not (delta and lasts):
        return ["targets: not all rows scored yet"]
    best = max(lasts, key=lambda r: r["mean"])
    out = []

    def check(name: str, value: float, goal: float) -> None:
        verdict = "met" if value >= goal - 1e-9 else f"missed by {goal - value:.2f}"
        out.append(f"* {name}: {value:.2f} vs {goal:.2f}: **{verdict}**")

    check("delta >= best single + 0.5 (overall)", delta["mean"], best["mean"] + 0.5)
    if uniform:
        check("delta >= uniform soup (overall)", delta["mean"], uniform["mean"])
    check("STS-B within 0.3 of STS-only (86.08)", delta["stsb_test"], SECTION1["STS only (STS-B test)"] - 0.3)
    check("IR mean within 0.3 of IR-only (57.46)", delta["ir_mean"], SECTION1["IR only (IR mean)"] - 0.3)
    return out


def main() -> None:
    if {"-h", "--help"} & set(sys.argv[1:]):
        print(__doc__)
        return
    files = sorted(RESULTS.glob("*.json")) if len(sys.argv) < 2 else [Path(p) for p in sys.argv[1:]]
    summary = ["| sweep | best single | uniform soup | delta (element) | delta (row) | delta - best single |",
               "|---|---|---|---|---|---|"]
    for file in files:
        result = json.loads(file.read_text())
        env = result.get("environment", result)  # files written before bench/provenance.py: "environment"
        dirty = env.get("git_dirty", env.get("git_tree", "clean") != "clean")
        walls = ", ".join(f"{Path(r['run']).name} {r['wall_s']:.0f}" for r in result["runs"] if r.get("wall_s"))
        print(f"### {result['sweep']} ({len(result['runs'])} trajectories)\n")
        trained = next((r.get("git_at_training") for r in result["runs"] if r.get("git_at_training")), None)
        where = f"trained at git {trained[:7]}, scored at {env['git_revision'][:7]}" if trained else \
            f"git {env['git_revision'][:7]}"
        print(f"`{file.name}`; {where}{' (with uncommitted work on top)' if dirty else ''}; "
              f"{env.get('cpu_model', env.get('cpu'))} "
              f"({env['cpu_capability']}), torch {env['torch']}; {env['precision']}. "
              f"Train wall time (s): {walls or '-'}.\n")
        print("\n".join(table(result)) + "\n")
        print("\n".join(targets(result)) + "\n")
        by_key = {r["key"]: r for r in result["rows"]}
        lasts = [r for r in result["rows"] if r["key"] == "last"]
        best = max((r["mean"] for r in lasts), default=None)
        d = by_key.get("delta", {}).get("mean")
        summary.append(f"| {result['sweep']} | {fmt(best)} | {fmt(by_key.get('uniform', {}).get('mean'))} | "
                       f"{fmt(d)} | {fmt(by_key.get('delta_row', {}).get('mean'))} | "
                       f"{fmt(None if d is None or best is None else d - best, 2)} |")
    print("### Sweeps side by side (overall)\n")
    print("\n".join(summary))


if __name__ == "__main__":
    main()
