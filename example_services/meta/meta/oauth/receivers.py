"""The OAuth half's receivers of the account signals (:mod:`meta.signals`)."""

from __future__ import annotations

__all__ = ["connect"]


def connect() -> None:
    """Connect ``meta.oauth.on_*`` to their signals (again: connecting is idempotent).

    Strong references: the receivers are module functions and must not be dropped.
    """
    from meta import oauth, signals

    pairs = (
        (signals.logged_out, oauth.on_logout),
        (signals.password_changed, oauth.on_password_change),
        (signals.profile_changed, oauth.on_profile_change),
        (signals.account_suspended, oauth.on_suspend),
        (signals.account_unsuspended, oauth.on_unsuspend),
        (signals.account_deleted, oauth.on_delete),
    )
    for signal, receiver in pairs:
        signal.connect(receiver, weak=False)
