"""Starting, resuming and finishing a run in its directory (``train()`` calls these around ``trainer.fit``).

* :func:`open_run`: locks the run directory against a second live run, refuses a fresh run in a directory
  that holds one, finds the checkpoint (``ckpt_path=`` / ``resume=auto``), reads it once (step, sampler
  settings, merge base and exports) and recognises a run that already finished.
* :meth:`RunSession.check_sampler`: a resume whose task mix, batch sizes or data differ from the checkpoint's
  is refused unless ``resume_allow_changes=true``.
* :meth:`RunSession.prepare`: the merge base and earlier exports come from the checkpoint; the metrics
  history continues (CSV rows after the checkpoint's step are dropped, TensorBoard purges them, W&B keeps
  its run id).
* :meth:`RunSession.finish`: ``checkpoints/finished.json`` marks the run complete (merge included), then removes
  the ``.ckpt`` files unless ``callbacks.model_checkpoint.keep_after_finish=true`` (the exports and the merged
  model hold every weight; a ``.ckpt`` only adds the optimizer state needed to train further).
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from codiemb.callbacks.checkpoint import PeriodicExport, carried_exports
from codiemb.errors import ConfigError
from codiemb.run.checkpoints import missing_exports, read_checkpoint
from codiemb.run.loggers import resume_loggers
from codiemb.run.plan import RunPlan
from codiemb.run.run_dir import RunLock, discard_hydra_output, process_rank
from codiemb.utils.atomic import atomic_write_text

log = logging.getLogger(__name__)

FINISHED = "finished.json"


def resolve_ckpt_path(plan: RunPlan, notes: list[str] | None = None) -> str | None:
    """``ckpt_path=<file>`` resumes from that file; ``resume=auto`` from the run directory's ``last.ckpt`` when
    there is one (so the same command both starts a run and continues it after a crash)."""
    ckpt_path, resume = plan.ckpt_path, plan.resume
    if ckpt_path:
        if not Path(ckpt_path).is_file():
            raise ConfigError(f"ckpt_path={ckpt_path} is not a file; point it at a checkpoint such as "
                              "<run dir>/checkpoints/last.ckpt, or use resume=auto with hydra.run.dir=<run dir>")
        return str(ckpt_path)
    if resume is None:
        return None
    last = plan.checkpoint_dir / "last.ckpt"
    if last.is_file():
        log.info("resume=auto: continuing from %s", last)
        return str(last)
    note = (f"resume=auto found no checkpoint ({last} does not exist), so this run started fresh; to continue a "
            "run, pass hydra.run.dir=<its run directory>")
    log.warning(note)
    if notes is not None:
        notes.append(note)
    return None


@dataclass
class RunSession:
    """One ``train()`` call's view of its run directory and of the checkpoint it resumes from."""

    output_dir: Path
    checkpoint_dir: Path
    ckpt_path: str | None = None
    checkpoint: dict[str, Any] | None = None
    finished: dict[str, Any] | None = None  # the stored result when the run is already complete
    notes: list[str] = field(default_factory=list)
    lock: RunLock | None = None

    @property
    def start_step(self) -> int:
        return self.checkpoint["global_step"] if self.checkpoint else 0

    def check_sampler(self, state: dict, allow_changes: bool = False) -> None:
        """Refuse a resume whose sampler settings differ from the checkpoint's (its position would point into
        other batches), unless ``resume_allow_changes=true``."""
        saved = (self.checkpoint or {}).get("sampler") or {}
        changes = [f"{_label(key)} {_show(key, saved[key])} -> {_show(key, state[key])}"
                   for key in SAMPLER_KEYS if key in saved and key in state and saved[key] != state[key]]
        if not changes:
            return
        what = "; ".join(changes)
        if allow_changes:
            note = (f"resume_allow_changes=true: continuing {self.ckpt_path} with changed settings ({what}); the "
                    f"sampler keeps its epoch and position, in the new order")
            log.warning(note)
            self.notes.append(note)
            return
        raise ConfigError(f"ckpt_path={self.ckpt_path} was trained with other data settings ({what}), so its "
                          "sampler position would point into different batches; resume with the checkpoint's "
                          "settings, or add resume_allow_changes=true to continue with the new ones")

    def prepare(self, callbacks, loggers) -> None:
        """Before ``fit``: the exports callback takes the checkpoint's merge base and exports, the loggers
        continue the metrics history at its step (nothing to do for a fresh run)."""
        if not self.checkpoint:
            return
        step = self.start_step
        for callback in callbacks:
            if isinstance(callback, PeriodicExport):
                callback.adopt(self.checkpoint["export"], self.ckpt_path, step)
        resume_loggers(loggers, step)

    def after_fit(self, global_step: int, limits: dict[str, float]) -> None:
        """Say so when the fit trained nothing: a checkpoint already at the end, data without batches
        (``trainer.max_epochs=0`` / ``max_steps=0`` are warned about before the run by the preflight)."""
        if global_step != self.start_step or 0 in limits.values():
            return  # trained, or the preflight already warned (codiemb.run.preflight)
        if self.checkpoint:
            note = (f"nothing was trained: the checkpoint {self.ckpt_path} is already at step {global_step}, "
                    "the end of training; only the run's last export and merge were completed")
        else:
            note = (f"nothing was trained: the global step stayed at {global_step} (the data gave no "
                    "batches); the exports and the merged model hold the starting weights")
        log.warning(note)
        self.notes.append(note)

    def finish(self, global_step: int, limits: dict[str, float], result: dict[str, Any],
               keep_checkpoints: bool = True) -> None:
        """Mark the run complete (after its merge): ``resume=auto`` on it again then changes nothing. Without
        ``keep_checkpoints`` the ``.ckpt`` files go once the mark is written (never before: a run that dies
        earlier keeps what its resume needs)."""
        if process_rank() == 0 and global_step > 0:
            record = {"global_step": int(global_step), **limits, "checkpoints_removed": not keep_checkpoints,
                      "result": {k: result.get(k) for k in ("metrics", "output_dir", "exports", "merged")}}
            path = self.checkpoint_dir / FINISHED
            if path.parent.is_dir():
                atomic_write_text(path, json.dumps(record, indent=1, default=str) + "\n")
                if not keep_checkpoints:
                    for ckpt in self.checkpoint_dir.glob("*.ckpt"):
                        ckpt.unlink()
        self.close()

    def close(self) -> None:
        if self.lock is not None:
            self.lock.release()
            self.lock = None


SAMPLER_KEYS = ("policy", "ir_share", "batch_size", "accumulate", "world_size", "seed", "sources", "length_grouping")
_LABELS = {"policy": "task_mix", "ir_share": "task_mix.ir_share", "batch_size": "batch sizes",
           "accumulate": "trainer.accumulate_grad_batches", "world_size": "processes (devices x nodes)",
           "seed": "seed", "sources": "datasets"}


def _label(key: str) -> str:
    return _LABELS.get(key, key)


def _show(key: str, value: Any) -> str:
    if key == "sources":
        return "[" + ", ".join(f"{name} ({task}, {size} rows)" for name, task, size in value) + "]"
    if key == "batch_size":
        return ", ".join(f"{task} {size}" for task, size in sorted(value.items()))
    return str(value)


def open_run(plan: RunPlan) -> RunSession:
    """Claim the run directory and work out where training starts (before data or model weights load)."""
    session = RunSession(output_dir=plan.output_dir, checkpoint_dir=plan.checkpoint_dir, notes=list(plan.warnings))
    ckpt_path = resolve_ckpt_path(plan, session.notes)
    if process_rank() == 0:
        try:
            session.lock = RunLock.acquire(session.output_dir)
            _refuse_other_run(plan, ckpt_path)
        except ConfigError:
            session.close()
            discard_hydra_output(session.output_dir)
            raise
    if not ckpt_path:
        if plan.resume and (plan.checkpoint_dir / FINISHED).is_file():  # finished, its .ckpt files removed
            try:
                session.finished = _finished_without_checkpoint(plan, session)
            finally:
                discard_hydra_output(session.output_dir)  # a finished run stays exactly as it was
        return session
    try:  # a checkpoint that cannot be resumed gives the directory and its lock back (an in-process sweep goes on)
        session.ckpt_path, session.checkpoint = ckpt_path, read_checkpoint(ckpt_path, plan.output_dir)
        session.finished = _finished(plan, session)
        if session.finished is None:
            _check_model(plan, session)
            _check_merge_base(plan, session)
        else:
            discard_hydra_output(session.output_dir)  # a finished run stays exactly as it was
    except BaseException:
        session.close()
        raise
    return session


def _refuse_other_run(plan: RunPlan, ckpt_path: str | None) -> None:
    """A run directory holds one run: a fresh run (or one resuming another directory's checkpoint) must not
    write its checkpoints beside an earlier run's."""
    ckpts = plan.checkpoint_dir
    has_ckpt = ckpts.is_dir() and any(ckpts.glob("*.ckpt"))
    if not (has_ckpt or (ckpts / FINISHED).is_file()):
        return
    if ckpt_path and Path(ckpt_path).resolve().parent == ckpts.resolve():
        return
    if not ckpt_path and plan.resume and not has_ckpt:
        return  # resume=auto on a finished run whose .ckpt files were removed: open_run answers it
    raise ConfigError(f"run directory {plan.output_dir} already holds a run ({ckpts}); continue it with "
                      f"resume=auto hydra.run.dir={plan.output_dir}, or start this run in its own directory "
                      "(drop hydra.run.dir, or give another one)")


def _finished(plan: RunPlan, session: RunSession) -> dict[str, Any] | None:
    """The stored result when the checkpoint is the end of a completed run and the limits were not raised."""
    path = Path(session.ckpt_path).resolve().parent / FINISHED
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if record.get("global_step") != session.start_step:
        return None  # the run went on after it was marked (or was resumed from an earlier checkpoint)
    if _limits_raised(plan, record):
        return None  # trainer.max_steps / max_epochs raised: train further
    if plan.ckpt_path:
        raise ConfigError(f"ckpt_path={session.ckpt_path} is the final checkpoint of a finished run (step "
                          f"{session.start_step}); nothing is left to train: raise trainer.max_steps or "
                          "trainer.max_epochs to train further")
    return _already_finished(session, record, " Raise trainer.max_steps or trainer.max_epochs to train further.")


def _limits_raised(plan: RunPlan, record: dict) -> bool:
    return any(plan.limits[k] > float(record.get(k, math.inf)) for k in plan.limits)


def _already_finished(session: RunSession, record: dict, hint: str = "") -> dict[str, Any]:
    message = f"codiemb: run {session.output_dir} already finished (step {record.get('global_step')}); nothing to do."
    log.warning(message + hint)
    print(message + hint, flush=True)
    return {**(record.get("result") or {}), "finished_before": True}


def _finished_without_checkpoint(plan: RunPlan, session: RunSession) -> dict[str, Any]:
    """``resume=auto`` on a run that finished and removed its ``.ckpt`` files: nothing to do, or (limits
    raised) one line on how to train further."""
    record = json.loads((plan.checkpoint_dir / FINISHED).read_text())
    if _limits_raised(plan, record):
        session.close()
        exports = (record.get("result") or {}).get("exports") or []
        start = f"model.name_or_path={exports[-1]}" if exports else "model.name_or_path=<its last export>"
        raise ConfigError(f"run {session.output_dir} finished at step {record.get('global_step')} and removed its "
                          ".ckpt files (callbacks.model_checkpoint.keep_after_finish=false), so it cannot be "
                          f"continued; train further in a new run from its last export ({start}), or keep the "
                          "files next time with callbacks.model_checkpoint.keep_after_finish=true")
    return _already_finished(session, record)


def _check_model(plan: RunPlan, session: RunSession) -> None:
    """A resume into its own run directory trains the model that run started with (``.hydra/config.yaml``):
    another ``model`` would not load the checkpoint's weights, or would silently train another model."""
    from omegaconf import OmegaConf

    saved_file = plan.output_dir / ".hydra" / "config.yaml"
    if not saved_file.is_file() or plan.output_dir.resolve() not in Path(session.ckpt_path).resolve().parents:
        return
    saved = OmegaConf.to_container(OmegaConf.load(saved_file).get("model") or {}, resolve=False)
    now = OmegaConf.to_container(plan.nodes["model"], resolve=False)
    changed = sorted(k for k in set(saved) | set(now) if saved.get(k) != now.get(k))
    if not changed:
        return
    what = "; ".join(f"model.{k} {saved.get(k)!r} -> {now.get(k)!r}" for k in changed)
    if plan.allow_changes:
        note = f"resume_allow_changes=true: continuing {session.ckpt_path} with another model ({what})"
        log.warning(note)
        session.notes.append(note)
        return
    raise ConfigError(f"{session.ckpt_path} was trained with another model ({what}); resume with the run's own "
                      "model (drop the model override), or start a new run")


def _check_merge_base(plan: RunPlan, session: RunSession) -> None:
    """A resumed run merges onto the pre-trained weights of its first start; refuse when they are gone."""
    if not plan.merges:
        return
    ckpt = session.checkpoint
    if ckpt["export"] is None and session.output_dir.resolve() not in Path(session.ckpt_path).resolve().parents:
        note = (f"{session.ckpt_path} predates stored merge bases; using the exports beside it as the merge base "
                "and earlier exports")
        log.warning(note)
        session.notes.append(note)
    initial, found = carried_exports(ckpt["export"], session.ckpt_path, ckpt["global_step"])
    missing = missing_exports(ckpt["export"], found, ckpt["global_step"])
    if missing:
        steps = ", ".join(f"step {step} ({path})" for step, path in missing)
        raise ConfigError(f"the merge set of {session.ckpt_path} lists exports that are gone: {steps}; merging "
                          "without them would deliver another model than the uninterrupted run; restore them, or "
                          "resume with merge=none")
    if initial is None:
        wanted = (ckpt["export"] or {}).get("initial") or str(Path(session.ckpt_path).parent / "initial")
        raise ConfigError(f"the merge base of {session.ckpt_path} ({wanted}, the pre-trained weights the run started "
                          "from) is missing; restore it, or resume with merge=none")
