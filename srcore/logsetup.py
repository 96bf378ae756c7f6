"""srcore's own log handler: stderr, for a process nobody else set logging up in.

A host that configures logging (gunicorn with a logging config, pytest, an embedding app,
a Celery worker) keeps its own handlers and levels; srcore's handler is added only where
there is none, and removed when the host sets its up later, or every line shows twice.
"""

from __future__ import annotations

import logging
from typing import Any

__all__ = ["configure_default", "yield_to_host"]

_MARK = "srcore_default"


def configure_default(level: str) -> None:
    """Send srcore's logs (access log, mail in development, workers) to stderr at *level*,
    unless logging is already set up: logger levels are process-wide, and one app must not
    change them for another."""
    logger = logging.getLogger("srcore")
    ours = [h for h in logger.handlers if getattr(h, _MARK, False)]
    if not ours and (logger.handlers or logging.getLogger().handlers):
        return
    logger.setLevel(level.upper())
    if not ours:
        handler = logging.StreamHandler()
        setattr(handler, _MARK, True)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        logger.addHandler(handler)


def yield_to_host(**_: Any) -> None:
    """Remove srcore's handler: the host has just set up the root logger, which srcore's
    records reach too (a receiver of Celery's ``after_setup_logger`` signal)."""
    logger = logging.getLogger("srcore")
    for handler in [h for h in logger.handlers if getattr(h, _MARK, False)]:
        logger.removeHandler(handler)
