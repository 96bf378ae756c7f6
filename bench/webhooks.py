"""Webhook benchmarks: what emitting costs a request, and how fast one worker delivers.

    .venv/bin/python bench/webhooks.py [--quick] [--backends sqlite,postgresql]
    .venv/bin/python bench/run.py --only webhooks

1. ``emit`` in a committed transaction (the sample service's ``thing:created``) with 1
   subscription against 1,000 subscriptions, interleaved. Emitting writes one outbox row
   whatever the number of subscribers, so the ratio should stay near 1 (goal: at most
   1.2). With the local dispatcher, and with the Celery one (the commit also queues a
   fan-out message on our own Redis).
2. Deliveries per second of one worker process to a receiver on 127.0.0.1 (keep-alive,
   always 200): N events are emitted first, then one worker is started; the rate counts
   from the first delivery received to the last, so start-up is left out. Each delivery
   includes its fan-out. The local worker is one process; Celery is ``celery -A
   srcore.webhooks.celery worker --pool prefork -c 1`` (one pool process, plus the
   consumer). With Celery the N commits queued a few ``process`` messages, not N: the
   nudges are coalesced, and one task drains the outbox in batches. The worker's CPU time
   in that window is read from /proc, so the figure per CPU-second is given too: on a
   busy machine it is the steadier one. Goal: at least 500 deliveries/s per process.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
for _path in (str(ROOT), str(ROOT / "bench")):
    if _path not in sys.path:
        sys.path.insert(0, _path)

import reliability as harness  # noqa: E402
from measure import interleaved  # noqa: E402

# -- 1. emit cost --------------------------------------------------------------------------


def _quiet() -> None:
    logging.getLogger("srcore").setLevel(logging.ERROR)


@contextlib.contextmanager
def _service(backend: str, tmp: Path, *, broker: str = "", subscriptions: int = 0) -> Iterator[Any]:
    with harness.service_database(backend, tmp) as url:
        config = harness.write_config(tmp / "config.ini", database_url=url, broker=broker)
        app = harness.build_app(config)
        _quiet()
        if subscriptions:
            harness.subscribe(app, "http://127.0.0.1:9/hook", count=subscriptions)
        try:
            yield app
        finally:
            app.extensions["srcore"].db.dispose()


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
    if backend == "postgresql":
        from srcore import testdb

        if not testdb.postgres_available():
            return None
    with contextlib.ExitStack() as stack:
        one = stack.enter_context(
            _service(backend, Path(tempfile.mkdtemp()), broker=broker, subscriptions=1)
        )
        many = stack.enter_context(
            _service(backend, Path(tempfile.mkdtemp()), broker=broker, subscriptions=1000)
        )
        if dispatcher == "celery":
            for app in (one, many):  # the Celery app is made on the first nudge: not timed
                assert app.extensions["srcore"].webhook_dispatcher.celery
        times = interleaved({"1": _emitter(one), "1000": _emitter(many)}, n=n, rounds=rounds)
    return {
        "backend": backend,
        "dispatcher": dispatcher,
        "one_us": times["1"],
        "many_us": times["1000"],
        "ratio": times["1000"] / times["1"],
    }


# -- 2. deliveries per second ----------------------------------------------------------------


def _group_cpu(pgid: int) -> float:
    """CPU seconds (user + system) of every process in process group *pgid*."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # after "pid (comm)": state ppid pgrp session tty tpgid flags minflt cminflt
        # majflt cmajflt utime stime ...
        if int(fields[2]) == pgid:
            total += int(fields[11]) + int(fields[12])
    return total / tick


def bench_delivery(dispatcher: str, backend: str, *, events: int) -> dict[str, Any] | None:
    """Deliveries per second of one worker process, emitted beforehand."""
    if backend == "postgresql":
        from srcore import testdb

        if not testdb.postgres_available():
            return None
    tmp = Path(tempfile.mkdtemp(prefix=f"srcore-bench-webhooks-{dispatcher}-"))
    with contextlib.ExitStack() as stack:
        receiver = stack.enter_context(harness.Receiver())
        broker = ""
        if dispatcher == "celery":
            if not harness.redis_available():
                return None
            broker = stack.enter_context(harness.RedisServer(tmp / "redis")).url
        url = stack.enter_context(harness.service_database(backend, tmp))
        config = harness.write_config(tmp / "config.ini", database_url=url, broker=broker)
        app = harness.build_app(config)
        _quiet()
        stack.callback(app.extensions["srcore"].db.dispose)
        harness.subscribe(app, receiver.url)
        harness.emit_events(app, events)
        if dispatcher == "celery":
            worker = harness.celery_worker(
                config,
                tmp,
                app_spec="srcore.webhooks.celery",
                concurrency=1,
                beat=False,
                fast=False,
                lifetime=900,
            )
        else:
            worker = harness.local_worker(config, tmp, lifetime=900)
        stack.callback(worker.stop)
        worker.start()
        assert worker.process is not None
        pgid = worker.process.pid

        def arrived() -> int:
            with receiver.lock:
                return len(receiver.requests)

        harness.wait_until(lambda: arrived() >= 1, timeout=120, interval=0.005, what="start")
        first = time.perf_counter()
        cpu_first = _group_cpu(pgid)
        count_first = arrived()
        harness.wait_until(
            lambda: arrived() >= events, timeout=600, interval=0.01, what="all deliveries"
        )
        seconds = time.perf_counter() - first
        cpu = _group_cpu(pgid) - cpu_first
        done = arrived() - count_first
        # The receiver answers before the worker records the batch: wait for the records.
        with contextlib.suppress(TimeoutError):
            harness.wait_until(
                lambda: harness.delivery_states(app).get("delivered", 0) >= events,
                timeout=30,
                what="deliveries recorded",
            )
        states = harness.delivery_states(app)
    return {
        "dispatcher": dispatcher,
        "backend": backend,
        "events": events,
        "per_second": done / seconds,
        "per_cpu_second": done / cpu if cpu else float("nan"),
        "cpu_share": cpu / seconds,
        "delivered": states.get("delivered", 0),
    }


def cpu_reference() -> float:
    """CPU seconds of a fixed pure-Python loop, to compare this machine with another."""
    started = time.process_time()
    total = 0
    for i in range(10_000_000):
        total += i
    return time.process_time() - started


# -- report -------------------------------------------------------------------------------------


def section(backends: list[str], *, quick: bool = False, number: str = "") -> None:
    """Run and print both benchmarks (bench/run.py's ``webhooks`` section)."""
    n, rounds, events = (200, 3, 300) if quick else (1000, 5, 2000)
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

    print(f"{prefix}webhooks: deliveries per second, one worker process ({events} events)")
    print(
        f"   {'backend':<11}{'worker':<9}{'per s':>8}{'per CPU-s':>11}{'CPU busy':>10}"
        f"{'delivered':>11}"
    )
    for backend in backends:
        for dispatcher in ("local", "celery"):
            result = bench_delivery(dispatcher, backend, events=events)
            if result is None:
                print(f"   {backend:<11}{dispatcher:<9}  (not reachable, skipped)")
                continue
            print(
                f"   {backend:<11}{dispatcher:<9}{result['per_second']:>8.0f}"
                f"{result['per_cpu_second']:>11.0f}{result['cpu_share']:>9.0%}"
                f"{result['delivered']:>11}"
            )
    print(
        "   goal: at least 500 per second per process; 'per CPU-s' divides by the worker's\n"
        "   own CPU time (Celery: pool process + consumer), 'CPU busy' is that time over\n"
        "   the wall-clock window (below 100% when the machine is shared or the worker\n"
        "   waits on the database or the receiver)\n"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--backends", default="sqlite,postgresql")
    options = parser.parse_args()
    print(f"srcore webhook benchmarks - Python {sys.version.split()[0]}, {os.cpu_count()} CPUs")
    print(f"load average {', '.join(f'{x:.1f}' for x in os.getloadavg())}")
    print(f"CPU reference: 10M pure-Python additions take {cpu_reference():.2f} CPU-s here\n")
    section(options.backends.split(","), quick=options.quick)
    return 0


if __name__ == "__main__":
    sys.exit(main())
