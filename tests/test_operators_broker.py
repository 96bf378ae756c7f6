"""operators.md's promise for a Celery broker (Redis) that restarts, seen from the web
process: todo under gunicorn with ``webhooks-broker`` set, a request that creates a ticket
(an event) while the broker is down, or stops answering, is answered as usual with its
event kept in the outbox, and once the broker is back the web process's next commit wakes
the workers again: every event reaches the receiver, without a restart of anything.

The broker is a redis-server of this module's own on a free port (the shared one is never
stopped); the Celery worker runs without ``--beat``, so what arrives after the broker is
back was carried by the web process's wake-ups, not by beat's ticks.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from test_db_pressure import Todo, make_todo, serve

from srcore.testing import require_or_skip

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

import reliability as harness

pytestmark = pytest.mark.slow


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[harness.RedisServer]:
    require_or_skip(harness.redis_available(), "redis-server")
    with harness.RedisServer(tmp_path / "redis") as server:
        yield server


@pytest.fixture
def network(
    tmp_path: Path, redis_server: harness.RedisServer
) -> Iterator[tuple[Todo, str, harness.Receiver]]:
    """todo (SQLite) under gunicorn with our Redis as its broker, a receiver subscribed to
    its new tickets, and a Celery worker of todo's without beat; yields (todo, URL, receiver)."""
    from srcore.webhooks import Subscription, generate_secret

    todo = make_todo(tmp_path, f"sqlite:///{tmp_path / 'todo.db'}")
    text = todo.config.read_text(encoding="utf-8")
    broker = f"webhooks-broker = {redis_server.url}\nallow-private-webhook-targets = 127.0.0.0/8\n"
    todo.config.write_text(text.replace("[global]\n", "[global]\n" + broker, 1), encoding="utf-8")
    env = dict(
        os.environ, SRCORE_SERVICE="todo", SRCORE_CONFIG=str(todo.config), PYTHONUNBUFFERED="1"
    )
    command = [sys.executable, "-m", "celery", "-A", "srcore.webhooks.celery", "worker"]
    command += ["--pool", "prefork", "-c", "2", "--loglevel", "warning", "-n", "ops@%h"]
    command += ["--without-gossip", "--without-mingle", "--without-heartbeat"]
    worker = harness.WorkerProcess(command, env, tmp_path / "celery.log", lifetime=150)
    with harness.Receiver() as receiver:
        with todo.app.extensions["srcore"].db.transaction() as session:
            session.add(
                Subscription(
                    owner_id=1,
                    url=receiver.url,
                    events="ticket:created",
                    scopes="todo/tickets:RO",
                    secret=generate_secret(),
                )
            )
        todo.app.extensions["srcore"].db.dispose()
        worker.start()
        try:
            with serve(todo, tmp_path, workers=1, threads=4) as url:
                yield todo, url, receiver
        finally:
            worker.stop()


def create_ticket(url: str, todo: Todo, title: str) -> None:
    """One ticket through the API; the client's timeout bounds a request that would hang."""
    answer = requests.post(
        f"{url}/api/trackers/bugs/tickets", json={"title": title}, headers=todo.headers, timeout=20
    )
    assert answer.status_code == 201, answer.text


def arrived(receiver: harness.Receiver, titles: set[str]) -> None:
    """Wait (a bounded while) until every ticket titled in *titles* reached the receiver."""
    import json

    def seen() -> set[str]:
        return {json.loads(item.body)["data"]["title"] for item in receiver.snapshot()}

    try:
        harness.wait_until(lambda: titles <= seen(), timeout=30, what=f"{sorted(titles)}")
    except TimeoutError:
        pytest.fail(f"missing at the receiver: {sorted(titles - seen())}")


def test_requests_go_on_while_the_broker_is_away_and_nothing_is_lost(
    network: tuple[Todo, str, harness.Receiver], redis_server: harness.RedisServer
) -> None:
    """Down (refused), then restarted; then stopped answering, then back. A wake-up that
    timed out may still reach Redis once it answers: its mark ("a drain is queued") would
    stand for a minute with no drain queued for it, turning commits away; the next commit
    after a failure queues one anyway."""
    todo, url, receiver = network
    create_ticket(url, todo, "before")
    arrived(receiver, {"before"})
    redis_server.stop()
    for n in range(3):
        create_ticket(url, todo, f"down {n}")  # the wake-up fails at once and is logged
    redis_server.start()
    create_ticket(url, todo, "restarted")  # this commit's wake-up drains what waited too
    arrived(receiver, {"down 0", "down 1", "down 2", "restarted"})
    assert redis_server.process is not None
    os.kill(redis_server.process.pid, signal.SIGSTOP)
    try:
        create_ticket(url, todo, "silent")  # answered once the wake-up gives up
    finally:
        os.kill(redis_server.process.pid, signal.SIGCONT)
    create_ticket(url, todo, "back")
    arrived(receiver, {"silent", "back"})
