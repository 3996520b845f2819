"""``precision: auto``: bf16 where the hardware computes it natively, fp32 elsewhere.

One function decides for training (``trainer.precision``), mining (``mine.precision``) and evaluation
(``eval precision``). Why it matters: on a CPU with AVX-512 BF16 or AMX, bf16 autocast runs MiniLM about 2x
faster than fp32; on a CPU without them (AVX2 only, or AVX-512 without the BF16 extension) oneDNN emulates
bf16 and the same forward pass is about 6x *slower* than fp32 (BENCHMARKS.md, "Precision"). So the choice is
made from what torch reports about the CPU it runs on, never from the machine the defaults were written on:

* CUDA: bf16 when ``torch.cuda.is_bf16_supported()`` (Ampere and newer), else fp32.
* CPU: bf16 when torch reports the AVX-512 BF16 or the AMX tile instructions and dispatches AVX-512 kernels
  (``get_cpu_capability() == "AVX512"``; ``ATEN_CPU_CAPABILITY=avx2`` or ``ONEDNN_MAX_CPU_ISA=AVX2`` turn that
  off, which is also how BENCHMARKS.md imitates an AVX2-only CPU on an AVX-512 one), else fp32.

Explicit values (``32-true``, ``bf16-mixed``, ``fp32``, ``bf16`` ...) are never changed.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import torch

log = logging.getLogger(__name__)

AUTO = "auto"


@dataclass(frozen=True)
class PrecisionChoice:
    bf16: bool
    reason: str

    def lightning(self) -> str:
        """The value for ``lightning.Trainer(precision=...)``."""
        return "bf16-mixed" if self.bf16 else "32-true"

    def short(self) -> str:
        """The value mining and evaluation take (``bf16`` | ``fp32``)."""
        return "bf16" if self.bf16 else "fp32"

    def describe(self) -> str:
        return f"{self.short()} ({self.reason})"


def cpu_bf16_features() -> dict[str, bool]:
    """What torch reports about native bf16 support on this CPU."""
    probes = {"avx512_bf16": "_is_avx512_bf16_supported", "amx": "_is_amx_tile_supported"}
    found = {}
    for name, attr in probes.items():
        fn = getattr(torch.cpu, attr, None)
        found[name] = bool(fn()) if callable(fn) else False
    return found


# oneDNN ISA caps below AVX-512 BF16: with one of these set, oneDNN (which runs the bf16 matmuls) cannot use
# the native instructions even where the CPU has them.
_ONEDNN_BELOW_BF16 = {"SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2", "AVX512_CORE", "AVX512_CORE_VNNI"}


def _onednn_cap() -> str | None:
    cap = os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA")
    return cap.upper() if cap and cap.upper() in _ONEDNN_BELOW_BF16 else None


def choose_precision(accelerator: str = "cpu") -> PrecisionChoice:
    """bf16 where ``accelerator`` computes it natively, fp32 otherwise; the reason names what was found."""
    accelerator = str(accelerator or "cpu").lower()
    wants_cuda = accelerator in ("gpu", "cuda") or (accelerator == AUTO and torch.cuda.is_available())
    if wants_cuda and torch.cuda.is_available():
        if torch.cuda.is_bf16_supported():
            return PrecisionChoice(True, f"CUDA device {torch.cuda.get_device_name(0)} supports bf16")
        return PrecisionChoice(False, f"CUDA device {torch.cuda.get_device_name(0)} has no bf16 support")
    capability = torch.backends.cpu.get_cpu_capability()
    features = cpu_bf16_features()
    native = [name for name, present in features.items() if present]
    cap = _onednn_cap()
    if native and capability == "AVX512" and not cap:
        return PrecisionChoice(True, f"CPU {capability} with native bf16 ({', '.join(native)})")
    if native:  # the CPU has them, but torch/oneDNN were told not to use AVX-512 (ATEN_CPU_CAPABILITY, ONEDNN_MAX_CPU_ISA)
        limit = f"ONEDNN_MAX_CPU_ISA={cap}" if cap else f"torch dispatching {capability} kernels"
        return PrecisionChoice(False, f"CPU {capability}: native bf16 present but unused ({limit}), so bf16 "
                                      "would be emulated and several times slower")
    return PrecisionChoice(False, f"CPU {capability} without native bf16 (no AVX-512 BF16/AMX): "
                                  "bf16 would be emulated and several times slower")


def resolve_trainer_precision(value, accelerator: str = "cpu") -> tuple[str | int, str]:
    """``trainer.precision``: ``auto`` becomes ``bf16-mixed`` or ``32-true``; other values pass unchanged.
    Returns the value and a line for the log and the run summary."""
    if str(value) in ("16-mixed", "16") and accelerator == "cpu":  # what Lightning would run, said as such
        return "bf16-mixed", (f"bf16-mixed (trainer.precision={value} asked for fp16 autocast, which CPUs do not "
                              "run; Lightning would silently use bf16-mixed)")
    if str(value) != AUTO:
        return value, f"{value} (set explicitly)"
    choice = choose_precision(accelerator)
    return choice.lightning(), f"{choice.lightning()} (auto: {choice.reason})"


SHORT = ("auto", "bf16", "fp32")
# callbacks.validation.precision: SHORT, or ``train`` (the training run's own precision)
VALIDATION_PRECISIONS = ("train", *SHORT)


def resolve_short_precision(value: str | None, accelerator: str = "cpu", what: str = "precision") -> str:
    """Mining and evaluation: ``auto`` (or None) becomes ``bf16`` or ``fp32``; explicit values pass unchanged.
    Anything else is refused (``what`` names the setting in the message)."""
    if value is None or str(value) == AUTO:
        choice = choose_precision(accelerator)
        log.info("%s auto -> %s", what, choice.describe())
        return choice.short()
    if str(value) not in SHORT:
        from codiemb.errors import ConfigError

        raise ConfigError(f"{what} must be one of {list(SHORT)}, got {value!r}")
    return str(value)


def autocast_dtype(short: str) -> torch.dtype | None:
    """``bf16`` -> ``torch.bfloat16`` (autocast), ``fp32`` -> None (no autocast)."""
    return torch.bfloat16 if resolve_short_precision(short) == "bf16" else None


def forward_seconds(model: torch.nn.Module, batch: dict, rounds: int = 3) -> dict[str, float]:
    """Best-of-``rounds`` wall time of ``model(**batch)`` on the CPU in fp32 and under bf16 autocast, side by
    side (``bench/precision.py`` and the slow test that ``auto`` picks the faster one use it)."""
    import time

    out = {}
    with torch.inference_mode():
        for name, dtype in (("fp32", None), ("bf16", torch.bfloat16)):
            best = float("inf")
            for _ in range(rounds):
                start = time.perf_counter()
                with torch.autocast("cpu", dtype=dtype or torch.float32, enabled=dtype is not None):
                    model(**batch)
                best = min(best, time.perf_counter() - start)
            out[name] = best
    return out
