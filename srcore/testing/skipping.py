"""Skip a test whose resource is missing, except under CI, where it must be there."""

from __future__ import annotations

import os

__all__ = ["on_ci", "require_or_skip"]


def on_ci() -> bool:
    """Whether this run is CI's (``CI=true``), where nothing may be skipped for lack of it."""
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def require_or_skip(available: bool, what: str) -> None:
    """Skip when *what* is unavailable, but fail under CI, where it must be there."""
    if available:
        return
    import pytest

    if on_ci():
        pytest.fail(f"{what} is required under CI=true but is not reachable")
    pytest.skip(f"{what} is not reachable")
