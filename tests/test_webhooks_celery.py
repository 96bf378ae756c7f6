"""The Celery dispatcher against a real Redis and real ``celery worker`` processes.

Each module gets its own redis-server on a free port (tests elsewhere use the shared one);
workers are started per test in their own process group and never outlive it. The
receiver is an HTTP server on 127.0.0.1; every request it accepts must verify with the
subscription's secret.
"""

from __future__ import annotations

import json
import os
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
    assert isinstance(app.extensions["srcore"].webhook_dispatcher, CeleryDispatcher)
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


def test_sweep_queues_what_the_broker_lost(
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
    # 1. A fan-out message lost on the broker: emitted and queued, then Redis forgets it.
    harness.emit_events(app, 2, start=0)
    assert redis.Redis.from_url(redis_server.url).flushall()
    # 2. A row committed without any message (a crash between commit and nudge).
    with st.db.transaction() as session:
        insert_event(session, harness.EVENT, {"number": 2, "name": "thing 2"})
    # 3. Deliveries created by a fan-out whose worker died before queuing them.
    with st.db.transaction() as session:
        outbox_id = insert_event(session, harness.EVENT, {"number": 3, "name": "thing 3"})
    with st.db.session() as session:
        assert len(fan_out(session, outbox_id, manifest=st.manifest)) == 1

    worker = start_worker(config)  # with --beat: the sweep every second, leases of 3 s
    wait_for(receiver, 4, worker)
    stats = harness.check_received(receiver, secret)
    assert stats["numbers"] == {0, 1, 2, 3}
    assert stats["unverified"] == 0
    wait_delivered(app, 4)


def test_a_burst_of_commits_costs_a_few_messages(
    service: tuple[Any, Path],
    receiver: harness.Receiver,
    start_worker: Any,
    redis_server: harness.RedisServer,
) -> None:
    """Commits beyond the nudge slots send no message; the tasks in flight drain them."""
    import redis

    from srcore.webhooks.celery import queue_name

    app, config = service
    ((_sid, secret),) = harness.subscribe(app, receiver.url)
    client = redis.Redis.from_url(redis_server.url)
    harness.emit_events(app, 40)  # no worker yet: the messages wait on the broker
    assert client.llen(queue_name("sample")) == 8  # [global] webhook-celery-slots
    assert client.zcard("srcore-webhooks.sample.nudges") == 8

    worker = start_worker(config, app_spec="srcore.webhooks.celery", beat=False, fast=False)
    wait_for(receiver, 40, worker)  # no sweep runs: the nudges alone carried every row
    stats = harness.check_received(receiver, secret)
    assert stats["numbers"] == set(range(40))
    assert stats["unverified"] == 0
    wait_delivered(app, 40)
    harness.wait_until(
        lambda: client.zcard("srcore-webhooks.sample.nudges") == 0,
        timeout=15,
        what="every slot given back",
    )
    assert client.llen(queue_name("sample")) == 0


def test_commits_racing_a_draining_task_are_never_left_behind(
    service: tuple[Any, Path], receiver: harness.Receiver, start_worker: Any
) -> None:
    """One slot, commits from three threads while the worker drains, no sweep: a commit
    that finds the slot taken is picked up by the holder's last look after releasing."""
    import threading

    from srcore.webhooks.celery import CeleryDispatcher, CeleryOptions

    app, config = service
    ((_sid, secret),) = harness.subscribe(app, receiver.url)
    st = app.extensions["srcore"]
    st.webhook_dispatcher = CeleryDispatcher(app, options=CeleryOptions(nudge_slots=1))
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


def test_a_task_looks_again_after_giving_its_slot_back(
    service: tuple[Any, Path], receiver: harness.Receiver
) -> None:
    """The race the slots must survive, made to happen: a row committed after the task's
    last claim but while it still holds the only slot sends no message of its own."""
    from srcore.webhooks.celery import PROCESS, CeleryOptions, make_celery
    from srcore.webhooks.outbox import insert_event

    app, _config = service
    ((_sid, secret),) = harness.subscribe(app, receiver.url)
    st = app.extensions["srcore"]
    tasks = make_celery(app, options=CeleryOptions(nudge_slots=1)).webhook_tasks
    sent: list[tuple[str, list[Any]]] = []
    tasks.enqueue = lambda task, args: sent.append((task, list(args)))

    def commit(number: int) -> int:
        with st.db.transaction() as session:
            return insert_event(session, harness.EVENT, {"number": number, "name": "x"})

    first = commit(1)
    assert tasks.nudge(first) is True
    ((task, (row, slot)),) = sent
    assert task == PROCESS and row == first and slot

    release = tasks._release
    late: list[int] = []

    def commit_then_release(token: str) -> None:
        late.append(commit(2))
        assert tasks.nudge(late[0]) is False  # the slot is still held: no message
        release(token)

    tasks._release = commit_then_release  # type: ignore[method-assign]
    assert tasks.process(first, slot) == 2
    assert len(sent) == 1
    assert harness.check_received(receiver, secret)["numbers"] == {1, 2}
    assert tasks.slots is not None and tasks.slots.held() == 0


def test_a_long_drain_hands_on_to_a_new_message(
    service: tuple[Any, Path], receiver: harness.Receiver
) -> None:
    """Out of drain time, a task queues its successor with the same slot, renewed."""
    from datetime import timedelta

    from srcore.webhooks.celery import PROCESS, CeleryOptions, make_celery
    from srcore.webhooks.outbox import insert_event

    app, _config = service
    ((_sid, secret),) = harness.subscribe(app, receiver.url)
    st = app.extensions["srcore"]
    options = CeleryOptions(nudge_slots=1, batch=2, drain_time=timedelta(0))
    tasks = make_celery(app, options=options).webhook_tasks
    sent: list[tuple[str, list[Any]]] = []
    tasks.enqueue = lambda task, args: sent.append((task, list(args)))
    with st.db.transaction() as session:
        rows = [insert_event(session, harness.EVENT, {"number": n, "name": "x"}) for n in range(5)]
    assert tasks.nudge(rows[0]) is True
    ((_task, (_row, slot)),) = sent
    runs = 0
    while sent:
        task, args = sent.pop(0)
        assert task == PROCESS and (runs == 0 or args == [0, slot])
        tasks.process(*args)
        runs += 1
        assert runs < 10
    assert runs == 4  # 2 + 2 + 1 rows, then a last look that finds nothing
    assert harness.check_received(receiver, secret)["numbers"] == set(range(5))
    assert tasks.slots is not None and tasks.slots.held() == 0


def test_tasks_are_idempotent(service: tuple[Any, Path], receiver: harness.Receiver) -> None:
    """A message that comes twice finds its row fanned out, delivered or not due."""
    from sqlalchemy import select

    from srcore.webhooks.celery import make_celery
    from srcore.webhooks.models import Delivery, DeliveryStatus
    from srcore.webhooks.outbox import insert_event

    app, _config = service
    ((_sid, secret),) = harness.subscribe(app, receiver.url)
    sent: list[tuple[str, int]] = []
    celery_app = make_celery(app)
    tasks = celery_app.webhook_tasks
    tasks.enqueue = lambda task, args: sent.append((task, args[0]))
    st = app.extensions["srcore"]
    with st.db.transaction() as session:
        outbox_id = insert_event(session, harness.EVENT, {"number": 7, "name": "seven"})

    queued = tasks.fan_out(outbox_id)
    assert len(queued) == 1
    assert sent == [("srcore.webhooks.deliver", queued[0])]
    assert tasks.fan_out(outbox_id) == []  # fanned out already: nothing new
    result = tasks.deliver(queued[0])
    assert result is not None and result.delivered
    assert tasks.deliver(queued[0]) is None  # delivered: skipped
    assert len(receiver.snapshot()) == 1
    assert harness.check_received(receiver, secret)["numbers"] == {7}

    # A failed attempt is retried by the sweep when due, not by a repeated message.
    receiver.fail_rate, receiver.max_failures = 1.0, 1
    with st.db.transaction() as session:
        outbox_id = insert_event(session, harness.EVENT, {"number": 8, "name": "eight"})
    (second,) = tasks.fan_out(outbox_id)
    result = tasks.deliver(second)
    assert result is not None and result.status == 500 and result.retry_at is not None
    assert tasks.deliver(second) is None  # not due yet
    with st.db.session() as session:
        delivery = session.scalars(select(Delivery).where(Delivery.id == second)).one()
        assert delivery.status == DeliveryStatus.pending.value
        assert delivery.claimed_until is None
    sent.clear()
    assert tasks.sweep() == (0, 0)  # the retry is not due for seconds
    assert sent == []


def test_the_sweep_keeps_a_subscriptions_first_attempts_in_one_batch(
    service: tuple[Any, Path], receiver: harness.Receiver
) -> None:
    """Deliveries never attempted (their worker died) go out in event order: one message
    carries a subscription's, so no two processes send them side by side."""
    from datetime import timedelta

    from srcore.webhooks.celery import DELIVER_BATCH, CeleryOptions, make_celery
    from srcore.webhooks.fanout import fan_out
    from srcore.webhooks.outbox import insert_event

    app, _config = service
    harness.subscribe(app, receiver.url)
    st = app.extensions["srcore"]
    options = CeleryOptions(batch=4, nudge_slots=0, queue_lease=timedelta(minutes=5))
    tasks = make_celery(app, options=options).webhook_tasks
    sent: list[tuple[str, list[Any]]] = []
    tasks.enqueue = lambda task, args: sent.append((task, list(args)))
    created: list[int] = []
    for number in range(6):
        with st.db.transaction() as session:
            outbox_id = insert_event(session, harness.EVENT, {"number": number, "name": "x"})
        with st.db.session() as session:
            created += fan_out(session, outbox_id, manifest=st.manifest)
    assert tasks.sweep() == (0, 6)
    assert sent == [(DELIVER_BATCH, [created])]
    [(_task, [batch])] = sent
    assert tasks.deliver_many(batch) == 6
    numbers = [json.loads(item.body)["data"]["number"] for item in receiver.snapshot()]
    assert numbers == list(range(6))


def test_the_sweep_queues_due_retries_in_batches(
    service: tuple[Any, Path], receiver: harness.Receiver
) -> None:
    """Due retries travel a batch per message, and a batch sent twice sends nothing twice."""
    from datetime import timedelta

    from sqlalchemy import update

    from srcore.webhooks.celery import DELIVER_BATCH, CeleryOptions, make_celery
    from srcore.webhooks.models import Delivery, DeliveryStatus

    app, _config = service
    ((_sid, secret),) = harness.subscribe(app, receiver.url)
    st = app.extensions["srcore"]
    options = CeleryOptions(batch=4, nudge_slots=0, queue_lease=timedelta(minutes=5))
    tasks = make_celery(app, options=options).webhook_tasks
    sent: list[tuple[str, list[Any]]] = []
    tasks.enqueue = lambda task, args: sent.append((task, list(args)))
    receiver.fail_rate, receiver.max_failures = 1.0, 1  # every first attempt fails
    harness.emit_events(app, 10)
    sent.clear()  # the emits' own nudges: run them by hand
    while tasks.process(0):
        pass
    assert harness.delivery_states(app) == {"pending": 10}
    with st.db.transaction() as session:  # the retries are due now
        session.execute(update(Delivery).values(next_attempt_at=tasks.clock()))

    assert tasks.sweep() == (0, 10)
    assert [task for task, _ in sent] == [DELIVER_BATCH] * 3  # 4 + 4 + 2
    batches = [args[0] for _, args in sent]
    assert sorted(i for batch in batches for i in batch) == sorted(set().union(*batches))
    assert tasks.sweep() == (0, 0)  # leased: not queued again
    for batch in batches:
        assert tasks.deliver_many(batch) == len(batch)
        assert tasks.deliver_many(batch) == 0  # delivered: a second message does nothing
    assert harness.delivery_states(app) == {DeliveryStatus.delivered.value: 10}
    stats = harness.check_received(receiver, secret)
    assert stats["numbers"] == set(range(10)) and stats["unverified"] == 0


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
    with app.app_context(), pytest.raises(RuntimeError):
        emit_then_fail(app, 2)
    assert client.llen(queue) == 1


def test_dead_broker_costs_the_request_little(tmp_path: Path) -> None:
    """With the broker down the commit stands; the nudge fails fast and is left to the sweep."""
    from srcore.webhooks import emit

    port = harness.free_port()  # nothing listens there
    with harness.service_database("sqlite", tmp_path) as url:
        config = harness.write_config(
            tmp_path / "config.ini", database_url=url, broker=f"redis://127.0.0.1:{port}/0"
        )
        app = harness.build_app(config)
        db = app.extensions["srcore"].db
        with app.app_context():
            app.extensions["srcore"].webhook_dispatcher.celery
            started = time.monotonic()
            with db.transaction() as session:
                emit(harness.EVENT, {"number": 1, "name": "one"}, session=session)
            elapsed = time.monotonic() - started
        assert elapsed < 3
        assert harness.outbox_count(app) == (1, 1)
        db.dispose()


def test_the_operator_sets_the_number_of_slots(tmp_path: Path) -> None:
    from srcore.webhooks.celery import CeleryOptions, make_celery

    with harness.service_database("sqlite", tmp_path) as url:
        config = harness.write_config(
            tmp_path / "config.ini", database_url=url, broker="redis://127.0.0.1:1/0"
        )
        text = config.read_text(encoding="utf-8")
        config.write_text(text.replace("[global]\n", "[global]\nwebhook-celery-slots = 3\n"))
        app = harness.build_app(config)
        try:
            slots = make_celery(app).webhook_tasks.slots  # built without connecting
            assert slots is not None and slots.slots == 3
            explicit = make_celery(app, options=CeleryOptions(nudge_slots=0))
            assert explicit.webhook_tasks.slots is None  # a message per commit
            amqp = make_celery(app, broker="amqp://guest@127.0.0.1:1//")
            assert amqp.webhook_tasks.slots is None  # slots live in Redis only
        finally:
            app.extensions["srcore"].db.dispose()


def test_no_service_named_is_a_clear_error() -> None:
    from srcore.webhooks import celery as module

    with pytest.raises(RuntimeError, match="SRCORE_SERVICE"):
        module.default_app(environ={})
    assert module.make_celery  # importing built nothing; no service named: no `app`
    if "SRCORE_SERVICE" not in os.environ:
        assert not hasattr(module, "app")
