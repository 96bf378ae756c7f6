"""Registration, confirmation, login and logout through meta's pages."""

from __future__ import annotations

import time
from typing import Any

import pytest
from argon2 import PasswordHasher
from meta.models import EmailToken, User
from sqlalchemy import select

from srcore.db import UserType

#: The password of the accounts the ``accounts`` fixture makes.
PASSWORD = "correct horse battery"
#: The cheap argon2 parameters the test app uses (see conftest).
FAST_HASHER = {"time_cost": 1, "memory_cost": 64, "parallelism": 1}


def _users(app: Any) -> list[User]:
    with app.extensions["srcore"].db.transaction() as session:
        return list(session.scalars(select(User).order_by(User.id)))


def test_register_confirm_by_mail(app: Any, client: Any, csrf: Any, smtp_sink: Any) -> None:
    response = csrf.post(
        client,
        "/register",
        {"username": "Alice", "email": "Alice@Example.org", "password": PASSWORD},
    )
    assert response.status_code == 302, response.get_data(as_text=True)
    assert response.headers["Location"] == "/profile"
    (user,) = _users(app)
    assert (user.username, user.email, user.user_type) == (
        "alice",
        "alice@example.org",
        UserType.unconfirmed,
    )
    assert user.password_hash.startswith("$argon2id$")
    assert PASSWORD not in user.password_hash

    (message,) = smtp_sink.to("alice@example.org")
    assert "Confirm your email address" in message["Subject"]
    assert message["From"] == "Test network <noreply@example.org>"
    link = smtp_sink.last_link("alice@example.org", "/confirm/")
    secret = link.rsplit("/", 1)[1]
    with app.extensions["srcore"].db.transaction() as session:
        stored = session.scalars(select(EmailToken.token_hash)).all()
    assert secret not in stored and len(stored) == 1

    page = client.get("/profile").get_data(as_text=True)
    assert "unconfirmed" in page
    response = client.get(link)
    assert response.status_code == 302
    (user,) = _users(app)
    assert user.user_type == UserType.active
    assert user.email_confirmed_at is not None
    # A link works once.
    assert client.get(link).status_code == 404


def test_confirm_link_works_logged_out_and_expires(
    app: Any, client: Any, csrf: Any, smtp_sink: Any
) -> None:
    csrf.post(
        client, "/register", {"username": "bob", "email": "bob@example.org", "password": PASSWORD}
    )
    link = smtp_sink.last_link("bob@example.org", "/confirm/")
    other = app.test_client()
    assert other.get("/confirm/not-a-token").status_code == 404
    from datetime import timedelta

    from srcore.db import utcnow

    with app.extensions["srcore"].db.transaction() as session:
        token = session.scalar(select(EmailToken))
        token.expires = utcnow() - timedelta(seconds=1)
    assert other.get(link).status_code == 404
    with app.extensions["srcore"].db.transaction() as session:
        token = session.scalar(select(EmailToken))
        token.expires = utcnow() + timedelta(hours=1)
    response = other.get(link)
    assert response.status_code == 302
    assert response.headers["Location"] == "/login"


def test_resend_confirmation(app: Any, client: Any, csrf: Any, smtp_sink: Any) -> None:
    csrf.post(
        client, "/register", {"username": "bob", "email": "bob@example.org", "password": PASSWORD}
    )
    first = smtp_sink.last_link("bob@example.org", "/confirm/")
    response = csrf.post(client, "/confirm/resend", {})
    assert response.status_code == 302
    second = smtp_sink.last_link("bob@example.org", "/confirm/")
    assert first != second
    assert client.get(first).status_code == 404  # replaced by the new one
    assert client.get(second).status_code == 302


def test_resending_confirmations_is_rate_limited(
    app: Any, client: Any, csrf: Any, smtp_sink: Any
) -> None:
    """The address of an unconfirmed account may be anyone's: asking for links again and
    again does not flood it."""
    csrf.post(
        client,
        "/register",
        {"username": "bob", "email": "victim@example.org", "password": PASSWORD},
    )
    statuses = [csrf.post(client, "/confirm/resend", {}).status_code for _ in range(6)]
    assert statuses == [302] * 5 + [429]
    assert len(smtp_sink.to("victim@example.org")) == 1 + 5  # the first link, then five more


@pytest.mark.parametrize(
    ("username", "reason"),
    [
        ("a", "2 to 30"),
        ("x" * 31, "2 to 30"),
        ("1abc", "starts with a letter"),
        ("_abc", "starts with a letter"),
        ("ab.c", "only lower-case"),
        ("ab c", "only lower-case"),
        ("admin", "reserved"),
        ("meta", "reserved"),
        ("root", "reserved"),
    ],
)
def test_register_username_rules(
    app: Any, client: Any, csrf: Any, username: str, reason: str
) -> None:
    response = csrf.post(
        client, "/register", {"username": username, "email": "x@example.org", "password": PASSWORD}
    )
    assert response.status_code == 400
    assert reason in response.get_data(as_text=True)
    assert _users(app) == []


def test_register_refuses_taken_names_short_passwords(
    app: Any, client: Any, csrf: Any, accounts: Any
) -> None:
    accounts.make("alice")
    response = csrf.post(
        client,
        "/register",
        {"username": "alice", "email": "ALICE@example.org", "password": "short"},
    )
    text = response.get_data(as_text=True)
    assert response.status_code == 400
    assert "This username is taken." in text
    assert "Another account uses this address." in text
    assert "Use at least 10 characters." in text
    response = csrf.post(
        client, "/register", {"username": "bobby", "email": "b@example.org", "password": "bobby"}
    )
    assert response.status_code == 400
    assert len(_users(app)) == 1


def test_registration_closed(
    srcore_database: Any, monkeypatch: pytest.MonkeyPatch, csrf: Any
) -> None:
    import meta

    monkeypatch.setenv("SRCORE__META__REGISTRATION", "closed")
    closed = meta.create_app(config=srcore_database.config_path)
    try:
        client = closed.test_client()
        assert client.get("/register").status_code == 403
        response = csrf.post(
            client, "/register", {"username": "eve", "email": "e@example.org", "password": PASSWORD}
        )
        assert response.status_code == 403
        assert "Registration is closed" in response.get_data(as_text=True)
    finally:
        closed.extensions["srcore"].db.dispose()


def test_ids_are_never_reused(app: Any, accounts: Any) -> None:
    first = accounts.make("first")
    second = accounts.make("second")
    assert second.id > first.id
    with app.extensions["srcore"].db.transaction() as session:
        session.delete(session.get(User, second.id))
    third = accounts.make("third")
    assert third.id > second.id


def test_login_with_username_or_email(app: Any, client: Any, csrf: Any, accounts: Any) -> None:
    alice = accounts.make("alice")
    response = csrf.post(client, "/login", {"login": "alice", "password": PASSWORD})
    assert response.status_code == 302
    assert response.headers["Location"] == "/profile"
    assert "alice" in client.get("/profile").get_data(as_text=True)
    assert accounts.get(alice.id).last_login_at is not None
    csrf.post(client, "/logout", {})
    assert client.get("/profile").status_code == 302

    response = csrf.post(
        client, "/login?next=/email", {"login": "ALICE@example.org", "password": PASSWORD}
    )
    assert response.headers["Location"] == "/email"


@pytest.mark.parametrize("target", ["//evil.example/", "https://evil.example/", "/\\evil.example"])
def test_login_next_is_local_only(client: Any, accounts: Any, login: Any, target: str) -> None:
    accounts.make("alice")
    response = login(client, path="/login?next=" + target)
    assert response.headers["Location"] == "/profile"


def test_login_failure_is_generic(app: Any, client: Any, accounts: Any, login: Any) -> None:
    accounts.make("alice")
    wrong = login(client, "alice", "not the password")
    unknown = login(client, "nobody", "not the password")
    unknown_mail = login(client, "nobody@example.org", "not the password")
    for response in (wrong, unknown, unknown_mail):
        assert response.status_code == 400
        assert "Incorrect username or password." in response.get_data(as_text=True)
    assert client.get("/profile").status_code == 302


def test_unknown_account_costs_a_verification(app: Any, csrf: Any, accounts: Any) -> None:
    calls: list[str] = []
    passwords = app.extensions["meta"].passwords

    class Counting(PasswordHasher):
        def verify(self, hash: str | bytes, password: str | bytes) -> bool:
            calls.append("verify")
            return super().verify(hash, password)

    passwords.hasher = Counting(**FAST_HASHER)
    passwords._dummy = None
    client = app.test_client()
    token = csrf.token(client, "/login")
    calls.clear()
    client.post(
        "/login", data={"login": "ghost", "password": "whatever it is", "csrf_token": token}
    )
    assert calls == ["verify"]


def _frozen(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Stop the clock the throttles (and limits under them) read; tests move it."""
    clock = [time.time()]
    monkeypatch.setattr(time, "time", lambda: clock[0])
    return clock


def test_lockout_after_max_failures(
    app: Any, accounts: Any, login: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    accounts.make("alice")
    clock = _frozen(monkeypatch)

    client = app.test_client()
    for name in ("alice", "ghost"):
        for _ in range(5):
            response = login(client, name, "wrong password!")
            assert response.status_code == 400
            clock[0] += 100  # past every growing delay, within the lockout window
        locked = login(client, name, PASSWORD if name == "alice" else "x" * 12)
        assert locked.status_code == 429
        text = locked.get_data(as_text=True)
        assert "Too many failed attempts" in text
        assert "Incorrect" not in text
        assert int(locked.headers["Retry-After"]) > 0
    # The same answer for an account that exists and one that does not.
    clock[0] += 15 * 60 + 1
    assert login(client, "alice", PASSWORD).status_code == 302


def test_growing_delay_before_lockout(
    app: Any, accounts: Any, login: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    accounts.make("alice")
    clock = _frozen(monkeypatch)
    client = app.test_client()
    for _ in range(3):
        assert login(client, "alice", "wrong password!").status_code == 400
    response = login(client, "alice", PASSWORD)
    assert response.status_code == 429
    assert response.headers["Retry-After"] == "1"
    clock[0] += 1
    assert login(client, "alice", PASSWORD).status_code == 302


def test_rate_limit_on_login_posts(app: Any, client: Any, login: Any) -> None:
    app.extensions["meta"].protection = None  # only the plain per-address limit here
    statuses = [login(client, f"user{i}", "wrong password!").status_code for i in range(21)]
    assert statuses[:20] == [400] * 20
    assert statuses[20] == 429
    response = login(client, "user", "wrong password!")
    assert response.status_code == 429
    assert "Too many attempts from your address" in response.get_data(as_text=True)
    assert 0 < int(response.headers["Retry-After"]) <= 60
    # Reading the form is not limited.
    assert client.get("/login").status_code == 200


def test_address_throttle_is_looser_than_the_account_one(
    app: Any, client: Any, accounts: Any, login: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    _frozen(monkeypatch)  # no delay between the attempts
    for i in range(12):
        assert login(client, f"user{i}", "wrong password!").status_code == 400
    response = login(client, "someone-else", "wrong password!")
    assert response.status_code == 429
    assert "Too many failed attempts" in response.get_data(as_text=True)


def test_suspended_account_cannot_log_in(app: Any, client: Any, accounts: Any, login: Any) -> None:
    accounts.make("mallory", user_type=UserType.suspended, suspension_notice="Spam.")
    response = login(client, "mallory", PASSWORD)
    assert response.status_code == 403
    assert "Spam." in response.get_data(as_text=True)
    assert login(client, "mallory", "wrong password!").status_code == 400


def test_rehash_when_parameters_change(app: Any, client: Any, accounts: Any, login: Any) -> None:
    alice = accounts.make("alice")
    old = alice.password_hash
    stronger = {**FAST_HASHER, "time_cost": 2}
    app.extensions["meta"].passwords.hasher = PasswordHasher(**stronger)
    assert login(client, "alice", PASSWORD).status_code == 302
    new = accounts.get(alice.id).password_hash
    assert new != old and "t=2" in new
    # No rehash when nothing changed.
    login(client, "alice", PASSWORD)
    assert accounts.get(alice.id).password_hash == new


def test_logout_needs_post_and_csrf(app: Any, client: Any, csrf: Any, accounts: Any) -> None:
    accounts.make("alice")
    csrf.post(client, "/login", {"login": "alice", "password": PASSWORD})
    assert client.get("/logout").status_code == 405
    assert client.post("/logout").status_code == 400
    assert client.get("/profile").status_code == 200
    response = csrf.post(client, "/logout", {})
    assert response.status_code == 302
    assert client.get("/profile").status_code == 302


def test_logout_sends_the_logged_out_signal(
    app: Any, client: Any, csrf: Any, accounts: Any, login: Any
) -> None:
    from meta import oauth, signals

    seen: list[int] = []

    def receiver(user: Any) -> None:
        seen.append(user.id)

    alice = accounts.make("alice")
    login(client, "alice")
    with signals.logged_out.connected_to(receiver):
        csrf.post(client, "/logout", {})
    assert seen == [alice.id]
    # The OAuth half listens from the moment the app is built.
    assert oauth.on_logout in signals.logged_out.receivers_for(alice)


def test_login_required_pages_send_to_meta_login(client: Any) -> None:
    response = client.get("/email")
    assert response.status_code == 302
    assert response.headers["Location"] == "/login?next=/email"
    response = client.get("/")
    assert response.headers["Location"].startswith("/login")


def test_login_says_who_is_logged_in(client: Any, accounts: Any, login: Any) -> None:
    accounts.make("alice")
    response = login(client, "alice")
    assert response.status_code == 302
    page = client.get(response.headers["Location"]).get_data(as_text=True)
    assert "Logged in as alice." in page


def test_delete_account_sits_in_a_danger_zone_below_the_profile_form(
    client: Any, accounts: Any, login: Any
) -> None:
    accounts.make("alice")
    login(client, "alice")
    page = client.get("/profile").get_data(as_text=True)
    form = page[
        page.index('action="/profile"') : page.index("</form>", page.index('action="/profile"'))
    ]
    assert "Delete account" not in form
    zone = page[page.index('id="danger-zone"') :]
    assert "Danger zone" in zone and 'href="/delete"' in zone
