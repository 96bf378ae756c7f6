"""The network changing under an operator, à la carte: meta alone, then todo added to the
config file later, then removed, then added back, with real processes (meta, its webhook
worker and todo under gunicorn), on SQLite and PostgreSQL.

What the README and the operator guide promise: the sections in the file are the network;
a service added to a running network works once meta (and the others, for their navigation)
read the file again; a process that starts reads meta's whole list of revocations, so what
was decided before it joined (a suspension, a revoked token, a deleted account) holds there
at once; a service removed from the file gets no more pushes, and one added back catches up.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests

from srcore import testdb
from srcore.scaffold import add_service_section
from srcore.supervisor import Program, Supervisor, http_ok
from srcore.testing import free_port, gunicorn_argv, run_worker, write_network_config
from tests.conftest import require_postgres

pytestmark = pytest.mark.slow

PASSWORD = "correct horse battery staple"
#: How long anything may take to happen here (a bound against hanging, not a measure).
WITHIN = 30.0
_CSRF = re.compile(r'name="csrf_token"[^>]*value="([^"]+)"')


def wait_for(check: Callable[[], bool], what: str, timeout: float = WITHIN) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"not within {timeout} s: {what}"
        time.sleep(0.1)


@dataclass
class Net:
    """A network's config file, its databases and the processes running now."""

    dir: Path
    config: Path
    backend: str
    urls: dict[str, str] = field(default_factory=dict)
    databases: dict[str, str] = field(default_factory=dict)
    running: dict[str, contextlib.ExitStack] = field(default_factory=dict)
    masters: dict[str, int] = field(default_factory=dict)

    # -- the config file, as an operator edits it -------------------------------------------

    def set_database(self, service: str) -> None:
        """Point *service*'s section at its own database of the test's backend."""
        if self.backend == "sqlite":
            return
        url = self.databases.get(service) or testdb.create_test_database()
        self.databases[service] = url
        text = self.config.read_text(encoding="utf-8")
        pattern = re.compile(rf"(\[{service}\][^\[]*?database-url = )[^\n]*")
        self.config.write_text(pattern.sub(lambda m: m.group(1) + url, text), encoding="utf-8")

    def add(self, service: str) -> None:
        """``srcore new-service``'s way: a section appended with fresh secrets."""
        add_service_section(self.config, service, port=free_port())
        self.set_database(service)

    def remove(self, service: str) -> None:
        text = self.config.read_text(encoding="utf-8")
        kept = re.sub(rf"(;[^\n]*\n)?\[{service}\][^\[]*", "", text)
        self.config.write_text(kept, encoding="utf-8")

    def origin(self, service: str) -> str:
        found = re.search(rf"\[{service}\][^\[]*?origin = (\S+)", self.config.read_text())
        assert found, service
        return found.group(1)

    # -- processes ------------------------------------------------------------------------

    def migrate(self, service: str) -> None:
        done = subprocess.run(
            [sys.executable, "-m", "srcore", "migrate", service, "upgrade"],
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stdout + done.stderr

    def env(self) -> dict[str, str]:
        return dict(os.environ, SRCORE_CONFIG=str(self.config), PYTHONUNBUFFERED="1")

    def start(self, service: str) -> str:
        """Serve *service* under gunicorn (meta: with its webhook worker), reading the file
        as it is now; its log is kept in ``SERVICE.log``."""
        self.stop(service)
        stack = contextlib.ExitStack()
        port = int(self.origin(service).rsplit(":", 1)[1])
        url = self.origin(service)
        log = stack.enter_context((self.dir / f"{service}.log").open("a+", encoding="utf-8"))
        supervisor = stack.enter_context(Supervisor(log, name=service, stop_timeout=10))
        argv = gunicorn_argv(f"{service}:create_app()", port=port, workers=2)
        child = supervisor.start(Program(service, argv, self.env()))
        ready = functools.partial(http_ok, f"http://127.0.0.1:{port}/healthz")
        supervisor.wait_until(ready, child, timeout=60)
        if service == "meta":
            stack.enter_context(run_worker("meta", self.config, timeout=60))
        self.running[service], self.urls[service] = stack, url
        self.masters[service] = child.pid
        return url

    def reload(self, service: str) -> None:
        """``systemctl reload``: SIGHUP to gunicorn's master."""
        os.kill(self.masters[service], signal.SIGHUP)

    def stop(self, service: str) -> None:
        stack = self.running.pop(service, None)
        if stack is not None:
            stack.close()

    def restart_meta(self) -> None:
        """What the README asks after a change of the network: meta reads the file again."""
        self.start("meta")

    # -- meta's accounts, from the host (meta.admin) or meta's own code -------------------

    def admin(self, *args: str, stdin: str = "") -> str:
        done = subprocess.run(
            [sys.executable, "-m", "meta.admin", *args, "--config", str(self.config)],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout.strip()

    def create_user(self, name: str) -> None:
        self.admin("create-user", name, f"{name}@example.org", "--password-stdin", stdin=PASSWORD)

    def token(self, name: str, scope: str) -> str:
        return self.admin("create-token", name, scope, "--name", f"t{time.monotonic_ns()}")

    @contextlib.contextmanager
    def meta_app(self) -> Iterator[Any]:
        import meta

        app = meta.create_app(config=self.config)
        try:
            with app.app_context():
                yield app
        finally:
            app.extensions["srcore"].db.dispose()

    def act(self, name: str, action: Callable[[Any, Any], None]) -> None:
        """Run *action(session, user)* on meta's account *name* in one transaction, as
        meta's admin pages do (its signals emit the events)."""
        from meta.models import User
        from sqlalchemy import select

        with self.meta_app() as app, app.extensions["srcore"].db.transaction() as session:
            user = session.scalars(select(User).where(User.username == name)).one()
            action(session, user)

    def suspend(self, name: str) -> None:
        from meta import logic

        self.act(name, lambda session, user: logic.suspend(session, user, "Suspended."))

    def delete(self, name: str) -> None:
        from meta import logic

        self.act(name, logic.delete_user)

    def revoke_tokens(self, name: str) -> None:
        """Revoke every personal access token of *name*, as its Security page does (in a
        request's session, which it commits)."""
        from meta.models import User
        from meta.oauth.models import PersonalAccessToken
        from meta.oauth.pats import revoke_token_row
        from sqlalchemy import select

        from srcore.db import session

        with self.meta_app() as app, app.test_request_context():
            user = session.scalars(select(User).where(User.username == name)).one()
            tokens = select(PersonalAccessToken).where(PersonalAccessToken.user_id == user.id)
            for row in session.scalars(tokens).all():
                revoke_token_row(row)
            session.commit()

    # -- a person's browser -----------------------------------------------------------------

    def log_in(
        self,
        service: str,
        name: str,
        path: str = "/create",
        browser: requests.Session | None = None,
    ) -> requests.Response:
        """Open *path* at *service* in a (fresh) browser and log in at meta's form where it
        is sent; the last answer (back at the service when the login went through)."""
        browser = browser or requests.Session()
        page = browser.get(f"{self.urls[service]}{path}", timeout=WITHIN)
        assert page.url.startswith(f"{self.urls['meta']}/login"), page.url
        found = _CSRF.search(page.text)
        assert found, page.text[:2000]
        form = {"csrf_token": found.group(1), "login": name, "password": PASSWORD}
        return browser.post(page.url, data=form, timeout=WITHIN)


def api(url: str, token: str, method: str = "GET", **options: Any) -> requests.Response:
    return requests.request(
        method, url, headers={"Authorization": f"Bearer {token}"}, timeout=WITHIN, **options
    )


@pytest.fixture(params=["sqlite", "postgresql"])
def net(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Net]:
    if request.param == "postgresql":
        require_postgres()
    config = write_network_config(
        tmp_path / "config.ini",
        {"meta": free_port()},
        global_keys={"revocation-pull-interval": "1s"},
    )
    network = Net(tmp_path, config, request.param)
    network.set_database("meta")
    try:
        yield network
    finally:
        for service in list(network.running):
            network.stop(service)
        for url in network.databases.values():
            testdb.drop_test_database(url)


def rows(net: Net, service: str, query: str, **params: Any) -> list[Any]:
    """What *query* reads in *service*'s database now."""
    import sqlalchemy as sa

    found = re.search(rf"\[{service}\][^\[]*?database-url = (\S+)", net.config.read_text())
    url = net.databases.get(service) or (found.group(1) if found else "")
    engine = sa.create_engine(url)
    try:
        with engine.connect() as connection:
            return list(connection.execute(sa.text(query), params))
    finally:
        engine.dispose()


def meta_subscription(net: Net, service: str) -> list[Any]:
    """meta's subscriptions for *service*'s pushes: (id, url, enabled)."""
    return rows(
        net,
        "meta",
        "SELECT id, url, enabled FROM srcore_webhook_subscription"
        " WHERE trusted AND owner_client = :client ORDER BY id",
        client=service,
    )


def deliveries(net: Net, subscription: int, status: str) -> int:
    (count,) = rows(
        net,
        "meta",
        "SELECT count(*) FROM srcore_webhook_delivery"
        " WHERE subscription_id = :sid AND status = :status",
        sid=subscription,
        status=status,
    )[0]
    return int(count)


def test_a_service_removed_then_added_back_catches_up(net: Net) -> None:
    net.migrate("meta")
    net.add("todo")
    net.migrate("todo")
    net.start("meta")
    todo = net.start("todo")
    names = ("alice", "carol", "dave", "erin")
    tokens = {}
    for name in names:
        net.create_user(name)
        tokens[name] = net.token(name, "todo/trackers:RW")
        made = api(f"{todo}/api/trackers", tokens[name], "POST", json={"name": f"{name}-bugs"})
        assert made.status_code == 201, made.text
    ((sid, url, enabled),) = meta_subscription(net, "todo")
    assert enabled and url.startswith(todo)
    front = requests.get(f"{net.urls['meta']}/", timeout=WITHIN)
    assert todo in front.text  # todo in meta's navigation

    # todo leaves the network: its section goes, meta reads the file again, todo stops.
    net.remove("todo")
    net.restart_meta()
    net.stop("todo")
    front = requests.get(f"{net.urls['meta']}/", timeout=WITHIN)
    assert todo not in front.text
    # While it is gone: carol's account is deleted, dave's token revoked, erin suspended.
    net.delete("carol")
    net.revoke_tokens("dave")
    net.suspend("erin")
    # meta keeps nothing pending for a service that is no longer there.
    wait_for(lambda: not meta_subscription(net, "todo")[0][2], "todo's subscription disabled")
    assert deliveries(net, sid, "pending") == 0

    # todo comes back (a fresh section, as `srcore new-service` writes it: another port).
    net.add("todo")
    net.restart_meta()
    back = net.start("todo")
    assert back != todo
    assert api(f"{back}/api/trackers", tokens["alice"]).status_code == 200
    assert api(f"{back}/api/trackers", tokens["dave"]).status_code == 401
    assert api(f"{back}/api/trackers", tokens["erin"]).status_code in (401, 403)
    assert api(f"{back}/api/trackers", tokens["carol"]).status_code in (401, 403)
    # carol's data there went with her account.
    wait_for(
        lambda: not rows(net, "todo", "SELECT id FROM tracker WHERE name = 'carol-bugs'"),
        "carol's tracker dropped",
    )
    # meta's pushes reach it again, at its new address.
    ((sid2, url2, _),) = [row for row in meta_subscription(net, "todo") if row[2]]
    assert url2.startswith(back)
    page = net.log_in("todo", "alice")
    assert (page.status_code, page.url) == (200, f"{back}/create"), page.text[:2000]
    net.revoke_tokens("alice")
    wait_for(lambda: deliveries(net, sid2, "delivered") > 0, "a push delivered to todo")
    wait_for(
        lambda: api(f"{back}/api/trackers", tokens["alice"]).status_code == 401,
        "alice's revoked token refused",
    )


def test_a_service_joining_later_knows_what_was_decided_before(net: Net) -> None:
    net.migrate("meta")
    net.start("meta")
    for name in ("alice", "bob"):
        net.create_user(name)
    net.suspend("bob")

    # todo joins: its section, its database, meta reads the file again, todo starts.
    net.add("todo")
    net.migrate("todo")
    net.restart_meta()
    todo = net.start("todo")

    page = net.log_in("todo", "alice")
    assert (page.status_code, page.url) == (200, f"{todo}/create"), page.text[:2000]
    token = net.token("alice", "todo/trackers:RW")
    made = api(f"{todo}/api/trackers", token, "POST", json={"name": "bugs"})
    assert made.status_code == 201, made.text
    # bob, suspended before todo existed, gets nothing there.
    refused = net.log_in("todo", "bob")
    assert not refused.url.startswith(todo), refused.url
    # todo is in meta's navigation, and meta's pushes reach it.
    assert f'href="{todo}/"' in requests.get(f"{net.urls['meta']}/", timeout=WITHIN).text
    ((sid, url, enabled),) = meta_subscription(net, "todo")
    assert enabled and url.startswith(todo)
    net.revoke_tokens("alice")
    wait_for(lambda: deliveries(net, sid, "delivered") > 0, "a push delivered to todo")
    # The push reached one of todo's two workers; the other learns of it by its pull.
    wait_for(
        lambda: api(f"{todo}/api/trackers", token).status_code == 401,
        "the revoked token refused by every worker",
    )


def test_a_reload_takes_a_service_added_and_removed(net: Net) -> None:
    """operators.md: a reload (SIGHUP) reads the config file again; the sections in the
    file are the network, in every service's navigation."""
    net.migrate("meta")
    net.add("todo")
    net.migrate("todo")
    net.start("meta")
    todo = net.start("todo")
    net.create_user("alice")
    net.add("paste")
    net.migrate("paste")
    paste = net.start("paste")
    for service in ("meta", "todo"):
        net.reload(service)

    def in_nav(service: str, url: str) -> bool:
        return f'href="{url}/"' in requests.get(f"{net.urls[service]}/", timeout=WITHIN).text

    wait_for(lambda: in_nav("todo", paste) and in_nav("meta", paste), "paste in the nav")
    browser = requests.Session()
    page = net.log_in("paste", "alice", "/new", browser)
    assert (page.status_code, page.url) == (200, f"{paste}/new"), page.text[:2000]
    token = net.token("alice", "paste/pastes:RW")
    assert api(f"{paste}/api/pastes", token).status_code == 200
    # Logging out at the reloaded meta: its push reaches paste.
    log_out_at_meta(net, browser)
    ((sid, url, enabled),) = meta_subscription(net, "paste")
    assert enabled and url.startswith(paste)
    wait_for(lambda: deliveries(net, sid, "delivered") > 0, "a push delivered to paste")

    net.remove("paste")
    for service in ("meta", "todo"):
        net.reload(service)
    wait_for(lambda: not in_nav("todo", paste) and not in_nav("meta", paste), "paste gone")
    assert in_nav("meta", todo)
    # meta's next event, from the reloaded meta: nothing more is sent to paste.
    browser = requests.Session()
    page = net.log_in("todo", "alice", "/create", browser)
    assert (page.status_code, page.url) == (200, f"{todo}/create"), page.text[:2000]
    log_out_at_meta(net, browser)
    assert not meta_subscription(net, "paste")[0][2]
    assert deliveries(net, sid, "pending") == 0


def log_out_at_meta(net: Net, browser: requests.Session) -> None:
    front = browser.get(f"{net.urls['meta']}/", timeout=WITHIN)
    found = _CSRF.search(front.text)
    assert found, front.text[:2000]
    out = browser.post(
        f"{net.urls['meta']}/logout", data={"csrf_token": found.group(1)}, timeout=WITHIN
    )
    assert out.status_code == 200, out.text[:2000]


def test_a_service_still_running_after_its_section_went_stops_trusting_its_list(
    net: Net,
) -> None:
    """todo's section removed and meta restarted, but todo left running (its unit not
    stopped yet): meta refuses its pulls and sends it nothing, so what it knows of
    revocations is stale for good. A suspended account must not go on using it."""
    net.migrate("meta")
    net.add("todo")
    net.migrate("todo")
    net.start("meta")
    todo = net.start("todo")
    net.create_user("alice")
    token = net.token("alice", "todo/trackers:RW")
    assert api(f"{todo}/api/trackers", token).status_code == 200
    browser = requests.Session()
    page = net.log_in("todo", "alice", "/create", browser)
    assert (page.status_code, page.url) == (200, f"{todo}/create"), page.text[:2000]
    section = net.config.read_text(encoding="utf-8")
    net.remove("todo")
    net.restart_meta()
    net.suspend("alice")
    # Every pull from here on is refused (one a second); none of them may leave the token
    # or the session taken. 503: the service cannot tell, as before its first pull.
    wait_for(
        lambda: api(f"{todo}/api/trackers", token).status_code == 503,
        "the token refused at a todo meta no longer knows",
    )
    assert browser.get(f"{todo}/create", timeout=WITHIN).status_code == 503
    log = (net.dir / "todo.log").read_text(encoding="utf-8")
    assert "meta refuses this service's client" in log, log[-3000:]
    # The section back as it was and meta restarted: todo reads meta's list again by
    # itself, and alice is suspended there.
    net.config.write_text(section, encoding="utf-8")
    net.restart_meta()
    wait_for(
        lambda: api(f"{todo}/api/trackers", token).status_code == 401,
        "todo answering from meta's list again",
    )


def test_a_service_moved_to_another_port(net: Net) -> None:
    """todo's origin changed in the file (another host and port): until meta reads it,
    logging in there ends on a page of meta's saying so (not a 500); once meta has, logins
    and pushes follow it."""
    net.migrate("meta")
    net.add("todo")
    net.migrate("todo")
    net.start("meta")
    old = net.start("todo")
    net.create_user("alice")
    token = net.token("alice", "todo/trackers:RW")
    # Another host name (meta lets a loopback IP's port vary, RFC 8252, not a name's).
    moved = f"http://localhost:{free_port()}"
    net.config.write_text(net.config.read_text().replace(old, moved), encoding="utf-8")
    net.stop("todo")
    assert net.start("todo") == moved
    # A token meta issued for todo is for todo wherever it is served.
    assert api(f"{moved}/api/trackers", token).status_code == 200
    page = requests.get(f"{moved}/create", timeout=WITHIN)
    assert page.status_code == 400 and page.url.startswith(net.urls["meta"]), page.url
    assert "redirect" in page.text.lower(), page.text[:2000]
    net.restart_meta()
    page = net.log_in("todo", "alice")
    assert (page.status_code, page.url) == (200, f"{moved}/create"), page.text[:2000]
    ((sid, url, enabled),) = meta_subscription(net, "todo")
    net.revoke_tokens("alice")
    assert enabled and url.startswith(moved)
    wait_for(lambda: deliveries(net, sid, "delivered") > 0, "a push delivered at the new port")
