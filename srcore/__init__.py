"""srcore: the shared core of a network of small Flask services.

A service builds its app with :func:`create_app`, keeps its models on
:mod:`srcore.db`, validates input with :mod:`srcore.validation`, guards pages with
:func:`login_required` and API routes with :func:`oauth`. Views never write on GET,
HEAD or OPTIONS unless marked with :func:`writes_on_safe_method`.
"""

from __future__ import annotations

from srcore.app import SrcoreApp, create_app, state
from srcore.auth import current_user, login_required, oauth
from srcore.db import writes_on_safe_method
from srcore.validation import Validation

__all__ = [
    "SrcoreApp",
    "Validation",
    "create_app",
    "current_user",
    "login_required",
    "oauth",
    "state",
    "writes_on_safe_method",
]
