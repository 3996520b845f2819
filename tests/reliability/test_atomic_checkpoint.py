"""Checkpoints are written beside their final name, never staged in ``$TMPDIR``, and a failed write (a full disk)
leaves the previous ``last.ckpt`` byte-identical and no temporary anywhere.

The full disk is simulated on the checkpoint directory's filesystem only: every write *to a file* there writes
half of its bytes and then raises ``OSError(ENOSPC)`` (``torch.save`` into a file, and ``os.sendfile``, which
``shutil.move`` uses to copy a file across filesystems). ``$TMPDIR`` points at another directory (on
``/dev/shm``, another filesystem, where there is one), as on a cluster whose ``/tmp`` is a local disk.
"""

from __future__ import annotations

import errno
import io
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader

from codiemb.callbacks.checkpoint import AtomicCheckpointIO, StepCheckpoint
from codiemb.utils.atomic import temp_prefix


class Tiny(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(64, 64)

    def training_step(self, batch, batch_idx):
        return self.layer(batch).pow(2).mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)

    def train_dataloader(self):
        return DataLoader(torch.randn(8, 64), batch_size=2)


@pytest.fixture
def other_tmpdir(tmp_path, monkeypatch):
    """``$TMPDIR`` on another filesystem where possible; every temporary file created is recorded."""
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK):
        other = Path(tempfile.mkdtemp(prefix="codiemb-test-tmpdir-", dir=shm))
    else:
        other = tmp_path / "other-tmpdir"
        other.mkdir()
    monkeypatch.setenv("TMPDIR", str(other))
    monkeypatch.setattr(tempfile, "tempdir", str(other))
    created: list[Path] = []
    real_mkstemp = tempfile.mkstemp

    def recording_mkstemp(*args, **kwargs):
        fd, name = real_mkstemp(*args, **kwargs)
        created.append(Path(name))
        return fd, name

    monkeypatch.setattr(tempfile, "mkstemp", recording_mkstemp)
    yield other, created
    for item in other.iterdir():
        item.unlink()
    other.rmdir()


def fit(dirpath: Path, steps: int = 2) -> L.Trainer:
    trainer = L.Trainer(max_steps=steps, accelerator="cpu", logger=False, enable_progress_bar=False,
                        enable_model_summary=False,
                        callbacks=[StepCheckpoint(dirpath=str(dirpath), filename="step_{step:06d}",
                                                  every_n_train_steps=1, save_top_k=-1, save_last=True,
                                                  auto_insert_metric_name=False)])
    trainer.fit(Tiny())
    return trainer


def disk_full(monkeypatch, directory: Path) -> list[str]:
    """Writes to files in ``directory``'s filesystem write half, then fail with ENOSPC."""
    failures: list[str] = []
    real_save, real_sendfile = torch.save, os.sendfile
    device = directory.stat().st_dev

    def on_full_disk(fd: int) -> bool:
        return os.fstat(fd).st_dev == device

    def half_then_enospc(obj, f, *args, **kwargs):
        if isinstance(f, io.BytesIO) or not on_full_disk(f.fileno()):
            return real_save(obj, f, *args, **kwargs)
        buffer = io.BytesIO()
        real_save(obj, buffer, *args, **kwargs)
        f.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
        f.flush()
        failures.append("torch.save")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def sendfile_half_then_enospc(out_fd, in_fd, offset, count):
        if not on_full_disk(out_fd):
            return real_sendfile(out_fd, in_fd, offset, count)
        size = os.fstat(in_fd).st_size
        os.write(out_fd, os.pread(in_fd, size // 2, 0))
        failures.append("sendfile")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(torch, "save", half_then_enospc)
    monkeypatch.setattr(os, "sendfile", sendfile_half_then_enospc)
    return failures


def test_step_checkpoint_writes_every_ckpt_beside_its_name_and_never_in_tmpdir(tmp_path, other_tmpdir):
    other, created = other_tmpdir
    ckpt_dir = tmp_path / "checkpoints"
    trainer = fit(ckpt_dir)
    assert isinstance(trainer.strategy.checkpoint_io, AtomicCheckpointIO)
    assert sorted(p.name for p in ckpt_dir.iterdir()) == ["last.ckpt", "step_000001.ckpt", "step_000002.ckpt"]
    assert torch.load(ckpt_dir / "last.ckpt", weights_only=False)["global_step"] == 2
    assert created and all(p.parent == ckpt_dir for p in created), created
    assert list(other.iterdir()) == []


def test_a_full_disk_during_a_checkpoint_save_keeps_last_ckpt_and_leaves_no_temporary(tmp_path, other_tmpdir,
                                                                                       monkeypatch):
    other, _ = other_tmpdir
    ckpt_dir = tmp_path / "checkpoints"
    trainer = fit(ckpt_dir)
    before = {p.name: p.read_bytes() for p in ckpt_dir.iterdir()}
    with torch.no_grad():
        trainer.lightning_module.layer.weight.add_(1.0)  # the save that fails would write other bytes
    failures = disk_full(monkeypatch, ckpt_dir)
    for name in ("last.ckpt", "step_000003.ckpt"):
        with pytest.raises(OSError) as raised:
            trainer.save_checkpoint(ckpt_dir / name)
        assert raised.value.errno == errno.ENOSPC
    assert failures
    after = {p.name: p.read_bytes() for p in ckpt_dir.iterdir()}
    assert after == before  # last.ckpt byte-identical, no truncated step_000003.ckpt, no hidden temporary
    assert list(other.iterdir()) == []


def test_checkpoint_io_failure_mid_write_then_success(tmp_path, other_tmpdir, monkeypatch):
    other, _ = other_tmpdir
    target = tmp_path / "last.ckpt"
    checkpoint_io = AtomicCheckpointIO()
    checkpoint_io.save_checkpoint({"global_step": 10, "w": torch.ones(10_000)}, target)
    old = target.read_bytes()
    real_save = torch.save

    def half_then_enospc(obj, f, *args, **kwargs):
        buffer = io.BytesIO()
        real_save(obj, buffer)
        f.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", half_then_enospc)
    with pytest.raises(OSError):
        checkpoint_io.save_checkpoint({"global_step": 20, "w": torch.zeros(10_000)}, target)
    assert target.read_bytes() == old and [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]
    monkeypatch.setattr(torch, "save", real_save)
    checkpoint_io.save_checkpoint({"global_step": 20, "w": torch.zeros(10_000)}, target)
    assert torch.load(target, weights_only=True)["global_step"] == 20
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"] and list(other.iterdir()) == []


def test_temporaries_of_a_killed_save_are_removed_when_the_next_run_starts(tmp_path):
    """kill -9 during a save leaves ``.step_000002.ckpt.tmp-<host>-<pid>-...`` beside the checkpoint (hidden,
    never under the final name); the next run's StepCheckpoint removes those of dead processes."""
    ckpt_dir = tmp_path / "checkpoints"
    ckpt_dir.mkdir()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True)
    pid = int(dead.stdout)
    orphan = ckpt_dir / (temp_prefix(ckpt_dir / "step_000002.ckpt").replace(f"-{os.getpid()}-", f"-{pid}-")
                         + "abc123")
    orphan.write_bytes(b"\0" * 1000)
    alive = ckpt_dir / (temp_prefix(ckpt_dir / "last.ckpt") + "xyz")  # this process: still writing it
    alive.write_bytes(b"\0")
    fit(ckpt_dir, steps=1)
    assert not orphan.exists() and alive.exists()
