"""Several ``srcore worker`` processes share one database: the database is the queue.

docs/operators.md promises that several workers may share one database ("rows are
claimed, so no two send one delivery at once") and that a subscription receives its events'
first attempts in event order. Here real worker processes run side by side against one todo
database, on SQLite and on PostgreSQL, while events are emitted through todo's app to
subscriptions of a 127.0.0.1 receiver that records every request it gets. Every delivery
must arrive, no webhook-id be accepted twice, each subscription's first attempts come in
event order, and no worker log a traceback: with a healthy receiver, with one that fails
about 30 % of requests, with one worker stopped by SIGTERM midway while the other carries
on, and with every delivery made before the workers start (so that only their claims meet,
not their fan-outs).

Delivery is at least once, as the same page says: an attempt that got no answer within
webhook-timeout is sent again, and the receiver may have taken it all the same, late (on a
loaded machine this receiver, in the test's process, can be held up that long). An id
accepted twice, or a first attempt that arrived after later events', is a broken promise
only if no attempt of that delivery went unanswered: the delivery log says which did.

Which worker sends what is the claims' race, and nothing promises each worker a share: a
worker holds up to 2,048 deliveries, and one that runs while the others wait for the CPU
may send them all. The shares are printed, not checked; that a worker leaves what it may
not hold to the others is checked in-process, in tests/test_webhooks_doc_promises.py.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TextIO

import pytest
from sqlalchemy import func, select

import srcore.db
from srcore import testdb
from srcore.app import migration_target
from srcore.migrate import upgrade_all
from srcore.signatures import generate_secret
from srcore.testing import free_port, serving, write_network_config
from srcore.webhooks import emit
from srcore.webhooks.fanout import fan_out
from srcore.webhooks.models import Attempt, Delivery, DeliveryStatus, OutboxRow, Subscription

SUBSCRIPTIONS = 30
#: Events per test: enough for the workers' steps to overlap many times; more when only
#: the claims can race, which they do less often.
EVENTS, CLAIMED_EVENTS = 300, 600
EVENT = "ticket:created"
TIMEOUT = 5  # webhook-timeout, seconds
#: A failed attempt is retried soon, up to 20 attempts: at a 30 % failure rate a delivery
#: is given up about once in 3e10.
RETRIES = "0s" + ", 300ms" * 19
#: Bounds on every wait: start-up, all deliveries recorded, a SIGTERMed worker's exit.
START_WAIT, DELIVERY_WAIT, STOP_WAIT = 60, 240, TIMEOUT + 10
DELIVERED = re.compile(rf"delivered {re.escape(EVENT)} (\S+) to ")


@dataclass(frozen=True)
class Request:
    """One POST the receiver got: to which subscription, which event, which id, its answer."""

    subscription: int
    number: int
    webhook_id: str
    status: int


class CountingReceiver:
    """A threaded HTTP server on 127.0.0.1 that records every webhook request in the order
    they arrive; it answers 500 to a *failure_rate* share of them (seeded), 200 otherwise."""

    def __init__(self, failure_rate: float = 0.0, seed: int = 20261203) -> None:
        self.requests: list[Request] = []
        self.accepted = 0
        self.lock = threading.Lock()
        rng = random.Random(seed)
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as a real receiver would

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                subscription = int(self.path.rsplit("/", 1)[1])
                number = int(json.loads(body)["data"]["number"])
                webhook_id = self.headers.get("webhook-id", "")
                with receiver.lock:
                    status = 500 if rng.random() < failure_rate else 200
                    receiver.requests.append(Request(subscription, number, webhook_id, status))
                    receiver.accepted += status == 200
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"


@contextlib.contextmanager
def counting_receiver(failure_rate: float = 0.0) -> Iterator[CountingReceiver]:
    receiver = CountingReceiver(failure_rate)
    with serving(receiver.server):
        yield receiver


class WorkerProcess:
    """``srcore worker todo``, as an operator runs it, its output kept in a file."""

    def __init__(self, config: Path, log_path: Path) -> None:
        self.log_path = log_path
        self.log: TextIO = log_path.open("w+", encoding="utf-8")
        argv = [sys.executable, "-c", "from srcore.cli import main; main()"]
        argv += ["worker", "todo", "--poll-interval", "0.2"]
        env = dict(os.environ, SRCORE_CONFIG=str(config), PYTHONUNBUFFERED="1")
        self.process = subprocess.Popen(
            argv, env=env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True
        )

    def output(self) -> str:
        return self.log_path.read_text(encoding="utf-8")

    def wait_ready(self) -> None:
        deadline = time.monotonic() + START_WAIT
        while "srcore worker: todo ready" not in self.output():
            assert self.process.poll() is None, f"the worker exited:\n{self.output()}"
            assert time.monotonic() < deadline, f"the worker did not start:\n{self.output()}"
            time.sleep(0.1)

    def delivered(self) -> list[str]:
        """The webhook-ids this worker recorded as delivered."""
        return DELIVERED.findall(self.output())

    def terminate(self) -> int:
        """SIGTERM, and its exit status (killed if it outlasts its promise)."""
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=STOP_WAIT)
        except subprocess.TimeoutExpired:
            pytest.fail(f"srcore worker still ran {STOP_WAIT} s after SIGTERM")

    def kill(self) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)
        self.log.close()


@contextlib.contextmanager
def workers(config: Path, tmp_path: Path, count: int) -> Iterator[list[WorkerProcess]]:
    """*count* worker processes, each ready; killed at the end whatever happened."""
    started: list[WorkerProcess] = []
    try:
        for n in range(count):
            started.append(WorkerProcess(config, tmp_path / f"worker-{n}.log"))
        for worker in started:
            worker.wait_ready()
        yield started
    finally:
        for worker in started:
            worker.kill()


@pytest.fixture(params=["sqlite", "postgresql"])
def todo_config(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Path]:
    """A network config whose todo database (SQLite, or a throw-away PostgreSQL database)
    is migrated; webhooks may go to 127.0.0.1 and are retried 300 ms apart."""
    config = write_network_config(
        tmp_path / "config.ini",
        {"meta": free_port(), "todo": free_port()},
        global_keys={
            "webhook-timeout": f"{TIMEOUT}s",
            "webhook-retry-schedule": RETRIES,
            "allow-private-webhook-targets": "127.0.0.0/8",
        },
    )
    url: str | None = None
    if request.param == "postgresql":
        url = testdb.create_test_database(prefix="srcore_many_workers")
        text = config.read_text(encoding="utf-8")
        config.write_text(text.replace(f"sqlite:///{tmp_path / 'todo.db'}", url), "utf-8")
    try:
        upgrade_all(migration_target("todo", config))
        yield config
    finally:
        if url is not None:
            testdb.drop_test_database(url)


@pytest.fixture
def todo_app(todo_config: Path) -> Iterator[Any]:
    import todo

    app = todo.create_app(config=todo_config)
    try:
        yield app
    finally:
        app.extensions["srcore"].db.dispose()


def subscribe(app: Any, receiver: CountingReceiver) -> dict[int, int]:
    """Subscribe each of SUBSCRIPTIONS owners to *receiver*; the receiver's path number of
    each subscription by its id."""
    paths: dict[int, int] = {}
    with app.extensions["srcore"].db.transaction() as session:
        for n in range(SUBSCRIPTIONS):
            sub = Subscription(
                url=f"{receiver.url}/{n}",
                owner_id=n + 1,
                events=EVENT,
                scopes="todo/tickets:RO",
                secret=generate_secret(),
            )
            session.add(sub)
            session.flush()
            paths[sub.id] = n
    return paths


def emit_events(app: Any, events: int, *, per_commit: int = 50) -> None:
    """*events* events of a public tracker, numbered in the order they are emitted, a few
    commits apart (as a busy service emits them)."""
    with app.app_context():
        for start in range(0, events, per_commit):
            for number in range(start, min(start + per_commit, events)):
                data = {"number": number}
                emit(EVENT, data, resource="tracker:1", owner_id=1, visibility="public")
            srcore.db.session.commit()


def fan_out_all(app: Any) -> None:
    """Make every outbox row's deliveries, as a worker's fan-out does."""
    st = app.extensions["srcore"]
    with st.db.session() as session:
        ids = list(session.scalars(select(OutboxRow.id).order_by(OutboxRow.id)))
        fan_out(session, ids, manifest=st.manifest)


def all_delivered(app: Any, count: int) -> Callable[[], bool]:
    def done() -> bool:
        with app.extensions["srcore"].db.session() as session:
            delivered = Delivery.status == DeliveryStatus.delivered
            return bool(session.scalar(select(func.count()).where(delivered)) == count)

    return done


def wait_for(what: str, done: Callable[[], bool], running: list[WorkerProcess]) -> None:
    deadline = time.monotonic() + DELIVERY_WAIT
    while not done():
        for worker in running:
            code = worker.process.poll()
            assert code is None, f"a worker exited ({code}):\n{worker.output()[-3000:]}"
        assert time.monotonic() < deadline, f"not within {DELIVERY_WAIT} s: {what}"
        time.sleep(0.25)


def check(
    app: Any,
    receiver: CountingReceiver,
    paths: dict[int, int],
    ran: list[WorkerProcess],
    events: int,
) -> None:
    """The promises, once every delivery is recorded delivered; every broken one is named."""
    with app.extensions["srcore"].db.session() as session:
        rows = session.execute(select(Delivery.message_id, Delivery.status)).all()
        logged = session.execute(
            select(Delivery.message_id, Attempt.response_status)
            .join(Attempt, Attempt.delivery_id == Delivery.id)
            .order_by(Attempt.created, Attempt.id)
        ).all()
    # Attempts that got no answer (timed out): the receiver may have taken them anyway.
    unanswered = {m for m, status in logged if status is None}
    first_status: dict[str, int | None] = {}
    for m, status in logged:
        first_status.setdefault(m, status)
    problems: list[str] = []
    deliveries = SUBSCRIPTIONS * events
    if len(rows) != deliveries:
        problems.append(f"{len(rows)} deliveries in the database, not {deliveries}")
    statuses = Counter(row.status for row in rows)
    if set(statuses) != {DeliveryStatus.delivered}:
        problems.append(f"deliveries not all delivered: {dict(statuses)}")

    with receiver.lock:
        requests = list(receiver.requests)
    accepted = Counter(r.webhook_id for r in requests if r.status == 200)
    twice = {webhook_id for webhook_id, n in accepted.items() if n > 1}
    if twice - unanswered:
        problems.append(f"{len(twice - unanswered)} webhook-ids accepted more than once")
    if set(accepted) != {row.message_id for row in rows}:
        problems.append("the accepted webhook-ids are not the deliveries' message ids")
    pairs = {(r.subscription, r.number) for r in requests if r.status == 200}
    missing = {(s, n) for s in range(SUBSCRIPTIONS) for n in range(events)} - pairs
    if missing:
        problems.append(f"{len(missing)} (subscription, event) pairs never accepted")
    # Nothing is sent again once accepted: an id's requests are failures, then one success.
    again: Counter[str] = Counter()
    done: set[str] = set()
    for r in requests:
        if r.webhook_id in done:
            again[r.webhook_id] += 1
        if r.status == 200:
            done.add(r.webhook_id)
    if set(again) - unanswered:
        problems.append(f"{len(set(again) - unanswered)} webhook-ids sent again once accepted")

    # A subscription's first attempts arrive in event order, but for one that went unanswered
    # (the receiver took it late).
    firsts: dict[int, list[int]] = defaultdict(list)
    seen: set[str] = set()
    for r in requests:
        if r.webhook_id not in seen:
            seen.add(r.webhook_id)
            if first_status.get(r.webhook_id, 0) is not None:
                firsts[r.subscription].append(r.number)
    if set(firsts) != set(paths.values()):
        problems.append(f"requests reached {len(firsts)} of {SUBSCRIPTIONS} subscriptions")
    disordered = {s: n for s, n in firsts.items() if n != sorted(n)}
    if disordered:
        sender = {i: k for k, worker in enumerate(ran) for i in worker.delivered()}
        backend = app.extensions["srcore"].db.engine.dialect.name
        problems.append(describe_disorder(firsts, disordered, requests, sender, backend))

    shares = [len(worker.delivered()) for worker in ran]
    for k, worker in enumerate(ran):
        output = worker.output()
        if "Traceback" in output or " ERROR " in output:
            at = max(output.find("Traceback"), output.find(" ERROR "))
            problems.append(f"worker {k} logged an error:\n{output[max(at - 500, 0) :][:4000]}")
    if sum(shares) != deliveries:
        problems.append(f"the workers recorded {sum(shares)} deliveries, not {deliveries}")
    failed = sum(r.status != 200 for r in requests)
    late = f"{len(twice & unanswered)} accepted twice after going unanswered"
    print(f"\n{len(requests)} requests, {failed} answered 500, {late}, shares {shares}")
    assert not problems, "\n".join(problems)


def describe_disorder(
    firsts: dict[int, list[int]],
    disordered: dict[int, list[int]],
    requests: list[Request],
    sender: dict[str, int],
    backend: str,
) -> str:
    """Which subscriptions got first attempts out of event order, how often, and the first
    such step of a few of them with the worker that sent each side."""
    by_pair = {(r.subscription, r.number): r.webhook_id for r in requests}
    steps = {s: [i for i in range(1, len(n)) if n[i] < n[i - 1]] for s, n in disordered.items()}
    lines = [
        f"{backend}: first attempts out of event order for {len(disordered)} of {len(firsts)}"
        f" subscriptions, {sum(map(len, steps.values()))} backward steps in all"
    ]
    for s in sorted(disordered)[:4]:
        i, n = steps[s][0], disordered[s]
        window = n[max(i - 3, 0) : i + 3]
        who = [sender.get(by_pair[(s, e)]) for e in window]
        lines.append(f"  subscription {s}: ... {window} ... sent by workers {who}")
    return "\n".join(lines)


def run_many(
    app: Any,
    config: Path,
    tmp_path: Path,
    *,
    count: int,
    events: int = EVENTS,
    failure_rate: float = 0.0,
    beforehand: bool = False,
) -> None:
    """Run *count* workers until *events* events reached every subscription, then check.
    The events are emitted while the workers run, or *beforehand* with their deliveries."""
    with counting_receiver(failure_rate) as receiver:
        paths = subscribe(app, receiver)
        if beforehand:
            emit_events(app, events)
            fan_out_all(app)
        with workers(config, tmp_path, count) as running:
            if not beforehand:
                emit_events(app, events)
            done = all_delivered(app, SUBSCRIPTIONS * events)
            wait_for("every delivery recorded", done, running)
            for worker in running:
                assert worker.terminate() == 0
        check(app, receiver, paths, running, events)


def test_workers_share_the_deliveries_and_send_none_twice(
    todo_app: Any, todo_config: Path, tmp_path: Path
) -> None:
    run_many(todo_app, todo_config, tmp_path, count=3)


def test_workers_claiming_side_by_side_keep_event_order(
    todo_app: Any, todo_config: Path, tmp_path: Path
) -> None:
    """The deliveries exist before the workers start: only their claims can race."""
    run_many(todo_app, todo_config, tmp_path, count=3, events=CLAIMED_EVENTS, beforehand=True)


def test_workers_retry_a_failing_receiver_and_send_none_twice(
    todo_app: Any, todo_config: Path, tmp_path: Path
) -> None:
    run_many(todo_app, todo_config, tmp_path, count=2, failure_rate=0.3)


def test_a_worker_stopped_midway_loses_nothing(
    todo_app: Any, todo_config: Path, tmp_path: Path
) -> None:
    deliveries = SUBSCRIPTIONS * EVENTS
    with counting_receiver() as receiver:
        paths = subscribe(todo_app, receiver)
        with workers(todo_config, tmp_path, 2) as running:
            emit_events(todo_app, EVENTS)
            wait_for("a third delivered", lambda: receiver.accepted >= deliveries // 3, running)
            stopped, other = running
            assert stopped.terminate() == 0
            wait_for("every delivery recorded", all_delivered(todo_app, deliveries), [other])
            assert other.terminate() == 0
        check(todo_app, receiver, paths, running, EVENTS)
