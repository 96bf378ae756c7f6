"""What an account's deletion and suspension end, and what they leave.

1. An account deleted at meta takes its OAuth applications with it (ON DELETE CASCADE):
   a ``client`` revocation event (and one per grant) ends other users' access tokens
   from those applications at every service, and the webhook subscriptions the
   applications set up on those users' accounts.
2. A suspension ends sessions with a ``session`` cut-off, not a ``user`` one, which
   services take for a password change: the account's webhook subscriptions only pause
   until the unsuspension (README: "receives nothing until it is unsuspended").
"""

from __future__ import annotations

from typing import Any

from meta_constants import PASSWORD
from oauth_helpers import (
    authorize_url,
    basic,
    events_in_db,
    exchange,
    oauth_app,
    pkce,
    query_of,
    register_client,
)
from oidc_helpers import csrf_of
from sqlalchemy import select

from srcore.signatures import generate_secret
from srcore.testing import log_in_client

__all__ = ["oauth_app"]
REDIRECT = "https://app.example/cb"


def test_deleting_an_account_revokes_its_applications(oauth_app: Any, accounts: Any) -> None:
    gadget = register_client(oauth_app, accounts, confidential=True, owner="developer")
    bob = log_in_client(oauth_app.test_client(), accounts.make("bob"))
    verifier, challenge = pkce()
    url = authorize_url(gadget["id"], REDIRECT, challenge=challenge)
    page = bob.get(url)
    approved = bob.post(
        url, data={"decision": "approve", "csrf_token": csrf_of(page.get_data(as_text=True))}
    )
    code = query_of(approved.headers["Location"])["code"]
    tokens = exchange(
        oauth_app.test_client(),
        code,
        verifier,
        redirect_uri=REDIRECT,
        headers=basic(gadget["id"], gadget["secret"]),
    ).get_json()
    access = {"Authorization": f"Bearer {tokens['access_token']}"}
    assert oauth_app.test_client().get("/api/profile", headers=access).status_code == 200

    from meta.models import User

    with oauth_app.extensions["srcore"].db.transaction() as session:
        # By name: its id depends on what the database held before (SQLite reuses ids).
        owner = session.scalars(select(User).where(User.username == "developer")).one()
    developer = log_in_client(oauth_app.test_client(), owner)
    form = developer.get("/delete").get_data(as_text=True)
    developer.post("/delete", data={"csrf_token": csrf_of(form), "current_password": PASSWORD})

    # What the services apply: a client event for the application, and its grant's own.
    assert ("client", gadget["id"]) in events_in_db(oauth_app)
    assert oauth_app.test_client().get("/api/profile", headers=access).status_code == 401


def test_an_unsuspended_accounts_subscriptions_receive_again(oauth_app: Any, accounts: Any) -> None:
    from srcore.webhooks.models import Subscription

    admin = accounts.make("olga", user_type="admin")
    carol = accounts.make("carol")
    st = oauth_app.extensions["srcore"]
    with st.db.transaction() as session:
        sub = Subscription(
            owner_id=carol.id,
            url="https://hooks.example.org/carol",
            events="profile:updated",
            scopes="meta/profile:RO",
            secret=generate_secret(),
        )
        session.add(sub)
    browser = log_in_client(oauth_app.test_client(), admin)
    for action in ("suspend", "unsuspend"):
        token = csrf_of(browser.get(f"/admin/users/{carol.id}").get_data(as_text=True))
        done = browser.post(
            f"/admin/users/{carol.id}/{action}", data={"csrf_token": token, "notice": "spam"}
        )
        assert done.status_code == 302, done.get_data(as_text=True)[:400]
    with st.db.transaction() as session:
        row = session.scalar(select(Subscription).where(Subscription.owner_id == carol.id))
        assert row is not None
        assert row.enabled, row.disabled_reason
