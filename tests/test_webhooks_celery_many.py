"""Two Celery worker processes share one todo database, started as docs/operators.md says.

The operators' guide runs webhooks under Celery with one command per service, the first with
``--beat`` (exactly one process per service has it) and as many more as you like without
it, e.g. ``--concurrency 8 -n todo@%h``; a commit queues a ``drain``, beat queues one every
poll interval, and a drain that finds more waiting than it holds asks one more process to
join. "Order:" promises that a subscription receives its events' first attempts in event
order, and that several workers sharing a database hold this together.

Here both commands run side by side (each its own process group, never outliving the
test), their broker a redis-server of this test's own on a free port, on PostgreSQL (the
database the guide gives Celery's many machines), while events are emitted through todo's
app to subscriptions of a 127.0.0.1 receiver. tests/test_webhooks_many_workers.py's
receiver and checks are reused: every delivery must arrive and be recorded delivered, no
webhook-id be accepted twice, each subscription's first attempts come in event order, and
neither process log a traceback, an error or a warning; with a healthy receiver and with
one that fails about 30 % of requests. Which process delivers what is printed, not checked:
the guide promises that another process joins a burst, not that it finds deliveries to
claim (each subscription's are one worker's at a time, and 30 fit in one claim).
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from srcore.testing import require_or_skip, serving

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

import reliability as harness
from test_webhooks_many_workers import (
    EVENT,
    SUBSCRIPTIONS,
    CountingReceiver,
    all_delivered,
    check,
    emit_events,
    subscribe,
    todo_config,
)

pytestmark = pytest.mark.slow

__all__ = ["todo_config"]  # the fixture, imported: a migrated todo database's config

#: Events per test: 30 subscriptions make 6,000 deliveries, drained by several tasks at once.
EVENTS = 200
#: Bounds on every wait: a process ready, every delivery recorded.
START_WAIT, DELIVERY_WAIT = 30, 30
#: No worker process outlives this, whatever happens to the test.
LIFETIME = 120
#: A delivery recorded, as srcore's handler writes it and as Celery's (pool child named).
DELIVERED = re.compile(
    rf"^(?:\S+ \S+ INFO srcore\.webhooks: |\[[^]]*: INFO/([\w-]+)\] )"
    rf"delivered {re.escape(EVENT)} (\S+) to ",
    re.MULTILINE,
)
#: What no worker may log: an error of srcore's or of Celery's, a warning, a traceback.
TROUBLE = re.compile(r"^.*(?:\b(?:ERROR|CRITICAL|WARNING)[ /]|Traceback).*$", re.MULTILINE)


class CeleryProcess:
    """One operator's ``celery -A srcore.webhooks.celery worker ...`` of todo, its output
    kept in a file (bench/reliability.py's process: its own group, killed with it)."""

    def __init__(self, config: Path, tmp_path: Path, name: str, options: list[str]) -> None:
        command = [sys.executable, "-m", "celery", "-A", "srcore.webhooks.celery", "worker"]
        env = dict(os.environ, SRCORE_SERVICE="todo", SRCORE_CONFIG=str(config))
        env["PYTHONUNBUFFERED"] = "1"
        self.log_path = tmp_path / f"celery-{name}.log"
        self.process = harness.WorkerProcess(command + options, env, self.log_path, LIFETIME)

    def output(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def delivered(self) -> list[str]:
        """The webhook-ids this process (its pool's children) recorded as delivered; each
        once, whether one handler or two (srcore's and Celery's root one) wrote it."""
        return sorted({webhook_id for _child, webhook_id in DELIVERED.findall(self.output())})

    def children(self) -> dict[str, int]:
        """Deliveries per pool child, from the lines Celery's root handler repeats (naming
        the child); empty if it does not."""
        found = {m for m in DELIVERED.findall(self.output()) if m[0]}
        return dict(Counter(child for child, _webhook_id in found))

    def trouble(self) -> list[str]:
        return TROUBLE.findall(self.output())

    def wait_ready(self) -> None:
        deadline = time.monotonic() + START_WAIT
        while " ready." not in self.output():
            assert self.process.exits == 0, f"celery exited:\n{self.output()[-3000:]}"
            assert time.monotonic() < deadline, f"celery did not start:\n{self.output()[-3000:]}"
            time.sleep(0.1)


class AllProcesses:
    """The processes together, as ``check`` sees one worker: the deliveries each recorded
    (one recorded by both counts twice), everything they logged."""

    def __init__(self, running: list[CeleryProcess]) -> None:
        self.running = running

    def output(self) -> str:
        return "\n".join(worker.output() for worker in self.running)

    def delivered(self) -> list[str]:
        return [webhook_id for worker in self.running for webhook_id in worker.delivered()]


@contextlib.contextmanager
def celery_workers(config: Path, tmp_path: Path) -> Iterator[list[CeleryProcess]]:
    """The two commands of docs/operators.md, ready; stopped at the end whatever happened.
    The first's ``--concurrency`` (by default the CPU count) is 2: the same on any machine."""
    first = ["--beat", "--loglevel", "info", "--schedule", str(tmp_path / "celerybeat-todo")]
    first += ["--concurrency", "2"]
    more = ["--loglevel", "info", "--concurrency", "8", "-n", "todo@%h"]
    started: list[CeleryProcess] = []
    try:
        for name, options in (("beat", first), ("more", more)):
            started.append(CeleryProcess(config, tmp_path, name, options))
            started[-1].process.start()
        for worker in started:
            worker.wait_ready()
        yield started
    finally:
        for worker in started:
            worker.process.stop()


@contextlib.contextmanager
def receiving(failure_rate: float) -> Iterator[CountingReceiver]:
    receiver = CountingReceiver(failure_rate)
    # Ten pool processes open their keep-alive connections at once: a backlog of 5 would
    # drop SYNs, and a first attempt whose connection was dropped arrives as a retry.
    receiver.server.socket.listen(128)
    with serving(receiver.server):
        yield receiver


@pytest.fixture
def redis_url(tmp_path: Path) -> Iterator[str]:
    """A redis-server of this test's own: no other test's queue or queued-drain mark."""
    require_or_skip(harness.redis_available(), "redis-server")
    with harness.RedisServer(tmp_path / "redis") as server:
        yield server.url


@pytest.fixture
def celery_config(todo_config: Path, redis_url: str) -> Path:
    """todo's migrated config, its webhooks carried by the broker."""
    text = todo_config.read_text(encoding="utf-8")
    todo_config.write_text(
        text.replace("[global]\n", f"[global]\nwebhooks-broker = {redis_url}\n", 1), "utf-8"
    )
    return todo_config


@pytest.fixture
def todo_app(celery_config: Path) -> Iterator[Any]:
    import todo

    app = todo.create_app(config=celery_config)
    try:
        yield app
    finally:
        app.extensions["srcore"].db.dispose()


def wait_for_all(app: Any, running: list[CeleryProcess]) -> None:
    done = all_delivered(app, SUBSCRIPTIONS * EVENTS)
    deadline = time.monotonic() + DELIVERY_WAIT
    while not done():
        for worker in running:
            exits = worker.process.exits
            assert exits == 0, f"a celery worker exited:\n{worker.output()[-3000:]}"
        assert time.monotonic() < deadline, f"not every delivery recorded within {DELIVERY_WAIT} s"
        time.sleep(0.25)


def run_celery(app: Any, config: Path, tmp_path: Path, *, failure_rate: float = 0.0) -> None:
    from srcore.webhooks.celery import CeleryDispatcher

    assert isinstance(app.extensions["srcore.webhooks"].dispatcher, CeleryDispatcher)
    with receiving(failure_rate) as receiver:
        paths = subscribe(app, receiver)
        with celery_workers(config, tmp_path) as running:
            emit_events(app, EVENTS)
            wait_for_all(app, running)
            troubles = [line for worker in running for line in worker.trouble()]
            shares = [len(worker.delivered()) for worker in running]
            children = [worker.children() for worker in running]
            print(f"\ndeliveries per process {shares}, per pool child {children}")
            # Who delivers is not promised: a drain that finds every subscription held by
            # another's claim (a first attempt in flight) ends at once, so one process may
            # deliver the lot while the other's drains find nothing to claim.
            check(app, receiver, paths, [AllProcesses(running)], EVENTS)  # type: ignore[list-item]
            assert not troubles, "a worker logged trouble:\n" + "\n".join(troubles[:20])


@pytest.mark.parametrize("todo_config", ["postgresql"], indirect=True)
def test_celery_workers_deliver_everything_once_in_order(
    todo_app: Any, celery_config: Path, tmp_path: Path
) -> None:
    run_celery(todo_app, celery_config, tmp_path)


@pytest.mark.parametrize("todo_config", ["postgresql"], indirect=True)
def test_celery_workers_retry_a_failing_receiver_and_send_none_twice(
    todo_app: Any, celery_config: Path, tmp_path: Path
) -> None:
    run_celery(todo_app, celery_config, tmp_path, failure_rate=0.3)
