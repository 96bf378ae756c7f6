"""Password reset, change of address, profile, password change and deletion."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from meta.models import EmailToken, User
from sqlalchemy import func, select

from srcore.db import UserType

#: The password of the accounts the ``accounts`` fixture makes.
PASSWORD = "correct horse battery"

NEW_PASSWORD = "a brand new passphrase"


@pytest.fixture
def hooks() -> Iterator[list[tuple[str, int]]]:
    """Record the account signals meta sends, as a connected receiver gets them."""
    from meta import signals

    seen: list[tuple[str, int]] = []
    connected = []
    for signal in (
        signals.logged_out,
        signals.password_changed,
        signals.profile_changed,
        signals.account_suspended,
        signals.account_unsuspended,
        signals.account_deleted,
    ):

        def receiver(user: Any, name: str = signal.name) -> None:
            seen.append((name, user.id))

        signal.connect(receiver)
        connected.append((signal, receiver))
    yield seen
    for signal, receiver in connected:
        signal.disconnect(receiver)


def test_password_reset_by_mail(
    app: Any, client: Any, csrf: Any, accounts: Any, smtp_sink: Any, login: Any, hooks: list
) -> None:
    alice = accounts.make("alice")
    other_browser = app.test_client()
    login(other_browser, "alice")
    assert other_browser.get("/profile").status_code == 200

    response = csrf.post(client, "/forgot", {"email": "ALICE@example.org"})
    assert response.status_code == 200
    assert "we sent it a link" in response.get_data(as_text=True)
    link = smtp_sink.last_link("alice@example.org", "/reset/")

    page = client.get(link)
    assert page.status_code == 200 and "alice" in page.get_data(as_text=True)
    short = csrf.post(client, link, {"password": "short"})
    assert short.status_code == 400
    response = csrf.post(client, link, {"password": NEW_PASSWORD})
    assert response.status_code == 302
    assert response.headers["Location"] == "/profile"
    assert hooks == [("password-changed", alice.id)]
    # The link works once; the old password is gone, the new one works.
    assert client.get(link).status_code == 404
    assert login(app.test_client(), "alice", PASSWORD).status_code == 400
    assert login(app.test_client(), "alice", NEW_PASSWORD).status_code == 302
    # The session started before the change has ended; the one that reset goes on.
    assert other_browser.get("/profile").status_code == 302
    assert client.get("/profile").status_code == 200


def test_forgot_answers_the_same_for_unknown_addresses(
    client: Any, csrf: Any, accounts: Any, smtp_sink: Any
) -> None:
    accounts.make("alice")
    known = csrf.post(client, "/forgot", {"email": "alice@example.org"})
    unknown = csrf.post(client, "/forgot", {"email": "ghost@example.org"})
    assert known.status_code == unknown.status_code == 200
    assert known.get_data(as_text=True).replace("alice", "ghost") == unknown.get_data(as_text=True)
    assert len(smtp_sink.messages) == 1


def test_reset_link_for_suspended_account_does_nothing(
    app: Any, client: Any, csrf: Any, accounts: Any, smtp_sink: Any
) -> None:
    accounts.make("mallory", user_type=UserType.suspended, suspension_notice="No.")
    csrf.post(client, "/forgot", {"email": "mallory@example.org"})
    assert smtp_sink.messages == []
    assert client.get("/reset/made-up-token").status_code == 404


def test_change_email_confirmed_at_new_address(
    app: Any, client: Any, csrf: Any, accounts: Any, smtp_sink: Any, login: Any, hooks: list
) -> None:
    alice = accounts.make("alice")
    accounts.make("bob")
    login(client, "alice")
    # Another account's address: only its mailbox is told (no link), not this page.
    taken = csrf.post(client, "/email", {"email": "bob@example.org", "current_password": PASSWORD})
    assert taken.status_code == 302
    assert "/confirm/" not in smtp_sink.to("bob@example.org")[-1].get_content()
    wrong = csrf.post(client, "/email", {"email": "new@example.org", "current_password": "nope"})
    assert wrong.status_code == 400
    assert "not your current password" in wrong.get_data(as_text=True)

    response = csrf.post(
        client, "/email", {"email": "New@Example.org", "current_password": PASSWORD}
    )
    assert response.status_code == 302
    user = accounts.get(alice.id)
    assert (user.email, user.pending_email) == ("alice@example.org", "new@example.org")
    notice = smtp_sink.to("alice@example.org")[-1]
    assert "new@example.org" in notice.get_content()
    assert "pending" in client.get("/profile").get_data(as_text=True)

    link = smtp_sink.last_link("new@example.org", "/confirm/")
    assert client.get(link).status_code == 302
    user = accounts.get(alice.id)
    assert (user.email, user.pending_email) == ("new@example.org", None)
    assert hooks == [("profile-changed", alice.id)]
    assert login(app.test_client(), "new@example.org").status_code == 302


def test_change_email_can_be_cancelled(
    app: Any, client: Any, csrf: Any, accounts: Any, smtp_sink: Any, login: Any
) -> None:
    alice = accounts.make("alice")
    login(client, "alice")
    csrf.post(client, "/email", {"email": "new@example.org", "current_password": PASSWORD})
    link = smtp_sink.last_link("new@example.org", "/confirm/")
    csrf.post(client, "/email/cancel", {})
    assert accounts.get(alice.id).pending_email is None
    assert client.get(link).status_code == 400
    assert accounts.get(alice.id).email == "alice@example.org"


def test_profile_edit(app: Any, client: Any, csrf: Any, accounts: Any, login: Any, hooks: list):
    alice = accounts.make("alice")
    login(client, "alice")
    turned = csrf.post(client, "/profile", {"url": "", "location": "Paris\u202e", "bio": ""})
    assert turned.status_code == 400  # a location is one line that shows what it is
    bad = csrf.post(client, "/profile", {"url": "javascript:alert(1)", "location": "", "bio": ""})
    assert bad.status_code == 400
    response = csrf.post(
        client,
        "/profile",
        {"url": "https://alice.example.org", "location": "Paris", "bio": "  Hi *there*  "},
    )
    assert response.status_code == 302
    user = accounts.get(alice.id)
    assert (user.url, user.location, user.bio) == (
        "https://alice.example.org",
        "Paris",
        "Hi *there*",
    )
    assert hooks == [("profile-changed", alice.id)]
    # Saving the same values again changes nothing and tells nobody.
    csrf.post(
        client,
        "/profile",
        {"url": "https://alice.example.org", "location": "Paris", "bio": "Hi *there*"},
    )
    assert len(hooks) == 1
    page = client.get("/profile").get_data(as_text=True)
    assert 'value="https://alice.example.org"' in page


def test_password_change(
    app: Any, client: Any, csrf: Any, accounts: Any, login: Any, smtp_sink: Any, hooks: list
) -> None:
    alice = accounts.make("alice")
    login(client, "alice")
    wrong = csrf.post(client, "/password", {"current_password": "nope", "password": NEW_PASSWORD})
    assert wrong.status_code == 400
    response = csrf.post(
        client, "/password", {"current_password": PASSWORD, "password": NEW_PASSWORD}
    )
    assert response.status_code == 302
    assert client.get("/profile").status_code == 200
    assert hooks == [("password-changed", alice.id)]
    assert "was just changed" in smtp_sink.to("alice@example.org")[-1].get_content()
    assert login(app.test_client(), "alice", NEW_PASSWORD).status_code == 302


def test_a_committed_password_change_is_mailed_though_the_new_session_fails(
    app: Any,
    client: Any,
    csrf: Any,
    accounts: Any,
    login: Any,
    smtp_sink: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from meta import logic

    accounts.make("alice")
    login(client, "alice")
    page = "/password"
    token = csrf.token(client, page)

    def down(*args: Any, **kwargs: Any) -> str:
        raise RuntimeError("the database went away")

    form = {"current_password": PASSWORD, "password": NEW_PASSWORD, "csrf_token": token}
    with monkeypatch.context() as patch:
        patch.setattr(logic, "start_web_session", down)
        with pytest.raises(RuntimeError, match="went away"):
            client.post(page, data=form)
    assert login(app.test_client(), "alice", NEW_PASSWORD).status_code == 302
    assert "was just changed" in smtp_sink.to("alice@example.org")[-1].get_content()


def test_delete_account(
    app: Any, client: Any, csrf: Any, accounts: Any, login: Any, hooks: list
) -> None:
    alice = accounts.make("alice")
    login(client, "alice")
    wrong = csrf.post(client, "/delete", {"current_password": "nope"})
    assert wrong.status_code == 400
    assert accounts.get(alice.id) is not None
    response = csrf.post(client, "/delete", {"current_password": PASSWORD})
    assert response.status_code == 302
    assert accounts.get(alice.id) is None
    assert hooks == [("account-deleted", alice.id)]
    assert client.get("/profile").status_code == 302
    with app.extensions["srcore"].db.transaction() as session:
        assert session.scalar(select(func.count()).select_from(EmailToken)) == 0
        assert session.scalar(select(func.count()).select_from(User)) == 0
    # The name is free again, with a new id.
    assert accounts.make("alice").id > alice.id


def test_every_form_carries_a_csrf_token(
    app: Any, client: Any, csrf: Any, accounts: Any, login: Any, smtp_sink: Any
) -> None:
    for path in ("/login", "/register", "/forgot"):
        assert 'name="csrf_token"' in client.get(path).get_data(as_text=True)
    accounts.make("root-admin", user_type=UserType.admin)
    login(client, "root-admin")
    csrf.post(client, "/forgot", {"email": "root-admin@example.org"})
    reset = smtp_sink.last_link("root-admin@example.org", "/reset/")
    for path in ("/profile", "/email", "/password", "/delete", "/admin/users", reset):
        page = client.get(path).get_data(as_text=True)
        forms = page.count("<form")
        assert forms and page.count('name="csrf_token"') >= forms - ('method="get"' in page), path


@pytest.mark.parametrize(
    ("path", "data"),
    [
        ("/login", {"login": "alice", "password": PASSWORD}),
        ("/register", {"username": "zed", "email": "z@example.org", "password": PASSWORD}),
        ("/forgot", {"email": "alice@example.org"}),
        ("/profile", {"bio": "x"}),
        ("/email", {"email": "n@example.org", "current_password": PASSWORD}),
        ("/password", {"current_password": PASSWORD, "password": NEW_PASSWORD}),
        ("/delete", {"current_password": PASSWORD}),
        ("/logout", {}),
    ],
)
def test_posts_without_csrf_token_are_refused(
    app: Any, client: Any, accounts: Any, login: Any, path: str, data: dict[str, str]
) -> None:
    alice = accounts.make("alice")
    if path not in ("/login", "/register", "/forgot"):
        login(client, "alice")
    response = client.post(path, data=data)
    assert response.status_code == 400
    user = accounts.get(alice.id)
    assert user is not None and user.bio is None and user.email == "alice@example.org"
