"""Known third-party console noise, removed one message at a time.

Importing this module (first thing in ``train.py``, ``eval.py``, ``merge.py`` and ``mine.py``) installs
:func:`install`. Each filter names one logger or one message; everything else those libraries say still shows:

* torch's ``isinstance(treespec, LeafSpec)`` is deprecated FutureWarning, raised when Lightning's own
  ``lightning/pytorch/utilities/_pytree.py`` builds a ``LeafSpec`` at the first training step (nothing a user
  can act on): a ``warnings`` filter on that message, FutureWarning only.
* Lightning's "💡 Tip: For seamless cloud logging ... litlogger" advertisement, logged at INFO on every
  ``Trainer`` construction: a filter on the ``lightning.pytorch.utilities.rank_zero`` logger that drops records
  starting with that tip (its "GPU available", "`Trainer.fit` stopped" lines stay).
* Optuna's import of ``alembic`` logging "setup plugin alembic...." seven times at INFO (a Hydra sweep's root
  logger shows INFO): the ``alembic.runtime.plugins`` logger is set to WARNING.

The W&B "The anonymous setting has no effect" warning is fixed where it comes from: Lightning's ``WandbLogger``
always passes ``anonymous=None`` to ``wandb.init``, and :class:`WandbLogger` here (``configs/logger/wandb.yaml``)
leaves it out. It is reached through the module's ``__getattr__`` so that importing this module stays cheap
(no Lightning / wandb import for ``eval.py`` or ``mine.py``).
"""

from __future__ import annotations

import logging
import warnings

LEAFSPEC_MESSAGE = r"`isinstance\(treespec, LeafSpec\)` is deprecated"
LITLOGGER_TIP = "💡 Tip: For seamless cloud logging"
LIGHTNING_INFO_LOGGER = "lightning.pytorch.utilities.rank_zero"
ALEMBIC_PLUGIN_LOGGER = "alembic.runtime.plugins"


def _not_litlogger_tip(record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith(LITLOGGER_TIP)


def install() -> None:
    """Install the filters (idempotent)."""
    warnings.filterwarnings("ignore", message=LEAFSPEC_MESSAGE, category=FutureWarning)
    lightning_info = logging.getLogger(LIGHTNING_INFO_LOGGER)
    if _not_litlogger_tip not in lightning_info.filters:
        lightning_info.addFilter(_not_litlogger_tip)
    logging.getLogger(ALEMBIC_PLUGIN_LOGGER).setLevel(logging.WARNING)


def _wandb_logger_class() -> type:
    from lightning.pytorch.loggers.wandb import WandbLogger as _LightningWandbLogger

    class WandbLogger(_LightningWandbLogger):
        """Lightning's ``WandbLogger`` without the ``anonymous=None`` it always passes to ``wandb.init``
        (current wandb warns on every run that the setting has no effect); an explicit ``anonymous=true`` is still passed."""

        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            if self._wandb_init.get("anonymous") is None:
                self._wandb_init.pop("anonymous", None)

    WandbLogger.__module__, WandbLogger.__qualname__ = __name__, "WandbLogger"  # picklable (spawned DDP ranks)
    return WandbLogger


def __getattr__(name: str):
    if name == "WandbLogger":
        cls = globals()["WandbLogger"] = _wandb_logger_class()
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


install()
