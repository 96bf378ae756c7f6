"""Webhook reliability: every event arrives although the receiver, the workers and Redis fail.

    .venv/bin/python bench/reliability.py                 # both dispatchers, 1,000 events
    .venv/bin/python bench/reliability.py --events 200 --dispatcher celery --backend postgresql

The sample service (tests/sample_service) gets one subscription to a receiver on
127.0.0.1 that answers 500 to a random half of the requests (a message is accepted at
the latest on its 6th try, so the retry schedule is never exhausted). Events are emitted
one per committed transaction while:

- Celery: the worker (``celery worker --pool prefork -c 2 --beat``, its own process group)
  is killed with SIGKILL twice and restarted, and Redis (a redis-server of our own on a
  free port, nothing persisted) is restarted once, losing every queued message;
- local worker: the worker process is killed with SIGKILL twice and restarted.

A worker that exits by itself is restarted at once, as a process supervisor (systemd's
``Restart=always``) does in production, and counted: Celery 5.7 with kombu's Redis
transport can end the worker with "Unrecoverable error" when the broker vanishes while
messages are unacknowledged.

Retries use a compressed schedule (seconds instead of hours) and short leases. The run
passes when every event was delivered, every delivered request verifies with the
subscription's secret, and the database agrees; duplicates (the same ``webhook-id``
answered 2xx twice: delivery is at least once) are counted and printed.

This module is also the harness tests/test_webhooks_celery.py and
tests/test_webhooks_reliability.py use (receiver, Redis, worker processes), and
``celery -A reliability:celery_app`` is the Celery app with the compressed timings.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "tests"
SERVICE_PACKAGE = "sample_service"
SERVICE_ID = "sample"
EVENT = "thing:created"
SCOPES = "sample/things:RO"

for _path in (str(ROOT / "bench"), str(SAMPLE)):
    if _path not in sys.path:
        sys.path.insert(0, _path)

#: The retry schedule of these runs: seconds where production waits minutes and hours.
FAST_SCHEDULE = (0.0, 0.2, 0.4, 0.8, 1.0, 1.5, 2.0, 2.0, 3.0, 3.0)
#: Leases of these runs, and the interval of beat's drain under Celery (seconds). A lease
#: must outlast webhook-timeout (3 s here) by the worker's RECORD_WITHIN (20 s): rows a
#: killed worker held come back after it.
FAST_LEASE = 25.0
FAST_TICK = 1.0


# -- processes we start ---------------------------------------------------------------------


def free_port() -> int:
    from srcore.testing import free_port as _free_port

    return _free_port()


def redis_available() -> bool:
    return shutil.which("redis-server") is not None


class RedisServer:
    """A redis-server of our own on a free port; nothing persisted, so a restart loses all."""

    def __init__(self, directory: Path, *, port: int | None = None) -> None:
        self.directory = directory
        self.port = port or free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, *, timeout: float = 10) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [
                "redis-server",
                "--bind",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.directory),
                "--logfile",
                str(self.directory / "redis.log"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        import redis

        client = redis.Redis(port=self.port, socket_connect_timeout=0.5)
        deadline = time.monotonic() + timeout
        while True:
            try:
                if client.ping():
                    break
            except redis.RedisError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start on port {self.port}")
            time.sleep(0.05)
        client.close()

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.kill()
        self.process.wait()
        self.process = None

    def restart(self, *, down: float = 1.0) -> None:
        self.stop()
        time.sleep(down)
        self.start()

    def __enter__(self) -> RedisServer:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()


@dataclass
class Received:
    message_id: str
    headers: dict[str, str]
    body: bytes
    status: int
    at: float


class Receiver:
    """An HTTP receiver on 127.0.0.1 that records every request and fails some of them.

    *fail_rate* of the requests are answered 500, chosen at random; a message that has
    been refused *max_failures* times is accepted, so every event arrives in the end.
    """

    def __init__(
        self, *, fail_rate: float = 0.0, max_failures: int = 5, seed: int | None = None
    ) -> None:
        self.fail_rate = fail_rate
        self.max_failures = max_failures
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        self.requests: list[Received] = []
        self.failures: Counter[str] = Counter()
        self.server: ThreadingHTTPServer | None = None
        self.thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def _answer(self, message_id: str) -> int:
        with self.lock:
            if (
                self.fail_rate
                and self.failures[message_id] < self.max_failures
                and self.rng.random() < self.fail_rate
            ):
                self.failures[message_id] += 1
                return 500
            return 200

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # One write per response, and no Nagle: otherwise delayed ACKs cost 40 ms each.
            wbufsize = 64 * 1024
            disable_nagle_algorithm = True

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length)
                if len(body) < length:  # the sender died mid-request: nothing arrived
                    self.close_connection = True
                    return
                headers = {k.lower(): v for k, v in self.headers.items()}
                status = receiver._answer(headers.get("webhook-id", ""))
                with receiver.lock:
                    receiver.requests.append(
                        Received(headers.get("webhook-id", ""), headers, body, status, time.time())
                    )
                reply = b'{"ok":true}' if status == 200 else b'{"error":"try again"}'
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            # Workers open several keep-alive connections at once (a thread pool each):
            # the default backlog of 5 drops their SYNs on a busy machine.
            request_queue_size = 128

            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # a killed worker resets its connections; that is the point

        self.server = Server(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    def snapshot(self) -> list[Received]:
        with self.lock:
            return list(self.requests)

    def accepted(self) -> Counter[str]:
        """How many times each message id was answered 2xx."""
        return Counter(r.message_id for r in self.snapshot() if r.status == 200)

    def __enter__(self) -> Receiver:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()


class WorkerProcess:
    """A worker in its own process group, restarted like a process supervisor would.

    Every start is wrapped in ``timeout -s KILL`` so a worker never outlives *lifetime*
    seconds, whatever happens to the process that started it. Once started, a watcher
    thread restarts the worker when it exits by itself (as systemd's ``Restart=always``
    does in production) and counts those exits in :attr:`exits`; :meth:`kill` is a crash
    on purpose, followed by a restart from the caller.
    """

    def __init__(self, command: list[str], env: dict[str, str], log: Path, lifetime: int) -> None:
        self.command = command
        self.env = env
        self.log = log
        self.lifetime = lifetime
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.exits = 0
        self._lock = threading.RLock()
        self._stopping = threading.Event()
        self._watcher: threading.Thread | None = None

    def start(self) -> None:
        with self._lock:
            self.starts += 1
            with open(self.log, "ab") as out:
                out.write(f"\n--- start {self.starts} ---\n".encode())
                out.flush()
                self.process = subprocess.Popen(
                    ["timeout", "-s", "KILL", str(self.lifetime), *self.command],
                    env=self.env,
                    stdout=out,
                    stderr=out,
                    start_new_session=True,
                    cwd=str(ROOT),
                )
        if self._watcher is None:
            self._watcher = threading.Thread(target=self._watch, daemon=True)
            self._watcher.start()

    def _watch(self) -> None:
        while not self._stopping.wait(0.5):
            with self._lock:
                if self.process is None or self.process.poll() is None:
                    continue
                self.exits += 1
                with open(self.log, "ab") as out:
                    out.write(f"\n--- exited with {self.process.returncode} ---\n".encode())
                self._kill_group()
                self.start()

    def _kill_group(self) -> None:
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)  # its children too
        self.process.wait()
        self.process = None

    def kill(self) -> None:
        """SIGKILL the worker and every process it started (a crash, not a shutdown)."""
        with self._lock:
            self._kill_group()

    def stop(self) -> None:
        """End the worker for good: SIGTERM, then SIGKILL after a few seconds."""
        self._stopping.set()
        with self._lock:
            if self.process is None:
                return
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=5)
            self._kill_group()

    def tail(self, chars: int = 4000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


# -- the service under test -------------------------------------------------------------


def write_config(
    path: Path,
    *,
    database_url: str,
    broker: str = "",
    timeout: str = "3s",
    connect_timeout: str = "1s",
) -> Path:
    import secrets

    path.write_text(
        "[global]\n"
        "site-name = srcore webhook reliability\n"
        "environment = development\n"
        "log-level = warning\n"
        f"webhooks-broker = {broker}\n"
        "allow-private-webhook-targets = 127.0.0.0/8\n"
        f"webhook-timeout = {timeout}\n"
        f"webhook-connect-timeout = {connect_timeout}\n\n"
        f"[{SERVICE_ID}]\n"
        "origin = http://127.0.0.1:5999\n"
        f"database-url = {database_url}\n"
        f"secret-key = {secrets.token_urlsafe(48)}\n",
        encoding="utf-8",
    )
    return path


@contextlib.contextmanager
def service_database(backend: str, directory: Path) -> Iterator[str]:
    """A migrated, empty database of the sample service; PostgreSQL's is dropped after."""
    from srcore import migrate, testdb

    if backend == "sqlite":
        url = f"sqlite:///{directory / 'sample.db'}"
        drop: Callable[[], None] = lambda: None  # noqa: E731
    else:
        url = testdb.create_test_database(prefix="srcore_webhooks")
        drop = lambda: testdb.drop_test_database(url)  # noqa: E731
    try:
        import sample_service

        migrate.upgrade_all(
            migrate.MigrationTarget(
                service_id=SERVICE_ID,
                database_url=url,
                metadata=sample_service.Base.metadata,
                versions_dir=SAMPLE / SERVICE_PACKAGE / "migrations" / "versions",
            )
        )
        yield url
    finally:
        drop()


def build_app(config: Path) -> Any:
    import sample_service

    return sample_service.create_app(config=config)


def subscribe(app: Any, url: str, *, count: int = 1) -> list[tuple[int, str]]:
    """Subscribe *url* to thing:created *count* times; returns (id, secret) pairs."""
    from srcore.webhooks import Subscription, generate_secret

    made = []
    with app.extensions["srcore"].db.transaction() as session:
        rows = [
            Subscription(owner_id=1, url=url, events=EVENT, scopes=SCOPES, secret=generate_secret())
            for _ in range(count)
        ]
        session.add_all(rows)
        session.flush()
        made = [(row.id, row.secret) for row in rows]
    return made


def emit_events(app: Any, count: int, *, per_second: float | None = None, start: int = 0) -> None:
    """Emit *count* events, each in its own committed transaction."""
    from srcore.webhooks import emit

    db = app.extensions["srcore"].db
    pause = 1.0 / per_second if per_second else 0.0
    with app.app_context():
        for number in range(start, start + count):
            with db.transaction() as session:
                emit(EVENT, {"number": number, "name": f"thing {number}"}, session=session)
            if pause:
                time.sleep(pause)


def delivery_states(app: Any) -> Counter[str]:
    from sqlalchemy import func, select

    from srcore.webhooks.models import Delivery

    with app.extensions["srcore"].db.session() as session:
        rows = session.execute(select(Delivery.status, func.count()).group_by(Delivery.status))
        return Counter({status: count for status, count in rows})


def outbox_count(app: Any) -> tuple[int, int]:
    """(outbox rows, of which not fanned out yet)."""
    from sqlalchemy import func, select

    from srcore.webhooks.models import OutboxRow

    with app.extensions["srcore"].db.session() as session:
        total = session.scalar(select(func.count()).select_from(OutboxRow)) or 0
        waiting = (
            session.scalar(
                select(func.count()).select_from(OutboxRow).where(OutboxRow.fanned_out_at.is_(None))
            )
            or 0
        )
        return int(total), int(waiting)


def delivered_message_ids(app: Any) -> dict[str, int]:
    """message id -> outbox id of every delivered delivery."""
    from sqlalchemy import select

    from srcore.webhooks.models import Delivery, DeliveryStatus

    with app.extensions["srcore"].db.session() as session:
        rows = session.execute(
            select(Delivery.message_id, Delivery.outbox_id).where(
                Delivery.status == DeliveryStatus.delivered.value
            )
        )
        return {mid: oid for mid, oid in rows}


def wait_until(
    condition: Callable[[], bool], *, timeout: float, interval: float = 0.2, what: str = ""
) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"not within {timeout:.0f} s: {what}")
        time.sleep(interval)


def check_received(receiver: Receiver, secret: str) -> dict[str, Any]:
    """Verify every accepted request with *secret*; count events, duplicates and 500s."""
    from datetime import datetime

    from srcore.webhooks import WebhookVerificationError, verify

    received = receiver.snapshot()
    bad = 0
    numbers: set[int] = set()
    for item in received:
        if item.status != 200:
            continue
        try:
            document = verify(
                secret, item.headers, item.body, now=datetime.fromtimestamp(item.at).astimezone()
            )
        except WebhookVerificationError:
            bad += 1
            continue
        numbers.add(int(document["data"]["number"]))
    accepted = receiver.accepted()
    return {
        "requests": len(received),
        "refused_500": sum(1 for r in received if r.status == 500),
        "accepted": sum(accepted.values()),
        "distinct": len(accepted),
        "duplicates": sum(n - 1 for n in accepted.values()),
        "unverified": bad,
        "numbers": numbers,
    }


# -- worker processes -----------------------------------------------------------------------


def worker_env(config: Path, **extra: str) -> dict[str, str]:
    paths = [str(ROOT / "bench"), str(SAMPLE), os.environ.get("PYTHONPATH", "")]
    return dict(
        os.environ,
        SRCORE_SERVICE=SERVICE_PACKAGE,
        SRCORE_CONFIG=str(config),
        PYTHONPATH=os.pathsep.join(p for p in paths if p),
        PYTHONUNBUFFERED="1",
        **extra,
    )


def celery_worker(
    config: Path,
    directory: Path,
    *,
    app_spec: str = "reliability:celery_app",
    concurrency: int = 2,
    beat: bool = True,
    lifetime: int = 600,
    loglevel: str = "warning",
    fast: bool = True,
    name: str = "w",
) -> WorkerProcess:
    """A ``celery worker --pool prefork`` of the sample service (not started yet)."""
    command = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        app_spec,
        "worker",
        "--pool",
        "prefork",
        "-c",
        str(concurrency),
        "--loglevel",
        loglevel,
        "-n",
        f"{name}-{os.getpid()}-{random.randrange(1 << 30)}@%h",
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
    ]
    if beat:
        command += ["--beat", "--schedule", str(directory / "celerybeat-schedule")]
    env = worker_env(config, RELIABILITY_FAST="1" if fast else "0")
    return WorkerProcess(command, env, directory / f"celery-{name}.log", lifetime)


def local_worker(config: Path, directory: Path, *, lifetime: int = 600) -> WorkerProcess:
    """A local worker process of the sample service, with the compressed timings."""
    command = [sys.executable, str(ROOT / "bench" / "reliability.py"), "local-worker"]
    env = worker_env(config, RELIABILITY_FAST="1")
    return WorkerProcess(command, env, directory / "local-worker.log", lifetime)


def fast_settings(app: Any) -> Any:
    """The config's webhook settings with :data:`FAST_SCHEDULE` as the retry schedule."""
    import dataclasses

    from srcore.webhooks.settings import settings_for

    steps = tuple(timedelta(seconds=s) for s in FAST_SCHEDULE)
    return dataclasses.replace(settings_for(app), schedule=steps)


def _celery_app() -> Any:
    from srcore.webhooks.celery import make_celery

    app = build_app(Path(os.environ["SRCORE_CONFIG"]))
    if os.environ.get("RELIABILITY_FAST", "1") != "1":
        return make_celery(app)
    return make_celery(app, worker=lambda: fast_worker(app), tick=timedelta(seconds=FAST_TICK))


def fast_worker(app: Any) -> Any:
    """A worker of *app* with the compressed timings."""
    from srcore.webhooks.worker import Worker

    return Worker(
        app, settings=fast_settings(app), lease=timedelta(seconds=FAST_LEASE), poll_interval=0.1
    )


_celery: Any = None


def __getattr__(name: str) -> Any:
    # `celery -A reliability:celery_app`: built on first use, in the worker process.
    global _celery
    if name == "celery_app":
        if _celery is None:
            _celery = _celery_app()
        return _celery
    raise AttributeError(name)


def run_local_worker() -> None:
    """The body of ``reliability.py local-worker``: a Worker with fast timings."""
    app = build_app(Path(os.environ["SRCORE_CONFIG"]))
    worker = fast_worker(app)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        worker.run(stop)
    finally:
        worker.close()


# -- the scenario -----------------------------------------------------------------------------


@dataclass
class Outcome:
    dispatcher: str
    backend: str
    events: int
    seconds: float
    stats: dict[str, Any]
    states: Counter[str]
    disruptions: list[str] = field(default_factory=list)
    missing: list[int] = field(default_factory=list)
    #: Times the worker exited by itself and was restarted (as a supervisor would).
    exits: int = 0

    @property
    def ok(self) -> bool:
        return (
            not self.missing
            and self.stats["unverified"] == 0
            and self.states.get("delivered", 0) == self.events
            and sum(self.states.values()) == self.events
        )

    def report(self) -> str:
        s = self.stats
        verdict = "PASS" if self.ok else "FAIL"
        lines = [
            f"{verdict}  {self.dispatcher:<6} on {self.backend:<10}  {self.events} events "
            f"delivered in {self.seconds:.1f} s",
            f"      disruptions: {', '.join(self.disruptions) or 'none'}",
            f"      worker exits on its own, restarted as a supervisor would: {self.exits}",
            f"      requests {s['requests']}: {s['refused_500']} answered 500, "
            f"{s['accepted']} accepted; {s['distinct']} distinct webhook-ids",
            f"      duplicates (same webhook-id accepted again): {s['duplicates']}",
            f"      signatures that did not verify: {s['unverified']}",
            f"      deliveries in the database: {dict(self.states)}",
        ]
        if self.missing:
            lines.append(f"      MISSING events: {self.missing[:20]} ({len(self.missing)})")
        return "\n".join(lines)


def run_scenario(
    dispatcher: str,
    *,
    backend: str = "sqlite",
    events: int = 1000,
    kills: int = 2,
    redis_restarts: int = 1,
    fail_rate: float = 0.5,
    emit_rate: float = 150.0,
    timeout: float = 240.0,
    seed: int = 1,
    directory: Path | None = None,
    say: Callable[[str], None] = lambda _m: None,
    quiet: bool = True,
) -> Outcome:
    """Emit *events* while failing the receiver, the worker and Redis; wait for all of them."""
    tmp = directory or Path(tempfile.mkdtemp(prefix=f"srcore-reliability-{dispatcher}-"))
    redis_server: RedisServer | None = None
    worker: WorkerProcess | None = None
    disruptions: list[str] = []
    with contextlib.ExitStack() as stack:
        receiver = stack.enter_context(Receiver(fail_rate=fail_rate, seed=seed))
        url = stack.enter_context(service_database(backend, tmp))
        broker = ""
        if dispatcher == "celery":
            redis_server = stack.enter_context(RedisServer(tmp / "redis"))
            broker = redis_server.url
        config = write_config(tmp / "config.ini", database_url=url, broker=broker)
        app = build_app(config)
        if quiet:  # expected: wake-ups fail while Redis is down (beat's next drain makes up)
            srcore_log = logging.getLogger("srcore")
            # Restored afterwards: the suite runs this in its own process, and a level left
            # at CRITICAL would hide later tests' log records.
            stack.callback(srcore_log.setLevel, srcore_log.level)
            srcore_log.setLevel(logging.CRITICAL)
        stack.callback(app.extensions["srcore"].db.dispose)
        ((_sid, secret),) = subscribe(app, receiver.url)
        if dispatcher == "celery":
            worker = celery_worker(config, tmp, lifetime=int(timeout) + 120)
        else:
            worker = local_worker(config, tmp, lifetime=int(timeout) + 120)
        stack.callback(worker.stop)
        worker.start()

        started = time.monotonic()
        emitter = threading.Thread(
            target=emit_events, args=(app, events), kwargs={"per_second": emit_rate}
        )
        emitter.start()
        # Disruptions while the worker is busy: after 1/(n+1), 2/(n+1), ... of the events
        # were delivered, kill the worker or restart Redis, alternately.
        plan: list[str] = []
        for i in range(max(kills, redis_restarts)):
            if i < kills:
                plan.append("kill")
            if i < redis_restarts:
                plan.append("redis")
        for number, what in enumerate(plan, start=1):
            target = events * number // (len(plan) + 1)
            wait_until(
                lambda target=target: delivery_states(app).get("delivered", 0) >= target,
                timeout=timeout,
                interval=0.05,
                what=f"{target} events delivered",
            )
            at = f"{time.monotonic() - started:.1f}s, {target}+ delivered"
            if what == "kill":
                worker.kill()
                disruptions.append(f"worker SIGKILL ({at})")
                say(disruptions[-1])
                time.sleep(0.3)
                worker.start()
            else:
                assert redis_server is not None
                redis_server.restart(down=1.0)
                disruptions.append(f"Redis restarted ({at})")
                say(disruptions[-1])
        emitter.join()
        say(f"{events} events emitted in {time.monotonic() - started:.1f}s")

        def done() -> bool:
            states = delivery_states(app)
            return states.get("delivered", 0) >= events and sum(states.values()) == events

        try:
            wait_until(done, timeout=timeout, interval=0.5, what="every event delivered")
        except TimeoutError:
            say(worker.tail())
        seconds = time.monotonic() - started
        time.sleep(0.5)  # let a duplicate in flight land before counting
        stats = check_received(receiver, secret)
        states = delivery_states(app)
        missing = sorted(set(range(events)) - stats["numbers"])
        return Outcome(
            dispatcher, backend, events, seconds, stats, states, disruptions, missing, worker.exits
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("mode", nargs="?", default="run", choices=["run", "local-worker"])
    parser.add_argument("--events", type=int, default=1000)
    parser.add_argument("--dispatcher", default="celery,local")
    parser.add_argument("--backend", default="sqlite")
    parser.add_argument("--timeout", type=float, default=240.0)
    options = parser.parse_args(argv)
    if options.mode == "local-worker":
        run_local_worker()
        return 0
    # SIGTERM (timeout, CI) unwinds like Ctrl-C: our workers and Redis are stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    failed = False
    print(
        f"webhook reliability: {options.events} events, receiver fails half the requests "
        f"(500), retry schedule {FAST_SCHEDULE} s\n"
    )
    for backend in options.backend.split(","):
        for dispatcher in options.dispatcher.split(","):
            kills, restarts = (2, 1) if dispatcher == "celery" else (2, 0)
            outcome = run_scenario(
                dispatcher,
                backend=backend,
                events=options.events,
                kills=kills,
                redis_restarts=restarts,
                timeout=options.timeout,
                say=lambda m: print(f"   .. {m}", flush=True),
            )
            print(outcome.report(), flush=True)
            print()
            failed = failed or not outcome.ok
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
