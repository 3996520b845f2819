"""OmegaConf resolvers the configs use, registered on import (idempotent): the entry scripts import this module.

* ``codiemb_unique_dir`` / ``codiemb_hydra_subdir``: the run directory and its ``.hydra`` folder
  (:mod:`codiemb.run.run_dir`);
* ``codiemb_wandb_id``: one W&B run per run directory; ``codiemb_wandb_offline``: W&B offline unless an API
  key is configured.
"""

from __future__ import annotations

import netrc
import os

from omegaconf import OmegaConf

from codiemb.run.run_dir import hydra_subdir, unique_dir, wandb_run_id


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
    # use_cache: Hydra copies resolver caches into each multirun job's config, so jobs see the same directory.
    for name, fn, cache in (("codiemb_unique_dir", unique_dir, True), ("codiemb_hydra_subdir", hydra_subdir, True),
                            ("codiemb_wandb_id", wandb_run_id, True), ("codiemb_wandb_offline", wandb_offline, False)):
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn, use_cache=cache)


register()
