"""Identity for srcore services: who is logged in (web) and who is calling (API).

Accounts live at meta; a service only keeps a local row per user (id = meta's account id)
and verifies access tokens locally.
"""

from __future__ import annotations

from srcore.auth.api import current_token, oauth
from srcore.auth.deletion import hold_account, on_account_deleted
from srcore.auth.scopes import Scope, ScopeError, parse_scope, parse_scopes
from srcore.auth.web import (
    current_user,
    log_in,
    log_out,
    login_required,
    refuse_inactive_token_user,
    require_user,
)

__all__ = [
    "Scope",
    "ScopeError",
    "current_token",
    "current_user",
    "hold_account",
    "log_in",
    "log_out",
    "login_required",
    "oauth",
    "on_account_deleted",
    "parse_scope",
    "parse_scopes",
    "refuse_inactive_token_user",
    "require_user",
]
