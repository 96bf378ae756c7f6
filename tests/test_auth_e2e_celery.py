"""End to end with the Celery dispatcher: meta's pushes to todo carried by Redis and Celery.

The network of tests/test_auth_e2e_more.py (meta and todo under gunicorn on 127.0.0.1,
driven with requests; its helpers are imported, not copied), except that ``[global]
webhooks-broker`` points at a redis-server of this module's own (on a free port, so the
shared Redis is not touched) and meta's events are delivered by a real
``celery -A srcore.webhooks.celery worker --beat`` of meta's (its own process group),
not by ``srcore worker meta``. todo pulls revocations only once an hour, so within these
tests a revocation reaches it by the push or not at all.

Each test checks the effect at todo within a bounded wait and then meta's own record:
the outbox rows the change wrote were fanned out into deliveries to todo's
``/_srcore/events`` that are recorded as delivered. One test stops the worker and shows
that nothing arrives (the row stays in the outbox, its message waits in Redis) until a
worker runs again.
"""

from __future__ import annotations

import base64
import configparser
import contextlib
import json
import re
import sqlite3
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from srcore.testing import (
    free_port,
    require_or_skip,
    run_service,
    serve_smtp_sink,
    write_network_config,
)

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

import reliability as harness
from test_auth_e2e import client_token, revoke
from test_auth_e2e_more import (
    Network,
    admin_post,
    api,
    csrf,
    make_admin,
    open_todo,
    personal_token,
    register,
    todo_user,
    token_user_id,
    wait_for,
)

pytestmark = [
    pytest.mark.slow,
]

#: How long a change at meta may take to reach todo through Redis and the Celery worker.
REACH = 20.0
#: How long the stopped worker is given to (not) deliver anything.
HOLD = 3.0
#: todo's pull of ``/oauth/revocations``: far beyond any wait here, so pushes are tested.
PULL_INTERVAL = "1h"
REVOCATION = "revocation:issued"
PROFILE = "profile:updated"
_PAT_REVOKE = re.compile(r'action="[^"]*/security/tokens/(\d+)/revoke"')


class MetaCeleryWorker:
    """meta's ``celery -A srcore.webhooks.celery worker --beat``, stopped and started at will.

    Each start is a fresh process group (bench/reliability.py's WorkerProcess: killed as a
    group, and never outliving its lifetime even if this process dies).
    """

    def __init__(self, config: Path, directory: Path) -> None:
        self.config = config
        self.directory = directory
        self.log = directory / "celery-meta.log"
        self.process: harness.WorkerProcess | None = None

    def start(self, *, timeout: float = 60) -> None:
        assert self.process is None, "meta's worker is running already"
        worker = harness.celery_worker(
            self.config,
            self.directory,
            app_spec="srcore.webhooks.celery",  # the production entry point
            fast=False,
            loglevel="info",
            lifetime=900,
            name="meta",
        )
        worker.env["SRCORE_SERVICE"] = "meta"
        offset = self.log.stat().st_size if self.log.exists() else 0
        self.process = worker
        worker.start()
        deadline = time.monotonic() + timeout
        while " ready." not in self._log_since(offset):
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"meta's celery worker was not ready within {timeout} s:\n" + worker.tail()
                )
            time.sleep(0.1)

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()
            self.process = None

    def tail(self) -> str:
        return self.process.tail() if self.process is not None else ""

    def _log_since(self, offset: int) -> str:
        try:
            with open(self.log, "rb") as log:
                log.seek(offset)
                return log.read().decode(errors="replace")
        except OSError:
            return ""


@dataclass
class CeleryNetwork(Network):
    meta_db: Path
    broker: str
    worker: MetaCeleryWorker
    #: OAuth client secrets by client id, for the client-credentials grant.
    secrets: dict[str, str]


def _client_secret(config: Path, service: str) -> str:
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(config, encoding="utf-8")
    return parser[service]["oauth-client-secret"]


@pytest.fixture(scope="module")
def network(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CeleryNetwork]:
    from srcore.app import migration_target
    from srcore.migrate import upgrade_all

    require_or_skip(harness.redis_available(), "redis-server")
    tmp = tmp_path_factory.mktemp("network-celery")
    with contextlib.ExitStack() as stack:
        redis_server = stack.enter_context(harness.RedisServer(tmp / "redis"))
        sink = stack.enter_context(serve_smtp_sink())
        ports = {"meta": free_port(), "todo": free_port()}
        config = write_network_config(
            tmp / "config.ini",
            ports,
            global_keys={
                **sink.config_keys(),
                "revocation-pull-interval": PULL_INTERVAL,
                "webhooks-broker": redis_server.url,
            },
        )
        for service in ports:
            upgrade_all(migration_target(service, config))

        meta = stack.enter_context(run_service("meta", config, port=ports["meta"], timeout=60))
        worker = MetaCeleryWorker(config, tmp)
        stack.callback(worker.stop)
        worker.start()
        todo = stack.enter_context(run_service("todo", config, port=ports["todo"], timeout=60))
        yield CeleryNetwork(
            config=config,
            meta=meta,
            todo=todo,
            todo_db=tmp / "todo.db",
            sink=sink,
            meta_db=tmp / "meta.db",
            broker=redis_server.url,
            worker=worker,
            secrets={"todo": _client_secret(config, "todo")},
        )


# -- meta's record of its pushes ----------------------------------------------------------


@dataclass(frozen=True)
class Push:
    outbox_id: int
    payload: dict[str, Any]
    fanned_out: bool
    #: (url, status) of each delivery the row was fanned out into.
    deliveries: tuple[tuple[str, str], ...]


def _meta_db(net: CeleryNetwork) -> sqlite3.Connection:
    return sqlite3.connect(net.meta_db, timeout=5)


def outbox_mark(net: CeleryNetwork) -> int:
    """The newest row of meta's outbox: what a change writes comes after it."""
    with contextlib.closing(_meta_db(net)) as db:
        return int(
            db.execute("SELECT COALESCE(MAX(id), 0) FROM srcore_webhook_outbox").fetchone()[0]
        )


def pushes(net: CeleryNetwork, after: int, event: str) -> list[Push]:
    """meta's outbox rows of *event* after row *after*, with their deliveries."""
    with contextlib.closing(_meta_db(net)) as db:
        rows = db.execute(
            "SELECT id, payload, fanned_out_at FROM srcore_webhook_outbox"
            " WHERE id > ? AND event = ? ORDER BY id",
            (after, event),
        ).fetchall()
        found = []
        for outbox_id, payload, fanned_out_at in rows:
            deliveries = db.execute(
                "SELECT s.url, d.status FROM srcore_webhook_delivery d"
                " JOIN srcore_webhook_subscription s ON s.id = d.subscription_id"
                " WHERE d.outbox_id = ? ORDER BY d.id",
                (outbox_id,),
            ).fetchall()
            found.append(
                Push(
                    outbox_id,
                    json.loads(payload),
                    fanned_out_at is not None,
                    tuple((str(url), str(status)) for url, status in deliveries),
                )
            )
        return found


def assert_pushed(net: CeleryNetwork, after: int, event: str, *, at_least: int = 1) -> list[Push]:
    """meta's rows of *event* after *after* (*at_least* of them), each fanned out into one
    delivery, to todo's events URL, recorded as delivered."""
    target = f"{net.todo}/_srcore/events"

    def delivered() -> bool:
        found = pushes(net, after, event)
        return len(found) >= at_least and all(
            push.deliveries == ((target, "delivered"),) for push in found
        )

    try:
        wait_for(delivered, REACH)
    except AssertionError:
        pytest.fail(
            f"meta's {event} rows were not recorded as delivered to {target}: "
            f"{pushes(net, after, event)}\nworker log:\n{net.worker.tail()}"
        )
    found = pushes(net, after, event)
    assert all(push.fanned_out for push in found), found
    return found


def revocations(found: list[Push]) -> set[tuple[str, str]]:
    """(kind, subject) of every revocation event in *found*."""
    return {
        (str(event["kind"]), str(event["subject"]))
        for push in found
        for event in push.payload["events"]
    }


# -- what a person does at meta -----------------------------------------------------------


def revoke_personal_token(net: CeleryNetwork, browser: requests.Session) -> None:
    """Revoke the one personal access token listed on the user's security page."""
    page = browser.get(f"{net.meta}/security", timeout=10)
    (token_id,) = _PAT_REVOKE.findall(page.text)
    done = browser.post(
        f"{net.meta}/security/tokens/{token_id}/revoke",
        data={"csrf_token": csrf(page)},
        timeout=10,
    )
    assert done.status_code == 200, done.text[:2000]
    assert "is revoked" in done.text


def token_jti(token: str) -> str:
    """The ``jti`` of an access token (read, not verified)."""
    payload = token.split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return str(claims["jti"])


def reach(check: Any, net: CeleryNetwork, what: str) -> None:
    """Wait up to :data:`REACH` for *check*; fail with the worker's log otherwise."""
    try:
        wait_for(check, REACH)
    except AssertionError:
        pytest.fail(f"{what} did not reach todo within {REACH} s; worker log:\n{net.worker.tail()}")


def revoked_reason(net: CeleryNetwork, token: str) -> str:
    answer = api(net, token)
    assert answer.status_code == 401, answer.text
    assert answer.headers["WWW-Authenticate"].startswith("Bearer ")
    return str(answer.json()["errors"][0]["reason"])


# -- the tests ----------------------------------------------------------------------------


def test_revoked_tokens_are_refused_at_todo(network: CeleryNetwork) -> None:
    net = network
    ada = register(net, "ada")
    personal = personal_token(net, ada, ["todo/trackers:RO"])
    assert api(net, personal).status_code == 200
    oauth = client_token(net, "todo", "todo/trackers:RO")
    # Valid, but a client-only token has no trackers: 403 until the revocation arrives.
    listing = api(net, oauth)
    assert listing.status_code == 403, listing.text

    mark = outbox_mark(net)
    revoke_personal_token(net, ada)
    revoke(net, "todo", oauth)
    reach(lambda: api(net, personal).status_code == 401, net, "the personal token's revocation")
    reach(lambda: api(net, oauth).status_code == 401, net, "the OAuth token's revocation")
    assert "revoked" in revoked_reason(net, personal)
    assert "revoked" in revoked_reason(net, oauth)

    found = assert_pushed(net, mark, REVOCATION, at_least=2)
    assert len(found) == 2, found
    assert revocations(found) == {("token", token_jti(personal)), ("token", token_jti(oauth))}


def test_nothing_arrives_while_the_worker_is_stopped(network: CeleryNetwork) -> None:
    """No worker, no push: the revocation waits in meta's outbox and its message in Redis."""
    import redis

    from srcore.webhooks.celery import queue_name

    net = network
    bo = register(net, "bo")
    token = personal_token(net, bo, ["todo/trackers:RO"])
    assert api(net, token).status_code == 200
    broker = redis.Redis.from_url(net.broker, socket_timeout=5)
    mark = outbox_mark(net)
    net.worker.stop()
    try:
        revoke_personal_token(net, bo)
        (waiting,) = pushes(net, mark, REVOCATION)
        assert broker.llen(queue_name("meta")) >= 1, "the commit queued no message"
        deadline = time.monotonic() + HOLD
        while time.monotonic() < deadline:
            answer = api(net, token)
            assert answer.status_code == 200, f"arrived without a worker: {answer.text}"
            time.sleep(0.1)
        (still,) = pushes(net, mark, REVOCATION)
        assert still == waiting
        assert not still.fanned_out and still.deliveries == ()
    finally:
        broker.close()
        if net.worker.process is None:
            net.worker.start()
    # The message waited on the broker: the new worker takes it and todo learns at once.
    reach(lambda: api(net, token).status_code == 401, net, "the revocation queued meanwhile")
    (found,) = assert_pushed(net, mark, REVOCATION)
    assert found.outbox_id == waiting.outbox_id
    assert revocations([found]) == {("token", token_jti(token))}


def test_suspension_at_meta_is_refused_at_todo_and_lifted(network: CeleryNetwork) -> None:
    net = network
    sam = register(net, "sam")
    assert open_todo(net, sam, "sam").url == f"{net.todo}/create"
    token = personal_token(net, sam, ["todo/trackers:RO"])
    assert api(net, token).status_code == 200
    sam_id = token_user_id(token)
    admin = register(net, "boss")
    make_admin(net, "boss")

    mark = outbox_mark(net)
    admin_post(net, admin, sam_id, "suspend", notice="Spamming the trackers.")

    def web_refused() -> bool:
        answer = sam.get(f"{net.todo}/create", allow_redirects=False, timeout=10)
        return answer.status_code != 200

    reach(lambda: api(net, token).status_code == 401, net, "the suspension (API token)")
    reach(web_refused, net, "the suspension (web session)")
    assert revoked_reason(net, token)
    page = sam.get(f"{net.todo}/create", allow_redirects=False, timeout=10)
    assert page.status_code == 302, page.status_code
    assert page.headers["Location"].startswith(f"{net.meta}/oauth/authorize"), page.headers
    found = assert_pushed(net, mark, REVOCATION)
    assert ("suspend", str(sam_id)) in revocations(found)

    # Lifting it is a push too: todo refuses sam's new token until the unsuspend arrives.
    mark = outbox_mark(net)
    admin_post(net, admin, sam_id, "unsuspend")
    sam = requests.Session()
    back = open_todo(net, sam, "sam")
    new_token = personal_token(net, sam, ["todo/trackers:RO"])
    reach(lambda: api(net, new_token).status_code == 200, net, "the unsuspension")
    assert back.url == f"{net.todo}/create", back.url
    assert api(net, token).status_code == 401, "a token from before the suspension came back"
    found = assert_pushed(net, mark, REVOCATION)
    assert ("unsuspend", str(sam_id)) in revocations(found)


def test_logout_at_meta_ends_the_session_at_todo(network: CeleryNetwork) -> None:
    net = network
    lou = register(net, "lou")
    assert open_todo(net, lou, "lou").url == f"{net.todo}/create"
    mark = outbox_mark(net)
    front = lou.get(f"{net.meta}/", timeout=10)
    lou.post(f"{net.meta}/logout", data={"csrf_token": csrf(front)}, timeout=10)

    def logged_out() -> bool:
        answer = lou.get(f"{net.todo}/create", allow_redirects=False, timeout=10)
        return answer.status_code == 302 and "/oauth/authorize" in answer.headers["Location"]

    reach(logged_out, net, "the logout")
    found = assert_pushed(net, mark, REVOCATION)
    assert [kind for kind, _subject in revocations(found)] == ["session"]


def test_profile_change_at_meta_reaches_todo(network: CeleryNetwork) -> None:
    net = network
    pia = register(net, "pia")
    assert open_todo(net, pia, "pia").url == f"{net.todo}/create"
    user_id = token_user_id(personal_token(net, pia, ["todo/trackers:RO"]))
    assert todo_user(net, user_id)["location"] is None  # type: ignore[index]

    mark = outbox_mark(net)
    page = pia.get(f"{net.meta}/profile", timeout=10)
    form = {
        "csrf_token": csrf(page),
        "url": "https://pia.example.org/",
        "location": "Lisbon",
        "bio": "Grows *tomatoes*.",
    }
    saved = pia.post(f"{net.meta}/profile", data=form, timeout=10)
    assert saved.status_code == 200, saved.text[:2000]

    reach(lambda: (todo_user(net, user_id) or {}).get("location") == "Lisbon", net, "the profile")
    row = todo_user(net, user_id)
    assert row is not None
    assert (row["url"], row["bio"], row["username"]) == (
        "https://pia.example.org/",
        "Grows *tomatoes*.",
        "pia",
    )
    (found,) = assert_pushed(net, mark, PROFILE)
    assert found.payload["id"] == user_id, found.payload
