"""Sweep to fused model in one command: a Hydra callback that fuses a multirun's runs when the sweep ends.

    python train.py -m experiment=real_cpu seed=1,2,3 +fuse=delta

``configs/fuse/<method>.yaml`` registers :class:`FuseRuns` under ``hydra.callbacks.fuse`` with the merge
method's options. At ``on_multirun_end`` it fuses every run under the sweep directory
(:func:`codiemb.merge.api.merge_from_config` with ``runs=[<sweep dir>]``) into ``<sweep dir>/fused``, scores
the base, the members and the fused model on the sweep's validation sets (``val.sets``), prints that table
and the per-layer / per-trajectory merging weights, and logs both to W&B when the sweep logs there.
A thin adapter: finding runs, choosing exports and checking the common base live in ``codiemb.merge.runs``.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)
# What failed at the end of this process's sweeps; train.py exits non-zero when it is not empty.
FAILURES: list[str] = []


class FuseRuns(Callback):
    def __init__(self, method: str = "delta", select: str = "last", output: str | None = None,
                 evaluate: bool = True, score_key: str = "val/mean", **options: Any):
        self.method, self.select, self.output = method, select, output
        self.evaluate, self.score_key, self.options = evaluate, score_key, dict(options)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from codiemb.errors import CodiembError
        from codiemb.eval.scorer import validation_scorer
        from codiemb.merge.api import merge_from_config
        from codiemb.merge.report import format_layers

        sweep_dir = Path(config.hydra.sweep.dir)
        output = Path(self.output) if self.output else sweep_dir / "fused"
        from codiemb.run.plan import choose_val_sets

        # the sets the sweep's runs validated on (a slice held back from your data when none are named)
        sets, _ = choose_val_sets(config, list(config.hydra.overrides.task))
        evaluate = bool(self.evaluate and sets) or self.method == "greedy_soup"
        merge_cfg = {"method": self.method, "runs": [str(sweep_dir)], "select": self.select,
                     "output": str(output), "evaluate": bool(self.evaluate and sets), "score_key": self.score_key,
                     **self.options}
        try:
            report = merge_from_config(merge_cfg, evaluate_fn=validation_scorer(sets) if evaluate else None,
                                       user_overrides=[f"merge.{k}" for k in self.options])
        except CodiembError as exc:  # Hydra would only warn about a raising callback, and the sweep exit 0
            FAILURES.append(f"fusing the sweep's runs: {exc}")
            print(f"codiemb: error: {FAILURES[-1]}", file=sys.stderr, flush=True)
            return
        lines = [f"fused {len(report['checkpoints'])} exports of {len(report['layers']['groups'])} runs "
                 f"({self.method}, select={self.select}) into {output}", format_layers(report["layers"])]
        if report.get("evaluation"):
            lines += ["validation (x100):", report["evaluation"]["table"]]
        print("\n".join(lines), flush=True)
        log_to_wandb(config, report, output)


def log_to_wandb(config: DictConfig, report: dict, output: Path) -> None:
    """When the sweep's runs log to W&B (a ``WandbLogger`` in ``logger``): one more run, job type ``fuse``, with
    the per-layer weights table, the evaluation table, the report figure and the report file."""
    from codiemb.run.loggers import log_merge_report, wandb_settings

    settings = wandb_settings(OmegaConf.to_container(config.get("logger") or {}, resolve=False))
    if settings is None:
        return
    import wandb

    from codiemb.run.resolvers import wandb_offline

    run = wandb.init(project=_literal(settings.get("project")), entity=_literal(settings.get("entity")),
                     job_type="fuse", name=f"fused-{output.parent.name}", dir=str(output.parent),
                     mode="offline" if wandb_offline() else None,
                     config={"method": report["method"], "options": report["options"], "select": report.get("select"),
                             "members": report.get("members")})
    layers = report["layers"]
    data = [[layer, group, entry["mean_weight"][i], entry["dominant_fraction"][i]]
            for layer, entry in layers["layers"].items() for i, group in enumerate(layers["groups"])]
    run.log({"fuse/layers": wandb.Table(columns=["layer", "trajectory", "mean_weight", "dominant_fraction"],
                                        data=data)})
    log_merge_report(lambda key, columns, rows: run.log({key: wandb.Table(columns=columns, data=rows)}),
                     lambda key, images: run.log({key: [wandb.Image(p) for p in images]}),
                     run.log_artifact, "fuse", report, output)
    run.finish()


def _literal(value):
    """A plain config value, or None for an interpolation (the sweep's run-time nodes do not resolve here)."""
    return None if value is None or "${" in str(value) else value
