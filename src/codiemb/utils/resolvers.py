"""OmegaConf resolvers the configs use. Registered on import (idempotent)."""

from __future__ import annotations

import netrc
import os

from omegaconf import OmegaConf


def wandb_offline() -> bool:
    """W&B runs offline unless an API key is configured, so a run never hangs waiting for a network."""
    if os.environ.get("WANDB_MODE") == "offline":
        return True
    if os.environ.get("WANDB_API_KEY"):
        return False
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is None
    except (FileNotFoundError, netrc.NetrcParseError):
        return True


def register() -> None:
    if not OmegaConf.has_resolver("codiemb_wandb_offline"):
        OmegaConf.register_new_resolver("codiemb_wandb_offline", wandb_offline)
    from codiemb.run_dir import register_resolvers  # run directories, .hydra folders, W&B run ids

    register_resolvers()


register()
