"""Shared fixtures: offline environment, a tiny encoder, and the real Hydra configs composed for tests."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
TINY = dict(hidden_size=128, num_hidden_layers=2, num_attention_heads=2, intermediate_size=256)

# Never touch the network from tests: a hub name fails in ~2 s instead of a minute of retries.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# One scratch directory per test session for the caches (HF datasets, and the data store's Arrow cache of
# composed-config tests), removed when the session ends so repeated runs do not fill the disk.
# Worker processes inherit both variables and create nothing.
if not {"HF_DATASETS_CACHE", "CODIEMB_DATA_CACHE"} <= os.environ.keys():
    _SCRATCH = tempfile.mkdtemp(prefix="codiemb-tests-")
    atexit.register(shutil.rmtree, _SCRATCH, ignore_errors=True)
    os.environ.setdefault("HF_DATASETS_CACHE", os.path.join(_SCRATCH, "hf-datasets"))
    os.environ.setdefault("CODIEMB_DATA_CACHE", os.path.join(_SCRATCH, "data-cache"))


def tiny_encoder(**kwargs):
    from codiemb.models.encoder import Encoder

    return Encoder.from_pretrained("bundled:all-MiniLM-L6-v2", random_init=True, config_overrides=TINY, **kwargs)


@pytest.fixture(scope="session")
def tiny():
    import torch

    torch.manual_seed(0)
    return tiny_encoder()


@pytest.fixture(scope="session")
def minilm():
    from codiemb.models.encoder import Encoder

    return Encoder.from_pretrained("bundled:all-MiniLM-L6-v2")


def compose(config_name: str = "train", overrides: list[str] | None = None, output_dir: Path | None = None):
    """Compose a real config from ``configs/`` the way the Hydra app would, with a fixed output dir."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    import codiemb.run.resolvers  # noqa: F401

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        cfg = hydra_compose(config_name=config_name, overrides=overrides or [], return_hydra_config=True)
    HydraConfig().set_config(cfg)
    with open_dict(cfg):
        cfg.paths.root_dir = str(ROOT)
        if output_dir is not None:
            cfg.paths.output_dir = str(output_dir)
    return cfg


@pytest.fixture
def compose_cfg(tmp_path):
    def _compose(overrides=None, config_name="train"):
        return compose(config_name, overrides, tmp_path)
    return _compose


def shared_data(*parts: str) -> Path:
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} not available")
    return path
