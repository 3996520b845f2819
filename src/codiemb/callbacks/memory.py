"""Hand the memory the C allocator keeps free back to the operating system after training steps (glibc's
``malloc_trim``).

On a CPU a training step's activations live in the process heap. When the step ends they are freed, but glibc
keeps the pages, and batches of varying shapes fragment them, so a process's resident memory grows step after
step to well above what one step needs (``experiment=real_cpu``: 2.8 GiB after 16 steps against 0.9 GiB live).
``malloc_trim(0)`` returns every free page. The price is that the next step touches fresh pages again
(page faults), so it is measured against step time in BENCHMARKS.md section 13 before it is switched on anywhere.
After every step it costs a step time (off by default); after each validation during training (on by default) it
costs no step anything: validation's encoding buffers, shaped unlike any training step's, go back before the
next step instead of staying in the heap for the rest of the run.

No library does this for a PyTorch CPU process (Lightning and torch leave the C heap alone; jemalloc or tcmalloc
would need ``LD_PRELOAD`` before the interpreter starts, which ``python train.py`` cannot do for itself), hence
this callback. Where the C library has no ``malloc_trim`` (macOS, musl), it logs once and does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

from lightning.pytorch.callbacks import Callback

log = logging.getLogger(__name__)


def _malloc_trim():
    """glibc's ``malloc_trim``, or None where the C library has none."""
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):
        return None


class ReturnFreedMemory(Callback):
    """``malloc_trim(0)`` after every ``every_n_steps`` optimizer steps (``0``: never) and, with
    ``after_validation``, after each validation during training (the validation callback's
    ``on_codiemb_validation``)."""

    def __init__(self, every_n_steps: int = 0, after_validation: bool = True):
        if every_n_steps < 0:
            raise ValueError(f"callbacks.return_freed_memory.every_n_steps must be >= 0, got {every_n_steps}")
        self.every_n_steps = int(every_n_steps)
        self.after_validation = bool(after_validation)
        self._trim = self._resolve()
        if (self.every_n_steps or self.after_validation) and self._trim is None:
            log.info("callbacks.return_freed_memory: this C library has no malloc_trim; nothing to do")
        self.trims = 0

    def _resolve(self):
        """glibc's ``malloc_trim`` when something is switched on, else None."""
        return _malloc_trim() if self.every_n_steps or self.after_validation else None

    def __getstate__(self) -> dict:
        # spawn-based strategies (trainer=ddp_cpu_sim) pickle the callbacks: a ctypes function cannot be pickled
        return {**self.__dict__, "_trim": None}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._trim = self._resolve()

    def trim(self) -> None:
        if self._trim is not None:
            self._trim(0)
            self.trims += 1

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.every_n_steps and trainer.global_step % self.every_n_steps == 0:
            self.trim()

    def on_codiemb_validation(self, trainer, step: int, metrics: dict) -> None:
        if self.after_validation:
            self.trim()
