"""What a second user, a double click or a racing operator meets when a unique value or a
row another request wrote gets in the way: a message naming the clash, never srcore's
generic 409 nor a database error, and nothing half-written.

The other request's change is replayed with :func:`srcore.testing.races.before_first_write`
just before the write it collides with, on SQLite and PostgreSQL.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterator
from typing import Any

import pyotp
import pytest
from click.testing import CliRunner
from meta_constants import PASSWORD
from passkey_helpers import SoftKey
from sqlalchemy import func, select

from srcore.testing import log_in_client, races

_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
JSON = {"Accept": "application/json"}


def _token(client: Any, path: str) -> str:
    match = _CSRF.search(client.get(path).get_data(as_text=True))
    assert match, path
    return match.group(1)


def _soft_key(app: Any) -> SoftKey:
    from meta.passkeys import RelyingParty

    rp = RelyingParty.from_origin(str(app.extensions["srcore"].section["origin"]), "x")
    return SoftKey(rp_id=rp.id, origin=rp.origin)


def _options(client: Any, name: str = "laptop") -> dict[str, Any]:
    response = client.post(
        "/security/passkeys/options",
        data={
            "name": name,
            "current_password": PASSWORD,
            "csrf_token": _token(client, "/security"),
        },
        headers=JSON,
    )
    assert response.status_code == 200, response.get_data(as_text=True)
    options: dict[str, Any] = response.get_json()
    return options


def _answer(client: Any, answer: dict[str, Any]) -> Any:
    headers = {**JSON, "X-CSRFToken": _token(client, "/security")}
    return client.post("/security/passkeys", json=answer, headers=headers)


def _keys(app: Any, credential_id: str | None = None) -> list[tuple[int, str]]:
    from meta.models import PasskeyCredential

    query = select(PasskeyCredential.user_id, PasskeyCredential.name)
    if credential_id is not None:
        query = query.where(PasskeyCredential.credential_id == credential_id)
    with app.extensions["srcore"].db.transaction() as session:
        return [(row[0], row[1]) for row in session.execute(query)]


def _store_key(app: Any, user_id: int, key: SoftKey, name: str) -> None:
    """The other tab's (or account's) registration of *key*, committed."""
    from meta.models import PasskeyCredential

    with app.extensions["srcore"].db.transaction() as session:
        session.add(
            PasskeyCredential(
                user_id=user_id,
                credential_id=key.id,
                public_key=b"\x00" * 8,
                sign_count=0,
                user_handle="h" * 43,
                name=name,
                transports="internal",
                backup_eligible=False,
            )
        )


@pytest.fixture
def meanwhile(app: Any) -> Iterator[Callable[..., None]]:
    """``meanwhile(change, at=n)``: *change* runs, committed, just before the request's
    *n*-th write (1: its first)."""
    with races.before_first_write(app) as change_meanwhile:

        def schedule(change: Callable[[], None], *, at: int = 1) -> None:
            # The writes pop the last one queued first.
            change_meanwhile(change)
            for _ in range(at - 1):
                change_meanwhile(lambda: None)

        yield schedule


# -- passkeys ---------------------------------------------------------------------------


@pytest.mark.parametrize("whose", ["mine", "another"])
def test_a_passkey_registered_by_another_tab_meanwhile_is_named_not_a_409(
    app: Any, accounts: Any, meanwhile: Any, whose: str
) -> None:
    """Two tabs (or a double click) adding one passkey, or an account adding the key
    another account registered meanwhile: both passed the check, and the second insert
    broke the unique credential id, srcore's generic 409 ("changed by someone else")."""
    alice = accounts.make("alice")
    bob = accounts.make("bob")
    client = log_in_client(app.test_client(), alice)
    key = _soft_key(app)
    answer = key.create(_options(client))
    owner = alice.id if whose == "mine" else bob.id
    # The answer's first write spends its challenge; the second stores the key.
    meanwhile(lambda: _store_key(app, owner, key, "other tab"), at=2)
    response = _answer(client, answer)
    assert response.status_code == 400, response.get_data(as_text=True)
    message = response.get_json()["errors"][0]["reason"]
    assert message.startswith("This passkey is already registered"), message
    expected = "your account" if whose == "mine" else "another account"
    assert expected in message, message
    assert _keys(app, key.id) == [(owner, "other tab")]


def test_a_passkey_already_registered_says_whose_it_is(app: Any, accounts: Any) -> None:
    """A key enrolled again (a script, or a browser ignoring the excluded keys): the
    answer names the account it is registered with, not only that it is."""
    alice = accounts.make("alice")
    bob = accounts.make("bob")
    key = _soft_key(app)
    _store_key(app, bob.id, key, "bob's key")
    client = log_in_client(app.test_client(), alice)
    response = _answer(client, key.create(_options(client)))
    assert response.status_code == 400
    message = response.get_json()["errors"][0]["reason"]
    assert "already registered with another account" in message, message
    _store_key(app, alice.id, mine := _soft_key(app), "laptop")
    response = _answer(client, mine.create(_options(client)))
    assert response.status_code == 400
    message = response.get_json()["errors"][0]["reason"]
    assert "already registered with your account" in message and "laptop" in message, message
    assert len(_keys(app)) == 2


def test_a_passkey_past_the_limit_added_in_another_tab_is_refused(app: Any, accounts: Any) -> None:
    """The limit was checked when the options were asked for: two tabs each at one key
    below it both added theirs, one past the limit."""
    from meta.passkeys_views import MAX_PASSKEYS

    alice = accounts.make("alice")
    for number in range(MAX_PASSKEYS - 1):
        _store_key(app, alice.id, _soft_key(app), f"key {number}")
    first, second = log_in_client(app.test_client(), alice), log_in_client(app.test_client(), alice)
    key_one, key_two = _soft_key(app), _soft_key(app)
    answer_one, answer_two = key_one.create(_options(first)), key_two.create(_options(second))
    assert _answer(first, answer_one).status_code == 200
    response = _answer(second, answer_two)
    assert response.status_code == 400, response.get_data(as_text=True)
    assert f"at most {MAX_PASSKEYS} passkeys" in response.get_json()["errors"][0]["reason"]
    assert len(_keys(app)) == MAX_PASSKEYS


# -- the authenticator app ----------------------------------------------------------------


def _setup(client: Any) -> tuple[str, str]:
    """The setup page's CSRF token and the key it shows, as a tab holds them."""
    from meta.twofactor import SETUP_SECRET

    token = _token(client, "/security/two-factor")
    with client.session_transaction() as cookie:
        return token, cookie[SETUP_SECRET]


def _enable(client: Any, token: str, secret: str) -> Any:
    data = {"current_password": PASSWORD, "code": pyotp.TOTP(secret).now(), "csrf_token": token}
    return client.post("/security/two-factor", data=data)


def _factor_secret(app: Any, user_id: int) -> str | None:
    from meta import totp

    with app.extensions["srcore"].db.transaction() as session:
        factor = totp.factor_of(session, user_id)
        return factor.secret if factor is not None else None


def test_a_second_authenticator_app_is_refused_with_a_message(app: Any, accounts: Any) -> None:
    """The setup page left open in a tab after the app was turned on in another: its form
    went back to the settings page saying nothing, as if the second app were on."""
    alice = accounts.make("alice")
    client = log_in_client(app.test_client(), alice)
    token, secret = _setup(client)
    other = log_in_client(app.test_client(), alice)
    other_token, other_secret = _setup(other)
    assert _enable(other, other_token, other_secret).status_code == 200
    response = _enable(client, token, secret)
    assert response.status_code == 409, response.status_code
    page = response.get_data(as_text=True)
    assert "An authenticator app is already on for your account" in page, page
    assert "turn it off first" in page
    assert _factor_secret(app, alice.id) == other_secret


def test_an_app_turned_on_in_another_tab_during_the_setup_is_named(
    app: Any, accounts: Any, meanwhile: Any, srcore_backend: str
) -> None:
    """The other tab's app landed as this request stored its own: it replaced the app and
    recovery codes the other tab had just shown, or went back to the settings page saying
    nothing. (On SQLite the password check's hold on the account's row takes the one
    writer's lock, so the other tab can land only before it.)"""
    from meta import totp

    alice = accounts.make("alice")
    client = log_in_client(app.test_client(), alice)
    token, secret = _setup(client)
    first = pyotp.random_base32(32)

    def other_tab() -> None:
        with app.extensions["srcore"].db.transaction() as session:
            totp.add_factor(session, alice.id, first, 0)

    # The writes: the account's row held by the password check, then the app stored.
    meanwhile(other_tab, at=1 if srcore_backend == "sqlite" else 2)
    response = _enable(client, token, secret)
    assert response.status_code == 409, response.status_code
    assert "An authenticator app is already on for your account" in response.get_data(as_text=True)
    assert _factor_secret(app, alice.id) == first


# -- meta.admin create-user ---------------------------------------------------------------


@contextlib.contextmanager
def _cli_meanwhile(monkeypatch: pytest.MonkeyPatch, change: Callable[[], None]) -> Iterator[None]:
    """*change* runs, committed, just before the first write of the command's own app."""
    import meta

    made = meta.create_app
    with contextlib.ExitStack() as stack:

        def create_app(*args: Any, **kwargs: Any) -> Any:
            cli_app = made(*args, **kwargs)
            stack.enter_context(races.before_first_write(cli_app))(change)
            return cli_app

        monkeypatch.setattr(meta, "create_app", create_app)
        yield


@pytest.mark.parametrize("clash", ["username", "email"])
def test_create_user_racing_another_creation_names_the_clash(
    app: Any, accounts: Any, srcore_database: Any, monkeypatch: pytest.MonkeyPatch, clash: str
) -> None:
    """Another registration (or a second operator's command) took the name or the address
    after the command checked them: its commit raised the database's IntegrityError, a
    traceback naming a constraint."""
    from meta.admin.cli import main
    from meta.models import User

    other = ("carol", "carolyn@example.org") if clash == "username" else ("cara", "carol@x.org")
    with _cli_meanwhile(monkeypatch, lambda: accounts.make(other[0], email=other[1])):
        result = CliRunner().invoke(
            main,
            [
                "create-user",
                "carol",
                "carol@x.org" if clash == "email" else "carol@example.org",
                "--password-stdin",
                "--config",
                str(srcore_database.config_path),
            ],
            input="correct horse battery staple\n",
        )
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    expected = "the username 'carol' is taken" if clash == "username" else "another account uses"
    assert expected in result.output, result.output
    assert "IntegrityError" not in result.output and "Traceback" not in result.output
    with app.extensions["srcore"].db.transaction() as session:
        assert session.scalar(select(func.count()).select_from(User)) == 1


def test_create_token_for_an_account_deleted_meanwhile_says_so(
    app: Any, accounts: Any, srcore_database: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The account was deleted after the command found it: the token's insert broke its
    foreign key, a traceback."""
    from meta import logic
    from meta.models import User

    alice = accounts.make("alice")

    def deleted() -> None:
        with app.extensions["srcore"].db.transaction() as session:
            row = session.get(User, alice.id)
            logic.delete_user(session, row)

    from meta.admin.cli import main

    with _cli_meanwhile(monkeypatch, deleted):
        result = CliRunner().invoke(
            main,
            [
                "create-token",
                "alice",
                "meta/profile:RO",
                "--config",
                str(srcore_database.config_path),
            ],
        )
    assert result.exit_code == 1, result.output
    assert "changed the account meanwhile" in result.output, result.output
    assert "Traceback" not in result.output
    again = CliRunner().invoke(
        main,
        ["create-token", "alice", "meta/profile:RO", "--config", str(srcore_database.config_path)],
    )
    assert "no account is called 'alice'" in again.output, again.output
