"""Fixtures for todo's tests; srcore's pytest plugin provides app, client, db, users, tokens.

Helpers are handed out as fixtures (``make``, ``csrf``, ``auth``) rather than imported,
so this suite can run beside other suites in one pytest session.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import event, text
from todo import logic
from todo.models import Comment, Ticket, Tracker, User, Visibility

# srcore's fixtures (app, client, db, user, ...) are opt-in: this suite asks for them.
pytest_plugins = ["srcore.testing"]

ALL_SCOPES = "todo/trackers:RW todo/tickets:RW"
_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


@pytest.fixture(scope="session")
def srcore_service() -> str:
    return "todo"


@pytest.fixture(autouse=True)
def _empty_webhook_tables(request: pytest.FixtureRequest) -> Any:
    """Every change emits a webhook event; srcore's plugin empties only todo's own tables
    after a test, so the webhook tables are emptied here (for tests that use the app)."""
    if "app" not in request.fixturenames:
        yield
        return
    app = request.getfixturevalue("app")
    yield
    from srcore.webhooks.models import WebhookBase

    with app.extensions["srcore"].db.transaction() as session:
        for table in reversed(WebhookBase.metadata.sorted_tables):
            session.execute(table.delete())


class Factory:
    """Rows written straight to the app's database, each in its own transaction."""

    def __init__(self, app: Any) -> None:
        self.db = app.extensions["srcore"].db

    def tracker(
        self,
        owner: User,
        name: str = "bugs",
        *,
        visibility: Visibility = Visibility.public,
        description: str | None = "Things that are *broken*.",
    ) -> Tracker:
        with self.db.transaction() as session:
            tracker = Tracker(
                owner_id=owner.id, name=name, visibility=visibility, description=description
            )
            session.add(tracker)
        return tracker

    def ticket(
        self, tracker: Tracker, submitter: User, title: str = "It crashes", **values: Any
    ) -> Ticket:
        with self.db.transaction() as session:
            fresh = session.get(Tracker, tracker.id)
            assert fresh is not None
            return logic.create_ticket(
                session, fresh, session.merge(submitter), {"title": title, **values}
            )

    def comment(self, ticket: Ticket, author: User, text: str = "Me too.") -> Comment:
        with self.db.transaction() as session:
            comment = Comment(ticket_id=ticket.id, author_id=author.id, text=text)
            session.add(comment)
        return comment

    def count(self, model: type[Any]) -> int:
        from sqlalchemy import func, select

        with self.db.transaction() as session:
            return session.scalar(select(func.count()).select_from(model)) or 0

    def get(self, model: type[Any], ident: int) -> Any:
        with self.db.transaction() as session:
            return session.get(model, ident)


@pytest.fixture
def make(app: Any) -> Factory:
    return Factory(app)


class Csrf:
    """What a browser does: read the form's CSRF token from a page, send it back."""

    def token(self, client: Any, path: str = "/create") -> str:
        response = client.get(path)
        assert response.status_code == 200, (path, response.status_code)
        match = _CSRF.search(response.get_data(as_text=True))
        assert match, f"no CSRF token on {path}"
        return match.group(1)

    def post(self, client: Any, path: str, data: dict[str, str], *, page: str = "/create") -> Any:
        return client.post(path, data={**data, "csrf_token": self.token(client, page)})


@pytest.fixture
def csrf() -> Csrf:
    return Csrf()


@pytest.fixture
def bob(app: Any) -> User:
    """A second active user."""
    from srcore.testing import create_user  # imported once the plugin is registered

    user: User = create_user(app, "bob")
    return user


@pytest.fixture
def bob_client(app: Any, bob: User) -> Any:
    from srcore.testing import log_in_client

    return log_in_client(app.test_client(), bob)


@pytest.fixture
def tracker(make: Factory, user: User) -> Tracker:
    """Alice's public tracker ``bugs``."""
    return make.tracker(user)


@pytest.fixture
def ticket(make: Factory, tracker: Tracker, user: User) -> Ticket:
    """Ticket #1 of ``bugs``, submitted by alice."""
    return make.ticket(tracker, user, description="Steps:\n\n1. *open* it")


@pytest.fixture
def auth(make_token: Callable[..., str], user: User) -> Callable[..., dict[str, str]]:
    """``auth(scopes, who=alice)``: Authorization headers with a token for *scopes*."""

    def headers(scopes: str = ALL_SCOPES, who: User | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {make_token(scopes, user=who or user)}"}

    return headers


#: Real values for every URL parameter of todo's routes (alice's tracker ``bugs``, #1).
URL_VALUES: dict[str, Any] = {
    "username": "alice",
    "name": "bugs",
    "number": 1,
    "version_tag": "v",
    "filename": "srcore.css",
}
_IGNORED_METHODS = {"HEAD", "OPTIONS"}
#: Endpoints of todo's own blueprints.
TODO_ENDPOINTS = ("todo.", "api.")


@pytest.fixture
def routes(app: Any) -> list[tuple[str, str, str]]:
    """(endpoint, method, path) of every route of the app, the URL filled with real rows.

    A route with a URL parameter missing from ``URL_VALUES`` fails the test that uses this,
    so new routes cannot slip past the suites that walk every route.
    """
    from flask import url_for

    found = []
    with app.test_request_context():
        for rule in app.url_map.iter_rules():
            unknown = set(rule.arguments) - set(URL_VALUES)
            if unknown and not rule.endpoint.startswith(TODO_ENDPOINTS):
                continue  # a route of srcore's own, tested by srcore
            assert not unknown, f"{rule.rule}: no test value for {sorted(unknown)}"
            path = url_for(rule.endpoint, **{k: URL_VALUES[k] for k in rule.arguments})
            for method in sorted((rule.methods or set()) - _IGNORED_METHODS):
                found.append((rule.endpoint, method, path))
    return found


@pytest.fixture
def read_only(app: Any, srcore_backend: str) -> Callable[[], Any]:
    """``with read_only():`` the app's database refuses every write for the block:
    PostgreSQL's ``default_transaction_read_only`` for the database, SQLite's
    ``query_only`` on each new connection."""

    @contextlib.contextmanager
    def block() -> Iterator[None]:
        database = app.extensions["srcore"].db
        engine = database.engine
        name = engine.url.database

        def query_only(dbapi_connection: Any, _record: Any) -> None:
            dbapi_connection.execute("PRAGMA query_only = ON")

        if srcore_backend == "sqlite":
            event.listen(engine, "connect", query_only)
        else:
            with engine.connect() as connection:
                statement = f'ALTER DATABASE "{name}" SET default_transaction_read_only = on'
                connection.execute(text(statement))
                connection.commit()
        database.dispose()
        try:
            yield
        finally:
            if srcore_backend == "sqlite":
                event.remove(engine, "connect", query_only)
            else:
                # Each statement its own transaction: the second one's is not read-only.
                autocommit = engine.connect().execution_options(isolation_level="AUTOCOMMIT")
                with autocommit as connection:
                    connection.execute(text("SET default_transaction_read_only = off"))
                    statement = f'ALTER DATABASE "{name}" SET default_transaction_read_only = off'
                    connection.execute(text(statement))
            database.dispose()

    return block
