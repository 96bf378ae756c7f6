"""srcore's own log handler: stderr, for a process nobody else set logging up in.

A host that configures logging (gunicorn with a logging config, pytest, an embedding app,
a Celery worker) keeps its own handlers and levels; srcore's handler is added only where
there is none, and removed when the host sets its up later, or every line shows twice.

Whatever a client sent (a path, a method, a header) goes through :func:`log_safe` before
it reaches a log line, so that a request cannot write lines of its own into the log.

Each line starts with the host's local time and its UTC offset
(``2026-12-05 21:17:47,036 +1400``), as gunicorn's own lines in the same stream do: a time
without its offset means a different moment on every host whose zone is not UTC.
"""

from __future__ import annotations

import logging
import re
from datetime import UTC, datetime
from typing import Any

__all__ = ["configure_default", "local_time", "log_safe", "offset_celery_times", "yield_to_host"]

_MARK = "srcore_default"
#: The loggers given a handler by :func:`configure_default`, for :func:`yield_to_host`.
_configured: set[str] = set()

#: What a log line must not carry as sent: C0 and C1 controls and DEL (a CR or LF starts a
#: forged line, ESC drives the terminal it is read on), the Unicode line and paragraph
#: separators (line breaks to some log viewers), and the bidirectional controls, which
#: make a line display otherwise than it reads.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u200e\u200f\u2028-\u202e\u2066-\u2069]")


def _escape(found: re.Match[str]) -> str:
    code = ord(found.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def log_safe(text: str) -> str:
    """*text* with each character a log line must not carry written as an escape
    (``\\x0d``, ``\\x1b``, ``\\u2028``); anything else, non-ASCII letters included, as is."""
    return _UNSAFE.sub(_escape, text)


def local_time(record: logging.LogRecord, datefmt: str | None = None) -> str:
    """*record*'s time, local, with its UTC offset: ``2026-12-05 21:17:47,036 +1400``
    (*datefmt* is ignored: a line's time has one form, whoever formats it)."""
    moment = datetime.fromtimestamp(record.created, UTC).astimezone()
    return f"{moment:%Y-%m-%d %H:%M:%S},{int(record.msecs):03d} {moment:%z}"


class _LineFormatter(logging.Formatter):
    """``TIME LEVEL LOGGER: MESSAGE``, the time local with its UTC offset."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return local_time(record)


def configure_default(level: str, *services: str) -> None:
    """Send srcore's logs (access log, mail in development, workers) and those of the
    *services* packages' own loggers (``meta``, ``todo``) to stderr at *level*, unless
    logging is already set up: logger levels are process-wide, and one app must not
    change them for another. Without this a service's own ``log.info(...)`` would reach
    no handler, and Python would print only its warnings, unformatted."""
    srcore_logger = logging.getLogger("srcore")
    ours = [h for h in srcore_logger.handlers if getattr(h, _MARK, False)]
    if not ours and (srcore_logger.handlers or logging.getLogger().handlers):
        return
    for name in ("srcore", *services):
        logger = logging.getLogger(name)
        logger.setLevel(level.upper())
        if any(getattr(h, _MARK, False) for h in logger.handlers):
            continue
        handler = logging.StreamHandler()
        setattr(handler, _MARK, True)
        handler.setFormatter(_LineFormatter())
        logger.addHandler(handler)
        _configured.add(name)


def yield_to_host(**_: Any) -> None:
    """Remove srcore's handlers: the host has just set up the root logger, which these
    records reach too (a receiver of Celery's ``after_setup_logger`` signal)."""
    for name in sorted(_configured | {"srcore"}):
        logger = logging.getLogger(name)
        for handler in [h for h in logger.handlers if getattr(h, _MARK, False)]:
            logger.removeHandler(handler)


def offset_celery_times(logger: logging.Logger | None = None, **_: Any) -> None:
    """Give the lines of the handlers a Celery worker set up on *logger* their UTC offset,
    as srcore's and gunicorn's lines have (a receiver of Celery's ``after_setup_logger``
    and ``after_setup_task_logger``; an operator's own handlers keep their format)."""
    from celery.utils.log import ColorFormatter

    for handler in logger.handlers if logger is not None else ():
        if isinstance(handler.formatter, ColorFormatter):
            handler.formatter.formatTime = local_time
