"""What happens to an account, as named signals that the OAuth half listens to.

The accounts side (:mod:`meta.logic`, the views) changes an account and sends one of
these with the :class:`~meta.models.User` as sender (``logged_out.send(user)``), inside
the transaction of the change, so what a receiver writes (revocation events, webhooks)
commits with it or not at all; a receiver's error propagates and rolls the change back.
It never names who listens: the OAuth half connects its ``on_*`` functions when the app is
built (:func:`meta.oauth.init_app` calls :func:`meta.oauth.receivers.connect`), and
anything else may connect too.
"""

from __future__ import annotations

from blinker import Namespace

__all__ = [
    "account_deleted",
    "account_suspended",
    "account_unsuspended",
    "logged_out",
    "password_changed",
    "profile_changed",
]

_account = Namespace()

logged_out = _account.signal(
    "logged-out", doc="The user logged out of meta (this browser, or everywhere)."
)
password_changed = _account.signal(
    "password-changed", doc="A new password: everything issued before it must end."
)
profile_changed = _account.signal(
    "profile-changed", doc="The public profile (address, URL, location, bio) changed."
)
account_suspended = _account.signal("account-suspended", doc="An admin suspended the account.")
account_unsuspended = _account.signal(
    "account-unsuspended", doc="An admin lifted the account's suspension."
)
account_deleted = _account.signal(
    "account-deleted", doc="The account is being deleted (sent before its row goes)."
)
