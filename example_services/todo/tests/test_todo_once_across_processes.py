"""A form sent twice to two processes of todo, without Redis, opens one ticket.

Under ``srcore serve`` a service runs several gunicorn workers (and may run on several
hosts); two POSTs of one form (a double click, a resend after a slow answer) may land on
two of them. Here they are two todo processes under gunicorn on one database, SQLite file
and PostgreSQL, with no ``redis-url``: the same form, with the same session cookie, is
posted to each with plain ``requests``, one after the other and then both at once. One
ticket is opened each time, and the other POST is answered 303 to it.

The store's failures are answered too: a database that is read-only when a form comes
is a 503 saying so, never a 500, and nothing is made.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from sqlalchemy import func, select

from srcore import migrate
from srcore.db import UserType
from srcore.testing import create_user, free_port, run_service, session_cookie, write_config

_FIELDS = re.compile(r'name="(csrf_token|form_once)" value="([^"]+)"')
#: Seconds any one request may take (a second POST waits for the first at most 10 s).
TIMEOUT = 30


@contextlib.contextmanager
def _database(backend: str, tmp: Path) -> Iterator[str]:
    if backend == "sqlite":
        yield f"sqlite:///{tmp / 'todo.db'}"
        return
    from srcore.testdb import create_test_database, drop_test_database

    url = create_test_database()
    try:
        yield url
    finally:
        drop_test_database(url)


@pytest.fixture
def two_processes(srcore_backend: str, tmp_path: Path) -> Iterator[dict[str, Any]]:
    """Two todo processes (gunicorn) on one migrated database, alice's tracker ``bugs``."""
    import todo
    from todo.models import Tracker, Visibility

    ports = (free_port(), free_port())
    origin = f"http://127.0.0.1:{ports[0]}"
    with _database(srcore_backend, tmp_path) as url:
        config = write_config(
            tmp_path / "config.ini", service_id="todo", database_url=url, origin=origin
        )
        app = todo.create_app(config=config)
        migrate.upgrade_all(
            migrate.MigrationTarget(
                service_id="todo",
                database_url=url,
                metadata=app.extensions["srcore"].metadata,
                versions_dir=Path(todo.__file__).parent / "migrations" / "versions",
            )
        )
        alice = create_user(app, "alice", user_type=UserType.active)
        with app.extensions["srcore"].db.transaction() as session:
            session.add(Tracker(owner_id=alice.id, name="bugs", visibility=Visibility.public))
        cookie = session_cookie(app, alice)
        try:
            with contextlib.ExitStack() as stack:
                urls = [
                    stack.enter_context(run_service("todo", config, port=port, timeout=60))
                    for port in ports
                ]
                yield {"urls": urls, "cookie": cookie, "origin": origin, "app": app}
        finally:
            app.extensions["srcore"].db.dispose()


def _browser(site: dict[str, Any]) -> requests.Session:
    """A session holding alice's cookie, sent to both processes (cookies ignore ports)."""
    browser = requests.Session()
    name, value = site["cookie"]
    browser.cookies.set(name, value, domain="127.0.0.1", path="/")
    browser.headers["Origin"] = site["origin"]
    return browser


def _form(browser: requests.Session, base: str, title: str) -> dict[str, str]:
    page = browser.get(f"{base}/~alice/bugs/new", timeout=TIMEOUT)
    assert page.status_code == 200
    fields = dict(_FIELDS.findall(page.text))
    assert set(fields) == {"csrf_token", "form_once"}, fields
    return {**fields, "title": title, "description": ""}


def _post(browser: requests.Session, base: str, form: dict[str, str]) -> requests.Response:
    return browser.post(
        f"{base}/~alice/bugs/new", data=form, allow_redirects=False, timeout=TIMEOUT
    )


def _tickets(site: dict[str, Any]) -> int:
    from todo.models import Ticket

    with site["app"].extensions["srcore"].db.transaction() as session:
        return session.scalar(select(func.count()).select_from(Ticket)) or 0


def test_a_form_sent_to_two_processes_opens_one_ticket(two_processes) -> None:
    site = two_processes
    first_url, second_url = site["urls"]
    browser = _browser(site)

    # One after the other: a resend after a slow answer, taken by another worker.
    form = _form(browser, first_url, "Sent to two")
    first = _post(browser, first_url, form)
    assert first.status_code in (302, 303), first.text[:300]
    second = _post(browser, second_url, form)
    assert second.status_code == 303, second.text[:300]
    assert second.headers["Location"] == first.headers["Location"]
    assert _tickets(site) == 1

    # Both at once: a double click whose two POSTs go to two workers.
    form = _form(browser, second_url, "Clicked twice")
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        answers = list(pool.map(lambda base: _post(browser, base, form), site["urls"]))
    assert sorted(a.status_code for a in answers)[-1] == 303, [a.status_code for a in answers]
    assert {a.status_code for a in answers} <= {302, 303}
    assert len({a.headers["Location"] for a in answers}) == 1
    assert _tickets(site) == 2

    # A new form is a new ticket, at either process.
    assert _post(browser, first_url, _form(browser, second_url, "Third")).status_code in (302, 303)
    assert _tickets(site) == 3


def test_a_form_sent_to_a_read_only_database_is_a_503(
    user_client, tracker, make, read_only
) -> None:
    from todo.models import Ticket

    page = user_client.get("/~alice/bugs/new").get_data(as_text=True)
    form = {**dict(_FIELDS.findall(page)), "title": "Not now"}
    with read_only():
        refused = user_client.post("/~alice/bugs/new", data=form)
    assert refused.status_code == 503, refused.get_data(as_text=True)[:500]
    assert "Try again" in refused.get_data(as_text=True)
    assert make.count(Ticket) == 0
    # Writable again: the same form is taken, once.
    taken = user_client.post("/~alice/bugs/new", data=form)
    assert taken.status_code in (302, 303)
    assert user_client.post("/~alice/bugs/new", data=form).status_code == 303
    assert make.count(Ticket) == 1


def test_expired_tokens_give_way_and_are_pruned_a_few_at_a_claim(app) -> None:
    from srcore.once import DatabaseTokens, OnceToken

    database = app.extensions["srcore"].db
    gone = DatabaseTokens(database, remember=-1)  # every row it writes has expired
    for number in range(150):
        assert gone.claim(f"old{number}") is None
    assert gone.claim("old0") is None  # expired: taken again, not "sent already"
    live = DatabaseTokens(database)
    assert live.claim("new") is None
    assert live.claim("new") == ""  # pending
    live.finish("new", "/~alice/bugs/1")
    assert live.claim("new") == "/~alice/bugs/1"
    with database.transaction() as session:
        left = session.scalar(select(func.count()).select_from(OnceToken))
    # Each claim deleted up to 100 expired rows: of the 150, at most 100 are left.
    assert left is not None and 1 <= left <= 101
