"""Locate the shared files (templates, static, migration base) that ship with srcore.

In a built wheel they sit inside the package; in a source checkout they sit at the top of
the repository, beside the package. Both layouts are looked up so that an editable install
and a wheel behave the same.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["resource_dir"]

_PACKAGE_DIR = Path(__file__).resolve().parent


def resource_dir(name: str) -> Path:
    """Return the directory of a shared resource: ``templates``, ``static`` or
    ``migrations_base``.

    Raises :class:`FileNotFoundError` naming both places when neither exists, which means
    the installation is broken.
    """
    inside = _PACKAGE_DIR / name
    if inside.is_dir():
        return inside
    beside = _PACKAGE_DIR.parent / name
    if beside.is_dir():
        return beside
    raise FileNotFoundError(
        f"srcore's {name!r} directory is missing: looked in {inside} and {beside}"
    )
