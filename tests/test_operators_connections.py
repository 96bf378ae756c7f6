"""operators.md's count of PostgreSQL connections, measured: todo under gunicorn with
``--workers 2 --threads 3``, its revocation puller pulling from a stand-in meta on
127.0.0.1, and ``srcore worker todo`` delivering to a receiver, on a throw-away database.

Two bursts: tokens of users todo has never seen (each request copies its user from meta,
answering slowly, in a transaction of its own), and writes that emit events the worker
fans out and delivers. Meanwhile ``pg_stat_activity`` is read every few milliseconds, by
the ``application_name`` srcore gives each process (``srcore todo web``, ``srcore todo
worker``); no kind of process may have more connections open at once than the formula
allows. (Had the request's session kept its connection while it waits for meta, the new
users' burst would take two per thread: 12 here, where the formula says 8.)
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import re
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
import sqlalchemy as sa
from test_db_pressure import SCOPES, Todo, make_todo, serve

from srcore.testing import mint_token, require_or_skip

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

import reliability as harness

pytestmark = pytest.mark.slow

WORKERS, THREADS = 2, 3
#: docs/operators.md: each web worker min(threads + 1, 15), each srcore worker 2 (the sum
#: of a kind's peaks: never fewer than it had open at once).
WEB_MOST = WORKERS * min(THREADS + 1, 15)
WORKER_MOST = 2
#: Revocations meta answers, one a page.
SUSPENSIONS = 300


class _Meta(BaseHTTPRequestHandler):
    """meta's client-credentials token, user profiles (answered slowly, so that requests
    copying users overlap) and revocations: suspensions of accounts nobody uses, one a page,
    which each process's puller applies in the database."""

    def _answer(self, body: object) -> None:
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self._answer({"access_token": "service", "expires_in": 3600, "token_type": "Bearer"})

    def do_GET(self) -> None:
        user = re.fullmatch(r"/api/users/(\d+)", self.path)
        if user is None:
            since = int(parse_qs(urlsplit(self.path).query).get("since", ["0"])[0])
            if since >= SUSPENSIONS:
                self._answer({"events": [], "last": since})
                return
            event = {"seq": since + 1, "kind": "suspend", "subject": str(9000 + since)}
            self._answer({"events": [event], "last": since + 1})
            return
        time.sleep(0.3)
        uid = int(user.group(1))
        self._answer({"id": uid, "username": f"u{uid}", "email": f"u{uid}@example.invalid"})

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextlib.contextmanager
def stand_in_meta() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Meta)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


class Peaks:
    """The most connections to *database* seen open at once, by application_name."""

    def __init__(self, url: str) -> None:
        admin = sa.make_url(url).set(database="postgres")
        self.database = sa.make_url(url).database
        self.engine = sa.create_engine(admin, poolclass=sa.pool.NullPool)
        self.most: collections.Counter[str] = collections.Counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def _watch(self) -> None:
        query = sa.text(
            "SELECT application_name, count(*) FROM pg_stat_activity"
            " WHERE datname = :name AND pid <> pg_backend_pid() GROUP BY 1"
        )
        with self.engine.connect() as connection:
            while not self._stop.wait(0.01):
                for name, count in connection.execute(query, {"name": self.database}):
                    self.most[name] = max(self.most[name], count)
                connection.rollback()

    def __enter__(self) -> Peaks:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self.engine.dispose()


@pytest.fixture
def database() -> Iterator[str]:
    from srcore import testdb

    require_or_skip(testdb.postgres_available(), "PostgreSQL")
    url = testdb.create_test_database(prefix="srcore_connections")
    try:
        yield url
    finally:
        testdb.drop_test_database(url)


def test_no_process_opens_more_connections_than_operators_md_counts(
    tmp_path: Path, database: str
) -> None:
    from srcore.webhooks import Subscription, generate_secret

    todo = make_todo(tmp_path, database)
    with stand_in_meta() as meta, harness.Receiver() as receiver:
        text = todo.config.read_text(encoding="utf-8")
        added = "revocation-pull-interval = 1s\nallow-private-webhook-targets = 127.0.0.0/8\n"
        text = text.replace("[global]\n", "[global]\n" + added, 1)
        text += f"oauth-client-id = todo\noauth-client-secret = {secrets.token_urlsafe(30)}\n"
        text += f"\n[meta]\norigin = {meta}\ndatabase-url = sqlite:///{tmp_path / 'meta.db'}\n"
        todo.config.write_text(text + f"secret-key = {secrets.token_urlsafe(48)}\n")
        with todo.app.extensions["srcore"].db.transaction() as session:
            for _ in range(10):
                session.add(
                    Subscription(
                        owner_id=1,
                        url=receiver.url,
                        events="ticket:created comment:created",
                        scopes="todo/tickets:RO",
                        secret=generate_secret(),
                    )
                )
        todo.app.extensions["srcore"].db.dispose()
        env = dict(os.environ, SRCORE_CONFIG=str(todo.config))
        env.pop("PGAPPNAME", None)
        command = ["timeout", "-s", "KILL", "150", sys.executable, "-m", "srcore", "worker"]
        with (
            open(tmp_path / "worker.log", "w", encoding="utf-8") as log,
            Peaks(database) as peaks,
        ):
            worker = subprocess.Popen([*command, "todo"], env=env, stdout=log, stderr=log)
            try:
                with serve(todo, tmp_path, workers=WORKERS, threads=THREADS) as url:
                    burst(url, todo)
                    delivered = 10 * (1 + 2 * 40)  # ticket 1, then 40 tickets and 40 comments
                    harness.wait_until(
                        lambda: len(receiver.snapshot()) >= delivered, timeout=90, what="all"
                    )
            finally:
                worker.terminate()
                try:
                    worker.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    # Still a failure, but reaped here, and its log shown: left to the
                    # garbage collector, it fails whichever test collects it next.
                    worker.kill()
                    worker.wait(timeout=10)
                    tail = (tmp_path / "worker.log").read_text(encoding="utf-8")[-3000:]
                    raise AssertionError(f"the worker outlived SIGTERM by 20 s:\n{tail}") from None
    counted = dict(peaks.most)
    assert counted.get("srcore todo web", 0) > 0, counted
    assert counted.get("srcore todo worker", 0) > 0, counted
    assert counted["srcore todo web"] <= WEB_MOST, counted
    # The worker's start-up checks the migrations with a connection of their own.
    worker_most = counted["srcore todo worker"] + counted.get("srcore worker", 0)
    assert worker_most <= WORKER_MOST, counted


def burst(url: str, todo: Todo) -> None:
    """New users' tokens from more clients than the server has threads, then writes."""
    headers, key = todo.headers, todo.key
    clients = 2 * WORKERS * THREADS

    def newcomer(user_id: int) -> int:
        token = mint_token(key, audience="todo", scopes=SCOPES, user_id=user_id)
        answer = requests.get(
            f"{url}/api/trackers", headers={"Authorization": f"Bearer {token}"}, timeout=60
        )
        return answer.status_code

    with ThreadPoolExecutor(max_workers=clients) as pool:
        assert set(pool.map(newcomer, range(1000, 1000 + 3 * clients))) == {200}
    first = requests.post(
        f"{url}/api/trackers/bugs/tickets", json={"title": "first"}, headers=headers, timeout=30
    )
    assert first.status_code == 201, first.text

    def write(index: int) -> int:
        if index % 2:
            path, body = "/api/trackers/bugs/tickets", {"title": f"ticket {index}"}
        else:
            path, body = "/api/trackers/bugs/tickets/1/comments", {"text": f"comment {index}"}
        return requests.post(url + path, json=body, headers=headers, timeout=30).status_code

    with ThreadPoolExecutor(max_workers=clients) as pool:
        assert set(pool.map(write, range(80))) == {201}
