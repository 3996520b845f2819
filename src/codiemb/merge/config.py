"""Which options of a ``merge`` config node the chosen method runs with (merge.py, train.py, the fuse callback).

The node comes from one group file (``configs/merge/<method>.yaml``) and carries that method's options.
``merge.method=<other>`` on the command line would leave them in place, so: options the user did *not* set on
the command line and that do not apply to the method are dropped (``merge.method=uniform`` works as typed);
options the user *did* set must apply, else one ``ConfigError`` line names them. When the method differs from
the group's (``merge.method=dare`` over the ``delta`` group), group options the user did not set are dropped
even where a name matches (``p`` is the exponent of delta but the drop rate of dare): the method's own
defaults apply instead.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import codiemb.merge.methods  # noqa: F401  (registers the built-in methods)
from codiemb.errors import ConfigError
from codiemb.merge.registry import get_method
from codiemb.utils.overrides import override_key

# Keys of a `merge` config that are not method options.
CONFIG_KEYS = ("method", "base", "checkpoints", "runs", "select", "output", "evaluate", "score_key")
GROUP = "merge"


def user_set_keys(user_overrides: Sequence[str] | None, group: str = GROUP) -> set[str] | None:
    """Keys under ``<group>.`` that command-line overrides set (``merge.p=2`` -> ``p``); ``merge=<m>`` sets none.

    ``None`` in, ``None`` out: unknown, so every key counts as set by the user (the strict reading).
    """
    if user_overrides is None:
        return None
    keys = set()
    for override in user_overrides:
        key = override_key(override)
        if key.startswith(group + "."):
            keys.add(key[len(group) + 1:].split(".", 1)[0])
    return keys


def hydra_job() -> tuple[list[str] | None, str | None]:
    """The running Hydra job's command-line overrides and its ``merge`` group choice; Nones outside an app."""
    try:
        from hydra.core.hydra_config import HydraConfig

        hydra_cfg = HydraConfig.get()
        return list(hydra_cfg.overrides.task), (hydra_cfg.runtime.choices or {}).get(GROUP)
    except (ImportError, ValueError, AttributeError):
        return None, None


def group_choice(user_overrides: Sequence[str]) -> str | None:
    """``merge=<m>`` (or ``+merge=``) on the command line: the group the node came from."""
    for override in user_overrides:
        key, _, value = str(override).partition("=")
        if key.lstrip("+~") == GROUP and value:
            return value
    return None


def check_merge_config(cfg_merge: Mapping, user_overrides: Sequence[str] | None = None,
                       group_method: str | None = None) -> dict:
    """The merge node as it will run: ``CONFIG_KEYS`` + only the options that apply to ``method``.

    ``user_overrides``: the command line's overrides (``HydraConfig.get().overrides.task``); ``group_method``:
    the method of the group file the node came from (``HydraConfig.get().runtime.choices["merge"]``). With
    ``user_overrides=None`` both are read from the running Hydra job; outside one, every option counts as set
    by the user (the strict reading). Raises ``ConfigError`` (one line) for an unknown method, a user-set
    option the method does not take, or an option value the method's registry entry refuses (not a finite
    number, out of range).
    """
    cfg = to_dict(cfg_merge)
    method = cfg.get("method")
    if method in (None, "none"):
        return cfg
    spec = get_method(method)  # ConfigError naming the registered methods
    if user_overrides is None:
        user_overrides, choice = hydra_job()
        group_method = group_method or choice
    user = user_set_keys(user_overrides)
    group_method = group_method or group_choice(user_overrides or [])
    allowed = set(spec.defaults) | ({"lambda"} if "lam" in spec.defaults else set())
    options = {k: v for k, v in cfg.items() if k not in CONFIG_KEYS}
    if user is None:  # no command line to consult: every option counts as the user's
        user = set(options)
    method_switched = method != group_method if group_method else "method" in user
    wrong = sorted(k for k in options if k in user and k not in allowed)
    if wrong:
        raise ConfigError(f"merge option(s) {', '.join(f'merge.{k}' for k in wrong)} do not apply to merge method "
                          f"{method!r} (it takes {sorted(spec.defaults) or 'no options'}); drop them, "
                          f"or pick the method with its options as `merge={method}`")
    kept = {k: v for k, v in options.items() if k in allowed and (k in user or not method_switched)}
    spec.validate(kept)  # finite, in range: refused now, not after training or half a merge
    return {**{k: v for k, v in cfg.items() if k in CONFIG_KEYS}, **kept}


def to_dict(cfg) -> dict:
    try:
        from omegaconf import DictConfig, OmegaConf
        if isinstance(cfg, DictConfig):
            return OmegaConf.to_container(cfg, resolve=True)
    except ImportError:  # pragma: no cover - omegaconf comes with hydra
        pass
    return dict(cfg)
