"""Fixtures for meta's tests; srcore's pytest plugin provides app, client, db and users.

The app sends its mail through a real SMTP server: an aiosmtpd sink on 127.0.0.1, set as
``[global] smtp-host`` through the environment, so the mail code runs as in production.
Passwords are hashed with cheap argon2 parameters to keep the suite fast.
"""

from __future__ import annotations

import email
import email.policy
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any

import pytest
from argon2 import PasswordHasher
from meta_constants import FAST_HASHER, PASSWORD

# srcore's fixtures (app, client, db, user, ...) are opt-in: this suite asks for them.
pytest_plugins = ["srcore.testing"]

_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
_LINK = re.compile(r"https?://\S+")


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


@dataclass
class Sink:
    """Messages received by the SMTP sink."""

    host: str
    port: int
    messages: list[EmailMessage] = field(default_factory=list)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        self.messages.append(message)
        return "250 Message accepted"

    def to(self, address: str) -> list[EmailMessage]:
        return [m for m in self.messages if m["To"] == address]

    def last_link(self, address: str, path: str) -> str:
        """The path (with its token) of the last link to *path* mailed to *address*."""
        for message in reversed(self.to(address)):
            body = message.get_content()
            for link in _LINK.findall(body):
                local = "/" + link.split("/", 3)[3]
                if local.startswith(path):
                    return local
        raise AssertionError(f"no mail to {address} with a link to {path}")


@pytest.fixture(scope="session")
def _smtp_controller() -> Iterator[Sink]:
    from aiosmtpd.controller import Controller

    from srcore.testing import free_port  # imported once the plugin is registered

    sink = Sink("127.0.0.1", free_port())
    controller = Controller(sink, hostname=sink.host, port=sink.port)
    controller.start()
    try:
        yield sink
    finally:
        controller.stop()


@pytest.fixture
def smtp_sink(_smtp_controller: Sink) -> Sink:
    """The SMTP sink, emptied for this test."""
    _smtp_controller.messages.clear()
    return _smtp_controller


@pytest.fixture
def _mail_env(smtp_sink: Sink, monkeypatch: pytest.MonkeyPatch) -> None:
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
