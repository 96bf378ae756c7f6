"""meta's ``[meta]`` config section as typed settings.

Every key meta reads from its own section is a field here, read once when the app is
built (:func:`srcore.settings.settings` checks each against ``service.yaml``), so a read
site needs no coercion and a misspelt key is an ``AttributeError`` (and a mypy error)
rather than a silent fallback to a default. ``origin`` is srcore's and stays with it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from flask import Flask

__all__ = ["MetaSettings", "meta_settings"]


@dataclass(frozen=True)
class MetaSettings:
    """meta's ``[meta]`` keys (service.yaml), read once."""

    access_token_lifetime: timedelta
    refresh_token_lifetime: timedelta
    authorization_code_lifetime: timedelta
    registration: str
    password_min_length: int
    login_max_failures: int
    login_lockout: timedelta
    confirmation_lifetime: timedelta
    reset_lifetime: timedelta
    audit_retention: timedelta
    audit_subscribers: tuple[str, ...]
    two_factor_issuer: str


def meta_settings(app: Flask | None = None) -> MetaSettings:
    """The :class:`MetaSettings` of *app* (default: the current app)."""
    from srcore.settings import settings

    return settings(MetaSettings, app)
