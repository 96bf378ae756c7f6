"""Webhook benchmarks: what emitting costs, how fast one worker delivers, fairness, shutdown.

    .venv/bin/python bench/webhooks.py [--quick] [--backends sqlite,postgresql]
    .venv/bin/python bench/run.py --only webhooks

1. ``emit`` in a committed transaction (the sample service's ``thing:created``) with 1
   subscription against 1,000 subscriptions, interleaved. Emitting writes one outbox row
   whatever the number of subscribers, so the ratio should stay near 1 (goal: at most
   1.2). With the local dispatcher (the commit sets the worker's wake-up), and with the
   Celery one (the commit also queues a ``drain`` message on our own Redis).
2. Deliveries per second of ONE worker process (:class:`srcore.webhooks.worker.Worker`,
   the loop ``srcore worker`` runs) to a fast keep-alive receiver on 127.0.0.1 that
   always answers 200. The receiver is a process of its own (asyncio, no HTTP library),
   so it does not share the worker's CPU time or lock; its CPU time per request is read
   from /proc and its capacity (requests per CPU-second) printed next to the rate, with
   how busy it was: it must have been far from saturated for the figure to be the
   worker's. N events to S subscriptions of that receiver are emitted first, then the
   worker is started; the rate counts from the first delivery received to the last, so
   start-up is left out, and each delivery includes its fan-out and its record in the
   database. Celery runs the same loop in its ``drain`` task: ``celery -A
   srcore.webhooks.celery worker --pool prefork -c 1`` (one pool process and the
   consumer, both counted). The worker's CPU time in the window is read from /proc, so
   the figure per CPU-second is given too: on a busy machine it is the steadier one.
   Goal: at least 1,000 deliveries/s per process on PostgreSQL.
   Then the same (local worker), the event's audience ``owner``, with no other
   subscription and with 20,000 of other users (bulk-inserted, enabled, to the same
   event, none in its audience): the fan-out must find the few it delivers to without
   reading the others. Goal: the rate stays within 20%.
3. Fairness: a receiver trickles its answers a byte a second (``webhook-timeout`` is
   4 s, so every attempt to it is cut at the deadline), and several subscriptions (more
   than the per-receiver cap) are subscribed to it; one more subscription goes to a
   healthy receiver. Events are emitted at a steady rate, each to all of them, and the
   latency from emit to arrival at the healthy receiver is measured (the event carries
   its emit time). Goal: every event within 2 s.
4. Shutdown: ``srcore worker todo`` (the real command, under srcore's supervisor) delivers
   to 40 subscriptions of a receiver that accepts connections and never answers; once its
   first requests hang, it gets SIGTERM, and the seconds until it exits are printed with
   its status and the deliveries it left due for the next worker. Goal: within
   ``webhook-timeout`` (3 s here) + 2 s, status 0, all 40 left due.

Every run is bounded: workers are killed after a lifetime, every wait has a timeout.
Nothing here asserts on time; it prints.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import select
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
for _path in (str(ROOT), str(ROOT / "bench")):
    if _path not in sys.path:
        sys.path.insert(0, _path)

import reliability as harness  # noqa: E402
from measure import interleaved, percentile  # noqa: E402

#: webhook-timeout of the fairness run, and the trickling receiver's pace.
FAIR_TIMEOUT = "4s"
#: The webhook-timeout of the shutdown bench.
SHUTDOWN_TIMEOUT = "3s"
TRICKLE_EVERY = 1.0
#: Other users' subscriptions in the table for the second delivery figure.
CROWD = 20_000


def _quiet() -> None:
    logging.getLogger("srcore").setLevel(logging.ERROR)


def _postgres_missing(backend: str) -> bool:
    if backend != "postgresql":
        return False
    from srcore import testdb

    return not testdb.postgres_available()


def _proc_cpu(pids: set[int] | None = None, pgid: int | None = None) -> float:
    """CPU seconds (user + system) of the processes *pids*, or of process group *pgid*."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    entries = [str(p) for p in pids] if pids is not None else os.listdir("/proc")
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # after "pid (comm)": state ppid pgrp session tty tpgid flags minflt cminflt
        # majflt cmajflt utime stime ...
        if pgid is None or int(fields[2]) == pgid:
            total += int(fields[11]) + int(fields[12])
    return total / tick


@contextlib.contextmanager
def _service(
    backend: str, tmp: Path, *, broker: str = "", subscriptions: int = 0, timeout: str = "3s"
) -> Iterator[tuple[Any, Path]]:
    with harness.service_database(backend, tmp) as url:
        config = harness.write_config(
            tmp / "config.ini", database_url=url, broker=broker, timeout=timeout
        )
        app = harness.build_app(config)
        _quiet()
        if subscriptions:
            harness.subscribe(app, "http://127.0.0.1:9/hook", count=subscriptions)
        try:
            yield app, config
        finally:
            app.extensions["srcore"].db.dispose()


def _emit_many(app: Any, count: int, *, per_transaction: int = 100) -> None:
    """Emit *count* events of user 1, *per_transaction* to a commit (the emit cost is
    section 1's)."""
    from srcore.webhooks import emit

    db = app.extensions["srcore"].db
    data = {"name": "a thing"}
    with app.app_context():
        for first in range(0, count, per_transaction):
            with db.transaction() as session:
                for number in range(first, min(first + per_transaction, count)):
                    emit(harness.EVENT, {**data, "number": number}, owner_id=1, session=session)


def _audience(app: Any, audience: str) -> None:
    """Declare the sample's event with *audience* in *app* (as a service.yaml would)."""
    from dataclasses import replace

    state = app.extensions["srcore"]
    events = tuple(replace(event, audience=audience) for event in state.manifest.events)
    state.manifest = replace(state.manifest, events=events)


def _crowd(app: Any, count: int) -> None:
    """*count* enabled subscriptions to the sample's event, each of another user (2, 3...)."""
    from sqlalchemy import insert

    from srcore.webhooks import Subscription

    hook = dict(url="http://127.0.0.1:9/hook", events=harness.EVENT, scopes=harness.SCOPES)
    rows = [{**hook, "owner_id": 2 + n, "secret": f"whsec_crowd{n:020d}"} for n in range(count)]
    if rows:
        with app.extensions["srcore"].db.transaction() as session:
            session.execute(insert(Subscription), rows)


# -- 1. emit cost --------------------------------------------------------------------------


def _emitter(app: Any) -> Callable[[], None]:
    from srcore.webhooks import emit

    db = app.extensions["srcore"].db
    payload = {"id": 1, "name": "a thing", "owner": {"id": 1, "username": "alice"}}

    def call() -> None:
        with app.app_context(), db.transaction() as session:
            emit(harness.EVENT, payload, session=session)

    return call


def bench_emit(
    backend: str, *, dispatcher: str, n: int, rounds: int, broker: str = ""
) -> dict[str, Any] | None:
    """µs per emit + commit with 1 and with 1,000 subscriptions, and their ratio."""
    if _postgres_missing(backend):
        return None
    with contextlib.ExitStack() as stack:
        one, _ = stack.enter_context(
            _service(backend, Path(tempfile.mkdtemp()), broker=broker, subscriptions=1)
        )
        many, _ = stack.enter_context(
            _service(backend, Path(tempfile.mkdtemp()), broker=broker, subscriptions=1000)
        )
        if dispatcher == "celery":
            for app in (one, many):  # the Celery app is made on the first nudge: not timed
                _emitter(app)()
        times = interleaved({"1": _emitter(one), "1000": _emitter(many)}, n=n, rounds=rounds)
    return {"one_us": times["1"], "many_us": times["1000"], "ratio": times["1000"] / times["1"]}


# -- 2. the fast receiver, a process of its own ----------------------------------------------

_OK = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"


class _Counting(asyncio.Protocol):
    """HTTP/1.1 keep-alive: answer every complete request 200 at once, and count it."""

    stats: dict[str, float] = {"count": 0, "first": 0.0, "last": 0.0}

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.buffer = b""

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        answers = []
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                break
            head = self.buffer[:end].lower()
            if head.startswith(b"get /stats"):
                self.buffer = self.buffer[end + 4 :]
                body = json.dumps(self.stats).encode()
                answers.append(
                    b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body)
                )
                continue
            length = 0
            at = head.find(b"content-length:")
            if at >= 0:
                stop = head.find(b"\r\n", at)
                length = int(head[at + 15 : stop if stop >= 0 else len(head)])
            if len(self.buffer) < end + 4 + length:
                break
            self.buffer = self.buffer[end + 4 + length :]
            now = time.time()
            stats = self.stats
            if not stats["count"]:
                stats["first"] = now
            stats["count"] += 1
            stats["last"] = now
            answers.append(_OK)
        if answers:
            self.transport.write(b"".join(answers))


def run_receiver() -> None:
    """The body of ``webhooks.py receiver``: prints its port, serves until killed."""

    async def serve() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(_Counting, "127.0.0.1", 0, backlog=256)
        print(server.sockets[0].getsockname()[1], flush=True)
        await server.serve_forever()

    asyncio.run(serve())


class FastReceiver:
    """``webhooks.py receiver`` in a subprocess; :meth:`stats` asks it what it counted."""

    def __enter__(self) -> FastReceiver:
        self.process = subprocess.Popen(
            ["timeout", "-s", "KILL", "900", sys.executable, __file__, "receiver"],
            stdout=subprocess.PIPE,
        )
        assert self.process.stdout is not None
        self.port = int(self.process.stdout.readline())
        self.url = f"http://127.0.0.1:{self.port}/hook"
        # `timeout` forks the receiver: its pid is timeout's only child.
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        self.pid = int(children.read_text().split()[0])
        return self

    def stats(self) -> dict[str, float]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/stats", timeout=5) as answer:
            result: dict[str, float] = json.load(answer)
        return result

    def cpu(self) -> float:
        return _proc_cpu({self.pid})

    def __exit__(self, *_exc: object) -> None:
        self.process.kill()
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)
        self.process.wait()


# -- 2. deliveries per second ----------------------------------------------------------------


def run_worker() -> None:
    """The body of ``webhooks.py worker``: ``srcore worker``'s loop, default timings.

    With ``BENCH_PROFILE=path`` the loop runs under cProfile and the stats are written
    to *path* when it stops (SIGTERM).
    """
    from srcore.webhooks.worker import Worker

    app = harness.build_app(Path(os.environ["SRCORE_CONFIG"]))
    if os.environ.get("BENCH_AUDIENCE"):
        _audience(app, os.environ["BENCH_AUDIENCE"])
    worker = Worker(app, poll_interval=0.05)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    profile_to = os.environ.get("BENCH_PROFILE")
    try:
        if profile_to:
            import cProfile

            profiler = cProfile.Profile()
            profiler.runcall(worker.run, stop)
            profiler.dump_stats(profile_to)
        else:
            worker.run(stop)
    finally:
        worker.close()


def bench_delivery(
    dispatcher: str,
    backend: str,
    *,
    events: int,
    subscriptions: int,
    profile: str = "",
    audience: str = "",
    crowd: int = 0,
) -> dict[str, Any] | None:
    """Deliveries per second of one worker process, the events emitted beforehand; with
    *audience*, the event's declared so, and *crowd* other users' subscriptions to it."""
    if _postgres_missing(backend):
        return None
    if dispatcher == "celery" and not harness.redis_available():
        return None
    tmp = Path(tempfile.mkdtemp(prefix=f"srcore-bench-webhooks-{dispatcher}-"))
    with contextlib.ExitStack() as stack:
        receiver = stack.enter_context(FastReceiver())
        broker = ""
        if dispatcher == "celery":
            broker = stack.enter_context(harness.RedisServer(tmp / "redis")).url
        app, config = stack.enter_context(_service(backend, tmp, broker=broker))
        harness.subscribe(app, receiver.url, count=subscriptions)
        if audience:
            _audience(app, audience)
        _crowd(app, crowd)
        total = events * subscriptions
        _emit_many(app, events)
        if dispatcher == "celery":
            worker = harness.celery_worker(
                config,
                tmp,
                app_spec="srcore.webhooks.celery",
                concurrency=1,
                beat=False,
                fast=False,
                lifetime=300,
            )
        else:
            command = [sys.executable, __file__, "worker"]
            env = harness.worker_env(config, BENCH_PROFILE=profile, BENCH_AUDIENCE=audience)
            worker = harness.WorkerProcess(command, env, tmp / "worker.log", lifetime=300)
        stack.callback(worker.stop)
        worker.start()
        assert worker.process is not None
        pgid = worker.process.pid

        def arrived() -> int:
            return int(receiver.stats()["count"])

        harness.wait_until(lambda: arrived() >= 1, timeout=120, interval=0.005, what="start")
        cpu_first, receiver_cpu_first = _proc_cpu(pgid=pgid), receiver.cpu()
        harness.wait_until(
            lambda: arrived() >= total, timeout=240, interval=0.01, what="all deliveries"
        )
        cpu, receiver_cpu = _proc_cpu(pgid=pgid) - cpu_first, receiver.cpu() - receiver_cpu_first
        stats = receiver.stats()
        seconds = stats["last"] - stats["first"]
        done = stats["count"] - 1
        # The receiver answers before the worker records: wait for the records.
        with contextlib.suppress(TimeoutError):
            harness.wait_until(
                lambda: harness.delivery_states(app).get("delivered", 0) >= total,
                timeout=30,
                what="deliveries recorded",
            )
        delivered = harness.delivery_states(app).get("delivered", 0)
        if profile:
            worker.stop()
    return {
        "per_second": done / seconds,
        "per_cpu_second": done / cpu if cpu else float("nan"),
        "cpu_share": cpu / seconds,
        "receiver_capacity": done / receiver_cpu if receiver_cpu else float("inf"),
        "receiver_busy": receiver_cpu / seconds,
        "delivered": f"{delivered}/{total}",
    }


# -- 3. fairness ----------------------------------------------------------------------------


class Trickler:
    """A receiver that answers 200 with a long body sent a byte per TRICKLE_EVERY; it
    counts the attempts the sender cut."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0), backlog=64)
        self.listener.settimeout(0.1)
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}/hook"
        self.stop = threading.Event()
        self.started = 0
        self.cut = 0
        self.thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        with conn:
            try:
                if not conn.recv(65536):
                    return
                self.started += 1
                conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\n")
                while not self.stop.is_set():
                    readable, _, _ = select.select([conn], [], [], TRICKLE_EVERY)
                    if readable and not conn.recv(65536):
                        self.cut += 1
                        return
                    conn.sendall(b"x")
            except OSError:
                self.cut += 1

    def __enter__(self) -> Trickler:
        self.thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop.set()
        self.listener.close()
        self.thread.join(timeout=5)


def bench_fairness(
    backend: str, *, events: int, rate: float, trickling: int
) -> dict[str, Any] | None:
    """Emit→arrival latency at a healthy receiver while *trickling* subscriptions'
    receiver trickles."""
    if _postgres_missing(backend):
        return None
    from srcore.webhooks import emit

    tmp = Path(tempfile.mkdtemp(prefix="srcore-bench-fairness-"))
    with contextlib.ExitStack() as stack:
        healthy = stack.enter_context(harness.Receiver())
        slow = stack.enter_context(Trickler())
        app, config = stack.enter_context(_service(backend, tmp, timeout=FAIR_TIMEOUT))
        harness.subscribe(app, slow.url, count=trickling)
        harness.subscribe(app, healthy.url)
        worker = harness.WorkerProcess(
            [sys.executable, __file__, "worker"],
            harness.worker_env(config),
            tmp / "worker.log",
            lifetime=300,
        )
        stack.callback(worker.stop)
        worker.start()
        db = app.extensions["srcore"].db
        with app.app_context(), db.transaction() as session:  # once it arrives, the worker runs
            emit(harness.EVENT, {"number": -1, "sent": time.time()}, session=session)
        harness.wait_until(lambda: healthy.accepted(), timeout=120, what="the worker to start")
        with app.app_context():
            for number in range(events):
                with db.transaction() as session:
                    emit(harness.EVENT, {"number": number, "sent": time.time()}, session=session)
                time.sleep(1 / rate)
        harness.wait_until(
            lambda: len(healthy.accepted()) > events, timeout=120, what="healthy deliveries"
        )
        latencies = []
        for request in healthy.snapshot():
            data = json.loads(request.body)["data"]
            if data["number"] >= 0:
                latencies.append(request.at - data["sent"])
    return {
        "events": events,
        "max": max(latencies),
        "p95": percentile(latencies, 95),
        "within_2s": sum(1 for x in latencies if x <= 2.0),
        "trickled": slow.started,
        "cut": slow.cut,
    }


class Staller:
    """A receiver that accepts connections and never reads nor answers them."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0), backlog=128)
        self.listener.settimeout(0.1)
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}/hook"
        self.stop = threading.Event()
        self.held: list[socket.socket] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:
                self.held.append(self.listener.accept()[0])
            except TimeoutError:
                continue
            except OSError:
                return

    def __enter__(self) -> Staller:
        self.thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=5)
        for conn in self.held:
            conn.close()
        self.listener.close()


def bench_shutdown(backend: str, *, subscriptions: int = 40) -> dict[str, Any] | None:
    """Seconds from SIGTERM to the exit of ``srcore worker todo`` while every request it has
    in flight hangs on a receiver that never answers (more than its concurrency, so later
    rounds would wait too), and how many deliveries it left due for the next worker."""
    if _postgres_missing(backend):
        return None
    from sqlalchemy import func, select

    from srcore import testdb
    from srcore.app import migration_target
    from srcore.db import Database, utcnow
    from srcore.migrate import upgrade_all
    from srcore.signatures import generate_secret
    from srcore.testing import free_port, run_worker, write_network_config
    from srcore.webhooks.models import Delivery, OutboxRow, Subscription

    tmp = Path(tempfile.mkdtemp(prefix="srcore-bench-shutdown-"))
    with contextlib.ExitStack() as stack:
        staller = stack.enter_context(Staller())
        config = write_network_config(
            tmp / "config.ini",
            {"meta": free_port(), "todo": free_port()},
            global_keys={
                "webhook-timeout": SHUTDOWN_TIMEOUT,
                "allow-private-webhook-targets": "127.0.0.0/8",
            },
        )
        url = f"sqlite:///{tmp / 'todo.db'}"
        if backend == "postgresql":
            url = testdb.create_test_database(prefix="srcore_shutdown")
            stack.callback(testdb.drop_test_database, url)
            text = config.read_text(encoding="utf-8")
            config.write_text(text.replace(f"sqlite:///{tmp / 'todo.db'}", url), encoding="utf-8")
        upgrade_all(migration_target("todo", config))
        db = Database(url)
        stack.callback(db.dispose)
        now = utcnow()
        with db.transaction() as session:
            outbox = OutboxRow(event="ticket:created", payload="{}", created=now, fanned_out_at=now)
            session.add(outbox)
            session.flush()
            for _ in range(subscriptions):
                hook = dict(url=staller.url, events="ticket:created", secret=generate_secret())
                sub = Subscription(**hook)
                session.add(sub)
                session.flush()
                session.add(Delivery(subscription_id=sub.id, outbox_id=outbox.id))
        with run_worker("todo", config, timeout=60) as worker:
            harness.wait_until(lambda: len(staller.held) > 0, timeout=60, what="a request")
            time.sleep(0.5)  # the first round of requests is in flight
            signalled = time.monotonic()
            worker.send_signal(signal.SIGTERM)
            status = worker.wait(timeout=120)
            seconds = time.monotonic() - signalled
        with db.transaction() as session:
            pending = Delivery.status == "pending"
            left = session.scalar(select(func.count()).select_from(Delivery).where(pending))
    return {"seconds": seconds, "status": status, "requests": len(staller.held), "left": left}


# -- report -------------------------------------------------------------------------------------


def section(backends: list[str], *, quick: bool = False, number: str = "") -> None:
    """Run and print the four benchmarks (bench/run.py's ``webhooks`` section)."""
    n, rounds = (100, 3) if quick else (300, 7)
    events, subscriptions = (500, 4) if quick else (2500, 4)
    prefix = f"{number}. " if number else ""
    print(f"{prefix}webhooks: emit + commit, 1 vs 1,000 subscriptions ({n} emits x {rounds})")
    print(f"   {'backend':<11}{'dispatcher':<11}{'1 sub µs':>10}{'1,000 µs':>10}{'ratio':>8}")
    with contextlib.ExitStack() as stack:
        broker = ""
        if harness.redis_available():
            tmp = Path(tempfile.mkdtemp(prefix="srcore-bench-redis-"))
            broker = stack.enter_context(harness.RedisServer(tmp)).url
        for backend in backends:
            for dispatcher in ("local", "celery"):
                if dispatcher == "celery" and not broker:
                    print(f"   {backend:<11}{dispatcher:<11}  (redis-server missing, skipped)")
                    continue
                result = bench_emit(
                    backend,
                    dispatcher=dispatcher,
                    n=n,
                    rounds=rounds,
                    broker=broker if dispatcher == "celery" else "",
                )
                if result is None:
                    print(f"   {backend:<11}{dispatcher:<11}  (not reachable, skipped)")
                    continue
                print(
                    f"   {backend:<11}{dispatcher:<11}{result['one_us']:>10.0f}"
                    f"{result['many_us']:>10.0f}{result['ratio']:>8.2f}"
                )
    print("   goal: ratio at most 1.2 (emit writes one outbox row, whatever the subscribers)\n")

    print(
        f"{prefix}webhooks: deliveries per second, one worker process "
        f"({events} events x {subscriptions} subscriptions of one receiver)"
    )
    print(
        f"   {'backend':<11}{'worker':<8}{'per s':>7}{'per CPU-s':>10}{'CPU busy':>9}"
        f"{'delivered':>12}{'receiver cap/s':>16}{'rcv busy':>9}"
    )
    order = sorted(backends, key=lambda b: b != "postgresql")
    for backend in order:
        for dispatcher in ("local", "celery"):
            result = bench_delivery(dispatcher, backend, events=events, subscriptions=subscriptions)
            if result is None:
                print(f"   {backend:<11}{dispatcher:<8}  (not reachable, skipped)")
                continue
            print(
                f"   {backend:<11}{dispatcher:<8}{result['per_second']:>7.0f}"
                f"{result['per_cpu_second']:>10.0f}{result['cpu_share']:>9.0%}"
                f"{result['delivered']:>12}{result['receiver_capacity']:>16.0f}"
                f"{result['receiver_busy']:>9.0%}"
            )
    print(
        "   goal: at least 1,000 per second per process on PostgreSQL. 'per CPU-s' divides\n"
        "   by the worker's own CPU time (Celery: pool process + consumer), 'CPU busy' is\n"
        "   that time over the window (below 100% when the machine is shared or the worker\n"
        "   waits on the database or the receiver). 'receiver cap/s' is the receiver's\n"
        "   requests per CPU-second of its own, 'rcv busy' its CPU time over the window.\n"
    )

    crowd_events = 250 if quick else 1500
    print(
        f"{prefix}webhooks: deliveries per second with other users' subscriptions, local "
        f"worker\n   ({crowd_events} owner-audience events x {subscriptions} subscriptions "
        f"of their owner; the others subscribed\n   to the same event, none in its audience)"
    )
    print(f"   {'backend':<11}{'others':>8}{'per s':>7}{'per CPU-s':>10}{'delivered':>12}")
    for backend in order:
        for crowd in (0, CROWD):
            result = bench_delivery(
                "local",
                backend,
                events=crowd_events,
                subscriptions=subscriptions,
                audience="owner",
                crowd=crowd,
            )
            if result is None:
                print(f"   {backend:<11}{crowd:>8,}  (not reachable, skipped)")
                continue
            print(
                f"   {backend:<11}{crowd:>8,}{result['per_second']:>7.0f}"
                f"{result['per_cpu_second']:>10.0f}{result['delivered']:>12}"
            )
    print(f"   goal: with {CROWD:,} others, within 20% of the rate with none\n")

    fair_events, rate, trickling = (40, 20.0, 6) if quick else (100, 20.0, 6)
    print(
        f"{prefix}webhooks: fairness, emit -> arrival at a healthy receiver while another "
        f"trickles\n   ({fair_events} events at {rate:.0f}/s, each also to {trickling} "
        f"subscriptions of a receiver sending a byte per {TRICKLE_EVERY:.0f} s; "
        f"webhook-timeout {FAIR_TIMEOUT})"
    )
    print(f"   {'backend':<11}{'max s':>7}{'p95 s':>7}{'within 2 s':>12}{'trickled, cut':>15}")
    for backend in order:
        fair = bench_fairness(backend, events=fair_events, rate=rate, trickling=trickling)
        if fair is None:
            print(f"   {backend:<11}  (not reachable, skipped)")
            continue
        print(
            f"   {backend:<11}{fair['max']:>7.2f}{fair['p95']:>7.2f}"
            f"{fair['within_2s']:>7}/{fair['events']:<4}{fair['trickled']:>8}, {fair['cut']}"
        )
    print("   goal: every event within 2 s\n")

    print(
        f"{prefix}webhooks: SIGTERM to exit of `srcore worker`, every request hanging "
        f"(webhook-timeout {SHUTDOWN_TIMEOUT}, 40 subscriptions)"
    )
    print(f"   {'backend':<11}{'seconds':>9}{'status':>8}{'requests':>10}{'left due':>10}")
    for backend in order:
        down = bench_shutdown(backend)
        if down is None:
            print(f"   {backend:<11}  (not reachable, skipped)")
            continue
        print(
            f"   {backend:<11}{down['seconds']:>9.2f}{down['status']:>8}"
            f"{down['requests']:>10}{down['left']:>10}"
        )
    print("   goal: exit within webhook-timeout + 2 s, status 0, what was not sent left due\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("mode", nargs="?", default="run", choices=["run", "worker", "receiver"])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--backends", default="sqlite,postgresql")
    options = parser.parse_args()
    if options.mode == "worker":
        run_worker()
        return 0
    if options.mode == "receiver":
        run_receiver()
        return 0
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # unwind: stop our processes
    print(f"srcore webhook benchmarks - Python {sys.version.split()[0]}, {os.cpu_count()} CPUs")
    print(f"load average {', '.join(f'{x:.1f}' for x in os.getloadavg())}\n")
    section(options.backends.split(","), quick=options.quick)
    return 0


if __name__ == "__main__":
    sys.exit(main())
