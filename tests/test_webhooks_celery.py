"""The Celery dispatcher against a real Redis and real ``celery worker`` processes.

Each module gets its own redis-server on a free port (tests elsewhere use the shared one);
workers are started per test in their own process group and never outlive it. The
receiver is an HTTP server on 127.0.0.1; every request it accepts must verify with the
subscription's secret.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from srcore.testing import require_or_skip

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

import reliability as harness

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[harness.RedisServer]:
    require_or_skip(harness.redis_available(), "redis-server")
    with harness.RedisServer(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    if name == "postgresql":
        from srcore.testdb import postgres_available

        require_or_skip(postgres_available(), "PostgreSQL")
    return name


@pytest.fixture
def receiver() -> Iterator[harness.Receiver]:
    with harness.Receiver() as running:
        yield running


@pytest.fixture
def service(
    backend: str, tmp_path: Path, redis_server: harness.RedisServer
) -> Iterator[tuple[Any, Path]]:
    """The sample service on a migrated database, its broker our Redis (emptied first)."""
    import redis

    redis.Redis.from_url(redis_server.url).flushall()
    with harness.service_database(backend, tmp_path) as url:
        config = harness.write_config(
            tmp_path / "config.ini", database_url=url, broker=redis_server.url
        )
        app = harness.build_app(config)
        try:
            yield app, config
        finally:
            app.extensions["srcore"].db.dispose()


@pytest.fixture
def start_worker(tmp_path: Path) -> Iterator[Any]:
    workers: list[harness.WorkerProcess] = []

    def start(config: Path, **options: Any) -> harness.WorkerProcess:
        worker = harness.celery_worker(config, tmp_path, lifetime=120, **options)
        workers.append(worker)
        worker.start()
        return worker

    yield start
    for worker in workers:
        worker.stop()


def wait_for(receiver: harness.Receiver, count: int, worker: harness.WorkerProcess) -> None:
    try:
        harness.wait_until(
            lambda: len(receiver.accepted()) >= count, timeout=45, what=f"{count} deliveries"
        )
    except TimeoutError:
        pytest.fail(
            f"only {len(receiver.accepted())} of {count} arrived; worker log:\n" + worker.tail()
        )


def wait_delivered(app: Any, count: int) -> None:
    """The receiver answers before the worker records the delivery: wait for the records."""
    harness.wait_until(
        lambda: harness.delivery_states(app) == {"delivered": count},
        timeout=30,
        what=f"{count} deliveries recorded",
    )


def emit_then_fail(app: Any, number: int) -> None:
    """Emit in a transaction that then fails, so it is rolled back."""
    from srcore.webhooks import emit

    with app.extensions["srcore"].db.transaction() as session:
        emit(harness.EVENT, {"number": number, "name": "rolled back"}, session=session)
        raise RuntimeError("the change fails after emitting")


def test_committed_events_are_delivered_signed_and_rolled_back_ones_never(
    service: tuple[Any, Path], receiver: harness.Receiver, start_worker: Any
) -> None:
    from srcore.webhooks import emit
    from srcore.webhooks.celery import CeleryDispatcher

    app, config = service
    ((_sid, secret),) = harness.subscribe(app, receiver.url)
    assert isinstance(app.extensions["srcore.webhooks"].dispatcher, CeleryDispatcher)
    # The production entry point: `celery -A srcore.webhooks.celery worker`.
    worker = start_worker(config, app_spec="srcore.webhooks.celery", beat=False, fast=False)

    db = app.extensions["srcore"].db
    with app.app_context():
        with pytest.raises(RuntimeError):
            emit_then_fail(app, -1)
        for number in range(5):
            with db.transaction() as session:
                emit(harness.EVENT, {"number": number, "name": f"thing {number}"}, session=session)

    wait_for(receiver, 5, worker)
    time.sleep(1.0)  # anything else in flight would land now
    stats = harness.check_received(receiver, secret)
    assert stats["unverified"] == 0
    assert stats["numbers"] == {0, 1, 2, 3, 4}  # never -1
    assert stats["duplicates"] == 0
    wait_delivered(app, 5)
    assert harness.outbox_count(app) == (5, 0)
    for item in receiver.snapshot():
        assert item.headers["webhook-signature"].startswith("v1,")
        assert item.headers["user-agent"].startswith("srcore-webhooks/")


def test_beat_drains_what_the_broker_lost(
    service: tuple[Any, Path],
    receiver: harness.Receiver,
    start_worker: Any,
    redis_server: harness.RedisServer,
) -> None:
    import redis

    from srcore.webhooks.fanout import fan_out
    from srcore.webhooks.outbox import insert_event

    app, config = service
    ((_sid, secret),) = harness.subscribe(app, receiver.url)
    st = app.extensions["srcore"]
    # 1. A wake-up lost on the broker: emitted and queued, then Redis forgets it.
    harness.emit_events(app, 2, start=0)
    assert redis.Redis.from_url(redis_server.url).flushall()
    # 2. A row committed without any message (a crash between commit and wake-up).
    with st.db.transaction() as session:
        insert_event(session, harness.EVENT, {"number": 2, "name": "thing 2"})
    # 3. Deliveries created by a fan-out whose worker died before sending them.
    with st.db.transaction() as session:
        outbox_id = insert_event(session, harness.EVENT, {"number": 3, "name": "thing 3"})
    with st.db.session() as session:
        assert len(fan_out(session, [outbox_id], manifest=st.manifest)) == 1

    worker = start_worker(config)  # with --beat: a drain every second
    wait_for(receiver, 4, worker)
    stats = harness.check_received(receiver, secret)
    assert stats["numbers"] == {0, 1, 2, 3}
    assert stats["unverified"] == 0
    wait_delivered(app, 4)


def test_a_burst_of_commits_queues_one_wakeup(
    service: tuple[Any, Path],
    receiver: harness.Receiver,
    start_worker: Any,
    redis_server: harness.RedisServer,
) -> None:
    """While a drain is queued and not started, commits queue nothing more: it will see
    their rows."""
    import redis

    from srcore.webhooks.celery import queue_name

    app, config = service
    ((_sid, secret),) = harness.subscribe(app, receiver.url)
    client = redis.Redis.from_url(redis_server.url)
    harness.emit_events(app, 40)  # no worker yet: the message waits on the broker
    assert client.llen(queue_name("sample")) == 1
    assert client.exists("srcore-webhooks:sample:queued")

    worker = start_worker(config, app_spec="srcore.webhooks.celery", beat=False, fast=False)
    wait_for(receiver, 40, worker)  # no beat runs: the one wake-up carried every row
    stats = harness.check_received(receiver, secret)
    assert stats["numbers"] == set(range(40))
    assert stats["unverified"] == 0
    wait_delivered(app, 40)
    assert not client.exists("srcore-webhooks:sample:queued")
    assert client.llen(queue_name("sample")) == 0


def test_commits_racing_a_draining_task_are_never_left_behind(
    service: tuple[Any, Path], receiver: harness.Receiver, start_worker: Any
) -> None:
    """Commits from three threads while the worker drains, no beat: every row arrives."""
    import threading

    app, config = service
    ((_sid, secret),) = harness.subscribe(app, receiver.url)
    worker = start_worker(config, app_spec="srcore.webhooks.celery", beat=False, fast=False)
    threads = [
        threading.Thread(
            target=harness.emit_events, args=(app, 50), kwargs={"start": 50 * n, "per_second": 200}
        )
        for n in range(3)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    wait_for(receiver, 150, worker)
    stats = harness.check_received(receiver, secret)
    assert stats["numbers"] == set(range(150))
    assert stats["unverified"] == 0
    wait_delivered(app, 150)


def _in_process(app: Any, **options: Any) -> tuple[Any, list[list[Any]]]:
    """*app*'s Celery app with the task run here and the messages it would send kept."""
    from srcore.webhooks.celery import make_celery

    celery_app = make_celery(app, worker=lambda: harness.fast_worker(app), **options)
    sent: list[list[Any]] = []
    celery_app.webhook_wakeups.send = lambda spread=0: sent.append([spread])
    return celery_app, sent


def test_a_commit_during_a_drain_is_seen_by_it_or_wakes_another(
    service: tuple[Any, Path], receiver: harness.Receiver
) -> None:
    """The race the queued-drain mark must survive, made to happen: the mark is cleared
    before the drain looks, so a commit that found it set is seen by that drain."""
    from srcore.webhooks.celery import DRAIN
    from srcore.webhooks.outbox import insert_event

    app, _config = service
    ((_sid, secret),) = harness.subscribe(app, receiver.url)
    st = app.extensions["srcore"]
    celery_app, sent = _in_process(app)
    wakeups = celery_app.webhook_wakeups

    def commit(number: int) -> None:
        with st.db.transaction() as session:
            insert_event(session, harness.EVENT, {"number": number, "name": "x"})
        wakeups.after_commit()

    commit(1)
    commit(2)
    assert sent == [[0]]  # the second commit found a drain queued
    started = wakeups.started

    def commit_when_started() -> None:
        started()
        commit(3)  # after the mark is cleared: a message of its own, and seen now anyway

    wakeups.started = commit_when_started
    assert celery_app.tasks[DRAIN](0) >= 3
    assert sent == [[0], [0]]
    assert harness.check_received(receiver, secret)["numbers"] == {1, 2, 3}
    wakeups.started = started
    assert celery_app.tasks[DRAIN](0) == 0  # the second message finds nothing: idempotent
    assert len(receiver.snapshot()) == 3


def test_a_long_drain_hands_on_and_a_backlog_spreads(
    service: tuple[Any, Path], receiver: harness.Receiver
) -> None:
    """Out of drain time with rows left, a task queues its successor; a task that finds
    more waiting than one worker holds asks one more process to join."""
    from srcore.webhooks.celery import DRAIN
    from srcore.webhooks.outbox import insert_event

    app, _config = service
    ((_sid, secret),) = harness.subscribe(app, receiver.url)
    st = app.extensions["srcore"]
    celery_app, sent = _in_process(app, drain_time=0.0)
    with st.db.transaction() as session:
        for n in range(300):
            insert_event(session, harness.EVENT, {"number": n, "name": "x"})
    celery_app.tasks[DRAIN](0)
    assert [0] in sent  # out of time, rows left: a successor
    assert [1] in sent  # more than a batch waited: a second process asked to join
    runs = 1
    while sent and runs < 50:
        celery_app.tasks[DRAIN](*sent.pop(0))
        runs += 1
    harness.wait_until(lambda: len(receiver.accepted()) >= 300, timeout=30, what="300")
    assert harness.check_received(receiver, secret)["numbers"] == set(range(300))


def test_dispatcher_queues_after_commit_only(
    service: tuple[Any, Path], redis_server: harness.RedisServer
) -> None:
    import redis

    from srcore.webhooks import emit
    from srcore.webhooks.celery import queue_name

    app, _config = service
    client = redis.Redis.from_url(redis_server.url)
    queue = queue_name("sample")
    db = app.extensions["srcore"].db
    with app.app_context(), db.transaction() as session:
        emit(harness.EVENT, {"number": 1, "name": "one"}, session=session)
        session.flush()
        assert client.llen(queue) == 0  # not before the commit
    assert client.llen(queue) == 1
    client.delete("srcore-webhooks:sample:queued")
    with app.app_context(), pytest.raises(RuntimeError):
        emit_then_fail(app, 2)
    assert client.llen(queue) == 1


def test_a_dead_broker_leaves_the_commit_standing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """With the broker down the commit stands; the wake-up fails and is logged."""
    import logging

    from srcore.webhooks import emit

    port = harness.free_port()  # nothing listens there
    with harness.service_database("sqlite", tmp_path) as url:
        config = harness.write_config(
            tmp_path / "config.ini", database_url=url, broker=f"redis://127.0.0.1:{port}/0"
        )
        app = harness.build_app(config)
        db = app.extensions["srcore"].db
        with (
            app.app_context(),
            caplog.at_level(logging.ERROR, logger="srcore.webhooks"),
            db.transaction() as session,
        ):
            emit(harness.EVENT, {"number": 1, "name": "one"}, session=session)
        assert harness.outbox_count(app) == (1, 1)
        (record,) = [r for r in caplog.records if "could not nudge" in r.getMessage()]
        # One line naming the cause, no traceback: an outage logs it once per commit.
        assert not record.exc_info and "Error" in record.getMessage(), record.getMessage()
        db.dispose()


def test_the_operator_sets_the_number_of_slots(tmp_path: Path) -> None:
    from srcore.webhooks.celery import make_celery

    with harness.service_database("sqlite", tmp_path) as url:
        config = harness.write_config(
            tmp_path / "config.ini", database_url=url, broker="redis://127.0.0.1:1/0"
        )
        text = config.read_text(encoding="utf-8")
        config.write_text(text.replace("[global]\n", "[global]\nwebhook-celery-slots = 3\n"))
        app = harness.build_app(config)
        try:
            wakeups = make_celery(app).webhook_wakeups  # built without connecting
            assert wakeups.slots == 3 and wakeups._redis is not None
            amqp = make_celery(app, broker="amqp://guest@127.0.0.1:1//")
            assert amqp.webhook_wakeups._redis is None  # a message per commit
        finally:
            app.extensions["srcore"].db.dispose()


def test_no_service_named_is_a_clear_error() -> None:
    from srcore.webhooks import celery as module

    with pytest.raises(RuntimeError, match="SRCORE_SERVICE"):
        module.default_app(environ={})
    assert module.make_celery  # importing built nothing; no service named: no `app`
    if "SRCORE_SERVICE" not in os.environ:
        assert not hasattr(module, "app")


def test_a_celery_worker_prints_each_srcore_log_line_once(tmp_path: Path) -> None:
    """The app, built before the worker sets its logging up, adds srcore's stderr handler;
    the worker's root handler then prints srcore's records too, so srcore's must go."""
    from srcore.testing import free_port, write_network_config

    config = write_network_config(
        tmp_path / "config.ini",
        {"meta": free_port(), "todo": free_port()},
        global_keys={"webhooks-broker": "redis://127.0.0.1:6379/15"},
    )
    script = (
        "import logging, todo\n"
        "from srcore.webhooks.celery import make_celery\n"
        "c = make_celery(todo.create_app())\n"
        "logging.getLogger('srcore.webhooks').info('before-the-worker')\n"
        "c.log.setup_logging_subsystem(loglevel='INFO')\n"
        "logging.getLogger('srcore.webhooks').info('in-the-worker')\n"
    )
    env = dict(os.environ, SRCORE_CONFIG=str(config))
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    output = done.stdout + done.stderr
    assert output.count("before-the-worker") == 1, output
    assert output.count("in-the-worker") == 1, output
