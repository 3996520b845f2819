"""A SIGKILL in the middle of a write never leaves an output that loads but is wrong: exported models (and merged
models, which use the same :func:`atomic_directory`), Lightning checkpoints, and text files.

Each write runs in a subprocess that kills itself (SIGKILL: no cleanup, no ``finally``) halfway through.
"""

from __future__ import annotations

import hashlib
import os
import signal
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from codiemb.utils.atomic import atomic_directory, atomic_write_text, current_umask
from tests.conftest import ROOT

KILL = "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"


def run_python(code: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code), *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_killed_inside_atomic_directory_keeps_the_previous_output(tmp_path):
    target = tmp_path / "out"
    with atomic_directory(target) as tmp:
        (tmp / "weights.bin").write_bytes(b"old" * 1000)
        (tmp / "config.json").write_text('{"version": 1}')
    killed = run_python(f"""
        import sys
        from codiemb.utils.atomic import atomic_directory
        with atomic_directory(sys.argv[1]) as tmp:
            (tmp / "weights.bin").write_bytes(b"new" * 1000)
            {KILL}  # before config.json: a half-written model
            (tmp / "config.json").write_text('{{"version": 2}}')
        """, str(target))
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert (target / "weights.bin").read_bytes() == b"old" * 1000
    assert (target / "config.json").read_text() == '{"version": 1}'
    leftovers = [p.name for p in tmp_path.iterdir() if p.name != "out"]
    assert len(leftovers) == 1 and leftovers[0].startswith(".out.tmp-")  # hidden; safe to delete


def test_killed_while_exporting_a_model_leaves_the_last_good_export(tmp_path):
    """``Encoder.save`` (periodic exports, final model) killed after the weights but before the module files."""
    target = tmp_path / "export"
    code = f"""
        import sys, torch
        from tests.conftest import tiny_encoder
        import codiemb.models.encoder as encoder_module
        torch.manual_seed(0)
        encoder = tiny_encoder()
        encoder.save(sys.argv[1])
        with torch.no_grad():
            for p in encoder.parameters():
                p.add_(1.0)  # the weights a second, interrupted export would have written
        def killed(*args, **kwargs):
            {KILL}
        encoder_module.write_sentence_transformers_files = killed
        encoder.save(sys.argv[1])
        """
    killed = run_python(code, str(target))
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    import torch
    from safetensors.torch import load_file
    from sentence_transformers import SentenceTransformer

    from tests.conftest import tiny_encoder

    torch.manual_seed(0)
    first = tiny_encoder()  # the same seed: the weights of the first, complete export
    saved = load_file(target / "model.safetensors")
    for name, tensor in first.backbone.state_dict().items():
        torch.testing.assert_close(saved[name], tensor, atol=0, rtol=0)
    model = SentenceTransformer(str(target), device="cpu")  # still a complete sentence-transformers model
    assert model.encode(["a sentence"]).shape == (1, 128)
    assert stat.S_IMODE(target.stat().st_mode) == 0o777 & ~current_umask()


def test_killed_while_exporting_for_the_first_time_leaves_nothing_loadable(tmp_path):
    target = tmp_path / "export"
    killed = run_python(f"""
        import sys
        from tests.conftest import tiny_encoder
        import codiemb.models.encoder as encoder_module
        def killed(*args, **kwargs):
            {KILL}
        encoder_module.write_sentence_transformers_files = killed
        tiny_encoder().save(sys.argv[1])
        """, str(target))
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert not target.exists()


def test_killed_while_writing_a_lightning_checkpoint_keeps_the_previous_one(tmp_path):
    """The path ModelCheckpoint takes (TorchCheckpointIO.save_checkpoint), killed halfway through the bytes."""
    target = tmp_path / "last.ckpt"
    killed = run_python(f"""
        import sys, torch
        import fsspec.implementations.local as local
        from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
        io = TorchCheckpointIO()
        io.save_checkpoint({{"global_step": 10, "w": torch.ones(1000)}}, sys.argv[1])
        original = local.LocalFileOpener.write
        def half_then_die(self, data):
            original(self, bytes(data)[: len(data) // 2])
            self.f.flush()
            {KILL}
        local.LocalFileOpener.write = half_then_die
        io.save_checkpoint({{"global_step": 20, "w": torch.zeros(1000)}}, sys.argv[1])
        """, str(target))
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    import torch

    checkpoint = torch.load(target, weights_only=True)
    assert checkpoint["global_step"] == 10 and torch.equal(checkpoint["w"], torch.ones(1000))


def test_killed_while_writing_text_keeps_the_previous_file(tmp_path):
    target = tmp_path / "results.json"
    atomic_write_text(target, '{"ndcg@10": 0.5}\n')
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~current_umask()  # like open(), not mkstemp's 0600
    killed = run_python(f"""
        import sys, os
        import codiemb.utils.atomic as atomic
        real_fsync = os.fsync
        def die_before_rename(fd):
            {KILL}
        atomic.os.fsync = die_before_rename
        atomic.atomic_write_text(sys.argv[1], '{{"ndcg@10": 0.9}}' * 100000)
        """, str(target))
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert target.read_text() == '{"ndcg@10": 0.5}\n'


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_atomic_outputs_follow_the_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        atomic_write_text(tmp_path / "a.txt", "x")
        with atomic_directory(tmp_path / "d") as tmp:
            (tmp / "f").write_text("y")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == 0o666 & ~umask
    assert stat.S_IMODE((tmp_path / "d").stat().st_mode) == 0o777 & ~umask
