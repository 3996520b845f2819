"""Tables of the out-of-distribution guard from bench/results/guard/*.json.

    python bench/studies/guard_table.py         # summary table (markdown) + per-set deltas
    python bench/studies/guard_table.py --labels base sts_codiemb_stsb sts_cosent_stsb

Each result file may name ``in_domain`` guard sets (sources the model was trained on); the verdict
(mean delta, sets below the base, worst set) is computed on the other, out-of-distribution sets only,
against the base model's file (``base.json``) on the same sets.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "bench" / "results" / "guard"


def load(results_dir: Path) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in sorted(results_dir.glob("*.json"))}


def verdict(payload: dict, base: dict, tolerance: float) -> dict:
    from codiemb.eval.guard import compare_with_base
    from codiemb.eval.runner import MAIN_METRIC

    results, base_results = payload["groups"]["guard"]["sets"], base["groups"]["guard"]["sets"]
    in_domain = set(payload.get("in_domain", []))
    ood = [name for name in results if name not in in_domain and name in base_results]
    sets = [{"name": n, "task": _task(results[n]), "format": "-", "path": "-"} for n in results]
    out = compare_with_base(results, base_results, sets, only=ood, tolerance=tolerance)
    out["n_ood"] = len(ood)
    out["in_domain_delta"] = {n: results[n]["main_score"] - base_results[n]["main_score"]
                              for n in results if n in in_domain and n in base_results}
    out["metric"] = {n: MAIN_METRIC[_task(results[n])] for n in results}
    return out


def _task(metrics: dict) -> str:
    return "sts" if "spearman" in metrics else "pairs" if "ap" in metrics else "ir"


def fmt(value, signed=False, digits=2):
    if value is None:
        return "-"
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def main(argv=None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dir", default=str(RESULTS))
    parser.add_argument("--labels", nargs="*", help="rows in this order (default: every file, base first)")
    parser.add_argument("--tolerance", type=float, default=0.0, help="a set counts as below the base when its "
                        "delta < -tolerance")
    parser.add_argument("--per-set", action="store_true", help="also the per-set delta table")
    parser.add_argument("--rank", action="store_true", help="also rank the rows by the selection rule fixed before "
                        "any test read: validation mean (STS-B dev, SciFact holdout) + guard mean delta")
    args = parser.parse_args(argv)

    payloads = load(Path(args.dir))
    base = payloads["base"]
    labels = args.labels or ["base"] + [k for k in payloads if k != "base"]
    header = ["model", "OOD sets", "guard mean (base)", "mean delta", "below base", "worst (delta)", "in-domain delta",
              "STS-B dev", "SciFact holdout", "train s", "cpu"]
    rows = []
    per_set = {}
    for label in labels:
        payload = payloads[label]
        v = verdict(payload, base, args.tolerance)
        per_set[label] = v
        val = payload["groups"].get("real_holdout", {}).get("sets", {})
        in_dom = v["in_domain_delta"]
        rows.append([label, str(v["n_ood"]), f"{fmt(v['mean'])} ({fmt(v['base_mean'])})", fmt(v["mean_delta"], True), str(len(v["below"])),
                     f"{v['worst'][0]} ({v['worst'][1]:+.2f})",
                     fmt(sum(in_dom.values()) / len(in_dom), True) if in_dom else "-",
                     fmt(val.get("stsb_dev", {}).get("spearman")), fmt(val.get("scifact_holdout", {}).get("ndcg@10")),
                     fmt(payload.get("train_s"), digits=0), payload.get("cpu_capability", "?")])
    from codiemb.eval.report import markdown_table
    text = markdown_table(header, rows)
    if args.per_set:
        names = list(base["groups"]["guard"]["sets"])
        head = ["set", "base"] + labels[1:] if labels[0] == "base" else ["set", "base"] + labels
        body = []
        for name in names:
            row = [name, fmt(base["groups"]["guard"]["sets"][name]["main_score"])]
            for label in head[2:]:
                v = per_set[label]
                d = v["delta"].get(name, v["in_domain_delta"].get(name))
                row.append(fmt(d, True) + ("*" if name in v["in_domain_delta"] else ""))
            body.append(row)
        text += "\n\nPer-set delta vs base (main score; * = a source the model trained on, not in the verdict):\n\n"
        text += markdown_table(head, body)
    if args.rank:
        scored = []
        for label in labels:
            val = payloads[label]["groups"].get("real_holdout", {}).get("summary", {}).get("mean")
            if val is not None and label != "base":
                scored.append((val + per_set[label]["mean_delta"], val, per_set[label]["mean_delta"], label))
        body = [[str(i + 1), label, fmt(val), fmt(delta, True), fmt(score)]
                for i, (score, val, delta, label) in enumerate(sorted(scored, reverse=True))]
        text += "\n\nSelection rule (validation mean + guard mean delta, equal weight; test never read here):\n\n"
        text += markdown_table(["rank", "model", "validation mean", "guard mean delta", "score"], body)
    print(text)
    return text


if __name__ == "__main__":
    main()
