"""Accounts, sessions and tokens against account take-over: what a token may mint, what an
unconfirmed account may do, what a password change or a logout ends, which mailed links
still work, and how often a password may be guessed."""

from __future__ import annotations

import re
import time
import types
from typing import Any

import pytest
from oauth_helpers import (
    Captured,
    authorize_url,
    exchange,
    oauth_app,
    pkce,
    pushes,
    query_of,
    verifier_for,
)

from srcore.auth.revocation import MemoryRevocationStore, RevocationEvent

__all__ = ["oauth_app", "pushes"]  # fixtures used by this module

PASSWORD = "correct horse battery"
NEW_PASSWORD = "a brand new passphrase"


def _pat(app: Any, user_id: int, scope: str, *, name: str = "boot") -> tuple[int, str]:
    """A personal access token made as the /security page makes one: (id, token)."""
    from meta.models import User
    from meta.oauth.pats import create_token

    with app.test_request_context("/api/tokens", method="POST"):
        from srcore.db import session

        row, token = create_token(session.get(User, user_id), name=name, scope=scope, days=30)
        session.commit()
        return row.id, token


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": "Bearer " + token}


def _profile_status(app: Any, token: str) -> int:
    return int(app.test_client().get("/api/profile", headers=_bearer(token)).status_code)


def _csrf(client: Any, path: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', client.get(path).get_data(as_text=True))
    assert match, path
    return match.group(1)


def _browser(app: Any, login: Any, name: str = "alice", password: str = PASSWORD) -> Any:
    client = app.test_client()
    response = login(client, name, password)
    assert response.status_code == 302, response.get_data(as_text=True)[:300]
    return client


def _oauth_tokens(browser: Any, scope: str) -> dict[str, Any]:
    verifier, challenge = pkce()
    url = authorize_url(challenge=challenge, scope=scope)
    answer = browser.get(url)
    if answer.status_code == 200:  # beyond todo's own scopes: alice says yes, as to any app
        page = answer.get_data(as_text=True)
        token = re.search(r'name="csrf_token" value="([^"]+)"', page)
        assert token, page[:300]
        answer = browser.post(url, data={"csrf_token": token.group(1), "decision": "approve"})
    assert answer.status_code == 302, answer.get_data(as_text=True)[:300]
    code = query_of(answer.headers["Location"])["code"]
    response = exchange(browser, code, verifier)
    assert response.status_code == 200, response.get_json()
    body: dict[str, Any] = response.get_json()
    return body


def _service_store(app: Any, pushes: Captured) -> MemoryRevocationStore:
    """A service's revocation store fed with everything meta pushed so far."""
    store = MemoryRevocationStore()
    store.apply(RevocationEvent.from_json(e) for e in pushes.events(app))
    return store


# -- a token mints only narrower tokens, tied to its grant --------------------------------------


def test_a_token_cannot_mint_a_token_wider_than_itself(app: Any, accounts: Any) -> None:
    alice = accounts.make("alice")
    _id, boot = _pat(app, alice.id, "meta/tokens:RW")
    client = app.test_client()
    for scopes in (["meta/profile:RO"], ["meta/tokens:RW", "meta/profile:RW"]):
        wider = client.post(
            "/api/tokens", json={"name": "wider", "scopes": scopes}, headers=_bearer(boot)
        )
        assert wider.status_code == 400, wider.get_json()
        assert "scopes" in str(wider.get_json())
    narrower = client.post(
        "/api/tokens",
        json={"name": "narrower", "scopes": ["meta/tokens:RO"]},
        headers=_bearer(boot),
    )
    assert narrower.status_code == 201, narrower.get_json()


def test_a_token_made_by_a_token_dies_with_it(app: Any, accounts: Any) -> None:
    alice = accounts.make("alice")
    boot_id, boot = _pat(app, alice.id, "meta/tokens:RW meta/profile:RO")
    client = app.test_client()
    child = client.post(
        "/api/tokens", json={"name": "child", "scopes": ["meta/profile:RO"]}, headers=_bearer(boot)
    ).get_json()["token"]
    assert _profile_status(app, child) == 200
    own = _pat(app, alice.id, "meta/profile:RO", name="own")[1]
    browser = app.test_client()
    from srcore.testing import log_in_client

    log_in_client(browser, alice)
    revoked = browser.post(
        f"/security/tokens/{boot_id}/revoke", data={"csrf_token": _csrf(browser, "/security")}
    )
    assert revoked.status_code == 302
    assert _profile_status(app, boot) == 401
    assert _profile_status(app, child) == 401
    assert _profile_status(app, own) == 200


def test_a_token_made_by_an_application_dies_with_the_application(
    oauth_app: Any, accounts: Any, login: Any, pushes: Captured
) -> None:
    accounts.make("alice")
    browser = _browser(oauth_app, login)
    tokens = _oauth_tokens(browser, "meta/profile:RO meta/tokens:RW")
    child = oauth_app.test_client().post(
        "/api/tokens",
        json={"name": "from the app", "scopes": ["meta/profile:RO"]},
        headers=_bearer(tokens["access_token"]),
    )
    assert child.status_code == 201, child.get_json()
    pat = child.get_json()["token"]
    assert _profile_status(oauth_app, pat) == 200
    revoked = browser.post(
        "/security/applications/todo/revoke", data={"csrf_token": _csrf(browser, "/security")}
    )
    assert revoked.status_code == 302
    assert _profile_status(oauth_app, pat) == 401
    claims = verifier_for(oauth_app).verify(pat).claims
    from srcore.auth.tokens import AccessToken

    token = AccessToken(
        subject=int(claims["sub"]),
        client_id=claims["client_id"],
        scopes=frozenset(),
        expires_at=claims["exp"],
        issued_at=claims["iat"],
        jti=claims["jti"],
        hash="x",
        claims=claims,
    )
    assert _service_store(oauth_app, pushes).is_revoked(token)


# -- unconfirmed accounts get no tokens ----------------------------------------------------------


def test_unconfirmed_account_gets_no_tokens_on_the_page(
    app: Any, accounts: Any, login: Any
) -> None:
    accounts.make("bob", confirmed=False)
    browser = _browser(app, login, "bob")
    page = browser.get("/security").get_data(as_text=True)
    assert "Confirm your email address" in page
    response = browser.post(
        "/security/tokens",
        data={
            "name": "laptop",
            "scopes": ["meta/profile:RO"],
            "expires": "30",
            "csrf_token": _csrf(browser, "/security"),
        },
    )
    assert response.status_code == 403
    assert "Confirm your email address" in response.get_data(as_text=True)
    assert 'id="new-token"' not in response.get_data(as_text=True)


def test_unconfirmed_account_tokens_are_not_usable(app: Any, accounts: Any) -> None:
    from srcore.db import UserType

    bob = accounts.make("bob")
    _id, token = _pat(app, bob.id, "meta/tokens:RW meta/profile:RO")
    assert _profile_status(app, token) == 200
    with app.extensions["srcore"].db.transaction() as session:
        from meta.models import User

        session.get(User, bob.id).user_type = UserType.unconfirmed
    assert _profile_status(app, token) in (401, 403)
    made = app.test_client().post(
        "/api/tokens", json={"name": "x", "scopes": ["meta/profile:RO"]}, headers=_bearer(token)
    )
    assert made.status_code in (401, 403)


def test_unconfirmed_account_gets_no_oauth_tokens(
    oauth_app: Any, accounts: Any, login: Any
) -> None:
    accounts.make("bob", confirmed=False)
    browser = _browser(oauth_app, login, "bob")
    response = browser.get(
        "/oauth/authorize?response_type=code&client_id=todo&state=x&code_challenge="
        + pkce()[1]
        + "&code_challenge_method=S256&scope=meta/profile:RO"
    )
    assert response.status_code == 403
    assert "Confirm your email address" in response.get_data(as_text=True)


def test_admin_create_token_refuses_an_unconfirmed_account(
    app: Any, srcore_database: Any, accounts: Any
) -> None:
    from click.testing import CliRunner
    from meta.admin.cli import main

    accounts.make("bob", confirmed=False)
    result = CliRunner().invoke(
        main,
        ["create-token", "bob", "meta/profile:RO", "--config", str(srcore_database.config_path)],
    )
    assert result.exit_code == 1
    assert "bob has not confirmed their email address" in result.output


# -- a password change ends everything issued before it, in the same second too --------------------


def _same_second(monkeypatch: pytest.MonkeyPatch, seconds: int) -> None:
    """Make meta's cut-offs fall in the second *seconds*, as a fast change would."""
    import meta.oauth

    monkeypatch.setattr(meta.oauth, "time", types.SimpleNamespace(time=lambda: seconds + 0.5))


def test_password_change_ends_tokens_of_the_same_second(
    oauth_app: Any, accounts: Any, login: Any, pushes: Captured, monkeypatch: pytest.MonkeyPatch
) -> None:
    from srcore.auth.tokens import AccessToken

    alice = accounts.make("alice")
    browser = _browser(oauth_app, login)
    access = _oauth_tokens(browser, "meta/profile:RO")["access_token"]
    _id, pat = _pat(oauth_app, alice.id, "meta/profile:RO")
    verify = verifier_for(oauth_app)
    claims = [verify.verify(t).claims for t in (access, pat)]
    _same_second(monkeypatch, max(c["iat"] for c in claims))
    other = _browser(oauth_app, login)
    response = other.post(
        "/password",
        data={
            "current_password": PASSWORD,
            "password": NEW_PASSWORD,
            "csrf_token": _csrf(other, "/password"),
        },
    )
    assert response.status_code == 302
    assert _profile_status(oauth_app, access) == 401
    assert _profile_status(oauth_app, pat) == 401
    store = _service_store(oauth_app, pushes)
    for c in claims:
        token = AccessToken(
            subject=int(c["sub"]),
            client_id=c["client_id"],
            scopes=frozenset(),
            expires_at=c["exp"],
            issued_at=c["iat"],
            jti=c["jti"],
            hash="x",
            claims=c,
        )
        assert store.is_revoked(token), c["client_id"]


def test_password_reset_ends_sessions_and_tokens(
    app: Any, accounts: Any, login: Any, csrf: Any, smtp_sink: Any
) -> None:
    alice = accounts.make("alice")
    browser = _browser(app, login)
    _id, pat = _pat(app, alice.id, "meta/profile:RO")
    csrf.post(app.test_client(), "/forgot", {"email": "alice@example.org"})
    link = smtp_sink.last_link("alice@example.org", "/reset/")
    stranger = app.test_client()
    reset = stranger.post(
        link, data={"password": NEW_PASSWORD, "csrf_token": _csrf(stranger, link)}
    )
    assert reset.status_code == 302
    assert browser.get("/profile").status_code == 302
    assert _profile_status(app, pat) == 401
    assert stranger.get("/profile").status_code == 200


# -- logging out ends the session on the server ----------------------------------------------------


def _cookie(client: Any, app: Any) -> str:
    cookie = client.get_cookie(app.config["SESSION_COOKIE_NAME"])
    assert cookie is not None
    return str(cookie.value)


def _with_cookie(app: Any, value: str) -> Any:
    client = app.test_client()
    client.set_cookie(app.config["SESSION_COOKIE_NAME"], value)
    return client


def test_logout_ends_a_copy_of_the_session_cookie(
    oauth_app: Any, accounts: Any, login: Any
) -> None:
    accounts.make("alice")
    browser = _browser(oauth_app, login)
    copy = _cookie(browser, oauth_app)
    assert _with_cookie(oauth_app, copy).get("/profile").status_code == 200
    out = browser.post("/logout", data={"csrf_token": _csrf(browser, "/profile")})
    assert out.status_code == 302
    thief = _with_cookie(oauth_app, copy)
    assert thief.get("/profile").status_code == 302
    response = thief.get(
        "/oauth/authorize?response_type=code&client_id=todo&state=x&code_challenge="
        + pkce()[1]
        + "&code_challenge_method=S256&scope=meta/profile:RO"
    )
    assert response.status_code == 302
    assert "code" not in query_of(response.headers["Location"])
    assert response.headers["Location"].startswith("/login")


def test_password_change_ends_every_other_session_of_the_same_second(
    app: Any, accounts: Any, login: Any
) -> None:
    accounts.make("alice")
    first = _browser(app, login)
    second = _browser(app, login)
    response = second.post(
        "/password",
        data={
            "current_password": PASSWORD,
            "password": NEW_PASSWORD,
            "csrf_token": _csrf(second, "/password"),
        },
    )
    assert response.status_code == 302
    assert first.get("/profile").status_code == 302
    assert second.get("/profile").status_code == 200


# -- mailed links ----------------------------------------------------------------------------------


def test_reset_link_to_the_old_address_dies_with_an_email_change(
    app: Any, accounts: Any, login: Any, csrf: Any, smtp_sink: Any
) -> None:
    accounts.make("alice")
    csrf.post(app.test_client(), "/forgot", {"email": "alice@example.org"})
    old_link = smtp_sink.last_link("alice@example.org", "/reset/")
    browser = _browser(app, login)
    changed = browser.post(
        "/email",
        data={
            "email": "alice@new.example.org",
            "current_password": PASSWORD,
            "csrf_token": _csrf(browser, "/email"),
        },
    )
    assert changed.status_code == 302
    confirm = smtp_sink.last_link("alice@new.example.org", "/confirm/")
    assert browser.get(confirm).status_code == 302
    assert app.test_client().get(old_link).status_code == 404


def test_reset_link_dies_with_a_password_change_and_after_one_use(
    app: Any, accounts: Any, login: Any, csrf: Any, smtp_sink: Any
) -> None:
    accounts.make("alice")
    csrf.post(app.test_client(), "/forgot", {"email": "alice@example.org"})
    link = smtp_sink.last_link("alice@example.org", "/reset/")
    browser = _browser(app, login)
    browser.post(
        "/password",
        data={
            "current_password": PASSWORD,
            "password": NEW_PASSWORD,
            "csrf_token": _csrf(browser, "/password"),
        },
    )
    assert app.test_client().get(link).status_code == 404
    csrf.post(app.test_client(), "/forgot", {"email": "alice@example.org"})
    link = smtp_sink.last_link("alice@example.org", "/reset/")
    client = app.test_client()
    used = client.post(link, data={"password": PASSWORD + "!", "csrf_token": _csrf(client, link)})
    assert used.status_code == 302
    assert app.test_client().get(link).status_code == 404


# -- password guessing -----------------------------------------------------------------------------


def _frozen(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Stop the clock the throttles (and limits under them) read; tests move it."""
    clock = [time.time()]
    monkeypatch.setattr(time, "time", lambda: clock[0])
    return clock


def test_login_throttle_counts_username_and_email_as_one_account(
    app: Any, accounts: Any, login: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    accounts.make("alice")
    clock = _frozen(monkeypatch)
    for i in range(5):
        name = "alice" if i % 2 else "alice@example.org"
        assert login(app.test_client(), name, "wrong password!").status_code == 400
        clock[0] += 100
    for name in ("alice", "Alice@Example.org"):
        assert login(app.test_client(), name, PASSWORD).status_code == 429


@pytest.mark.parametrize(
    ("path", "data"),
    [
        ("/password", {"password": NEW_PASSWORD}),
        ("/email", {"email": "alice@new.example.org"}),
        ("/delete", {}),
    ],
)
def test_current_password_checks_are_throttled(
    app: Any,
    accounts: Any,
    login: Any,
    path: str,
    data: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    accounts.make("alice")
    browser = _browser(app, login)
    clock = _frozen(monkeypatch)
    for _ in range(5):
        wrong = browser.post(
            path, data={**data, "current_password": "nope" * 3, "csrf_token": _csrf(browser, path)}
        )
        assert wrong.status_code == 400
        clock[0] += 100
    right = browser.post(
        path, data={**data, "current_password": PASSWORD, "csrf_token": _csrf(browser, path)}
    )
    assert right.status_code == 429
    assert "Too many failed attempts" in right.get_data(as_text=True)
    assert int(right.headers["Retry-After"]) > 0
    # The login form is locked for the account as well.
    assert login(app.test_client(), "alice", PASSWORD).status_code == 429


def test_forgot_sends_mail_after_the_response(
    app: Any, accounts: Any, smtp_sink: Any, csrf: Any
) -> None:
    """The answer leaves before any mail is sent, so its timing says nothing about
    whether an account uses the address."""
    from werkzeug.test import EnvironBuilder

    accounts.make("alice")
    client = app.test_client()
    token = csrf.token(client, "/forgot")
    cookie = client.get_cookie(app.config["SESSION_COOKIE_NAME"])
    builder = EnvironBuilder(
        path="/forgot",
        method="POST",
        data={"email": "alice@example.org", "csrf_token": token},
        headers={"Cookie": f"{cookie.key}={cookie.value}"},
    )
    started: list[str] = []
    body = app.wsgi_app(builder.get_environ(), lambda status, headers: started.append(status))
    try:
        assert started and started[0].startswith("200")
        assert b"".join(body)
        assert smtp_sink.to("alice@example.org") == []
        # Nor is the link made yet: the request did no more than for an unknown address.
        from meta.models import EmailToken
        from sqlalchemy import func, select

        with app.extensions["srcore"].db.transaction() as session:
            assert session.scalar(select(func.count()).select_from(EmailToken)) == 0
    finally:
        getattr(body, "close", lambda: None)()
    assert len(smtp_sink.to("alice@example.org")) == 1


# -- the account tabs ------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/profile", "/email", "/password", "/security", "/clients"])
def test_account_tabs_link_security_and_clients(
    app: Any, accounts: Any, login: Any, path: str
) -> None:
    accounts.make("alice")
    page = _browser(app, login).get(path)
    assert page.status_code == 200
    text = page.get_data(as_text=True)
    nav = re.search(r'<nav class="breadcrumbs" aria-label="Account">(.*?)</nav>', text, re.S)
    assert nav, path
    for target, label in (("/security", "Security"), ("/clients", "Applications")):
        if target == path:
            assert f'aria-current="page">{label}<' in nav.group(1)
        else:
            assert f'href="{target}"' in nav.group(1), (path, target)


def test_log_out_everywhere_ends_every_session(
    oauth_app: Any, accounts: Any, login: Any, pushes: Captured
) -> None:
    alice = accounts.make("alice")
    first = _browser(oauth_app, login)
    second = _browser(oauth_app, login)
    page = first.get("/security").get_data(as_text=True)
    assert 'action="/logout/everywhere"' in page
    out = first.post("/logout/everywhere", data={"csrf_token": _csrf(first, "/security")})
    assert out.status_code == 302
    assert first.get("/profile").status_code == 302
    assert second.get("/profile").status_code == 302
    assert ("session", str(alice.id)) in [
        (e["kind"], e["subject"]) for e in pushes.events(oauth_app)
    ]
    assert _browser(oauth_app, login).get("/profile").status_code == 200


def test_expired_sessions_are_forgotten_at_the_next_login(
    app: Any, accounts: Any, login: Any
) -> None:
    from datetime import timedelta

    from meta.models import WebSession
    from sqlalchemy import select

    from srcore.db import utcnow

    alice = accounts.make("alice")
    kept = _browser(app, login)
    # Unused for a lifetime, and the hour its last use may have been recorded late.
    unused = utcnow() - app.permanent_session_lifetime - timedelta(hours=1, minutes=1)
    with app.extensions["srcore"].db.transaction() as session:
        session.add(
            WebSession(user_id=alice.id, secret_hash="0" * 64, created=unused, last_used=unused)
        )
    _browser(app, login)
    with app.extensions["srcore"].db.transaction() as session:
        hashes = session.scalars(select(WebSession.secret_hash)).all()
    assert "0" * 64 not in hashes and len(hashes) == 2
    assert kept.get("/profile").status_code == 200
