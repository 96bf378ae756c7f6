"""After months of ordinary traffic, what grows without bound? An operator's question, asked
from outside: meta and todo under gunicorn with their webhook workers, Redis configured
(cache, rate limits, revocation fan-out) and metrics served, on SQLite and on PostgreSQL.

A bounded mixed workload runs three times through plain ``requests``: registrations,
logins and logouts, failed logins, password resets asked for and never used, personal
access tokens made and revoked, an application's authorization, tokens, refreshes and
revocation, todo's API and pages (trackers, tickets, comments, once-only forms sent
twice), webhook subscriptions with deliveries to a receiver on 127.0.0.1 and requests
refused by the write rate limit. After each round every stored time is moved 40 days
back (the month passes) and each service's worker makes one pass (``srcore worker
SERVICE --once``), which runs the pruning the guide promises (docs/operators.md, "What is
pruned, and when"); after the last, a quiet year passes the same way. Then, round after
round: every table of each database, every Redis key of the network, the SQLite and
metrics files, and the open files and threads of each gunicorn worker and webhook worker.
"""

from __future__ import annotations

import contextlib
import html
import os
import re
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from itertools import count
from pathlib import Path
from typing import Any

import pytest
import requests
import sqlalchemy as sa

from srcore import testdb
from srcore.testing import (
    SMTPSink,
    free_port,
    require_or_skip,
    run_service,
    run_worker,
    write_network_config,
)
from tests.conftest import require_postgres
from tests.test_security_e2e import (
    Network,
    Receiver,
    _code_flow,
    _register_client,
    bearer,
    browser,
    csrf,
    mail_sink,
    open_page,
    personal_token,
    register,
)

__all__ = ["mail_sink"]  # a fixture used by this module

pytestmark = [pytest.mark.slow]

#: A Redis database of this module's own on the operator's Redis, per backend.
REDIS_URLS = {"sqlite": "redis://127.0.0.1:6379/9", "postgresql": "redis://127.0.0.1:6379/10"}
#: How far each round moves the stored times back: past every lifetime and the delivery
#: log's retention (14 days), well within the audit log's (365 days).
MONTH = timedelta(days=40)
#: Then a quiet year: past the audit log's retention too.
YEAR = timedelta(days=365)
ROUNDS = 3
USERS_PER_ROUND = 3
#: todo's write rate limit, per user: the workload's burst of comments passes it.
WRITES = 20
#: A bound against hanging (not a measure).
WITHIN = 60.0

#: Rows that outlive their use: none may be left once the month has passed and the
#: workers have pruned.
EXPIRING = {
    "meta": (
        "email_token",
        "oauth_refresh_token",
        "personal_access_token",
        "passkey_challenge",
        "web_session",
        "srcore_once_token",
        "srcore_ended_session",
        "srcore_webhook_attempt",
        "srcore_webhook_delivery",
        "srcore_webhook_outbox",
    ),
    "todo": (
        "srcore_once_token",
        "srcore_ended_session",
        "srcore_webhook_attempt",
        "srcore_webhook_delivery",
        "srcore_webhook_outbox",
    ),
}
#: What people made and keep (accounts, their trackers, applications, subscriptions), what
#: the guide says it keeps longer than these months (the audit log, a year), and what is
#: kept per account: these grow with the workload, and nothing else may.
KEPT = {
    "meta": (
        "user",
        "user_id_allocation",
        "audit_entry",
        "oauth_client",
        "oauth_consent",
        # The cut-offs of each account (its last logout) and the newest event: checked below.
        "revocation_event",
        # One per account and application at most (checked below), and their codes.
        "oauth_grant",
        "oauth_authorization_code",
    ),
    "todo": ("user", "tracker", "ticket", "comment", "srcore_webhook_subscription"),
}
#: Open files and threads a gunicorn worker may gain between rounds two and three: its
#: pool may open a connection more for a request that happened to need two.
FD_SLACK, THREAD_SLACK = 4, 2
#: SQLite checkpoints its write-ahead log every 1000 pages (4 MiB): it never grows past a
#: few checkpoints' worth.
WAL_BOUND = 16 * 2**20


@dataclass
class Growth:
    """The running network and what each round left behind."""

    net: Network
    backend: str
    databases: dict[str, str]
    ports: dict[str, int]
    redis_url: str
    receiver: Receiver
    rounds: list[dict[str, Any]] = field(default_factory=list)
    #: What is left a quiet year after the last round.
    later: dict[str, Any] = field(default_factory=dict)


_NAMES = count()


@pytest.fixture(params=["sqlite", "postgresql"])
def growth(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, mail_sink: SMTPSink
) -> Iterator[Growth]:
    from srcore.app import migration_target
    from srcore.migrate import upgrade_all

    require_or_skip(_redis_up(REDIS_URLS[request.param]), "Redis at 127.0.0.1:6379")
    _empty_redis(REDIS_URLS[request.param])  # counts of an earlier run's accounts 1, 2, ...
    backend = request.param
    tmp = tmp_path_factory.mktemp(f"growth-{backend}")
    ports = {"meta": free_port(), "todo": free_port()}
    config = write_network_config(
        tmp / "config.ini",
        ports,
        global_keys={
            **mail_sink.config_keys(),
            "revocation-pull-interval": "1s",
            "allow-private-webhook-targets": "127.0.0.0/8",
            "redis-url": REDIS_URLS[backend],
            "write-rate-limit": f"{WRITES}/minute",
        },
    )
    # Each service counts its requests (Prometheus), in files its gunicorn master makes.
    text = config.read_text(encoding="utf-8")
    for name in ports:
        text = text.replace(f"[{name}]\n", f"[{name}]\nmetrics-path = /metrics\n")
    config.write_text(text, encoding="utf-8")
    databases = {name: f"sqlite:///{tmp / (name + '.db')}" for name in ports}
    made: list[str] = []
    receiver = Receiver()
    try:
        if backend == "postgresql":
            require_postgres()
            text = config.read_text(encoding="utf-8")
            for name in ports:
                url = testdb.create_test_database(prefix=f"srcore_growth_{name}")
                made.append(url)
                text = text.replace(databases[name], url)
                databases[name] = url
            config.write_text(text, encoding="utf-8")
        for service in ports:
            upgrade_all(migration_target(service, config))
        with contextlib.ExitStack() as stack:
            urls = {}
            for service, port in ports.items():
                urls[service] = stack.enter_context(
                    run_service(service, config, port=port, timeout=WITHIN)
                )
                stack.enter_context(run_worker(service, config, timeout=WITHIN))
            net = Network(config, tmp, urls["meta"], urls["todo"], "", mail_sink, {})
            grown = Growth(net, backend, databases, ports, REDIS_URLS[backend], receiver)
            for number in range(ROUNDS):
                _workload(grown)
                _a_month_passes(grown)
                grown.rounds.append(_survey(grown, number))
            _a_month_passes(grown, YEAR)  # no traffic meanwhile
            grown.later = _survey(grown, ROUNDS)
            yield grown
    finally:
        receiver.close()
        for url in made:
            testdb.drop_test_database(url)


def _empty_redis(url: str) -> None:
    import redis

    client = redis.Redis.from_url(url)
    try:
        client.flushdb()
    finally:
        client.close()


def _redis_up(url: str) -> bool:
    import redis

    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=1).ping())
    except redis.RedisError:
        return False


# -- the workload --------------------------------------------------------------------------


def _workload(g: Growth) -> None:
    net = g.net
    events = ["tracker:created", "ticket:created", "comment:created"]
    for _ in range(USERS_PER_ROUND):
        n = next(_NAMES)
        name = f"grow{n}"
        b = register(net, name)
        for _attempt in range(2):  # failed logins
            stranger = browser()
            page = stranger.get(f"{net.meta}/login", timeout=10)
            form = {"csrf_token": csrf(page), "login": name, "password": "not the password"}
            assert stranger.post(f"{net.meta}/login", data=form, timeout=10).status_code < 500
        stranger = browser()  # a reset link mailed and never used
        page = stranger.get(f"{net.meta}/forgot", timeout=10)
        form = {"csrf_token": csrf(page), "email": f"{name}@example.org"}
        assert stranger.post(f"{net.meta}/forgot", data=form, timeout=10).status_code == 200
        net.sink.wait_for_link(f"{name}@example.org", "/reset/")

        headers = bearer(personal_token(net, b, ["todo/trackers:RW", "todo/tickets:RW"], "30"))
        todo = net.todo + "/api"
        made = requests.post(
            f"{net.todo}/api/webhooks",
            headers=headers,
            json={"url": g.receiver.url, "events": events},
            timeout=10,
        )
        assert made.status_code == 201, made.text
        made = requests.post(
            f"{todo}/trackers", headers=headers, json={"name": f"t{n}"}, timeout=10
        )
        assert made.status_code == 201, made.text
        ticket = requests.post(
            f"{todo}/trackers/t{n}/tickets",
            headers=headers,
            json={"title": "grows?", "description": "a ticket"},
            timeout=10,
        )
        assert ticket.status_code == 201, ticket.text
        comments = f"{todo}/trackers/t{n}/tickets/{ticket.json()['number']}/comments"
        # todo's pages, logged in through meta; the burst of writes comes last.
        page = open_page(net, b, net.todo, "/create")
        form = {"csrf_token": csrf(page), "name": f"w{n}", "visibility": "public"}
        assert b.post(f"{net.todo}/create", data=form, timeout=10).status_code == 200
        # Once-only forms (a new ticket, a comment), each sent twice as a double click does.
        tracker_url = f"{net.todo}/~{name}/w{n}"
        page = b.get(f"{tracker_url}/new", timeout=10)
        tracker_path = f"/~{name}/w{n}"
        form = {**_hidden(page.text, f"{tracker_path}/new"), "title": "by", "description": "hand"}
        for _twice in range(2):
            made = b.post(f"{tracker_url}/new", data=form, timeout=10)
            assert made.status_code == 200 and made.url == f"{tracker_url}/1", made.url
        form = {**_hidden(made.text, f"{tracker_path}/1/comment"), "text": "once"}
        for _twice in range(2):
            assert b.post(f"{tracker_url}/1/comment", data=form, timeout=10).status_code == 200

        statuses = [
            requests.post(comments, headers=headers, json={"text": "hi"}, timeout=10).status_code
            for _comment in range(WRITES + 5)
        ]
        assert 429 in statuses and 201 in statuses, statuses
        assert requests.get(f"{todo}/trackers", headers=headers, timeout=10).status_code == 200

        client = _register_client(net, b, f"app{n}")
        tokens = _code_flow(net, b, client, "todo/trackers:RO")
        for _refresh in range(2):
            refreshed = requests.post(
                f"{net.meta}/oauth/token",
                data={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]},
                auth=client,
                timeout=10,
            )
            assert refreshed.status_code == 200, refreshed.text
            tokens = refreshed.json()
        revoked = requests.post(
            f"{net.meta}/oauth/revoke",
            data={"token": tokens["refresh_token"]},
            auth=client,
            timeout=10,
        )
        assert revoked.status_code == 200, revoked.text

        security = b.get(f"{net.meta}/security", timeout=10)
        for token_id in re.findall(r"/security/tokens/(\d+)/revoke", security.text)[:1]:
            b.post(
                f"{net.meta}/security/tokens/{token_id}/revoke",
                data={"csrf_token": csrf(security)},
                timeout=10,
            )
        front = b.get(f"{net.meta}/profile", timeout=10)
        b.post(f"{net.meta}/logout", data={"csrf_token": csrf(front)}, timeout=10)


def _hidden(page: str, action: str) -> dict[str, str]:
    """The hidden fields (CSRF and once-only tokens) of the page's form sent to *action*."""
    for form in re.findall(r"<form\b.*?</form>", page, re.S):
        if f'action="{action}"' in form:
            fields = re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', form)
            return {name: html.unescape(value) for name, value in fields}
    raise AssertionError(f"no form to {action}: {page[:2000]}")


# -- a month passes ------------------------------------------------------------------------


def _a_month_passes(g: Growth, by: timedelta = MONTH) -> None:
    """Wait for the workers to deliver what is due, move every stored time a month (or
    *by*) back, then let each service's worker make one pass, as it does every hour."""
    deadline = time.monotonic() + WITHIN
    for url in g.databases.values():
        while _scalar(url, _WAITING):
            assert time.monotonic() < deadline, "events not fanned out or deliveries pending"
            time.sleep(0.2)
        _move_back(url, by)
    once = ("worker", "--once")
    for service in g.ports:
        done = subprocess.run(
            [sys.executable, "-m", "srcore", "--config", str(g.net.config), *once, service],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]


#: Events not fanned out yet, and deliveries still due.
_WAITING = (
    "SELECT (SELECT count(*) FROM srcore_webhook_outbox WHERE fanned_out_at IS NULL)"
    " + (SELECT count(*) FROM srcore_webhook_delivery WHERE status = 'pending')"
)


def _engine(url: str) -> sa.Engine:
    """An engine that waits for the services' writes (SQLite's default is 5 s)."""
    wait = {"timeout": WITHIN} if url.startswith("sqlite") else {}
    return sa.create_engine(url, poolclass=sa.NullPool, connect_args=wait)


def _scalar(url: str, query: str) -> Any:
    engine = _engine(url)
    try:
        with engine.connect() as connection:
            return connection.execute(sa.text(query)).scalar_one()
    finally:
        engine.dispose()


#: Times stored as whole epoch seconds (meta's clock), moved back with the others.
EPOCHS = {"revocation_event": ("not_before", "expires_at")}


def _move_back(url: str, by: timedelta) -> None:
    """Every date and time column of every row, and every time in epoch seconds, *by*
    earlier."""
    engine = _engine(url)
    tables = sa.MetaData()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", sa.exc.SAWarning)  # expression indexes
            tables.reflect(engine)
        with engine.begin() as connection:
            # A write first: SQLite takes its lock now, waiting for the services' writes
            # (a read first could not become a write once another one committed).
            lineage = tables.tables["alembic_version_srcore"]
            connection.execute(lineage.update().values(version_num=lineage.c.version_num))
            seconds = int(by.total_seconds())
            for name, columns in EPOCHS.items():
                if name in tables.tables:
                    table = tables.tables[name]
                    shifted = {c: table.c[c] - seconds for c in columns}
                    connection.execute(table.update().values(shifted))
            for table in tables.sorted_tables:
                times = [c for c in table.c if isinstance(c.type, sa.DateTime)]
                keys = list(table.primary_key.columns)
                if not times or not keys:
                    continue
                for row in connection.execute(sa.select(*keys, *times)).mappings():
                    values = {c.name: row[c.name] - by for c in times if row[c.name] is not None}
                    if values:
                        where = [k == row[k.name] for k in keys]
                        connection.execute(table.update().where(*where).values(values))
    finally:
        engine.dispose()


# -- what is left --------------------------------------------------------------------------


def _survey(g: Growth, number: int) -> dict[str, Any]:
    import redis

    rows: dict[str, dict[str, int]] = {}
    for service, url in g.databases.items():
        engine = _engine(url)
        try:
            names = sa.inspect(engine).get_table_names()
            with engine.connect() as connection:
                rows[service] = {
                    name: connection.execute(sa.text(f'SELECT count(*) FROM "{name}"')).scalar_one()
                    for name in names
                }
                if service == "meta":
                    for key, query in _META_BOUNDS.items():
                        rows[service][key] = connection.execute(sa.text(query)).scalar_one()
        finally:
            engine.dispose()
    client = redis.Redis.from_url(g.redis_url)
    try:
        keys = list(client.scan_iter(count=1000))
        forever = sorted(k.decode() for k in keys if client.ttl(k) == -1)
    finally:
        client.close()
    workers = {
        (service, pid): _open_files_and_threads(pid)
        for service, port in g.ports.items()
        for pid in _gunicorn_workers(port)
    }
    workers.update(
        ((f"{service} worker", pid), _open_files_and_threads(pid))
        for service in g.ports
        for pid in _webhook_workers(g.net.config, service)
    )
    files = {p.name: p.stat().st_size for p in g.net.dir.iterdir() if p.is_file()}
    for service, port in g.ports.items():
        assert requests.get(f"http://127.0.0.1:{port}/metrics", timeout=10).status_code == 200
        for metrics in {_metrics_directory(pid) for pid in _gunicorn_workers(port)}:
            files.update(
                (f"{service} metrics/{p.name}", p.stat().st_size) for p in metrics.iterdir()
            )
    return {"round": number, "rows": rows, "forever": forever, "workers": workers, "files": files}


def _metrics_directory(pid: int) -> Path:
    """The directory of the metrics files a gunicorn worker has mapped (its master set
    ``PROMETHEUS_MULTIPROC_DIR`` after it started, so its environment does not say)."""
    for line in Path(f"/proc/{pid}/maps").read_text().splitlines():
        path = Path(line.split(maxsplit=5)[-1]) if line.count(" ") >= 5 else None
        if path is not None and path.parent.name.startswith("srcore-metrics-"):
            return path.parent
    raise AssertionError(f"gunicorn worker {pid} keeps no metrics file")


#: What meta may keep per account and application, and per account: its newest grant per
#: application; the cut-offs of its last logout (one per kind), and its suspensions.
_META_BOUNDS = {
    "grant pairs": "SELECT count(*) FROM (SELECT DISTINCT user_id, client_id FROM oauth_grant) p",
    "cut-off pairs": "SELECT count(*) FROM (SELECT DISTINCT kind, subject FROM revocation_event"
    " WHERE kind IN ('client', 'user', 'session')) p",
    "standing events": "SELECT count(*) FROM revocation_event"
    " WHERE kind IN ('suspend', 'unsuspend', 'delete')",
}


def _gunicorn_workers(port: int) -> list[int]:
    """The gunicorn worker processes (not the master) serving 127.0.0.1:*port*."""
    bind = f"127.0.0.1:{port}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
            parent = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if bind in argv and any(b"gunicorn" in part for part in argv):
            found.append((int(entry), parent))
    pids = {pid for pid, _ in found}
    return sorted(pid for pid, parent in found if parent in pids)


def _webhook_workers(config: Path, service: str) -> list[int]:
    """The ``srcore worker SERVICE`` processes that run on *config* (not a one-pass one)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
            environ = Path(f"/proc/{entry}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"SRCORE_CONFIG={config}".encode() not in environ or b"--once" in argv:
            continue
        at = argv.index(b"worker") if b"worker" in argv else -1
        if 0 < at < len(argv) - 1 and argv[at + 1] == service.encode():
            found.append(int(entry))
    return found


def _open_files_and_threads(pid: int) -> tuple[int, int]:
    return len(os.listdir(f"/proc/{pid}/fd")), len(os.listdir(f"/proc/{pid}/task"))


# -- the checks ----------------------------------------------------------------------------


def test_months_of_traffic_leave_nothing_growing(growth: Growth) -> None:
    """One network per backend (its three rounds are the fixture's), every check on it:
    rows pruned, no other table growing, Redis keys that expire, gunicorn workers that
    keep their files and threads, and a data directory of bounded files."""
    _check_pruned(growth)
    _check_nothing_else_grows(growth)
    _check_redis_keys_expire(growth)
    _check_workers_steady(growth)
    _check_files(growth)
    _check_a_quiet_year(growth)


def _check_pruned(growth: Growth) -> None:
    """Spent codes and tokens, mailed links, sessions, once-only form tokens and every
    delivery and event the delivery log no longer shows: none is left after the month."""
    for survey in growth.rounds:
        for service, tables in EXPIRING.items():
            left = {t: survey["rows"][service][t] for t in tables if survey["rows"][service][t]}
            assert not left, (growth.backend, survey["round"], service, left)


def _check_nothing_else_grows(growth: Growth) -> None:
    second, third = growth.rounds[1]["rows"], growth.rounds[2]["rows"]
    for service, tables in third.items():
        grew = {
            name: (second[service].get(name), held)
            for name, held in tables.items()
            if name not in (*KEPT[service], *_META_BOUNDS) and held > second[service].get(name, 0)
        }
        assert not grew, (growth.backend, service, grew)
    # An account keeps at most its newest grant per application, and its codes.
    meta = third["meta"]
    assert meta["oauth_grant"] == meta["grant pairs"], (growth.backend, meta)
    assert meta["oauth_authorization_code"] <= meta["oauth_grant"], (growth.backend, meta)
    assert meta["oauth_grant"] <= meta["user"], (growth.backend, meta)
    # Revocations: each account's cut-offs and suspensions, and the newest event, no more
    # (a revoked token's or grant's event goes once its tokens expired).
    bound = meta["cut-off pairs"] + meta["standing events"] + 1
    assert meta["revocation_event"] <= bound, (growth.backend, meta)


def _check_redis_keys_expire(growth: Growth) -> None:
    for survey in growth.rounds:
        assert survey["forever"] == [], (growth.backend, survey["round"], survey["forever"])


def _check_workers_steady(growth: Growth) -> None:
    second, third = growth.rounds[1]["workers"], growth.rounds[2]["workers"]
    kinds = {service for service, _pid in third}
    assert kinds == {"meta", "todo", "meta worker", "todo worker"}, third
    for key, (files, threads) in third.items():
        if key not in second:  # a worker restarted meanwhile starts afresh
            continue
        before_files, before_threads = second[key]
        assert files <= before_files + FD_SLACK, (growth.backend, key, second[key], third[key])
        assert threads <= before_threads + THREAD_SLACK, (growth.backend, key, third[key])


def _check_files(growth: Growth) -> None:
    """SQLite's write-ahead logs are checkpointed; nothing else appears beside the
    databases (no log, lock or metrics file per round), and the metrics files (one per
    kind per worker) keep their size: the series are the routes', not the requests'."""
    second, third = growth.rounds[1]["files"], growth.rounds[2]["files"]
    assert set(third) == set(second), (growth.backend, second, third)
    assert any(" metrics/" in name for name in third), third
    for name, size in third.items():
        if " metrics/" in name:
            assert size <= second[name], (growth.backend, name, second[name], size)
    for name, size in third.items():
        if name.endswith("-wal"):
            assert size <= WAL_BOUND, (growth.backend, name, size)


def _check_a_quiet_year(growth: Growth) -> None:
    """A year later, with no traffic: the audit log is past its retention (365 days, kept
    as long as promised before that), and nothing that outlived its use came back."""
    assert growth.rounds[-1]["rows"]["meta"]["audit_entry"] > 0, "the audit log was cut short"
    rows = growth.later["rows"]
    assert rows["meta"]["audit_entry"] == 0, (growth.backend, rows["meta"])
    for service, tables in EXPIRING.items():
        left = {t: rows[service][t] for t in tables if rows[service][t]}
        assert not left, (growth.backend, "a year later", service, left)


# -- what the delivery log's pruning keeps -------------------------------------------------


@pytest.mark.usefixtures("clean_webhooks")
def test_pruning_keeps_what_is_still_due_or_still_logged(app: Any, db: Any) -> None:
    """The hourly prune deletes a delivery only once it is over and its attempts are gone,
    and an event only once it was fanned out and its deliveries are gone: one still due
    (pending, a retry to come), one whose attempt is still in the log, and an event not
    fanned out yet stay, however old."""
    from sqlalchemy import select, update

    from srcore.db import utcnow
    from srcore.signatures import generate_secret
    from srcore.webhooks.delivery import prune_log
    from srcore.webhooks.fanout import fan_out
    from srcore.webhooks.models import Attempt, Delivery, OutboxRow, Subscription
    from srcore.webhooks.outbox import insert_event

    now = utcnow()
    old = now - MONTH
    sub = Subscription(
        owner_id=None,
        url="http://127.0.0.1:9/hook",
        events="thing:created",
        scopes="sample/things:RO",
        secret=generate_secret(),
    )
    db.add(sub)
    db.commit()

    def event(*, fanned: bool = True) -> tuple[int, int | None]:
        outbox_id = insert_event(db, "thing:created", {"id": 1, "name": "x"}, now=old)
        db.commit()
        if not fanned:
            return outbox_id, None
        [delivery_id] = fan_out(
            db, [outbox_id], manifest=app.extensions["srcore"].manifest, now=old
        )
        db.execute(update(OutboxRow).where(OutboxRow.id == outbox_id).values(fanned_out_at=old))
        db.execute(update(Delivery).where(Delivery.id == delivery_id).values(created=old))
        db.commit()
        return outbox_id, delivery_id

    def set_status(delivery_id: int | None, status: str) -> None:
        db.execute(update(Delivery).where(Delivery.id == delivery_id).values(status=status))
        db.commit()

    done, done_delivery = event()
    set_status(done_delivery, "delivered")
    cancelled, cancelled_delivery = event()
    set_status(cancelled_delivery, "cancelled")
    due, due_delivery = event()  # pending: a retry to come
    logged, logged_delivery = event()
    set_status(logged_delivery, "failed")
    assert logged_delivery is not None
    db.add(Attempt(delivery_id=logged_delivery, created=now, response_status=500))
    waiting, _ = event(fanned=False)
    db.execute(update(OutboxRow).where(OutboxRow.id == waiting).values(created=old))
    db.commit()

    assert prune_log(db, now=now, retention=timedelta(days=14)) == 4
    assert set(db.scalars(select(Delivery.id))) == {due_delivery, logged_delivery}
    assert set(db.scalars(select(OutboxRow.id))) == {due, logged, waiting}
    assert {done, cancelled}.isdisjoint(db.scalars(select(OutboxRow.id)))


@pytest.mark.usefixtures("clean_webhooks")
def test_a_worker_keeps_no_semaphore_of_receivers_it_no_longer_sends_to(app: Any, db: Any) -> None:
    """A worker that runs for months meets receivers and subscribers that come and go: it
    kept a semaphore for each one it ever sent to (one per receiver's host and port, one
    per subscriber), for good. Once its lanes end it holds none."""
    import srcore.db
    from srcore.outbound.policy import AddressPolicy
    from srcore.outbound.sender import PooledSender
    from srcore.signatures import generate_secret
    from srcore.webhooks import emit
    from srcore.webhooks.models import Delivery, Subscription
    from srcore.webhooks.worker import Worker

    loopback = AddressPolicy.from_networks(["127.0.0.0/8"])
    receivers = [Receiver() for _ in range(4)]
    worker = Worker(app, http=PooledSender(loopback), policy=loopback, poll_interval=0.01)
    try:
        for number, receiver in enumerate(receivers):
            db.add(
                Subscription(
                    owner_id=number + 1,
                    url=receiver.url,
                    events="thing:created",
                    scopes="sample/things:RW",
                    secret=generate_secret(),
                )
            )
        db.commit()
        with app.app_context():
            emit("thing:created", {"id": 1})
            srcore.db.session.commit()
        worker.drain()
        statuses = db.scalars(sa.select(Delivery.status)).all()
        assert statuses == ["delivered"] * len(receivers), statuses
        assert all(len(receiver.got) == 1 for receiver in receivers)
        for lane in threading.enumerate():  # each is recorded before its thread ends
            if lane.name.endswith("(_send_lane)"):
                lane.join(timeout=10)
        assert dict(worker._hosts) == {} and dict(worker._owners) == {}
    finally:
        worker.close()
        for receiver in receivers:
            receiver.close()
