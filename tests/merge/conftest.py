"""Tiny exported model directories to merge: a random tiny encoder, and checkpoints made by perturbing it."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

# Same shape as the project-wide tiny encoder (tests/conftest.py).
TINY = {"hidden_size": 128, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 256}


def perturbed_copy(source: Path, target: Path, seed: int, scale: float = 0.01, **overrides) -> Path:
    """Copy an exported model dir, adding seeded Gaussian noise to each float tensor (or using overrides)."""
    shutil.copytree(source, target)
    tensors = load_file(str(source / "model.safetensors"))
    generator = torch.Generator().manual_seed(seed)
    for name, tensor in tensors.items():
        if name in overrides:
            tensors[name] = overrides[name]
        elif tensor.is_floating_point():
            tensors[name] = tensor + scale * torch.randn(tensor.shape, generator=generator)
    save_file(tensors, str(target / "model.safetensors"), metadata={"format": "pt"})
    return target


@pytest.fixture(scope="session")
def perturb():
    return perturbed_copy


def _dirs(encoder, root: Path) -> tuple[Path, list[Path]]:
    base = encoder.save(root / "base")
    return base, [perturbed_copy(base, root / f"ckpt{i}", seed=i) for i in (1, 2, 3)]


@pytest.fixture(scope="session")
def tiny_dirs(tmp_path_factory):
    """(base, [ckpt1, ckpt2, ckpt3]): exported tiny encoders whose embedding table is cut to 512 rows.

    The merge never runs the model, and a 30522-row table would make every merge in these tests 7x slower;
    only :func:`loadable_dirs` (full vocabulary) is used to encode text.
    """
    from codiemb.models.encoder import Encoder

    torch.manual_seed(0)
    encoder = Encoder.from_pretrained("bundled:all-MiniLM-L6-v2", random_init=True,
                                      config_overrides={**TINY, "vocab_size": 512})
    return _dirs(encoder, tmp_path_factory.mktemp("merge-small"))


@pytest.fixture(scope="session")
def loadable_dirs(tiny, tmp_path_factory):
    """Like :func:`tiny_dirs` with the full vocabulary, so SentenceTransformer can encode real text."""
    return _dirs(tiny, tmp_path_factory.mktemp("merge-tiny"))


@pytest.fixture(autouse=True)
def _single_thread():
    """One intra-op thread: merges are memory-bound, and on the shared 2-core box OpenMP barriers made every
    small torch op ~500x slower (24 ms instead of 0.05 ms per sum) when other jobs held the cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
