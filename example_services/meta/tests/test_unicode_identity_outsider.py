"""Two people meet through meta's names: one mailbox spelled another way, a password typed
on another keyboard, a username in other letters.

- An address is one mailbox however it is typed (case, the domain's Unicode or ASCII form,
  an accent composed or decomposed, full-width letters, a fully qualified domain's dot):
  one account per mailbox, found by any spelling at login and for a reset, stored and
  mailed in one form. A look-alike in another script is another mailbox, which gets its
  own mail only.
- A password hashed before passwords were normalised logs in composed or decomposed, and
  its hash becomes one of the normal form.
- A username is lower-case ASCII: other letters, invisible and bidirectional characters
  are refused, so no second account can read as the first.

SQLite and PostgreSQL (the app fixture runs both).
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from meta_constants import FAST_HASHER, PASSWORD
from sqlalchemy import select

NFC_LOCAL = unicodedata.normalize("NFC", "josé")
NFD_LOCAL = unicodedata.normalize("NFD", "josé")
CYRILLIC_A = "\u0430"


def wide(text: str) -> str:
    """*text* in full-width forms, as an East Asian input method may type it."""
    return "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in text)


#: (the first account's address, another spelling of the same mailbox, its stored form).
SAME_MAILBOX = [
    ("alice@example.org", "Alice@EXAMPLE.org", "alice@example.org"),
    ("alice@bücher.example", "alice@xn--bcher-kva.example", "alice@xn--bcher-kva.example"),
    ("alice@xn--bcher-kva.example", "ALICE@BÜCHER.example", "alice@xn--bcher-kva.example"),
    (f"{NFC_LOCAL}@example.org", f"{NFD_LOCAL}@example.org", f"{NFC_LOCAL}@example.org"),
    (f"{NFD_LOCAL}@example.org", f"{NFC_LOCAL}@example.org", f"{NFC_LOCAL}@example.org"),
    ("alice@example.org", wide("alice") + "@" + wide("example.org"), "alice@example.org"),
    ("alice@example.org", "alice\uff20example.org", "alice@example.org"),
    ("alice@example.org", "alice@example.org\uff0e", "alice@example.org"),
]
SAME_IDS = [
    "case",
    "idn-then-ascii",
    "ascii-then-idn",
    "nfc-nfd",
    "nfd-nfc",
    "wide",
    "wide-at",
    "dot",
]


def _users(app: Any) -> list[Any]:
    from meta.models import User

    with app.extensions["srcore"].db.transaction() as session:
        return list(session.scalars(select(User).order_by(User.id)))


def _register(client: Any, csrf: Any, username: str, email: str) -> Any:
    return csrf.post(
        client,
        "/register",
        {"username": username, "email": email, "password": PASSWORD},
        page="/register",
    )


@pytest.mark.parametrize(("first", "second", "stored"), SAME_MAILBOX, ids=SAME_IDS)
def test_one_mailbox_is_one_account_however_it_is_spelled(
    app: Any, client: Any, csrf: Any, first: str, second: str, stored: str
) -> None:
    assert _register(client, csrf, "alice", first).status_code == 302
    response = _register(app.test_client(), csrf, "mallory", second)
    assert response.status_code == 400, response.get_data(as_text=True)
    assert "Another account uses this address." in response.get_data(as_text=True)
    assert [(u.username, u.email) for u in _users(app)] == [("alice", stored)]


@pytest.mark.parametrize(("first", "second", "stored"), SAME_MAILBOX, ids=SAME_IDS)
def test_the_command_line_refuses_another_spelling_of_a_taken_address(
    app: Any, srcore_database: Any, accounts: Any, first: str, second: str, stored: str
) -> None:
    from click.testing import CliRunner
    from meta.admin.cli import main

    accounts.make("alice", email=first)
    result = CliRunner().invoke(
        main,
        [
            "create-user",
            "mallory",
            second,
            "--password-stdin",
            "--config",
            str(srcore_database.config_path),
        ],
        input=PASSWORD + "\n",
    )
    assert result.exit_code == 1, result.output
    assert f"another account uses {stored}" in result.output
    assert [u.username for u in _users(app)] == ["alice"]


@pytest.mark.parametrize(("first", "second", "stored"), SAME_MAILBOX, ids=SAME_IDS)
def test_login_takes_any_spelling_of_the_address(
    app: Any, client: Any, accounts: Any, login: Any, first: str, second: str, stored: str
) -> None:
    accounts.make("alice", email=first)
    assert login(client, second, PASSWORD).status_code == 302
    assert client.get("/profile").status_code == 200


def test_a_reset_asked_in_another_spelling_is_mailed_to_the_stored_address(
    app: Any, client: Any, accounts: Any, csrf: Any, smtp_sink: Any
) -> None:
    accounts.make("alice", email="alice@bücher.example")
    smtp_sink.clear()
    response = csrf.post(client, "/forgot", {"email": "Alice@XN--BCHER-KVA.example"})
    assert response.status_code == 200
    link = smtp_sink.wait_for_link("alice@xn--bcher-kva.example", "/reset/")
    assert link
    assert [m["To"] for m in smtp_sink.messages] == ["alice@xn--bcher-kva.example"]


def test_a_look_alike_domain_is_another_mailbox_that_gets_only_its_own_mail(
    app: Any, client: Any, csrf: Any, accounts: Any, smtp_sink: Any
) -> None:
    """``\u0430pple.example`` (a Cyrillic a) is another domain: its account is another, kept
    and shown in the ASCII form that tells it apart, and a reset asked for it reaches only
    its own mailbox, never the first account's."""
    alice = accounts.make("alice", email="alice@apple.example")
    look_alike = f"alice@{CYRILLIC_A}pple.example"
    assert _register(client, csrf, "mallory", look_alike).status_code == 302
    mallory = next(u for u in _users(app) if u.username == "mallory")
    assert mallory.email.isascii() and mallory.email.startswith("alice@xn--")
    assert mallory.email != accounts.get(alice.id).email
    smtp_sink.clear()
    csrf.post(app.test_client(), "/forgot", {"email": look_alike})
    smtp_sink.wait_for_link(mallory.email, "/reset/")
    assert smtp_sink.to("alice@apple.example") == []


def test_a_change_of_address_to_another_spelling_of_a_taken_one_sends_no_link(
    app: Any, client: Any, accounts: Any, login: Any, csrf: Any, smtp_sink: Any
) -> None:
    accounts.make("alice", email="alice@xn--bcher-kva.example")
    bob = accounts.make("bob")
    assert login(client, "bob", PASSWORD).status_code == 302
    smtp_sink.clear()
    response = csrf.post(
        client,
        "/email",
        {"email": "ALICE@bücher.example", "current_password": PASSWORD},
        page="/email",
    )
    assert response.status_code == 302, response.get_data(as_text=True)
    assert accounts.get(bob.id).pending_email == "alice@xn--bcher-kva.example"
    smtp_sink.wait(2)
    to_alice = smtp_sink.to("alice@xn--bcher-kva.example")
    assert len(to_alice) == 1 and to_alice[0].links == []


@pytest.mark.parametrize(
    "email", ["a\uff20b@example.org", "alice@exa mple.org", "alice@\u2474.example"]
)
def test_an_address_whose_canonical_form_is_no_address_is_refused(
    app: Any, client: Any, csrf: Any, email: str
) -> None:
    """Its NFKC form holds a second ``@``, a space, or a domain with no ASCII form."""
    response = _register(client, csrf, "alice", email)
    assert response.status_code == 400
    assert "Not a valid email address." in response.get_data(as_text=True)
    assert _users(app) == []


# -- passwords hashed before they were normalised -------------------------------------------

COMPOSED = unicodedata.normalize("NFC", "Crème brûlée à 7 €")
DECOMPOSED = unicodedata.normalize("NFD", COMPOSED)


@pytest.mark.parametrize(
    ("hashed", "typed"),
    [(DECOMPOSED, COMPOSED), (COMPOSED, DECOMPOSED), (DECOMPOSED, DECOMPOSED)],
    ids=["decomposed-then-composed", "composed-then-decomposed", "as-then"],
)
def test_an_old_hash_logs_in_from_any_keyboard_and_becomes_a_normal_one(
    app: Any, client: Any, accounts: Any, login: Any, hashed: str, typed: str
) -> None:
    from argon2 import PasswordHasher

    hasher = PasswordHasher(**FAST_HASHER)
    alice = accounts.make("alice", password_hash=hasher.hash(hashed))
    assert login(client, "alice", typed).status_code == 302
    rehashed = accounts.get(alice.id).password_hash
    passwords = app.extensions["meta"].passwords
    assert passwords.hashed_normal(rehashed, typed)
    # From now on the full-width and the other forms log in too.
    for form in (COMPOSED, DECOMPOSED):
        assert login(app.test_client(), "alice", form).status_code == 302


def test_an_old_hash_is_still_the_current_password_of_a_change(
    app: Any, client: Any, accounts: Any, login: Any, csrf: Any
) -> None:
    from argon2 import PasswordHasher

    hasher = PasswordHasher(**FAST_HASHER)
    alice = accounts.make("alice", password_hash=hasher.hash(DECOMPOSED))
    client_page = app.test_client()
    assert login(client_page, "alice", DECOMPOSED).status_code == 302
    # Another old hash, the login having replaced the first one.
    with app.extensions["srcore"].db.transaction() as session:
        from meta.models import User

        session.get(User, alice.id).password_hash = hasher.hash(DECOMPOSED)
    new = "a new password of mine"
    response = csrf.post(
        client_page,
        "/password",
        {"current_password": COMPOSED, "password": new},
        page="/password",
    )
    assert response.status_code == 302, response.get_data(as_text=True)
    assert login(app.test_client(), "alice", new).status_code == 302


def test_a_wrong_password_matches_in_no_form() -> None:
    from argon2 import PasswordHasher
    from meta.logic import Passwords

    passwords = Passwords(PasswordHasher(**FAST_HASHER))
    stored = PasswordHasher(**FAST_HASHER).hash(DECOMPOSED)
    assert not passwords.verify(stored, COMPOSED.replace("è", "e"))
    assert not passwords.verify(None, COMPOSED)
    assert passwords.verify(stored, COMPOSED) and not passwords.hashed_normal(stored, COMPOSED)
    normal = passwords.hash(COMPOSED)
    assert passwords.verify(normal, DECOMPOSED) and passwords.hashed_normal(normal, DECOMPOSED)


# -- usernames -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "Alice",
        "ALICE",
        f"{CYRILLIC_A}lice",
        "ali\u200bce",
        "alice\u200d",
        "\u202eecila",
        "alice\u2066",
        wide("alice"),
        "ali\u0307ce",
        "al\u0131ce",
    ],
)
def test_no_second_account_reads_as_the_first(
    app: Any, client: Any, csrf: Any, accounts: Any, name: str
) -> None:
    accounts.make("alice")
    response = _register(client, csrf, name, "mallory@example.org")
    assert response.status_code == 400, name
    assert [u.username for u in _users(app)] == ["alice"]


@pytest.mark.parametrize("typed", ["Alice", " ALICE ", wide("alice"), wide("ALICE")])
def test_login_takes_the_username_in_any_case_or_width(
    app: Any, client: Any, accounts: Any, login: Any, typed: str
) -> None:
    accounts.make("alice")
    assert login(client, typed, PASSWORD).status_code == 302


def test_failed_logins_of_one_unknown_name_share_a_counter_whatever_its_spelling() -> None:
    from meta.logic import login_text, normalize_email

    spellings = [
        "Nobody@Bücher.example",
        "nobody@xn--bcher-kva.example",
        wide("nobody@bücher.example"),
    ]
    assert len({normalize_email(login_text(s)) for s in spellings}) == 1


# -- stored addresses from before ------------------------------------------------------------


def _target(url: str) -> Any:
    import meta
    from meta.models import Base

    from srcore import migrate

    return migrate.MigrationTarget(
        service_id="meta",
        database_url=url,
        metadata=Base.metadata,
        versions_dir=Path(meta.__file__).parent / "migrations" / "versions",
    )


def _database(srcore_backend: str, tmp_path: Path) -> str:
    from srcore.testdb import create_test_database

    if srcore_backend == "postgresql":
        return create_test_database()
    return f"sqlite:///{tmp_path / 'meta.db'}"


def _old_rows(url: str, rows: list[tuple[str, str, str | None]]) -> dict[str, int]:
    """Accounts with addresses stored as before (stripped and lower-cased only), and a
    confirmation link mailed to each; the database is then at 0008."""
    from datetime import timedelta

    from meta.logic import create_user
    from meta.models import EmailToken, TokenPurpose, User
    from sqlalchemy import create_engine
    from sqlalchemy.orm import Session

    from srcore import migrate
    from srcore.db import utcnow

    target = _target(url)
    migrate.upgrade_all(target)
    engine = create_engine(url)
    ids = {}
    try:
        with Session(engine) as session, session.begin():
            for name, email, pending in rows:
                user = create_user(session, username=name, email="x@example.org", password_hash="x")
                session.flush()
                user.email, user.pending_email = email, pending
                ids[name] = user.id
                session.add(
                    EmailToken(
                        user_id=user.id,
                        purpose=TokenPurpose.confirm,
                        token_hash=f"{user.id:064x}",
                        email=email,
                        expires=utcnow() + timedelta(days=1),
                    )
                )
            session.flush()
            assert (
                session.scalar(select(User.email).where(User.id == ids[rows[0][0]])) == rows[0][1]
            )
    finally:
        engine.dispose()
    migrate.downgrade(target, "0008_list_indexes")
    return ids


def test_the_migration_rewrites_stored_addresses_in_their_canonical_form(
    srcore_backend: str, tmp_path: Path
) -> None:
    from meta.logic import find_login
    from meta.models import EmailToken, User
    from sqlalchemy import create_engine
    from sqlalchemy.orm import Session

    from srcore import migrate
    from srcore.testdb import drop_test_database

    url = _database(srcore_backend, tmp_path)
    try:
        ids = _old_rows(
            url,
            [
                ("alice", "alice@bücher.example", None),
                ("bob", f"{NFD_LOCAL}@example.org", "bob@straße.example"),
                ("carol", "carol@example.org", None),
            ],
        )
        migrate.upgrade_all(_target(url))
        engine = create_engine(url)
        try:
            with Session(engine) as session:
                got = {
                    u.username: (u.email, u.pending_email) for u in session.scalars(select(User))
                }
                assert got == {
                    "alice": ("alice@xn--bcher-kva.example", None),
                    "bob": (f"{NFC_LOCAL}@example.org", "bob@xn--strae-oqa.example"),
                    "carol": ("carol@example.org", None),
                }
                tokens = {t.user_id: t.email for t in session.scalars(select(EmailToken))}
                assert tokens[ids["alice"]] == "alice@xn--bcher-kva.example"
                assert tokens[ids["bob"]] == f"{NFC_LOCAL}@example.org"
                for typed, name in (
                    ("ALICE@bücher.example", "alice"),
                    (f"{NFD_LOCAL}@Example.org", "bob"),
                ):
                    found = find_login(session, typed)
                    assert found is not None and found.username == name
        finally:
            engine.dispose()
        assert migrate.pending_changes(_target(url)) == []
    finally:
        if srcore_backend == "postgresql":
            drop_test_database(url)


def test_the_migration_names_accounts_that_share_a_mailbox(
    srcore_backend: str, tmp_path: Path
) -> None:
    from srcore import migrate
    from srcore.testdb import drop_test_database

    url = _database(srcore_backend, tmp_path)
    try:
        _old_rows(
            url,
            [
                ("alice", "alice@bücher.example", None),
                ("mallory", "alice@xn--bcher-kva.example", None),
            ],
        )
        with pytest.raises(RuntimeError) as raised:
            migrate.upgrade_all(_target(url))
        message = str(raised.value)
        assert "alice@bücher.example and alice@xn--bcher-kva.example" in message
        assert migrate.current(_target(url))["meta"] == "0008_list_indexes"
    finally:
        if srcore_backend == "postgresql":
            drop_test_database(url)


# -- in a browser ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def served_meta(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """meta under gunicorn on a fresh SQLite database (no accounts): its URL and config."""
    from srcore import migrate
    from srcore.app import migration_target
    from srcore.testing import free_port, run_service, write_config

    tmp = tmp_path_factory.mktemp("unicode-browser")
    port = free_port()
    config = write_config(
        tmp / "config.ini",
        service_id="meta",
        database_url=f"sqlite:///{tmp / 'meta.db'}",
        origin=f"http://127.0.0.1:{port}",
    )
    migrate.upgrade_all(migration_target("meta", config))
    with run_service("meta", config, port=port) as url:
        yield url, config


def _fill_register(page: Any, base: str, username: str, email: str) -> None:
    page.goto(base + "/register")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Email address").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Register").click()
    page.wait_for_load_state()


@pytest.mark.browser
@pytest.mark.slow
def test_chromium_sends_the_ascii_domain_and_the_owner_logs_in_with_the_typed_one(
    served_meta: tuple[str, Path],
) -> None:
    """Chromium's email field sends ``bücher.example`` as ``xn--bcher-kva.example``; the
    login field is plain text and sends what was typed. The owner logs in with the address
    as they typed it at registration, and a second registration of the same mailbox in
    its other form is refused."""
    import meta
    from meta.models import User

    from srcore.testing import launch_chromium

    base, config = served_meta
    with launch_chromium() as browser:
        page = browser.new_page()
        _fill_register(page, base, "alice", "alice@bücher.example")
        context = browser.new_context()
        page = context.new_page()
        page.goto(base + "/login")
        page.get_by_label("Username or email").fill("Alice@Bücher.example")
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Log in").click()
        page.wait_for_url(lambda url: "/login" not in url)
        assert "Logged in as alice" in page.content()
        context.close()
        page = browser.new_context().new_page()
        _fill_register(page, base, "mallory", "Alice@XN--BCHER-KVA.example")
        assert "Another account uses this address." in page.content()
    app = meta.create_app(config=config)
    try:
        with app.extensions["srcore"].db.transaction() as session:
            rows = [(u.username, u.email) for u in session.scalars(select(User))]
    finally:
        app.extensions["srcore"].db.dispose()
    assert rows == [("alice", "alice@xn--bcher-kva.example")]
