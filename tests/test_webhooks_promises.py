"""What the docs promise about webhooks and no other test held to: the documented defaults,
each ``[global] webhook-*`` key reaching the worker, the configured retry schedule, disabling
after ``webhook-disable-after`` and on 410 with the owner mailed over SMTP, the log pruned
after ``webhook-log-retention`` by the drain beat runs, the caps on requests in flight, the
connect timeout, beat's tick, the ping limit, the rotation overlap's bounds and the
``srcore worker`` options that override the config.

Real parts only: the sample service on SQLite and PostgreSQL, receivers and an SMTP sink on
127.0.0.1, the worker's own loop. The worker's clock is a fixed one the test moves, so
"an hour later" takes no time; what is counted is requests, mails and rows.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, cast

import pytest
from sqlalchemy import func, select, update

import srcore.db
from srcore.app import migration_target
from srcore.config import load_config
from srcore.config.declarations import DEFAULT_WEBHOOK_PORTS, GLOBAL_KEYS
from srcore.config.keys import parse_duration
from srcore.db import utcnow
from srcore.migrate import upgrade_all
from srcore.signatures import generate_secret
from srcore.testing import SMTPSink, create_user, serving, write_config
from srcore.webhooks import emit
from srcore.webhooks.models import Attempt, Delivery, OutboxRow, Subscription
from srcore.webhooks.settings import settings_for
from srcore.webhooks.worker import Worker

REPO = Path(__file__).resolve().parents[1]
#: What the README, operators.md and config.example.ini say each key is when not set.
DOCUMENTED_DEFAULTS: dict[str, object] = {
    "webhooks-broker": None,
    "webhook-celery-slots": 8,
    "allow-private-webhook-targets": (),
    "webhook-poll-interval": timedelta(seconds=1),
    "webhook-timeout": timedelta(seconds=15),
    "webhook-connect-timeout": timedelta(seconds=5),
    "webhook-concurrency": 16,
    "webhook-log-retention": timedelta(days=14),
    "webhook-disable-after": timedelta(days=3),
}
#: "0s, 5s, 5m, 30m, 2h, 5h, 10h, 14h, 20h, 24h": ten attempts over about three days.
DOCUMENTED_SCHEDULE = tuple(
    timedelta(seconds=s) for s in (0, 5, 300, 1800, 7200, 18000, 36000, 50400, 72000, 86400)
)
#: The ports config.example.ini and security.md say are refused by default.
INTERNAL_PORTS: tuple[int, ...] = (
    1433,
    1521,
    2049,
    2375,
    2380,
    3306,
    4369,
    5432,
    5672,
    5984,
    6379,
    6443,
)
INTERNAL_PORTS += (8500, 9042, 9200, 9300, 10250, 11211, 15672, 27017, 27019)
WEBHOOK_KEYS = {k.name for k in GLOBAL_KEYS if "webhook" in k.name}


# -- the receivers, the SMTP sink and the configured app -----------------------------------


class Receivers:
    """HTTP receivers on 127.0.0.1 sharing one record: the requests that arrived and how many
    were in flight at once. A request is held until *hold_until* are in flight, or for
    *hold_for* seconds, then answered *status*."""

    def __init__(self, status: int = 204, *, hold_until: int = 0, hold_for: float = 0.0) -> None:
        self.status, self.hold_until, self.hold_for = status, hold_until, hold_for
        self.requests: list[tuple[int, dict[str, str], bytes]] = []
        self.in_flight = self.most = 0
        self.changed = threading.Condition()
        self._servers: list[Any] = []

    def start(self) -> str:
        """One more receiver; its URL."""
        record = self

        class Hook(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                port = int(cast(Any, self.server).server_address[1])
                with record.changed:
                    headers = {k.lower(): v for k, v in self.headers.items()}
                    record.requests.append((port, headers, body))
                    record.in_flight += 1
                    record.most = max(record.most, record.in_flight)
                    record.changed.notify_all()
                    record.changed.wait_for(
                        lambda: record.in_flight >= record.hold_until, timeout=record.hold_for
                    )
                    record.in_flight -= 1
                self.send_response(record.status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
        server.daemon_threads = True
        context = serving(server)
        context.__enter__()
        self._servers.append(context)
        return f"http://127.0.0.1:{server.server_address[1]}/hook"

    def close(self) -> None:
        for context in self._servers:
            context.__exit__(None, None, None)


@pytest.fixture
def receivers() -> Iterator[Callable[..., Receivers]]:
    made: list[Receivers] = []

    def make(*args: Any, **kw: Any) -> Receivers:
        made.append(Receivers(*args, **kw))
        return made[-1]

    yield make
    for r in made:
        r.close()


@pytest.fixture
def configure(
    app: Any, srcore_database: Any, tmp_path: Path, clean_webhooks: None
) -> Iterator[Callable[..., Any]]:
    """Builds the sample service on the test's database with these ``[global]`` keys (the
    ``app`` fixture is asked for so that its clean-up empties the tables after)."""
    import sample_service

    built: list[Any] = []

    def build(**keys: object) -> Any:
        text = srcore_database.config_path.read_text(encoding="utf-8")
        lines = "".join(f"{name.replace('_', '-')} = {value}\n" for name, value in keys.items())
        path = tmp_path / f"config-{len(built)}.ini"
        path.write_text(text.replace("[global]\n", "[global]\n" + lines, 1), encoding="utf-8")
        built.append(sample_service.create_app(config=path))
        return built[-1]

    yield build
    for made in built:
        made.extensions["srcore"].db.dispose()


class Clock:
    def __init__(self) -> None:
        self.now = utcnow()

    def __call__(self) -> datetime:
        return self.now


def subscribe(app: Any, url: str, owner: Any = None) -> int:
    with app.extensions["srcore"].db.transaction() as s:
        sub = Subscription(
            url=url,
            owner_id=owner.id if owner is not None else None,
            events="thing:created",
            scopes="sample/things:RO",
            secret=generate_secret(),
        )
        s.add(sub)
        s.flush()
        return int(sub.id)


def emit_things(app: Any, count: int) -> None:
    with app.app_context():
        for n in range(count):
            emit("thing:created", {"id": n, "name": f"thing {n}"})
        srcore.db.session.commit()


def drain(app: Any, clock: Clock | None = None) -> None:
    """One worker of *app* (its config's settings and policy) until nothing is due."""
    worker = Worker(app, clock=clock or utcnow, poll_interval=0.02)
    try:
        worker.drain()
    finally:
        worker.close()


def subscription(app: Any, sid: int) -> Subscription:
    with app.extensions["srcore"].db.session() as s:
        sub: Subscription | None = s.get(Subscription, sid)
        assert sub is not None
        s.expunge(sub)
        return sub


def statuses(app: Any, sid: int) -> list[str]:
    with app.extensions["srcore"].db.session() as s:
        query = select(Delivery.status).where(Delivery.subscription_id == sid)
        return list(s.scalars(query.order_by(Delivery.id)))


# -- the documented defaults ---------------------------------------------------------------


def test_the_defaults_are_what_the_docs_say(tmp_path: Path) -> None:
    """README, operators.md and config.example.ini state each default; a config that sets no
    webhook key gets exactly those, and the example file shows each one's real default."""
    path = write_config(tmp_path / "c.ini", service_id="todo", database_url="sqlite://")
    defaults = load_config(path, environ={}).global_
    for key, value in DOCUMENTED_DEFAULTS.items():
        assert defaults[key] == value, key
    steps = cast(Iterable[object], defaults["webhook-retry-schedule"])
    schedule = tuple(parse_duration(str(d)) for d in steps)
    assert schedule == DOCUMENTED_SCHEDULE
    assert timedelta(days=3) <= sum(schedule, timedelta()) < timedelta(days=3, hours=6)
    assert tuple(cast(Iterable[str], defaults["webhook-allowed-ports"])) == DEFAULT_WEBHOOK_PORTS

    environ = {"SRCORE__META__SECRET_KEY": "a" * 40, "SRCORE__TODO__SECRET_KEY": "b" * 40}
    example = load_config(REPO / "config.example.ini", environ=environ).global_
    for key in WEBHOOK_KEYS:
        assert example[key] == defaults[key], f"config.example.ini shows another {key}"


def test_the_default_policy_refuses_the_documented_ports_and_private_targets(app: Any) -> None:
    from srcore.outbound import policy_for

    policy = policy_for(app)  # the sample service's config sets no webhook key
    for port in (80, 443, 1024, 8080, 65535):
        assert policy.url_refusal(f"http://hooks.example.org:{port}/") is None, port
    for port in (22, 25, 1023, *INTERNAL_PORTS):
        assert policy.url_refusal(f"http://hooks.example.org:{port}/") is not None, port
    for address in ("127.0.0.1", "10.1.2.3", "192.168.0.1", "169.254.169.254", "::1"):
        assert policy.refusal(address) is not None, address


def test_the_default_settings_of_a_worker(app: Any) -> None:
    settings = settings_for(app)
    assert (settings.timeout, settings.connect_timeout) == (
        timedelta(seconds=15),
        timedelta(seconds=5),
    )
    assert (settings.concurrency, settings.per_host) == (16, 4)  # "at most 4 to one receiver"
    assert settings.schedule == DOCUMENTED_SCHEDULE
    assert settings.poll_interval == timedelta(seconds=1)


# -- every key reaches the worker ----------------------------------------------------------


def test_each_configured_key_reaches_the_worker(configure: Callable[..., Any]) -> None:
    app = configure(
        webhook_timeout="7s",
        webhook_connect_timeout="2s",
        webhook_log_retention="2d",
        webhook_disable_after="1h",
        webhook_concurrency=3,
        webhook_retry_schedule="0s, 1m, 2h",
        webhook_poll_interval="250ms",
        allow_private_webhook_targets="10.1.0.0/16",
        webhook_allowed_ports="443, 8000-8999, !8443",
    )
    worker = Worker(app)
    try:
        s = worker.settings
        assert (s.timeout, s.connect_timeout) == (timedelta(seconds=7), timedelta(seconds=2))
        assert (s.log_retention, s.disable_after) == (timedelta(days=2), timedelta(hours=1))
        assert s.concurrency == 3
        assert s.schedule == (timedelta(0), timedelta(minutes=1), timedelta(hours=2))
        assert worker.poll_interval == 0.25
        assert getattr(worker.http, "connect_timeout", None) == 2.0
        policy = worker.policy
        assert policy.refusal("10.1.2.3") is None and policy.refusal("10.2.0.1") is not None
        assert policy.url_refusal("https://hooks.example.org:8080/") is None
        assert policy.url_refusal("https://hooks.example.org/") is None
        for refused in ("http://hooks.example.org/", "https://hooks.example.org:8443/"):
            assert policy.url_refusal(refused) is not None, refused
    finally:
        worker.close()


def test_the_configured_retry_schedule_is_followed_then_given_up(
    configure: Callable[..., Any], receivers: Callable[..., Receivers]
) -> None:
    """``webhook-retry-schedule = 0s, 2m``: two attempts, the second about 2 minutes after the
    first ended (spread by 10% at most), then given up."""
    app = configure(webhook_retry_schedule="0s, 2m", allow_private_webhook_targets="127.0.0.0/8")
    down = receivers(503)
    sid = subscribe(app, down.start())
    emit_things(app, 1)
    clock = Clock()
    start = clock.now
    drain(app, clock)
    assert len(down.requests) == 1 and statuses(app, sid) == ["pending"]
    with app.extensions["srcore"].db.session() as s:
        retry_at = s.scalar(select(Delivery.next_attempt_at).where(Delivery.subscription_id == sid))
    assert retry_at is not None
    assert timedelta(seconds=108) <= retry_at - start <= timedelta(seconds=132)
    clock.now = start + timedelta(seconds=100)  # not due yet
    drain(app, clock)
    assert len(down.requests) == 1
    clock.now = start + timedelta(minutes=3)
    drain(app, clock)
    assert len(down.requests) == 2 and statuses(app, sid) == ["failed"]
    clock.now = start + timedelta(days=4)
    drain(app, clock)
    assert len(down.requests) == 2  # given up for good


# -- disabling, and the owner told by mail -------------------------------------------------


def mailing(configure: Callable[..., Any], port: int, **keys: str) -> Any:
    """An app delivering to 127.0.0.1 receivers and mailing through the sink on *port*."""
    return configure(
        allow_private_webhook_targets="127.0.0.0/8",
        smtp_host="127.0.0.1",
        smtp_port=port,
        smtp_tls="none",
        **keys,
    )


def test_failing_for_the_configured_disable_after_disables_and_mails_the_owner(
    configure: Callable[..., Any], receivers: Callable[..., Receivers], smtp_sink: SMTPSink
) -> None:
    sink, port = smtp_sink, smtp_sink.port
    app = mailing(configure, port, webhook_disable_after="1h")
    owner = create_user(app, "dora")
    down = receivers(500)
    url = down.start()
    sid = subscribe(app, url, owner)
    emit_things(app, 1)
    clock = Clock()
    start = clock.now
    drain(app, clock)  # fails: failing since now
    clock.now = start + timedelta(minutes=59)
    drain(app, clock)  # fails again, not an hour yet
    assert len(down.requests) == 2
    assert subscription(app, sid).enabled and sink.messages == []

    clock.now = start + timedelta(hours=1, minutes=10)  # the 5 min retry is due
    drain(app, clock)
    assert len(down.requests) == 3
    sub = subscription(app, sid)
    assert not sub.enabled and "failed since" in (sub.disabled_reason or "")
    assert statuses(app, sid) == ["failed"]
    [message] = sink.messages
    to = message.recipients
    assert to == ["dora@example.org"]
    assert url in message["Subject"] and url in message.get_content()

    emit_things(app, 1)  # a disabled subscription gets nothing more
    clock.now = start + timedelta(days=1)
    drain(app, clock)
    assert len(down.requests) == 3 and len(sink.messages) == 1


def test_410_disables_at_once_and_mails_the_owner(
    configure: Callable[..., Any], receivers: Callable[..., Receivers], smtp_sink: SMTPSink
) -> None:
    sink, port = smtp_sink, smtp_sink.port
    app = mailing(configure, port)
    owner = create_user(app, "erin")
    gone = receivers(410)
    url = gone.start()
    sid = subscribe(app, url, owner)
    emit_things(app, 3)  # in one lane: after the 410 it sends no more
    drain(app)
    assert len(gone.requests) == 1
    sub = subscription(app, sid)
    assert not sub.enabled and "410" in (sub.disabled_reason or "")
    [message] = sink.messages
    to = message.recipients
    assert to == ["erin@example.org"] and "410" in message.get_content()
    emit_things(app, 2)
    drain(app)
    assert len(gone.requests) == 1


# -- the delivery log is pruned ------------------------------------------------------------


def test_the_drain_beat_runs_prunes_the_log_after_the_configured_retention(
    configure: Callable[..., Any],
) -> None:
    """operators.md: beat's ``drain`` prunes the delivery log after ``webhook-log-retention``."""
    from srcore.webhooks.celery import DRAIN, make_celery

    app = configure(webhook_log_retention="2d")
    now = utcnow()
    sid = subscribe(app, "https://hooks.example.org/hook")
    with app.extensions["srcore"].db.transaction() as s:
        row = OutboxRow(event="thing:created", payload="{}", created=now, fanned_out_at=now)
        delivery = Delivery(subscription_id=sid, outbox=row, next_attempt_at=now)
        delivery.status = "delivered"
        s.add(delivery)
        s.flush()
        for age in (timedelta(days=3), timedelta(days=1)):
            s.add(
                Attempt(
                    delivery_id=delivery.id,
                    created=now - age,
                    request_headers="{}",
                    request_body="{}",
                    response_status=204,
                    response_headers="{}",
                    response_body="",
                    duration_ms=1,
                )
            )
    celery_app = make_celery(app, broker="memory://")
    celery_app.tasks[DRAIN]()  # what a beat tick runs
    with app.extensions["srcore"].db.session() as s:
        kept = list(s.scalars(select(Attempt.created)))
    assert len(kept) == 1 and now - kept[0].replace(tzinfo=now.tzinfo) < timedelta(days=2)


def test_beat_ticks_every_poll_interval_but_at_most_once_a_second(
    configure: Callable[..., Any],
) -> None:
    from srcore.webhooks.celery import DRAIN, make_celery

    for interval, seconds in (("200ms", 1.0), ("3s", 3.0)):
        app = configure(webhook_poll_interval=interval)
        tick = make_celery(app, broker="memory://").conf.beat_schedule["srcore-webhooks-tick"]
        assert tick["task"] == DRAIN and tick["schedule"] == seconds, interval
        assert tick["options"]["queue"] == "srcore-webhooks.sample"  # each service its queue


# -- requests in flight --------------------------------------------------------------------


def test_at_most_four_requests_go_to_one_receiver_at_once(
    configure: Callable[..., Any], receivers: Callable[..., Receivers]
) -> None:
    app = configure(allow_private_webhook_targets="127.0.0.0/8")
    slow = receivers(hold_until=5, hold_for=1.5)  # never reached when the cap holds
    url = slow.start()
    for _ in range(6):
        subscribe(app, url)
    emit_things(app, 1)
    drain(app)
    assert len(slow.requests) == 6
    assert slow.most == 4


def test_webhook_concurrency_caps_the_requests_of_a_worker(
    configure: Callable[..., Any], receivers: Callable[..., Receivers]
) -> None:
    app = configure(allow_private_webhook_targets="127.0.0.0/8", webhook_concurrency=2)
    slow = receivers(hold_until=3, hold_for=1.5)  # three receivers, one record
    for _ in range(3):
        subscribe(app, slow.start())
    emit_things(app, 1)
    drain(app)
    assert len({port for port, _, _ in slow.requests}) == 3
    assert slow.most == 2


def test_the_connect_timeout_bounds_the_connect_within_the_deadline(
    configure: Callable[..., Any],
) -> None:
    """A receiver that never accepts (its listen queue full) is given up on after
    ``webhook-connect-timeout`` (1 s), not ``webhook-timeout`` (20 s); then retried."""
    app = configure(
        allow_private_webhook_targets="127.0.0.0/8",
        webhook_connect_timeout="1s",
        webhook_timeout="20s",
    )
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    filler = socket.create_connection(("127.0.0.1", port), timeout=2)  # fills the queue
    try:
        sid = subscribe(app, f"http://127.0.0.1:{port}/hook")
        emit_things(app, 1)
        drain(app)
    finally:
        filler.close()
        listener.close()
    with app.extensions["srcore"].db.session() as s:
        [error] = s.scalars(select(Attempt.error)).all()
    assert error == "connect timeout"  # the whole deadline's end says "timeout: no complete ..."
    assert statuses(app, sid) == ["pending"]


# -- the API's limits ----------------------------------------------------------------------


@pytest.mark.usefixtures("clean_webhooks")
def test_one_ping_per_30_seconds(app: Any, client: Any, make_token: Any, user: Any) -> None:
    headers = {"Authorization": f"Bearer {make_token('sample/things:RW', user=user)}"}
    made = client.post(
        "/api/webhooks",
        json={"url": "https://hooks.example.org/hook", "events": ["thing:created"]},
        headers=headers,
    )
    sid = made.get_json()["id"]

    def ping_sent_ago(seconds: int) -> Any:
        with app.extensions["srcore"].db.transaction() as s:
            s.execute(
                update(Delivery)
                .where(Delivery.subscription_id == sid)
                .values(created=utcnow() - timedelta(seconds=seconds))
            )
        return client.post(f"/api/webhooks/{sid}/ping", headers=headers)

    assert client.post(f"/api/webhooks/{sid}/ping", headers=headers).status_code == 202
    again = ping_sent_ago(28)
    assert again.status_code == 429
    assert 1 <= int(again.headers["Retry-After"]) <= 3
    assert ping_sent_ago(31).status_code == 202
    with app.extensions["srcore"].db.session() as s:
        assert s.scalar(select(func.count()).select_from(Delivery)) == 2


@pytest.mark.usefixtures("clean_webhooks")
def test_a_rotation_overlap_is_at_most_seven_days(client: Any, make_token: Any, user: Any) -> None:
    headers = {"Authorization": f"Bearer {make_token('sample/things:RW', user=user)}"}
    made = client.post(
        "/api/webhooks",
        json={"url": "https://hooks.example.org/hook", "events": ["thing:created"]},
        headers=headers,
    ).get_json()
    week = 7 * 24 * 3600
    rotated = client.post(
        f"/api/webhooks/{made['id']}/rotate", json={"overlap": week}, headers=headers
    )
    assert rotated.status_code == 200, rotated.get_data(as_text=True)
    expires = datetime.fromisoformat(rotated.get_json()["previous_secret_expires"])
    left = expires - utcnow()
    assert timedelta(days=7) - timedelta(minutes=1) < left <= timedelta(days=7)
    longer = client.post(
        f"/api/webhooks/{made['id']}/rotate", json={"overlap": week + 1}, headers=headers
    )
    assert longer.status_code == 400
    assert [e["field"] for e in longer.get_json()["errors"]] == ["overlap"]


# -- srcore worker's options ---------------------------------------------------------------


def test_srcore_worker_options_override_the_config(tmp_path: Path) -> None:
    """operators.md: ``--poll-interval`` overrides ``webhook-poll-interval``; ``--concurrency``
    overrides ``webhook-concurrency``; the ready line says what the worker will do."""
    config = write_config(
        tmp_path / "todo.ini", service_id="todo", database_url=f"sqlite:///{tmp_path / 't.db'}"
    )
    text = config.read_text(encoding="utf-8")
    keys = "webhook-poll-interval = 250ms\nwebhook-concurrency = 5\n"
    keys += "allow-private-webhook-targets = 10.1.0.0/16\n"
    config.write_text(text.replace("[global]\n", "[global]\n" + keys, 1), encoding="utf-8")
    upgrade_all(migration_target("todo", config))

    def ready(*options: str) -> str:
        command = ["srcore", "--config", str(config), "worker", "todo", "--once", *options]
        run = [sys.executable, "-c", "from srcore.cli import main; main()", *command[1:]]
        done = subprocess.run(run, capture_output=True, text=True, timeout=120, check=False)
        assert done.returncode == 0, done.stdout + done.stderr
        [line] = [x for x in done.stdout.splitlines() if x.startswith("srcore worker: todo ready")]
        return line

    line = ready()
    assert "5 requests in flight at most, polling every 0.25 s" in line
    assert "private targets allowed: 10.1.0.0/16" in line
    line = ready("--concurrency", "3", "--poll-interval", "0.5")
    assert "3 requests in flight at most, polling every 0.5 s" in line
