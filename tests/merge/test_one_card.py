"""One merged-model card: ``merge.py`` on a run's exports writes the same ``merged/`` as the run itself."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1"}


def run(script: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / script), *args], cwd=ROOT, env=ENV, capture_output=True,
                          text=True, timeout=600, check=False)


def test_merge_py_reproduces_the_runs_merged_model_and_card(tmp_path):
    """train.py's merge and merge.py on the same exports give byte-identical weights and the same card (the
    run once rewrote merged/README.md with another renderer, so the two cards differed)."""
    run_dir = tmp_path / "run"
    done = run("train.py", "model=tiny", "trainer=default", "trainer.max_steps=4", "checkpoint_every_n_steps=2",
               "data.num_workers=0", "~callbacks.progress_bar", f"hydra.run.dir={run_dir}")
    assert done.returncode == 0, done.stderr[-3000:]
    checkpoints = run_dir / "checkpoints"
    steps = ",".join(str(checkpoints / name) for name in ("step_000002", "step_000004"))
    again = tmp_path / "again"
    merged = run("merge.py", f"merge.base={checkpoints / 'initial'}", f"merge.checkpoints=[{steps}]",
                 f"merge.output={again}", f"hydra.run.dir={tmp_path / 'merge_hydra'}")
    assert merged.returncode == 0, merged.stderr[-3000:]
    delivered = run_dir / "merged"
    assert (again / "model.safetensors").read_bytes() == (delivered / "model.safetensors").read_bytes()
    card = (delivered / "README.md").read_text()
    assert (again / "README.md").read_text() == card
    # the card describes the merge and what its members were trained on
    for text in ("| method | delta |", "## Members", "### Training data", "| support | ir |", "### Training recipe"):
        assert text in card, text
    reports = [json.loads((d / "merge_report.json").read_text()) for d in (delivered, again)]
    for report in reports:
        report.pop("output")
    assert reports[0] == reports[1]
