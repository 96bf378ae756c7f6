"""Fixtures for meta's tests; srcore's pytest plugin provides app, client, db and users.

The app sends its mail through a real SMTP server, the plugin's ``smtp_sink`` on 127.0.0.1
(set as ``[global] smtp-host`` through the environment), so the mail code runs as in
production. Passwords are hashed with cheap argon2 parameters to keep the suite fast.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from argon2 import PasswordHasher
from meta_constants import FAST_HASHER, PASSWORD

# srcore's fixtures (app, client, db, user, ...) are opt-in: this suite asks for them.
pytest_plugins = ["srcore.testing"]

_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


@pytest.fixture(scope="session")
def srcore_service() -> str:
    return "meta"


@pytest.fixture
def password() -> str:
    """The password of the accounts :func:`accounts` makes (import nothing from here: with
    other suites in one session, ``conftest`` may name another suite's module)."""
    return PASSWORD


@pytest.fixture
def fast_hasher() -> dict[str, int]:
    """The cheap argon2 parameters the test app hashes with."""
    return dict(FAST_HASHER)


@pytest.fixture
def _mail_env(smtp_sink: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SRCORE__GLOBAL__SMTP_HOST", smtp_sink.host)
    monkeypatch.setenv("SRCORE__GLOBAL__SMTP_PORT", str(smtp_sink.port))
    monkeypatch.setenv("SRCORE__GLOBAL__SMTP_TLS", "none")
    monkeypatch.setenv("SRCORE__GLOBAL__SMTP_FROM", "Test network <noreply@example.org>")


@pytest.fixture
def app(_mail_env: None, app: Any) -> Any:
    """meta's app, mailing to the sink, with cheap password hashing."""
    from meta.logic import Passwords

    app.extensions["meta"].passwords = Passwords(PasswordHasher(**FAST_HASHER))
    return app


class Csrf:
    """What a browser does: read the form's CSRF token from a page, send it back."""

    def token(self, client: Any, path: str) -> str:
        response = client.get(path)
        assert response.status_code == 200, (path, response.status_code)
        match = _CSRF.search(response.get_data(as_text=True))
        assert match, f"no CSRF token on {path}"
        return match.group(1)

    def post(self, client: Any, path: str, data: dict[str, str], *, page: str = "/forgot") -> Any:
        """POST *data* with the token of *page* (``/forgot`` has a form for everyone).

        The response is read and closed, as a server does once it is sent: work a view
        leaves for after the response (``/forgot``'s mail) is done when this returns.
        """
        response = client.post(path, data={**data, "csrf_token": self.token(client, page)})
        response.get_data()
        response.close()
        return response


@pytest.fixture
def csrf() -> Csrf:
    return Csrf()


class Accounts:
    """Accounts made straight in the database, with real password hashes."""

    def __init__(self, app: Any) -> None:
        self.app = app

    def make(
        self,
        username: str = "alice",
        *,
        password: str = PASSWORD,
        confirmed: bool = True,
        **values: Any,
    ) -> Any:
        from meta import logic

        from srcore.db import UserType, utcnow

        passwords = self.app.extensions["meta"].passwords
        with self.app.extensions["srcore"].db.transaction() as session:
            user = logic.create_user(
                session,
                username=username,
                email=values.pop("email", f"{username}@example.org"),
                password_hash=passwords.hash(password),
            )
            if confirmed:
                user.user_type = UserType.active
                user.email_confirmed_at = utcnow()
            for name, value in values.items():
                setattr(user, name, value)
        return user

    def get(self, user_id: int) -> Any:
        from meta.models import User

        with self.app.extensions["srcore"].db.transaction() as session:
            return session.get(User, user_id)


@pytest.fixture
def accounts(app: Any) -> Accounts:
    return Accounts(app)


@pytest.fixture
def login(csrf: Csrf) -> Any:
    """``login(client, name, password)``: log in through the real form."""

    def do(client: Any, name: str = "alice", password: str = PASSWORD, path: str = "/login") -> Any:
        return csrf.post(client, path, {"login": name, "password": password})

    return do
