"""``precision: auto`` picks bf16 only where the hardware computes it natively; explicit values always win; on the
machine running the tests the choice is the faster of the two for a real MiniLM forward."""

from __future__ import annotations

import pytest
import torch

from codiemb.utils import precision as P


@pytest.fixture
def cpu(monkeypatch):
    """Pretend to be a CPU with the given bf16 features and no GPU."""
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    monkeypatch.delenv("DNNL_MAX_CPU_ISA", raising=False)

    def set_cpu(capability: str, avx512_bf16: bool, amx: bool):
        monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: capability)
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
        monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    return set_cpu


@pytest.mark.parametrize("capability, avx512_bf16, amx, expected", [
    ("AVX2", False, False, "32-true"),          # the laptop/cloud CPU of the issue: bf16 emulated, 6x slower
    ("AVX512", False, False, "32-true"),        # AVX-512 without the BF16 extension: still emulated
    ("AVX512", True, False, "bf16-mixed"),      # Cooper Lake / Zen 4
    ("AVX512", True, True, "bf16-mixed"),       # Sapphire Rapids and later (AMX)
    ("DEFAULT", False, False, "32-true"),
])
def test_auto_follows_what_torch_reports(cpu, capability, avx512_bf16, amx, expected):
    cpu(capability, avx512_bf16, amx)
    value, line = P.resolve_trainer_precision("auto", "cpu")
    assert value == expected
    assert capability in line and line.startswith(f"{expected} (auto: CPU {capability}")
    assert P.resolve_short_precision("auto") == ("bf16" if expected == "bf16-mixed" else "fp32")


@pytest.mark.parametrize("env", [{"ONEDNN_MAX_CPU_ISA": "AVX2"}, {"DNNL_MAX_CPU_ISA": "avx512_core"}])
def test_a_onednn_isa_cap_below_bf16_means_fp32(cpu, monkeypatch, env):
    cpu("AVX512", True, True)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    value, line = P.resolve_trainer_precision("auto", "cpu")
    assert value == "32-true" and "native bf16 present but unused" in line


def test_torch_dispatching_avx2_kernels_means_fp32(cpu):
    cpu("AVX2", True, True)  # what ATEN_CPU_CAPABILITY=avx2 gives on a CPU that has AMX
    assert P.resolve_trainer_precision("auto", "cpu")[0] == "32-true"


@pytest.mark.parametrize("explicit", ["32-true", "bf16-mixed", 32])
def test_explicit_values_win(cpu, explicit):
    cpu("AVX2", False, False)
    value, line = P.resolve_trainer_precision(explicit, "cpu")
    assert value == explicit and "set explicitly" in line
    assert P.resolve_short_precision("bf16") == "bf16"


def test_fp16_on_a_cpu_is_named_as_the_bf16_lightning_runs_instead(cpu):
    """Lightning turns 16-mixed on a CPU into bf16-mixed with a warning; the run summary said 16-mixed."""
    cpu("AVX2", False, False)
    value, line = P.resolve_trainer_precision("16-mixed", "cpu")
    assert value == "bf16-mixed" and "asked for fp16 autocast, which CPUs do not run" in line
    assert P.resolve_trainer_precision("16-mixed", "gpu")[0] == "16-mixed"


@pytest.mark.parametrize("bf16_supported, expected", [(True, "bf16-mixed"), (False, "32-true")])
def test_cuda_uses_bf16_where_supported(monkeypatch, bf16_supported, expected):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16_supported)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "FakeGPU")
    assert P.resolve_trainer_precision("auto", "gpu")[0] == expected
    # a CPU trainer on a GPU machine still decides by the CPU
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    assert P.resolve_trainer_precision("auto", "cpu")[0] == "32-true"


def test_auto_in_the_default_trainer_config_is_resolved_before_lightning_sees_it(compose_cfg, cpu):
    from codiemb.run.plan import build_plan

    cpu("AVX2", False, False)
    cfg = compose_cfg(["model=tiny"])
    assert cfg.trainer.precision == "auto"
    plan = build_plan(cfg)
    assert cfg.trainer.precision == plan.precision == "32-true" and "without native bf16" in plan.precision_line


def test_unknown_short_precision_is_refused():
    from codiemb.errors import ConfigError

    with pytest.raises(ConfigError, match=r"precision must be one of \['auto', 'bf16', 'fp32'\], got 'fp16'"):
        P.autocast_dtype("fp16")


@pytest.mark.slow
def test_the_chosen_precision_is_the_faster_one_here(minilm):
    """One MiniLM forward on 32 texts of ~200 tokens, fp32 vs bf16 autocast, best of 3 each, one thread."""
    texts = [" ".join(["token"] * 200) + f" {i}" for i in range(32)]
    batch = minilm.tokenizer(texts, padding=True, truncation=True, max_length=256, return_tensors="pt")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        timings = P.forward_seconds(minilm.backbone, batch)
    finally:
        torch.set_num_threads(threads)
    chosen = P.choose_precision("cpu").short()
    other = "fp32" if chosen == "bf16" else "bf16"
    print(f"cpu {torch.backends.cpu.get_cpu_capability()}: {timings}, chosen {chosen}")
    # the chosen one is faster, with 10% slack for noise on a shared machine
    assert timings[chosen] <= 1.1 * timings[other], (torch.backends.cpu.get_cpu_capability(), timings)
