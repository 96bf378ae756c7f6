"""Races at meta's token endpoint: a change that lands between what a token request read
and what it writes (a replayed code, a revoked grant, a deleted application or account,
a second refresh with the same token), on SQLite and PostgreSQL.

The other request runs at a fixed point of the one under test (a wrapped step of the
grant): synchronously when the request under test has written nothing yet, else on a
thread of its own, which the request under test waits for a bounded time before going
on. Either way the outcome asserted is the same whatever the interleaving.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from typing import Any

import pytest
from oauth_helpers import (
    basic,
    events_in_db,
    exchange,
    get_code,
    oauth_app,
    pkce,
    query_of,
    register_client,
)
from sqlalchemy import func, select

from srcore.testing import log_in_client

__all__ = ["oauth_app"]  # a fixture used by this module

#: How long a step waits for the change run beside it (a bound: the change may be blocked
#: by the step's own locks, which is a correct outcome too).
MEANWHILE_SECONDS = 3
#: How long a racing thread may take at all.
JOIN_SECONDS = 60


def _introspect(app: Any, token: str) -> dict[str, Any]:
    response = app.test_client().post("/oauth/introspect", data={"token": token}, headers=basic())
    assert response.status_code == 200, response.get_data(as_text=True)
    body: dict[str, Any] = response.get_json()
    return body


def _refresh(client: Any, token: str, headers: dict[str, str] | None = None) -> Any:
    form = {"grant_type": "refresh_token", "refresh_token": token}
    return client.post("/oauth/token", data=form, headers=basic() if headers is None else headers)


def _count(app: Any, model: Any) -> int:
    with app.extensions["srcore"].db.transaction() as session:
        return int(session.scalar(select(func.count()).select_from(model)) or 0)


class Meanwhile:
    """Run another request's change at a step of the request under test."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.monkeypatch = monkeypatch
        self.threads: list[threading.Thread] = []
        self.results: list[Any] = []
        self.errors: list[BaseException] = []

    def _run(self, change: Callable[[], Any]) -> None:
        try:
            self.results.append(change())
        except BaseException as exc:
            self.errors.append(exc)

    def at(
        self,
        owner: Any,
        name: str,
        change: Callable[[], Any],
        *,
        after: bool = False,
        threaded: bool = False,
    ) -> None:
        """Run *change* once, before (or *after*) the first call of ``owner.name``."""
        original = getattr(owner, name)
        pending = [change]

        def step(*args: Any, **kwargs: Any) -> Any:
            if not after:
                self._fire(pending, threaded)
            result = original(*args, **kwargs)
            if after:
                self._fire(pending, threaded)
            return result

        self.monkeypatch.setattr(owner, name, step)

    def _fire(self, pending: list[Callable[[], Any]], threaded: bool) -> None:
        if not pending:
            return
        change = pending.pop()  # first: the change's own requests take the same step
        if not threaded:
            self._run(change)
            return
        thread = threading.Thread(target=self._run, args=(change,), daemon=True)
        self.threads.append(thread)
        thread.start()
        thread.join(MEANWHILE_SECONDS)

    def finish(self) -> list[Any]:
        for thread in self.threads:
            thread.join(JOIN_SECONDS)
        assert not any(thread.is_alive() for thread in self.threads), "a racing request hung"
        assert self.errors == []
        return self.results


@pytest.fixture
def meanwhile(monkeypatch: pytest.MonkeyPatch) -> Meanwhile:
    return Meanwhile(monkeypatch)


@pytest.fixture
def alice(accounts: Any) -> Any:
    return accounts.make("alice")


@pytest.fixture
def browser(oauth_app: Any, alice: Any) -> Any:
    return log_in_client(oauth_app.test_client(), alice)


def _tokens(browser: Any) -> dict[str, Any]:
    verifier, challenge = pkce()
    response = exchange(browser, get_code(browser, (verifier, challenge)), verifier)
    assert response.status_code == 200, response.get_json()
    body: dict[str, Any] = response.get_json()
    return body


def _grant_of(app: Any, token: str) -> str:
    claims = app.extensions["meta.oauth"].decode_access_token(token)
    assert claims is not None
    return str(claims["grant"])


# -- authorization codes -----------------------------------------------------------------------


def test_a_code_replayed_during_its_first_exchange_revokes_what_that_issued(
    oauth_app: Any, browser: Any, meanwhile: Meanwhile
) -> None:
    """RFC 6749 4.1.2: a code used twice is refused, and what it gave is revoked. The
    replay came after the first exchange had spent the code but before it wrote its
    grant: it found nothing to revoke, and the first exchange's tokens lived on."""
    from meta.oauth.server import AuthorizationCodeGrant

    verifier, challenge = pkce()
    code = get_code(browser, (verifier, challenge))
    replayer = oauth_app.test_client()
    meanwhile.at(
        AuthorizationCodeGrant,
        "generate_token",
        lambda: exchange(replayer, code, verifier),
        threaded=True,
    )
    first = exchange(browser, code, verifier)
    [replay] = meanwhile.finish()
    assert first.status_code == 200, first.get_json()
    assert replay.status_code == 400 and replay.get_json()["error"] == "invalid_grant"
    tokens = first.get_json()
    assert _introspect(oauth_app, tokens["access_token"]) == {"active": False}
    assert _introspect(oauth_app, tokens["refresh_token"]) == {"active": False}
    assert ("grant", _grant_of(oauth_app, tokens["access_token"])) in events_in_db(oauth_app)
    assert _refresh(browser, tokens["refresh_token"]).status_code == 400


def test_an_application_deleted_while_its_code_is_exchanged_gets_no_tokens(
    oauth_app: Any, accounts: Any, meanwhile: Meanwhile
) -> None:
    """The application was read (its secret checked) before its deletion committed: its
    tokens were issued anyway, in the second of the deletion, which the ``client``
    event's cut-off (strictly before) does not reach: live for their whole hour."""
    from meta.oauth.models import Grant, OAuthClient
    from meta.oauth.pats import revoke_client
    from meta.oauth.server import AuthorizationCodeGrant

    from srcore.db import session as db_session

    gadget = register_client(oauth_app, accounts, confidential=True)
    alice = accounts.make("alice")
    browser = log_in_client(oauth_app.test_client(), alice)
    verifier, challenge = pkce()
    url = (
        "/oauth/authorize?response_type=code&client_id="
        + gadget["id"]
        + "&redirect_uri=https://app.example/cb&scope=meta/profile:RO&state=s"
        + "&code_challenge_method=S256&code_challenge="
        + challenge
    )
    page = browser.get(url).get_data(as_text=True)
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert csrf, page[:500]
    approved = browser.post(url, data={"decision": "approve", "csrf_token": csrf.group(1)})
    code = query_of(approved.headers["Location"])["code"]

    def delete() -> None:
        with oauth_app.app_context():
            found = select(OAuthClient).where(OAuthClient.client_id == gadget["id"])
            row = db_session.scalar(found)
            revoke_client(row)
            db_session.commit()

    meanwhile.at(AuthorizationCodeGrant, "query_authorization_code", delete)
    response = oauth_app.test_client().post(
        "/oauth/token",
        data={
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": "https://app.example/cb",
            "code_verifier": verifier,
        },
        headers=basic(gadget["id"], gadget["secret"]),
    )
    meanwhile.finish()
    assert response.status_code == 400, response.get_json()
    assert response.get_json()["error"] == "invalid_grant"
    with oauth_app.extensions["srcore"].db.transaction() as session:
        assert session.scalars(select(Grant).where(Grant.revoked_at.is_(None))).all() == []


@pytest.mark.parametrize("what", ["deleted", "suspended"])
def test_an_account_ended_while_its_code_is_exchanged_gets_no_tokens(
    oauth_app: Any, browser: Any, alice: Any, meanwhile: Meanwhile, what: str
) -> None:
    """The account was read as active, then deleted (or suspended) before the grant was
    written: the grant's row named a deleted account (a 500), or the tokens of a
    suspended one were issued."""
    from meta import logic
    from meta.models import User
    from meta.oauth.server import AuthorizationCodeGrant

    from srcore.db import session as db_session

    verifier, challenge = pkce()
    code = get_code(browser, (verifier, challenge))

    def end() -> None:
        with oauth_app.app_context():
            user = db_session.get(User, alice.id)
            if what == "deleted":
                logic.delete_user(db_session, user)
            else:
                logic.suspend(db_session, user, "spam")
            db_session.commit()

    meanwhile.at(AuthorizationCodeGrant, "authenticate_user", end, after=True, threaded=True)
    response = exchange(oauth_app.test_client(), code, verifier)
    meanwhile.finish()
    assert response.status_code in (200, 400), response.get_data(as_text=True)[:500]
    if response.status_code == 200:
        # The change waited for the tokens, then ended them with the rest.
        tokens = response.get_json()
        assert _introspect(oauth_app, tokens["access_token"]) == {"active": False}
        assert _introspect(oauth_app, tokens["refresh_token"]) == {"active": False}
    else:
        assert response.get_json()["error"] == "invalid_grant"
    with oauth_app.extensions["srcore"].db.transaction() as session:
        user = session.get(User, alice.id)
        assert (user is None) == (what == "deleted")


# -- refresh tokens ----------------------------------------------------------------------------


def test_a_refresh_racing_the_revocation_of_its_grant_issues_nothing(
    oauth_app: Any, browser: Any, alice: Any, meanwhile: Meanwhile
) -> None:
    """The user revoked the application after the refresh token was read as live: a new
    pair was written for the revoked grant and answered 200."""
    from meta.oauth.models import RefreshToken
    from meta.oauth.pats import revoke_user_client
    from meta.oauth.server import RefreshTokenGrant

    from srcore.db import session as db_session

    tokens = _tokens(browser)

    def revoke() -> None:
        with oauth_app.app_context():
            revoke_user_client(alice.id, "todo")
            db_session.commit()

    before = _count(oauth_app, RefreshToken)
    meanwhile.at(RefreshTokenGrant, "authenticate_user", revoke, after=True)
    response = _refresh(oauth_app.test_client(), tokens["refresh_token"])
    meanwhile.finish()
    assert response.status_code == 400, response.get_json()
    assert response.get_json()["error"] == "invalid_grant"
    assert _count(oauth_app, RefreshToken) == before


def test_one_refresh_token_used_twice_at_once_is_a_reuse(
    oauth_app: Any, browser: Any, meanwhile: Meanwhile
) -> None:
    """Two refreshes with one token: one pair is issued, and the other is a reuse like a
    later one (RFC 9700 4.14.2), so the grant ends. It was refused without ending
    anything: whoever won, an attacker holding a stolen token included, kept the grant."""
    from meta.oauth.models import RefreshToken
    from meta.oauth.server import RefreshTokenGrant

    tokens = _tokens(browser)
    grant = _grant_of(oauth_app, tokens["access_token"])
    other = oauth_app.test_client()
    before = _count(oauth_app, RefreshToken)
    meanwhile.at(
        RefreshTokenGrant,
        "authenticate_user",
        lambda: _refresh(other, tokens["refresh_token"]),
        after=True,
    )
    second = _refresh(oauth_app.test_client(), tokens["refresh_token"])
    [first] = meanwhile.finish()
    assert first.status_code == 200, first.get_json()
    assert second.status_code == 400 and second.get_json()["error"] == "invalid_grant"
    assert _count(oauth_app, RefreshToken) == before + 1  # one new pair, no more
    issued = first.get_json()
    assert _introspect(oauth_app, issued["access_token"]) == {"active": False}
    assert _introspect(oauth_app, issued["refresh_token"]) == {"active": False}
    assert ("grant", grant) in events_in_db(oauth_app)


@pytest.mark.parametrize("what", ["deleted", "suspended"])
def test_an_account_ended_during_a_refresh_gets_no_tokens(
    oauth_app: Any, browser: Any, alice: Any, meanwhile: Meanwhile, what: str
) -> None:
    from meta import logic
    from meta.models import User
    from meta.oauth.server import RefreshTokenGrant

    from srcore.db import session as db_session

    tokens = _tokens(browser)

    def end() -> None:
        with oauth_app.app_context():
            user = db_session.get(User, alice.id)
            if what == "deleted":
                logic.delete_user(db_session, user)
            else:
                logic.suspend(db_session, user, "spam")
            db_session.commit()

    meanwhile.at(RefreshTokenGrant, "authenticate_user", end, after=True)
    response = _refresh(oauth_app.test_client(), tokens["refresh_token"])
    meanwhile.finish()
    assert response.status_code == 400, response.get_data(as_text=True)[:500]
    assert response.get_json()["error"] == "invalid_grant"
