"""Start and end lines, with the duration, for the long steps of a run (mining, export, validation, merge)."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator

log = logging.getLogger("codiemb")


@contextlib.contextmanager
def stage(what: str, logger: logging.Logger | None = None) -> Iterator[None]:
    """Log ``<what>: started`` and ``<what>: done in N s`` (or ``failed after N s``) around a block."""
    logger = logger or log
    logger.info("%s: started", what)
    started = time.perf_counter()
    try:
        yield
    except BaseException:
        logger.info("%s: failed after %.1f s", what, time.perf_counter() - started)
        raise
    logger.info("%s: done in %.1f s", what, time.perf_counter() - started)
