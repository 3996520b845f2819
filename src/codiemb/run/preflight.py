"""Pre-flight checks of the composed training config, run by :func:`codiemb.run.plan.build_plan`: every setting
that cannot work is refused here, in one line naming the key and what to change, before data, tokenizer or
model weights load.

Checked: numeric settings (batch sizes, accumulation, lengths, steps, intervals, temperatures, workers), the
``_target_`` and option names of every logger and callback, the validation sets' files, the merge stage's
method and options (:func:`codiemb.merge.api.check_merge_config`), the model's availability (a hub name with
no network fails in seconds, not after data loading) and the optional packages a setting needs.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import logging
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from codiemb.errors import ConfigError
from codiemb.utils.precision import VALIDATION_PRECISIONS

log = logging.getLogger(__name__)

# key -> (minimum, whether null is allowed, whether it must be an integer, extra allowed values)
_INT, _REAL = True, False
NUMERIC_RULES: dict[str, tuple[float, bool, bool, tuple]] = {
    "data.ir_batch_size": (1, False, _INT, ()),
    "data.sts_batch_size": (1, False, _INT, ()),
    "data.max_positives": (1, True, _INT, ()),
    "data.num_negatives": (0, True, _INT, ()),
    "data.query_max_length": (1, True, _INT, ()),
    "data.passage_max_length": (1, True, _INT, ()),
    "data.num_workers": (0, False, _INT, ()),
    "model.max_query_length": (1, True, _INT, ()),
    "model.max_passage_length": (1, True, _INT, ()),
    "trainer.accumulate_grad_batches": (1, False, _INT, ()),
    "trainer.max_steps": (0, True, _INT, (-1,)),
    "trainer.max_epochs": (0, True, _INT, (-1,)),
    "trainer.log_every_n_steps": (1, True, _INT, ()),
    "trainer.gradient_clip_val": (0, True, _REAL, ()),
    "checkpoint_every_n_steps": (0, False, _INT, ()),
    "callbacks.validation.every_n_steps": (1, False, _INT, ()),
    "callbacks.validation.batch_size": (1, False, _INT, ()),
    "module.lr": (0, False, _REAL, ()),
    "module.weight_decay": (0, False, _REAL, ()),
    "module.warmup_ratio": (0, False, _REAL, ()),
    "module.embed_chunk_size": (1, True, _INT, ()),
    "module.l2sp_weight": (0, False, _REAL, ()),
    "loss.ir.temperature": (0, True, _REAL, ()),
    "loss.sts.temperature": (0, True, _REAL, ()),
}
# Strictly positive (a zero temperature or learning rate divides by zero or trains nothing).
STRICT = {"module.lr", "loss.ir.temperature", "loss.sts.temperature"}
FRACTIONS = {"module.warmup_ratio": (0.0, 1.0), "data.ir_share": (0.0, 1.0)}
# key -> the values it takes (the component checks again when it is built, after the data and model load)
CHOICES: dict[str, tuple[str, ...]] = {"callbacks.validation.precision": VALIDATION_PRECISIONS}
ABSENT = "__absent__"


Select = Callable[[str], Any]  # a dotted key of the composed config -> its value (ABSENT when absent)


def check_numbers(select: Select, warnings: list[str]) -> None:
    """Every numeric setting of :data:`NUMERIC_RULES` present in the config has a type and range that work."""
    for key, (minimum, nullable, integer, extra) in NUMERIC_RULES.items():
        value = select(key)
        if value is ABSENT:
            continue
        if value is None:
            if not nullable:
                raise ConfigError(f"{key} must be set (got null)")
            continue
        kind = "an integer" if integer else "a number"
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (integer and not float(value).is_integer()):
            raise ConfigError(f"{key}={value!r} must be {kind}")
        if not math.isfinite(float(value)):
            raise ConfigError(f"{key}={value} must be finite")
        if value in extra:
            continue
        strict = key in STRICT
        if value < minimum or (strict and value <= minimum):
            bound = f"> {minimum}" if strict else f">= {minimum}"
            also = f" (or {', '.join(map(str, extra))})" if extra else ""
            raise ConfigError(f"{key}={value} must be {bound}{also}")
    for key, (low, high) in FRACTIONS.items():
        value = select(key)
        if value not in (None, ABSENT) and not (low <= float(value) <= high):
            raise ConfigError(f"{key}={value} must lie in [{low}, {high}]")
    for key in ("trainer.max_epochs", "trainer.max_steps"):
        if select(key) == 0:
            warnings.append(f"{key}=0: nothing will be trained; the exports are the initial weights")
            break


def check_choices(select: Select) -> None:
    """Every setting of :data:`CHOICES` present in the config is one of its values."""
    for key, allowed in CHOICES.items():
        value = select(key)
        if value is not ABSENT and str(value) not in allowed:
            raise ConfigError(f"{key}={value} is not one of {', '.join(allowed)}")


def check_targets(group: DictConfig | None, name: str) -> None:
    """Every ``_target_`` of a group (``logger``, ``callbacks``) imports and accepts the options given to it."""
    for key, entry in (group or {}).items():
        if isinstance(entry, DictConfig) and "_target_" in entry:
            check_node(entry, f"{name}.{key}")


def check_node(entry: DictConfig | None, label: str) -> None:
    """One instantiated node (a logger, a callback, ``module``, ``trainer``): its ``_target_`` imports and takes
    every option given to it (``+module.bogus=1`` fails here, not after the data has loaded)."""
    if entry is None or "_target_" not in entry:
        return
    target = entry["_target_"]
    module_name, _, attr = str(target).rpartition(".")
    try:
        obj = getattr(importlib.import_module(module_name), attr)
    except ImportError as exc:
        raise ConfigError(f"{label}: cannot import {target} ({exc}); install the package it needs "
                          f"or remove it with ~{label}") from None
    except AttributeError:
        raise ConfigError(f"{label}: {target} does not exist") from None
    try:
        params = inspect.signature(obj).parameters
    except (TypeError, ValueError):
        return
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    unknown = sorted(k for k in entry if not str(k).startswith("_") and k not in params)
    if unknown:
        raise ConfigError(f"{label}: {attr} takes no option {', '.join(map(repr, unknown))}; "
                          f"its options are {', '.join(p for p in params if p not in ('self', 'args'))}")


def check_seed(seed: Any) -> None:
    """``seed`` is null or an integer numpy and torch accept (0 .. 2**32 - 1)."""
    if seed is None:
        return
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**32:
        raise ConfigError(f"seed={seed!r} must be an integer from 0 to {2**32 - 1} (or null for no seeding)")


def check_merge(merge_cfg: DictConfig | None) -> dict | None:
    """An unknown ``merge.method``, or an option the user set that the method does not take, fails now rather
    than after training; options the user did not set never block a method switch. The same call as the merge
    stage's (it reads the Hydra job's overrides and merge group itself), so the two cannot disagree."""
    if not merge_cfg or merge_cfg.get("method", "none") == "none":
        return None
    from codiemb.merge.config import check_merge_config

    return check_merge_config(merge_cfg)


def check_eval_sets(sets: list) -> None:
    """The sets that validation (and the merge stage's evaluation) will read exist and are readable."""
    from codiemb.eval.sets import parse_sets

    if not sets:
        return
    for eval_set in parse_sets(sets):  # resolves each node's interpolations itself
        path = Path(eval_set.path)
        if not path.exists():
            raise ConfigError(f"validation set {eval_set.name!r}: {path} does not exist (val.sets)")
        if not os.access(path, os.R_OK):
            raise ConfigError(f"validation set {eval_set.name!r}: {path} is not readable (val.sets)")


def check_extras(select: Select) -> None:
    """Settings that need an optional package name the pip command that installs it."""
    if select("model.lora.enabled") not in (None, False, ABSENT) and importlib.util.find_spec("peft") is None:
        raise ConfigError("model.lora.enabled=true needs peft: pip install peft (or pip install -e \".[peft]\")")


def check_model_available(model: DictConfig | None) -> None:
    """A hub model that is neither cached nor reachable fails now, naming the model and the local-path fix."""
    if not model or not model.get("name_or_path"):
        return
    from codiemb.models.resolve import BUNDLED_MINILM, resolve_model_path

    name = str(model.name_or_path)
    try:
        path = resolve_model_path(name)
    except ImportError as exc:
        raise ConfigError(f"model.name_or_path={name}: {exc}") from None
    if name == BUNDLED_MINILM or Path(path).is_dir():
        return
    if Path(path).exists() or path.startswith(("/", "./", "../", "~")) or path.count("/") > 1:
        raise ConfigError(f"model.name_or_path={name}: no such model directory")
    if _hub_config_available(path):
        return
    short = path.rsplit("/", 1)[-1]
    raise ConfigError(f"model {path} is not in the local Hugging Face cache and the hub cannot be reached; "
                      f"download it where a network exists and point model.name_or_path at its directory, "
                      f"e.g. model.name_or_path=/models/{short}")


def _hub_config_available(repo_id: str) -> bool:
    try:
        from huggingface_hub import hf_hub_download, try_to_load_from_cache
    except ImportError:  # pragma: no cover - a dependency of transformers
        return True
    try:
        if isinstance(try_to_load_from_cache(repo_id, "config.json"), str):
            return True
    except Exception:  # noqa: BLE001 - an odd repo id is decided by the download attempt below
        pass
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes") or not _hub_reachable():
        return False
    try:
        hf_hub_download(repo_id, "config.json", etag_timeout=5)
    except Exception:  # noqa: BLE001 - no network, unknown repo, gated repo: all mean "not available here"
        return False
    return True


def _hub_reachable(timeout: float = 3.0) -> bool:
    """One TCP connection to the hub's host: no network fails here in milliseconds, not after HTTP retries."""
    import socket
    from urllib.parse import urlparse

    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    try:
        with socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)), timeout):
            return True
    except OSError:
        return False
