"""callbacks.return_freed_memory: glibc keeps the heap pages a step freed; malloc_trim hands them back."""

from __future__ import annotations

import subprocess
import sys
from types import SimpleNamespace

import pytest

from codiemb.callbacks.memory import ReturnFreedMemory, _malloc_trim
from tests.conftest import ROOT

# 2000 blocks of 100 KiB (below glibc's 128 KiB mmap threshold, so in the heap), written to, each followed by a
# block that stays allocated (never written): freeing the 2000 leaves holes the heap cannot shrink past, so the
# process keeps ~200 MB it does not use until the callback runs, as after a training step. Prints the RSS (MiB)
# before and after one on_train_batch_end.
HEAP = """
import ctypes, ctypes.util, psutil
from types import SimpleNamespace
from codiemb.callbacks.memory import ReturnFreedMemory
libc = ctypes.CDLL(ctypes.util.find_library("c"))
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
blocks, pins = [], []
for _ in range(2000):
    blocks.append(libc.malloc(100 << 10))
    ctypes.memset(blocks[-1], 1, 100 << 10)
    pins.append(libc.malloc(100 << 10))
for b in blocks:
    libc.free(b)
rss = lambda: psutil.Process().memory_info().rss >> 20
before = rss()
ReturnFreedMemory(every_n_steps=1).on_train_batch_end(SimpleNamespace(global_step=1), None, None, None, 0)
print(before, rss())
"""


@pytest.mark.skipif(_malloc_trim() is None, reason="this C library has no malloc_trim")
def test_the_heap_pages_freed_by_a_step_go_back_to_the_system():
    out = subprocess.run([sys.executable, "-c", HEAP], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    before, after = map(int, out.stdout.split())
    assert before - after >= 150, (before, after)  # ~195 MiB freed in the heap, kept until the trim


def test_it_trims_every_n_steps_and_not_when_off(monkeypatch):
    calls = []
    callback = ReturnFreedMemory(every_n_steps=3)
    callback._trim = calls.append
    for step in range(1, 10):
        callback.on_train_batch_end(SimpleNamespace(global_step=step), None, None, None, step - 1)
    assert calls == [0, 0, 0] and callback.trims == 3  # steps 3, 6, 9
    off = ReturnFreedMemory(every_n_steps=0, after_validation=False)
    assert off._trim is None
    off.on_train_batch_end(SimpleNamespace(global_step=5), None, None, None, 4)
    assert off.trims == 0


def test_a_negative_interval_is_refused():
    with pytest.raises(ValueError, match="every_n_steps must be >= 0, got -1"):
        ReturnFreedMemory(every_n_steps=-1)


def test_the_default_config_has_it_off_and_one_override_turns_it_on(compose_cfg):
    from codiemb.run.train import instantiate_group

    def trimmer(overrides):
        (callback,) = [c for c in instantiate_group(compose_cfg(overrides).callbacks)
                       if isinstance(c, ReturnFreedMemory)]
        return callback
    assert trimmer([]).every_n_steps == 0 and trimmer([]).after_validation
    # first in the list, so Lightning trims before a step's export and validation run on top of the freed heap
    kinds = [type(c).__name__ for c in instantiate_group(compose_cfg([]).callbacks)]
    assert kinds.index("ReturnFreedMemory") < min(kinds.index("PeriodicExport"), kinds.index("ValidationCallback"))
    assert trimmer(["callbacks.return_freed_memory.every_n_steps=1"]).every_n_steps == 1


def test_a_lightning_fit_calls_it_after_every_optimizer_step(tmp_path):
    from lightning.pytorch import Trainer
    from lightning.pytorch.demos.boring_classes import BoringModel

    callback = ReturnFreedMemory(every_n_steps=2)
    calls = []
    callback._trim = calls.append
    Trainer(default_root_dir=tmp_path, max_steps=5, callbacks=[callback], logger=False, enable_checkpointing=False,
            enable_progress_bar=False, enable_model_summary=False).fit(BoringModel())
    assert callback.trims == 2  # after steps 2 and 4


@pytest.mark.skipif(_malloc_trim() is None, reason="this C library has no malloc_trim")
def test_it_survives_the_pickling_of_spawned_ddp_ranks():
    # trainer=ddp_cpu_sim spawns its ranks and pickles the callbacks; the default (trim after validation) held a
    # ctypes function and the documented command died with "ctypes objects containing pointers cannot be pickled"
    import pickle

    copy = pickle.loads(pickle.dumps(ReturnFreedMemory()))
    assert copy.after_validation and copy._trim is not None
    copy.on_codiemb_validation(None, 2, {})
    assert copy.trims == 1
