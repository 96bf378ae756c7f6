"""meta's named signals: the account changes (meta.signals) and Authlib's own, each
reaching a connected receiver; the OAuth half listens from the moment the app is built."""

from __future__ import annotations

from typing import Any

from oauth_helpers import TODO_ID, basic, oauth_app

__all__ = ["oauth_app"]  # fixture used by this module


def test_the_oauth_half_receives_every_account_signal(app: Any) -> None:
    from meta import oauth, signals

    expected = {
        signals.logged_out: oauth.on_logout,
        signals.password_changed: oauth.on_password_change,
        signals.profile_changed: oauth.on_profile_change,
        signals.account_suspended: oauth.on_suspend,
        signals.account_unsuspended: oauth.on_unsuspend,
        signals.account_deleted: oauth.on_delete,
    }
    for signal, receiver in expected.items():
        assert receiver in set(signal.receivers_for(object())), signal.name


def test_a_suspension_reaches_a_connected_receiver_inside_its_transaction(
    app: Any, accounts: Any
) -> None:
    from meta import logic, signals
    from meta.models import User

    alice = accounts.make("alice")
    seen: list[tuple[int, bool]] = []

    def receiver(user: Any) -> None:
        from sqlalchemy.orm import object_session

        seen.append((user.id, object_session(user) is not None))

    db = app.extensions["srcore"].db
    with signals.account_suspended.connected_to(receiver), db.transaction() as session:
        logic.suspend(session, session.get(User, alice.id), "Spam.")
    assert seen == [(alice.id, True)]


def test_authlib_signals_a_client_authentication(oauth_app: Any) -> None:
    """Authlib sends blinker's ``client_authenticated`` itself: whoever wants to know
    connects to it (meta keeps no hook of its own for this)."""
    from authlib.integrations.flask_oauth2 import client_authenticated

    seen: list[str] = []

    def receiver(sender: Any, client: Any, **extra: Any) -> None:
        seen.append(client.client_id)

    with client_authenticated.connected_to(receiver):
        response = oauth_app.test_client().post(
            "/oauth/token",
            data={"grant_type": "client_credentials", "scope": "meta/profile:RO"},
            headers=basic(),
        )
    assert response.status_code == 200, response.get_json()
    assert seen == [TODO_ID]
