"""What docs/operators.md promises when PostgreSQL or Redis restarts under a running
service, checked with real servers: a PostgreSQL database of the test's own whose
connections ``pg_terminate_backend`` ends (what a restart does to them), and a
redis-server of the test's own, killed and started again.
"""

from __future__ import annotations

import collections
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests
import sqlalchemy as sa
from test_db_pressure import CLIENTS, check_rows, make_todo, outcome, serve
from test_db_pressure_postgres import _cut, database
from test_ratelimit import SCOPE, bearer, build, create, things
from test_statement_timeout import BOUND, bounded_app, guarded

from srcore.ratelimit import write_limits
from srcore.testing import require_or_skip

__all__ = ["bounded_app", "database"]  # fixtures, used by name

pytestmark = pytest.mark.slow


def _harness() -> Any:
    """bench/reliability.py: its receiver, worker processes and redis-server."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
    import reliability

    return reliability


def _redis_server(directory: Path) -> Any:
    """A redis-server of this test's own (never the shared one), not started yet."""
    harness = _harness()
    require_or_skip(harness.redis_available(), "redis-server")
    return harness.RedisServer(directory)


# -- PostgreSQL ------------------------------------------------------------------------------


def test_a_restart_in_the_middle_of_traffic_is_503s_then_served_again(
    tmp_path: Path, database: tuple[str, str]
) -> None:
    """operators.md, Restarts and outages: connections ended while requests run fail only
    those requests, each with a 503 and Retry-After (never a 500, a reset connection or
    the driver's words), nothing half written, and the service serves again by itself."""
    url, _role = database
    service = make_todo(tmp_path, url)
    name = sa.make_url(url).database or ""
    headers = service.headers
    created: list[int] = []
    with serve(service, tmp_path, workers=2, threads=4) as served:
        first = requests.post(
            f"{served}/api/trackers/bugs/tickets", json={"title": "t"}, headers=headers, timeout=30
        )
        assert first.status_code == 201, first.text
        created.append(1)
        done = threading.Event()

        def request(index: int) -> str:
            if index % 3 == 0:
                answer = requests.get(
                    f"{served}/api/trackers/bugs/tickets", headers=headers, timeout=30
                )
            elif index % 3 == 1:
                answer = requests.post(
                    f"{served}/api/trackers/bugs/tickets",
                    json={"title": f"t{index}"},
                    headers=headers,
                    timeout=30,
                )
            else:
                answer = requests.post(
                    f"{served}/api/trackers/bugs/tickets/1/comments",
                    json={"text": f"c{index}"},
                    headers=headers,
                    timeout=30,
                )
            if answer.status_code == 201 and index % 3 == 1:
                created.append(index)
            return outcome(answer)

        cuts: list[int] = []

        def cut_while_busy() -> None:
            # Five restarts, each while the clients keep the workers busy.
            for _ in range(5):
                if done.wait(0.3):
                    return
                cuts.append(_cut(name))

        cutter = threading.Thread(target=cut_while_busy)
        cutter.start()
        try:
            with ThreadPoolExecutor(max_workers=CLIENTS) as pool:
                during = collections.Counter(pool.map(request, range(600)))
        finally:
            done.set()
            cutter.join(timeout=60)
        assert sum(cuts) >= 1, cuts
        assert set(during) <= {"ok", "unavailable"}, during
        assert sum(during.values()) == 600
        # No restart of the service: once the database is back, every request is served.
        with ThreadPoolExecutor(max_workers=CLIENTS) as pool:
            after = collections.Counter(pool.map(request, range(600, 660)))
        assert after == {"ok": 60}, after
        health = requests.get(f"{served}/healthz", timeout=30)
        assert health.status_code == 200 and health.headers["Cache-Control"] == "no-store"
    tickets, _comments = check_rows(service)
    assert tickets == len(created)
    service.app.extensions["srcore"].db.dispose()


@pytest.mark.parametrize("srcore_backend", ["postgresql"], indirect=True)
def test_the_statement_bound_holds_on_the_connections_a_restart_replaced(
    bounded_app: Any,
) -> None:
    """operators.md, Slow statements and Restarts: after a restart the pool connects anew,
    and the new connections are bounded as the old ones were."""
    client = bounded_app.test_client()
    assert client.get("/api/count").get_json()["statement_timeout"] == BOUND
    url = bounded_app.extensions["srcore"].db.engine.url
    assert _cut(url.database or "") >= 1
    answer = client.get("/api/count")
    assert answer.status_code == 200, answer.get_data(as_text=True)
    assert answer.get_json()["statement_timeout"] == BOUND
    stopped = guarded(lambda: client.get("/api/slow"))
    assert stopped.status_code == 503, stopped.get_data(as_text=True)[:300]
    assert "Retry-After" not in stopped.headers


# -- Redis -----------------------------------------------------------------------------------


def test_write_limits_count_in_process_while_redis_restarts_and_go_back_to_it(
    app: Any,
    srcore_signing_key: Any,
    make_token: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """operators.md, Redis: while Redis is away the write limits go on counting in the
    process (writes are served, and refused past the limit), and once Redis answers again
    the counts go back to it: a second process on the same Redis sees them."""
    import redis

    from srcore.testing import create_user

    now = [time.time()]
    monkeypatch.setattr(time, "time", lambda: now[0])
    with _redis_server(tmp_path / "redis") as server:
        lines = f"redis-url = {server.url}\nwrite-rate-limit = 3/minute\n"
        first = build(app, srcore_signing_key, tmp_path, global_lines=lines)
        second = build(app, srcore_signing_key, tmp_path, global_lines=lines)
        prefix = f"srcore-writes-test/{uuid.uuid4().hex}"
        for built in (first, second):
            write_limits(built).prefix = prefix
        alice, bob = create_user(first, "alice"), create_user(first, "bob")
        heads = bearer(make_token(SCOPE, user=alice))
        assert create(first.test_client(), heads).status_code == 201
        store = write_limits(first).store()
        store.retry_every = 0.0  # type: ignore[attr-defined]  # try Redis at every write

        server.stop()
        # Counted in the process: alice's first write went to Redis, these three do not.
        answers = [create(first.test_client(), heads).status_code for _ in range(4)]
        assert answers == [201, 201, 201, 429], answers

        server.start()  # empty: nothing was persisted
        bobs = bearer(make_token(SCOPE, user=bob))
        answers = [create(first.test_client(), bobs).status_code for _ in range(2)]
        assert answers == [201, 201], answers
        client = redis.Redis.from_url(server.url)
        try:
            assert client.keys(f"*{prefix}*user:{bob.id}*"), "counted in Redis again"
        finally:
            client.close()
        # The other process, on the same Redis, sees bob's two writes.
        answers = [create(second.test_client(), bobs).status_code for _ in range(2)]
        assert answers == [201, 429], answers
    assert things(first) == 1 + 3 + 2 + 1


#: The body of ``srcore worker`` for the sample service (not installed as a service).
_WORKER = """
import os, signal, threading
from pathlib import Path

import sample_service
from srcore.webhooks.worker import Worker

app = sample_service.create_app(config=Path(os.environ["SRCORE_CONFIG"]))
worker = Worker(app, poll_interval=0.1)
stop = threading.Event()
signal.signal(signal.SIGTERM, lambda *_: stop.set())
try:
    worker.run(stop)
finally:
    worker.close()
"""


def test_a_webhook_worker_rides_out_database_restarts(tmp_path: Path) -> None:
    """operators.md, Restarts and outages and Webhook workers: restarting PostgreSQL
    needs no restart of the services, their workers included. The worker's connections
    are ended again and again while events come in; it keeps running (no exit for a
    supervisor to restart) and delivers every event."""
    from srcore.testdb import postgres_available

    require_or_skip(postgres_available(), "PostgreSQL")
    harness = _harness()
    with (
        harness.service_database("postgresql", tmp_path) as url,
        harness.Receiver() as receiver,
    ):
        config = harness.write_config(tmp_path / "config.ini", database_url=url)
        app = harness.build_app(config)
        [(_id, secret)] = harness.subscribe(app, receiver.url)
        # What `srcore worker` runs, with the worker's own lease and timings.
        command = [sys.executable, "-c", _WORKER]
        env = harness.worker_env(config)
        worker = harness.WorkerProcess(command, env, tmp_path / "worker.log", 300)
        worker.start()
        try:
            harness.emit_events(app, 10)
            try:
                harness.wait_until(
                    lambda: harness.delivery_states(app) == {"delivered": 10},
                    timeout=60,
                    what="the first events delivered",
                )
            except TimeoutError:
                raise AssertionError((harness.delivery_states(app), worker.tail())) from None
            name = sa.make_url(url).database or ""
            for round_ in range(3):
                # Ended while the worker waits for work, and again while it delivers.
                assert _cut(name) >= 1
                harness.emit_events(app, 10, start=10 + 10 * round_)
                _cut(name)
                time.sleep(0.5)
            # A step cut while fanning out leaves its claim on those events to lapse (a
            # minute): they are delayed, never lost.
            harness.wait_until(
                lambda: harness.delivery_states(app) == {"delivered": 40},
                timeout=180,
                what="every event delivered after the restarts",
            )
            assert worker.exits == 0, worker.tail()
            assert worker.process is not None and worker.process.poll() is None, worker.tail()
        finally:
            worker.stop()
            app.extensions["srcore"].db.dispose()
    assert harness.check_received(receiver, secret)["numbers"] == set(range(40))


# -- Rotating keys ---------------------------------------------------------------------------


def test_a_replaced_secret_key_logs_out_cleanly_and_a_form_left_open_fails_once(
    app: Any, user: Any, tmp_path: Path
) -> None:
    """operators.md, Rotating keys: after a service's ``secret-key`` is replaced (and the
    service restarted), its old session cookies log no one in, and nothing errs on them: a
    page asks for a login, a form opened before fails once with a clear 400 and works
    again from a fresh page."""
    import re
    import secrets

    import sample_service

    from srcore.testing import log_in_client

    before = log_in_client(app.test_client(), user)
    assert before.get("/private").status_code == 200
    stale_token = before.get("/form").get_json()["csrf"]
    name = app.config["SESSION_COOKIE_NAME"]
    cookie = before.get_cookie(name)
    assert cookie is not None

    text = Path(app.extensions["srcore"].config.path).read_text(encoding="utf-8")
    old = re.search(r"^secret-key = .*$", text.split("[sample]", 1)[1], re.MULTILINE)
    assert old is not None
    replaced = text.replace(old.group(0), f"secret-key = {secrets.token_urlsafe(48)}")
    path = tmp_path / "rotated.ini"
    path.write_text(replaced, encoding="utf-8")
    rotated = sample_service.create_app(config=path)
    rotated.config["TESTING"] = True
    try:
        after = rotated.test_client()
        after.set_cookie(name, cookie.value, domain=cookie.domain or "localhost")
        page = after.get("/private")
        body = page.get_data(as_text=True)
        # Sent to log in (this test's network has no meta to send it to: a clear 503).
        asked = page.status_code in (302, 303) or "Logging in needs" in body
        assert asked and "hello" not in body, (page.status_code, body[-800:])
        assert "Traceback" not in body
        origin = {"Origin": str(rotated.extensions["srcore"].section["origin"])}
        refused = after.post("/form", data={"csrf_token": stale_token}, headers=origin)
        assert refused.status_code == 400, refused.get_data(as_text=True)[:300]
        # The page of a form sent from an earlier session: it says so, and sends nothing.
        assert "Not sent: your session changed" in refused.get_data(as_text=True)
        fresh = after.get("/form").get_json()["csrf"]
        sent = after.post("/form", data={"csrf_token": fresh}, headers=origin)
        assert sent.status_code == 200, sent.get_data(as_text=True)[:300]
    finally:
        rotated.extensions["srcore"].db.dispose()


def test_a_redis_url_on_a_unix_socket_counts_writes_and_logins_there(
    app: Any,
    srcore_signing_key: Any,
    make_token: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """operators.md, Redis: ``redis-url`` may be ``unix://`` (config check takes it). The
    write limits and meta's login throttle gave it to ``limits``, which names a socket
    ``redis+unix://`` and refused the URL: every write was a 500."""
    import subprocess

    import redis

    from srcore.testing import create_user
    from srcore.throttle import FallbackStore, Throttle, make_store

    require_or_skip(_harness().redis_available(), "redis-server")
    now = [time.time()]
    monkeypatch.setattr(time, "time", lambda: now[0])
    socket_path = tmp_path / "redis.sock"
    command = ["redis-server", "--port", "0", "--unixsocket", str(socket_path)]
    command += ["--unixsocketperm", "700", "--save", "", "--appendonly", "no"]
    command += ["--dir", str(tmp_path), "--logfile", str(tmp_path / "redis.log")]
    server = subprocess.Popen(
        command,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    client = redis.Redis(unix_socket_path=str(socket_path), socket_connect_timeout=0.5)
    try:
        for _ in range(200):  # ten seconds at most
            try:
                if client.ping():
                    break
            except redis.RedisError:
                time.sleep(0.05)
        url = f"unix://{socket_path}?db=0"
        lines = f"redis-url = {url}\nwrite-rate-limit = 2/minute\n"
        built = build(app, srcore_signing_key, tmp_path, global_lines=lines)
        prefix = f"srcore-writes-test/{uuid.uuid4().hex}"
        write_limits(built).prefix = prefix
        heads = bearer(make_token(SCOPE, user=create_user(built, "alice")))
        answers = [create(built.test_client(), heads).status_code for _ in range(3)]
        assert answers == [201, 201, 429], answers
        assert client.keys(f"*{prefix}*"), "counted in Redis, over its socket"
        assert not write_limits(built).store().degraded  # type: ignore[attr-defined]

        store = make_store(url, timeout=0.5)
        assert isinstance(store, FallbackStore)
        Throttle(store, max_failures=3, prefix="unix-test").failure([("login-account", "bob")])
        assert not store.degraded
        assert client.keys("*unix-test:login-account:bob*")
    finally:
        client.close()
        server.kill()
        server.wait()


@pytest.mark.parametrize("srcore_backend", ["postgresql"], indirect=True)
def test_an_open_connection_gives_up_on_a_server_that_stops_acknowledging(app: Any) -> None:
    """operators.md, PostgreSQL: a server that drops packets is a 503, not a request hanging.
    ``connect_timeout`` bounds connecting only; an open connection whose server stops
    answering at the network level waited on TCP's own retries (a quarter of an hour on
    Linux). Its connections carry TCP_USER_TIMEOUT and keepalives, as libpq applies them;
    a URL's own values win. (Dropping packets for real needs a firewall rule, which no test
    of a shared machine may set.)"""
    from srcore.db import Database

    engine = app.extensions["srcore"].db.engine
    with engine.connect() as connection:
        found = connection.connection.dbapi_connection.info.get_parameters()
    assert found.get("tcp_user_timeout") == "10000", found
    assert found.get("keepalives") == "1" and found.get("keepalives_idle") == "30", found
    own = Database(engine.url.update_query_dict({"tcp_user_timeout": "2500"}))
    try:
        with own.engine.connect() as connection:
            found = connection.connection.dbapi_connection.info.get_parameters()
        assert found.get("tcp_user_timeout") == "2500", found
    finally:
        own.dispose()
