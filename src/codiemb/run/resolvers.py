"""OmegaConf resolvers the configs use, registered on import (idempotent): the entry scripts import this module.

* ``codiemb_unique_dir`` / ``codiemb_hydra_subdir``: the run directory and its ``.hydra`` folder
  (:mod:`codiemb.run.run_dir`);
* ``codiemb_wandb_id``: one W&B run per run directory; ``codiemb_wandb_offline``: W&B offline unless an API
  key is configured.
"""

from __future__ import annotations

import functools
import logging
import netrc
import os
import socket
from urllib.parse import urlparse

from omegaconf import OmegaConf

from codiemb.run.run_dir import hydra_subdir, unique_dir, wandb_run_id

log = logging.getLogger(__name__)


def wandb_offline() -> bool:
    """W&B runs offline unless an API key is configured and its server answers within seconds, so a run never
    hangs waiting for a network (with a key and no network, wandb itself waited 112 s, then raised)."""
    if os.environ.get("WANDB_MODE") == "offline":
        return True
    if not os.environ.get("WANDB_API_KEY"):
        try:
            if netrc.netrc().authenticators("api.wandb.ai") is None:
                return True
        except (FileNotFoundError, netrc.NetrcParseError):
            return True
    return not wandb_reachable(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai"))


@functools.lru_cache(maxsize=8)
def wandb_reachable(base_url: str, timeout: float = 3.0) -> bool:
    """One TCP connection to the W&B server; warns once per server when it fails."""
    url = urlparse(base_url)
    try:
        with socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)), timeout):
            return True
    except OSError as exc:
        log.warning("W&B: an API key is configured but %s cannot be reached (%s); logging offline instead (sync "
                    "later with `wandb sync <run dir>/wandb`)", url.hostname, exc)
        return False


def register() -> None:
    # use_cache: Hydra copies resolver caches into each multirun job's config, so jobs see the same directory.
    for name, fn, cache in (("codiemb_unique_dir", unique_dir, True), ("codiemb_hydra_subdir", hydra_subdir, True),
                            ("codiemb_wandb_id", wandb_run_id, True), ("codiemb_wandb_offline", wandb_offline, False)):
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn, use_cache=cache)


register()
