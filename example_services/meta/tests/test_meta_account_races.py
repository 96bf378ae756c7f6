"""Races on meta's accounts: two registrations of one name or address, an address change
confirmed while another account takes the address, on SQLite and PostgreSQL.

The other request's change runs in a transaction of its own just before the request
under test writes anything, the widest window a concurrent request could hit.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from meta_constants import PASSWORD
from oauth_helpers import oauth_app
from sqlalchemy import create_engine, func, select, text

from srcore.testing import races

__all__ = ["oauth_app"]  # a fixture used by this module


@pytest.fixture
def before_first_write(app: Any) -> Iterator[Callable[[Callable[[], None]], None]]:
    """``before_first_write(change)``: run *change* once, in a transaction of its own,
    just before the next request's first INSERT, UPDATE, DELETE or flush."""
    yield from _before_first_write(app)


@pytest.fixture
def before_first_write_oauth(oauth_app: Any) -> Iterator[Callable[[Callable[[], None]], None]]:
    """:func:`before_first_write` for meta in a network with todo."""
    yield from _before_first_write(oauth_app)


def _before_first_write(app: Any) -> Iterator[Callable[[Callable[[], None]], None]]:
    with races.before_first_write(app) as change_meanwhile:
        yield change_meanwhile


def _accounts_with(app: Any, *, username: str | None = None, email: str | None = None) -> int:
    from meta.models import User

    query = select(func.count()).select_from(User)
    if username is not None:
        query = query.where(User.username == username)
    if email is not None:
        query = query.where(func.lower(User.email) == email)
    with app.extensions["srcore"].db.transaction() as session:
        return int(session.scalar(query) or 0)


@pytest.mark.parametrize("taken", ["username", "email"])
def test_a_name_or_address_registered_meanwhile_is_a_form_error(
    app: Any, accounts: Any, csrf: Any, before_first_write: Any, taken: str
) -> None:
    """Another registration took the name (or address) after this one checked it: the
    insert broke the unique username (a 500), and two accounts shared an address."""
    form = {"username": "carol", "email": "carol@example.org", "password": PASSWORD}
    other = {
        "username": "carol" if taken == "username" else "caroline",
        "email": "carol@example.org" if taken == "email" else "caroline@example.org",
    }
    client = app.test_client()
    token = csrf.token(client, "/register")
    before_first_write(lambda: accounts.make(other["username"], email=other["email"]))
    response = client.post("/register", data={**form, "csrf_token": token})
    assert response.status_code == 400, response.status_code
    page = response.get_data(as_text=True)
    assert "taken" in page or "Another account uses this address" in page
    # Only the other registration's account: this one wrote nothing.
    assert _accounts_with(app, username="carol") == (taken == "username")
    assert _accounts_with(app, email="carol@example.org") == (taken == "email")


def test_an_address_taken_while_a_change_to_it_is_confirmed_is_refused(
    app: Any,
    accounts: Any,
    monkeypatch: pytest.MonkeyPatch,
    before_first_write: Any,
    srcore_backend: str,
) -> None:
    """alice's link to move to an address that carol registered after it was checked:
    both accounts had the address. (On SQLite the request holds the one writer's lock
    from spending the link on, so carol's registration can land only before that.)"""
    from meta import logic
    from meta.models import TokenPurpose, User

    alice = accounts.make("alice")
    with app.extensions["srcore"].db.transaction() as session:
        row = session.get(User, alice.id)
        row.pending_email = "shared@example.org"
        secret = logic.issue_token(
            session,
            row,
            TokenPurpose.change_email,
            email="shared@example.org",
            lifetime=timedelta(hours=1),
        )
    checked = logic.email_taken

    def then_taken(*args: Any, **kwargs: Any) -> bool:
        free = checked(*args, **kwargs)
        monkeypatch.setattr(logic, "email_taken", checked)
        accounts.make("carol", email="shared@example.org")
        return free

    if srcore_backend == "sqlite":
        before_first_write(lambda: accounts.make("carol", email="shared@example.org"))
    else:
        monkeypatch.setattr(logic, "email_taken", then_taken)
    response = app.test_client().get(f"/confirm/{secret}")
    assert 400 <= response.status_code < 500, response.status_code
    assert _accounts_with(app, email="shared@example.org") == 1
    assert accounts.get(alice.id).email == "alice@example.org"


def test_the_migration_names_addresses_two_accounts_share(
    srcore_backend: str, tmp_path: Path
) -> None:
    """Accounts made before the database held one per address may share one: the upgrade
    stops and names it, instead of the database's unique-index failure."""
    import meta
    from meta.models import Base

    from srcore import migrate
    from srcore.testdb import create_test_database, drop_test_database

    url = f"sqlite:///{tmp_path / 'meta.db'}"
    if srcore_backend == "postgresql":
        url = create_test_database()
    target = migrate.MigrationTarget(
        service_id="meta",
        database_url=url,
        metadata=Base.metadata,
        versions_dir=Path(meta.__file__).parent / "migrations" / "versions",
    )
    engine = create_engine(url)
    try:
        migrate.upgrade_all(target)
        migrate.downgrade(target, "0006_oidc")
        with engine.begin() as connection:
            for ident, name, address in [
                (1, "ann", "Twin@example.org"),
                (2, "bea", "twin@example.org"),
            ]:
                connection.execute(
                    text(
                        'INSERT INTO "user" (id, username, email, user_type, password_hash, '
                        "created, updated) VALUES (:i, :n, :e, 'active', 'x', :t, :t)"
                    ),
                    {"i": ident, "n": name, "e": address, "t": datetime(2026, 1, 1)},
                )
        with pytest.raises(RuntimeError, match=r"twin@example\.org"):
            migrate.upgrade_all(target)
        with engine.begin() as connection:
            connection.execute(text('DELETE FROM "user" WHERE id = 2'))
        migrate.upgrade_all(target)
        assert migrate.pending_changes(target) == []
    finally:
        engine.dispose()
        if srcore_backend == "postgresql":
            drop_test_database(url)


def _logged_in(client: Any) -> bool:
    return bool(client.get("/profile").status_code == 200)


@pytest.mark.parametrize("what", ["suspended", "deleted", "password changed"])
def test_an_account_changed_while_it_logs_in_keeps_no_session(
    app: Any, accounts: Any, csrf: Any, monkeypatch: pytest.MonkeyPatch, what: str
) -> None:
    """An admin suspends alice (or she is deleted, or her password changes elsewhere)
    while her login's password is being checked: the login went on from the account as
    it was read, and its new session outlived the change."""
    from meta import logic
    from meta.models import User

    alice = accounts.make("alice")
    passwords = app.extensions["meta"].passwords
    verify = passwords.verify

    def then_changed(*args: Any, **kwargs: Any) -> bool:
        ok = verify(*args, **kwargs)
        monkeypatch.setattr(passwords, "verify", verify)
        with app.extensions["srcore"].db.transaction() as session:
            user = session.get(User, alice.id)
            if what == "suspended":
                logic.suspend(session, user, "spam")
            elif what == "deleted":
                logic.delete_user(session, user)
            else:
                logic.set_password(session, user, passwords.hash("another passphrase"))
        return bool(ok)

    monkeypatch.setattr(passwords, "verify", then_changed)
    client = app.test_client()
    response = csrf.post(client, "/login", {"login": "alice", "password": PASSWORD})
    assert response.status_code < 500, response.status_code
    assert not _logged_in(client)


def _mailed_reset(app: Any, user_id: int) -> str:
    from meta import logic
    from meta.models import TokenPurpose, User

    with app.extensions["srcore"].db.transaction() as session:
        row = session.get(User, user_id)
        return logic.issue_token(
            session, row, TokenPurpose.reset, email=row.email, lifetime=timedelta(hours=1)
        )


@pytest.mark.parametrize("page", ["/password", "/delete"])
def test_a_reset_landing_during_a_password_checked_change_wins(
    app: Any, accounts: Any, csrf: Any, monkeypatch: pytest.MonkeyPatch, page: str
) -> None:
    """Someone logged in with alice's old password changes it (or deletes the account)
    while alice takes it back with a mailed reset link. Their request checked the old
    password before the reset committed, then wrote: the reset was undone (the old
    holder's new password, and a session) or the account deleted."""
    from srcore.testing import log_in_client

    alice = accounts.make("alice")
    intruder = log_in_client(app.test_client(), alice)
    form = {"current_password": PASSWORD, "password": "the intruder's own passphrase"}
    if page == "/delete":
        form = {"current_password": PASSWORD, "password": PASSWORD, "confirm": "alice"}
    token = csrf.token(intruder, page)
    link = _mailed_reset(app, alice.id)
    owner = app.test_client()
    owner_token = csrf.token(owner, f"/reset/{link}")
    passwords = app.extensions["meta"].passwords
    verify = passwords.verify

    def then_reset(*args: Any, **kwargs: Any) -> bool:
        ok = verify(*args, **kwargs)
        monkeypatch.setattr(passwords, "verify", verify)
        done = owner.post(
            f"/reset/{link}", data={"password": "alice's new passphrase", "csrf_token": owner_token}
        )
        assert done.status_code == 302, done.status_code
        return bool(ok)

    monkeypatch.setattr(passwords, "verify", then_reset)
    response = intruder.post(page, data={**form, "csrf_token": token})
    assert response.status_code == 400, response.status_code
    assert not _logged_in(intruder)
    assert _logged_in(owner)
    user = accounts.get(alice.id)
    assert user is not None and passwords.verify(user.password_hash, "alice's new passphrase")


def test_one_consent_approved_twice_at_once_records_it_once(
    oauth_app: Any, accounts: Any, before_first_write_oauth: Any
) -> None:
    """A double click on "Authorize": both requests found no consent remembered, and the
    second insert broke the unique (user, client, scope) of the first (a 500)."""
    import re

    from meta.oauth.models import Consent
    from oauth_helpers import authorize_url, pkce, query_of, register_client

    from srcore.testing import log_in_client

    gadget = register_client(oauth_app, accounts, confidential=True)
    alice = accounts.make("alice")
    browser = log_in_client(oauth_app.test_client(), alice)
    url = authorize_url(gadget["id"], "https://app.example/cb", challenge=pkce()[1])
    page = browser.get(url).get_data(as_text=True)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert token, page[:500]

    def other_click() -> None:
        with oauth_app.extensions["srcore"].db.transaction() as session:
            session.add(Consent(user_id=alice.id, client_id=gadget["id"], scope="meta/profile:RO"))

    before_first_write_oauth(other_click)
    response = browser.post(url, data={"decision": "approve", "csrf_token": token.group(1)})
    assert response.status_code == 302, response.status_code
    assert "code" in query_of(response.headers["Location"])
    with oauth_app.extensions["srcore"].db.transaction() as session:
        count = session.scalar(
            select(func.count()).select_from(Consent).where(Consent.user_id == alice.id)
        )
    assert count == 1


def test_two_factor_turned_on_in_two_tabs_at_once_keeps_the_first(
    app: Any, accounts: Any, csrf: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both tabs found the app off; the second replaced the first's app and recovery
    codes, just shown to the user, with its own."""
    import pyotp
    from meta import totp
    from meta.twofactor import SETUP_SECRET

    from srcore.testing import log_in_client

    alice = accounts.make("alice")
    client = log_in_client(app.test_client(), alice)
    token = csrf.token(client, "/security/two-factor")
    with client.session_transaction() as cookie:
        secret = cookie[SETUP_SECRET]
    first = pyotp.random_base32(32)
    passwords = app.extensions["meta"].passwords
    verify = passwords.verify

    def then_other_tab(*args: Any, **kwargs: Any) -> bool:
        ok = verify(*args, **kwargs)
        monkeypatch.setattr(passwords, "verify", verify)
        with app.extensions["srcore"].db.transaction() as session:
            totp.add_factor(session, alice.id, first, 0)
        return bool(ok)

    monkeypatch.setattr(passwords, "verify", then_other_tab)
    response = client.post(
        "/security/two-factor",
        data={
            "current_password": PASSWORD,
            "code": pyotp.TOTP(secret).now(),
            "csrf_token": token,
        },
    )
    # The page as it now is, saying why this tab's app was not turned on.
    assert response.status_code == 409, response.status_code
    assert "already on for your account" in response.get_data(as_text=True)
    with app.extensions["srcore"].db.transaction() as session:
        factor = totp.factor_of(session, alice.id)
        assert factor is not None and factor.secret == first
