"""srcore's optional parts, each an extra of the package, and the error when one is missing.

``pip install srcore`` is enough for a service on SQLite with the local webhook worker.
The heavy parts a deployment may add are extras, imported only by the code that needs
them: ``celery`` (webhook delivery through Celery), ``redis`` (state shared by every
process), ``postgres`` (psycopg 3) and ``server`` (gunicorn for ``srcore serve``). When
one is missing, the code that needs it raises :class:`MissingExtraError`, which names
the extra to install instead of leaving a bare ``No module named ...``.
"""

from __future__ import annotations

import importlib.util

__all__ = ["EXTRAS", "MissingExtraError", "installed", "require"]

#: Each extra and the modules it provides (what srcore imports from it).
EXTRAS: dict[str, tuple[str, ...]] = {
    "celery": ("celery", "redis"),
    "redis": ("redis",),
    "postgres": ("psycopg",),
    "server": ("gunicorn",),
}


class MissingExtraError(ImportError):
    """Something needs an extra of srcore that is not installed."""

    def __init__(self, extra: str, needed_by: str) -> None:
        self.extra = extra
        self.needed_by = needed_by
        super().__init__(
            f"{needed_by} needs srcore's {extra!r} extra, which is not installed: "
            f"pip install 'srcore[{extra}]'",
            name=EXTRAS[extra][0],
        )


def installed(extra: str) -> bool:
    """Whether every module of *extra* can be imported (nothing is imported to find out)."""
    return all(importlib.util.find_spec(module) is not None for module in EXTRAS[extra])


def require(extra: str, needed_by: str) -> None:
    """Raise :class:`MissingExtraError` unless *extra* is installed.

    For a check made early, when a config asks for the extra (an app built with a broker
    URL, ``srcore serve``), rather than on first use in the middle of a request.
    """
    if not installed(extra):
        raise MissingExtraError(extra, needed_by)
