"""Every list meta shows an account stays bounded when the account has thousands of rows:
its applications and tokens are capped when made (and the lists limited, for accounts
that hold more from before), the applications it authorized are summed up by the
database, its activity and the admin's lists are paginated."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import event, insert

from srcore.db import utcnow
from srcore.testing import log_in_client

_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
MANY = 2000


def _token(client: Any, path: str) -> str:
    match = _CSRF.search(client.get(path).get_data(as_text=True))
    assert match, path
    return match.group(1)


def _insert(app: Any, model: Any, rows: list[dict[str, Any]]) -> None:
    with app.extensions["srcore"].db.transaction() as session:
        session.execute(insert(model), rows)


def _tokens(app: Any, user_id: int, count: int) -> None:
    from meta.oauth.models import PersonalAccessToken

    now = utcnow()
    _insert(
        app,
        PersonalAccessToken,
        [
            {
                "user_id": user_id,
                "name": f"token {n}",
                "scope": "meta/profile:RO",
                "jti": uuid.uuid4().hex,
                "kid": "k",
                "created": now - timedelta(seconds=n),
                "expires_at": now + timedelta(days=30),
            }
            for n in range(count)
        ],
    )


@pytest.fixture
def loaded() -> Iterator[dict[str, int]]:
    """How many rows of each model the ORM built (a list read whole builds them all)."""
    from meta.oauth.models import Grant, OAuthClient, PersonalAccessToken

    counts: dict[str, int] = {}
    listeners = []
    for model in (Grant, OAuthClient, PersonalAccessToken):

        def on_load(_target: Any, _context: Any, name: str = model.__name__) -> None:
            counts[name] = counts.get(name, 0) + 1

        event.listen(model, "load", on_load)
        listeners.append((model, on_load))
    yield counts
    for model, on_load in listeners:
        event.remove(model, "load", on_load)


def test_thousands_of_tokens_list_a_bounded_page_and_no_more_are_made(
    app: Any, accounts: Any, loaded: dict[str, int]
) -> None:
    """The Security page and ``GET /api/tokens`` read every live token of the account,
    and nothing stopped an account (or a script with ``meta/tokens:RW``) making more."""
    from meta.oauth.pats import MAX_TOKENS

    alice = accounts.make("alice")
    _tokens(app, alice.id, MANY)
    browser = log_in_client(app.test_client(), alice)
    page = browser.get("/security")
    assert page.status_code == 200
    assert loaded.get("PersonalAccessToken", 0) <= MAX_TOKENS
    assert page.get_data(as_text=True).count("/revoke") <= MAX_TOKENS + 10
    made = browser.post(
        "/security/tokens",
        data={
            "name": "one more",
            "scopes": "meta/profile:RO",
            "expires": "30",
            "csrf_token": _token(browser, "/security"),
        },
    )
    assert made.status_code == 400, made.status_code
    assert f"at most {MAX_TOKENS} live tokens" in made.get_data(as_text=True)


def test_the_token_api_lists_and_makes_no_more_than_the_limit(app: Any, accounts: Any) -> None:
    from meta.models import User
    from meta.oauth.pats import MAX_TOKENS, create_token

    alice = accounts.make("alice")
    with app.test_request_context("/api/tokens", method="POST"):
        from srcore.db import session

        _row, boot = create_token(
            session.get(User, alice.id), name="boot", scope="meta/tokens:RW", days=1
        )
        session.commit()
    _tokens(app, alice.id, MANY)
    client = app.test_client()
    bearer = {"Authorization": f"Bearer {boot}"}
    listed = client.get("/api/tokens", headers=bearer)
    assert listed.status_code == 200
    assert len(listed.get_json()["results"]) == MAX_TOKENS
    made = client.post(
        "/api/tokens", json={"name": "child", "scopes": ["meta/tokens:RO"]}, headers=bearer
    )
    assert made.status_code == 400, made.get_json()
    assert f"at most {MAX_TOKENS} live tokens" in made.get_json()["errors"][0]["reason"]


def test_thousands_of_applications_list_a_bounded_page_and_no_more_are_made(
    app: Any, accounts: Any, loaded: dict[str, int]
) -> None:
    from meta.oauth.client_pages import MAX_CLIENTS
    from meta.oauth.models import OAuthClient

    alice = accounts.make("alice")
    _insert(
        app,
        OAuthClient,
        [
            {
                "client_id": f"c{n:023d}",
                "owner_id": alice.id,
                "name": f"app {n}",
                "redirect_uris": "https://app.example/cb",
                "confidential": False,
            }
            for n in range(MANY)
        ],
    )
    browser = log_in_client(app.test_client(), alice)
    page = browser.get("/clients")
    assert page.status_code == 200
    assert loaded.get("OAuthClient", 0) <= MAX_CLIENTS
    made = browser.post(
        "/clients",
        data={
            "name": "one more",
            "redirect_uris": "https://app.example/cb",
            "kind": "public",
            "csrf_token": _token(browser, "/clients"),
        },
    )
    assert made.status_code == 400, made.status_code
    assert f"at most {MAX_CLIENTS} applications" in made.get_data(as_text=True)


def test_thousands_of_grants_show_each_application_once_without_reading_them(
    app: Any, accounts: Any, loaded: dict[str, int]
) -> None:
    """Each login through an application makes a grant: the Security page read every
    live grant of the account to list the applications."""
    from meta.oauth.models import Grant

    alice = accounts.make("alice")
    now = utcnow()
    _insert(
        app,
        Grant,
        [
            {
                "id": uuid.uuid4().hex,
                "user_id": alice.id,
                "client_id": "gadget" if n % 2 else "widget",
                "scope": "meta/profile:RO" if n % 3 else "meta/tokens:RO",
                "created": now,
                "last_used": now - timedelta(seconds=n),
            }
            for n in range(MANY)
        ],
    )
    browser = log_in_client(app.test_client(), alice)
    page = browser.get("/security")
    assert page.status_code == 200
    assert loaded.get("Grant", 0) == 0
    text = page.get_data(as_text=True)
    applications = text[text.index('id="applications"') : text.index('id="tokens"')]
    assert applications.count("gadget") == 2  # its name, and its revoke form's address
    assert applications.count("widget") == 2
    assert "<code>meta/profile:RO</code> <code>meta/tokens:RO</code>" in applications


def test_activity_and_admin_lists_are_paginated(app: Any, accounts: Any) -> None:
    from meta.models import AuditEntry, User

    from srcore.db import UserType

    admin = accounts.make("root")
    with app.extensions["srcore"].db.transaction() as session:
        session.get(User, admin.id).user_type = UserType.admin
    _insert(
        app,
        AuditEntry,
        [{"user_id": admin.id, "kind": "login", "detail": f"n{n}"} for n in range(MANY)],
    )
    browser = log_in_client(app.test_client(), admin)
    for path in ("/security/activity", "/admin/audit", "/security"):
        page = browser.get(path)
        assert page.status_code == 200, path
        assert page.get_data(as_text=True).count("<tr") <= 110, path
