"""Large tables for meta, todo and paste, written straight to the database, and what a
request sends them: the statements of each request (:mod:`srcore.sqltrace`) and, on
PostgreSQL, each statement's plan (``EXPLAIN``, never ``ANALYZE``).

Rows go in with ``COPY`` on PostgreSQL and ``executemany`` on SQLite, a bounded number per
table (:class:`Volume`); ids are given, so a second fill adds to the first. Used by
``tests/test_scale_outsider.py``.
"""

from __future__ import annotations

import importlib
import json
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from sqlalchemy import Engine, MetaData, Table, event, insert, text

from srcore.db import normalize_url

ALICE, BOB = 1, 2
#: Tracker, ticket, subscription and paste the probes open (all alice's, mostly public).
BIG_TRACKER = "big"
EPOCH = datetime(2026, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Volume:
    """How many rows a fill adds: *users* accounts, and the rest in proportion."""

    users: int
    trackers: int
    tickets: int
    comments: int
    pastes: int
    subscriptions: int
    outbox: int
    deliveries: int
    attempts: int
    audit: int
    tokens: int
    grants: int

    def scaled(self, factor: float) -> Volume:
        values = {name: max(int(v * factor), 1) for name, v in vars(self).items()}
        return Volume(**values)


#: What the brief calls realistic: about a second's COPY per service.
LARGE = Volume(
    users=20_000,
    trackers=2_000,
    tickets=100_000,
    comments=200_000,
    pastes=50_000,
    subscriptions=20_000,
    outbox=50_000,
    deliveries=100_000,
    attempts=150_000,
    audit=100_000,
    tokens=40_000,
    grants=40_000,
)


def table_of(metadata: MetaData, name: str) -> Table:
    return metadata.tables[name]


def bulk(engine: Engine, table: Table, rows: Iterable[dict[str, Any]]) -> int:
    """Write *rows* (dicts of the same keys) to *table*: COPY on PostgreSQL, else executemany."""
    batch = list(rows)
    if not batch:
        return 0
    columns = list(batch[0])
    if engine.dialect.name == "postgresql":
        raw = engine.raw_connection()
        try:
            names = ", ".join(f'"{c}"' for c in columns)
            statement = f'COPY "{table.name}" ({names}) FROM STDIN'
            with raw.cursor() as cursor, cursor.copy(statement) as copy:  # type: ignore[attr-defined]
                for row in batch:
                    copy.write_row([row[c] for c in columns])
            raw.commit()
        finally:
            raw.close()
    else:
        with engine.begin() as connection:
            connection.execute(insert(table), batch)
    return len(batch)


def analyze(engine: Engine) -> None:
    """Fresh statistics, so the planner's choices are those of a database in use; on
    PostgreSQL each id sequence moved past the ids the fill gave."""
    if engine.dialect.name == "postgresql":
        with engine.begin() as connection:
            found = connection.execute(
                text(
                    "SELECT table_name, column_name FROM information_schema.columns"
                    " WHERE table_schema = 'public' AND column_default LIKE 'nextval(%'"
                )
            ).all()
            for table, column in found:
                connection.execute(
                    text(
                        f"SELECT setval(pg_get_serial_sequence('\"{table}\"', '{column}'),"
                        f' (SELECT coalesce(max("{column}"), 0) + 1 FROM "{table}"), false)'
                    )
                )
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            connection.execute(text("VACUUM ANALYZE"))
    else:
        with engine.begin() as connection:
            connection.execute(text("ANALYZE"))


def _at(i: int) -> datetime:
    return EPOCH + timedelta(seconds=i)


class Ids:
    """Fresh ids of a table: after the largest one there (rows a request wrote included),
    so that a second fill adds rows after the first's."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def take(self, table: str, count: int, column: str = "id") -> range:
        with self.engine.connect() as connection:
            found = connection.execute(text(f'SELECT max({column}) FROM "{table}"')).scalar()
        first = int(found or 0) + 1
        return range(first, first + count)


def user_rows(ids: range, *, meta: bool = False) -> Iterator[dict[str, Any]]:
    names = {ALICE: "alice", BOB: "bob"}
    for i in ids:
        name = names.get(i, f"user{i:06d}")
        row: dict[str, Any] = {
            "id": i,
            "username": name,
            "email": f"{name}@example.org",
            "user_type": "admin" if meta and i == ALICE else "active",
            "created": _at(i),
            "updated": _at(i),
        }
        if meta:
            row.update(password_hash="x", email_confirmed_at=_at(i))
        yield row


# -- webhooks (every service's database) ---------------------------------------------------------


def fill_webhooks(
    engine: Engine, metadata: MetaData, ids: Ids, volume: Volume, users: int, events: Sequence[str]
) -> None:
    """Subscriptions (alice's first one with most deliveries), events, deliveries, attempts.

    Alice's subscription 1 gets half the deliveries and their attempts; every other
    subscription belongs to someone else. Most deliveries are delivered, a few pending.
    """
    sub_ids = ids.take("srcore_webhook_subscription", volume.subscriptions)
    alice_subs = 40
    subs = []
    for n, i in enumerate(sub_ids):
        owner = ALICE if n < alice_subs and sub_ids.start == 1 else 3 + (i % max(users - 3, 1))
        subs.append(
            {
                "id": i,
                "owner_id": owner,
                "url": f"https://hooks.example.org/{i}",
                "events": " ".join(events[: 1 + i % len(events)]),
                "resource": None,
                "scopes": "",
                "secret": f"whsec_{i:040d}",
                "enabled": i % 10 != 0,
                "trusted": False,
                "client_id": "*" if owner == ALICE else None,
                "created": _at(i),
                "updated": _at(i),
            }
        )
    bulk(engine, table_of(metadata, "srcore_webhook_subscription"), subs)
    outbox_ids = ids.take("srcore_webhook_outbox", volume.outbox)
    bulk(
        engine,
        table_of(metadata, "srcore_webhook_outbox"),
        (
            {
                "id": i,
                "event": events[i % len(events)],
                "payload": json.dumps({"n": i}),
                "owner_id": ALICE,
                "visibility": "public",
                "created": _at(i),
                "fanned_out_at": _at(i),
            }
            for i in outbox_ids
        ),
    )
    delivery_ids = ids.take("srcore_webhook_delivery", volume.deliveries)
    first_sub = sub_ids.start
    deliveries = []
    for n, i in enumerate(delivery_ids):
        sub = 1 if n % 4 == 0 else first_sub + (n % len(sub_ids))
        pending = n % 50 == 0
        deliveries.append(
            {
                "id": i,
                "subscription_id": sub,
                "outbox_id": outbox_ids.start + (n // 4 if sub == 1 else n) % len(outbox_ids),
                "message_id": f"msg_{i:026x}",
                "status": "pending" if pending else "delivered",
                "attempts": 1,
                "next_attempt_at": _at(10**8 + i) if pending else _at(i),
                "created": _at(i),
                "delivered_at": None if pending else _at(i),
            }
        )
    # (subscription, event) pairs are unique: alice's first subscription takes each event
    # once, the others each once per event too.
    seen: set[tuple[int, int]] = set()
    unique = []
    for row in deliveries:
        pair = (row["subscription_id"], row["outbox_id"])
        if pair not in seen:
            seen.add(pair)
            unique.append(row)
    bulk(engine, table_of(metadata, "srcore_webhook_delivery"), unique)
    kept = [row["id"] for row in unique]
    attempt_ids = ids.take("srcore_webhook_attempt", volume.attempts)
    bulk(
        engine,
        table_of(metadata, "srcore_webhook_attempt"),
        (
            {
                "id": i,
                "delivery_id": kept[n % len(kept)],
                "created": _at(i),
                "request_headers": "{}",
                "request_body": "{}",
                "response_status": 200,
                "response_headers": "{}",
                "response_body": "ok",
                "duration_ms": 5,
            }
            for n, i in enumerate(attempt_ids)
        ),
    )


# -- the services ---------------------------------------------------------------------------------


TODO_EVENTS = ("ticket:created", "ticket:updated", "comment:created", "tracker:created")
PASTE_EVENTS = ("paste:created", "paste:updated")
META_EVENTS = ("account:updated",)


def fill_todo(engine: Engine, metadata: MetaData, ids: Ids, volume: Volume) -> None:
    """Users; trackers (alice has many, ``big`` holds half the tickets); tickets; comments
    (ticket 1 of ``big`` holds half of them)."""
    user_ids = ids.take("user", volume.users)
    first_fill = user_ids.start == 1
    bulk(engine, table_of(metadata, "user"), user_rows(user_ids))
    users = user_ids.stop - 1
    tracker_ids = ids.take("tracker", volume.trackers)
    visibilities = ("public", "unlisted", "private")
    trackers = []
    for n, i in enumerate(tracker_ids):
        if first_fill and n == 0:
            owner, name, visibility = ALICE, BIG_TRACKER, "public"
        elif n % 5 == 0:
            owner, name, visibility = ALICE, f"t{i}", visibilities[n % 3]
        elif n % 97 == 1:
            owner, name, visibility = BOB, f"t{i}", visibilities[n % 3]
        else:
            owner, name, visibility = 3 + i % max(users - 3, 1), f"t{i}", visibilities[n % 3]
        trackers.append(
            {
                "id": i,
                "owner_id": owner,
                "name": name,
                "visibility": visibility,
                "ticket_count": 0,
                "created": _at(i),
                "updated": _at(i),
                "description": "A tracker.",
            }
        )
    big = 1
    counts: dict[int, int] = {}
    ticket_ids = ids.take("ticket", volume.tickets)
    tickets = []
    for n, i in enumerate(ticket_ids):
        tracker = big if n % 10 == 0 else tracker_ids.start + n % len(tracker_ids)
        counts[tracker] = counts.get(tracker, 0) + 1
        tickets.append(
            {
                "id": i,
                "tracker_id": tracker,
                "number": 0,
                "title": f"It crashes {i}",
                "description": "Steps: open it.",
                "status": "open" if n % 3 else "resolved",
                "resolution": None if n % 3 else "fixed",
                "submitter_id": (ALICE, BOB)[n % 2] if n % 7 == 0 else 3 + n % max(users - 3, 1),
                "created": _at(i),
                "updated": _at(i),
            }
        )
    # Numbers continue each tracker's own count (a second fill adds after the first).
    with engine.connect() as connection:
        known = dict(connection.execute(text("SELECT id, ticket_count FROM tracker")).all())
    numbers = {t: known.get(t, 0) for t in counts}
    for row in tickets:
        numbers[row["tracker_id"]] += 1
        row["number"] = numbers[row["tracker_id"]]
    for row in trackers:
        row["ticket_count"] = numbers.get(row["id"], 0)
    bulk(engine, table_of(metadata, "tracker"), trackers)
    with engine.begin() as connection:
        for tracker, number in numbers.items():
            if tracker in known:
                connection.execute(
                    text("UPDATE tracker SET ticket_count = :n WHERE id = :id"),
                    {"n": number, "id": tracker},
                )
    bulk(engine, table_of(metadata, "ticket"), tickets)
    comment_ids = ids.take("comment", volume.comments)
    bulk(
        engine,
        table_of(metadata, "comment"),
        (
            {
                "id": i,
                "ticket_id": 1 if n % 10 == 0 else ticket_ids.start + n % len(ticket_ids),
                "author_id": (ALICE, BOB)[n % 2] if n % 5 == 0 else 3 + n % max(users - 3, 1),
                "text": f"Me too {i}.",
                "created": _at(i),
                "updated": _at(i),
            }
            for n, i in enumerate(comment_ids)
        ),
    )
    fill_webhooks(engine, metadata, ids, volume, users, TODO_EVENTS)


def fill_paste(engine: Engine, metadata: MetaData, ids: Ids, volume: Volume) -> None:
    """Users and pastes, a third of them alice's (``p0000001`` is alice's first)."""
    user_ids = ids.take("user", volume.users)
    bulk(engine, table_of(metadata, "user"), user_rows(user_ids))
    users = user_ids.stop - 1
    paste_ids = ids.take("paste", volume.pastes)
    bulk(
        engine,
        table_of(metadata, "paste"),
        (
            {
                "id": i,
                "short_id": f"p{i:09d}",
                "owner_id": ALICE if n % 3 == 0 else (BOB if n % 31 == 1 else 3 + n % (users - 3)),
                "title": f"Paste {i}",
                "text": "print('hello')\n" * 3,
                "format": "plain",
                "language": "python" if n % 2 else None,
                "visibility": "public" if n % 4 else "unlisted",
                "created": _at(i),
                "updated": _at(i),
            }
            for n, i in enumerate(paste_ids)
        ),
    )
    fill_webhooks(engine, metadata, ids, volume, users, PASTE_EVENTS)


def fill_meta(engine: Engine, metadata: MetaData, ids: Ids, volume: Volume) -> None:
    """Accounts (alice is an admin), audit entries (a tenth alice's), tokens, grants,
    clients, revocation events."""
    user_ids = ids.take("user", volume.users)
    bulk(engine, table_of(metadata, "user"), user_rows(user_ids, meta=True))
    users = user_ids.stop - 1
    if engine.dialect.name == "postgresql":
        with engine.begin() as connection:
            connection.execute(text(f"SELECT setval('user_id_seq', {users + 1})"))
    kinds = ("login", "login-failed", "password-changed", "token-created", "logout")
    audit_ids = ids.take("audit_entry", volume.audit)
    bulk(
        engine,
        table_of(metadata, "audit_entry"),
        (
            {
                "id": i,
                "created": _at(i),
                "user_id": ALICE if n % 10 == 0 else 3 + n % (users - 3),
                "actor_id": None,
                "kind": kinds[n % len(kinds)],
                "address": "192.0.2.1",
                "user_agent": "scale",
                "detail": "",
            }
            for n, i in enumerate(audit_ids)
        ),
    )
    far = EPOCH + timedelta(days=3650)
    token_ids = ids.take("personal_access_token", volume.tokens)
    bulk(
        engine,
        table_of(metadata, "personal_access_token"),
        (
            {
                "id": i,
                "user_id": ALICE if n % 1000 == 0 else 3 + n % (users - 3),
                "name": f"token {i}",
                "scope": "meta/profile:RO",
                "jti": f"jti{i:020d}",
                "kid": "k",
                "created": _at(i),
                "expires_at": far if n % 2 else _at(i),
                "revoked_at": None,
                "parent": f"grant{i % 997}" if n % 3 == 0 else None,
            }
            for n, i in enumerate(token_ids)
        ),
    )
    client_ids = ids.take("oauth_client", max(volume.users // 100, 2))
    bulk(
        engine,
        table_of(metadata, "oauth_client"),
        (
            {
                "id": i,
                "client_id": f"client{i}",
                "owner_id": ALICE if n < 5 else 3 + n % (users - 3),
                "name": f"Client {i}",
                "redirect_uris": "https://app.example.org/cb",
                "confidential": True,
                "created": _at(i),
                "post_logout_redirect_uris": "",
                "id_token_alg": "RS256",
            }
            for n, i in enumerate(client_ids)
        ),
    )
    grant_ids = range(token_ids.start, token_ids.start + volume.grants)
    bulk(
        engine,
        table_of(metadata, "oauth_grant"),
        (
            {
                "id": f"grant{i}",
                "user_id": ALICE if n % 100 == 0 else 3 + n % (users - 3),
                "client_id": f"client{client_ids.start + n % len(client_ids)}",
                "scope": "meta/profile:RO",
                "created": _at(i),
                "last_used": _at(i),
                "revoked_at": None,
            }
            for n, i in enumerate(grant_ids)
        ),
    )
    revocation_ids = ids.take("revocation_event", volume.grants, "seq")
    bulk(
        engine,
        table_of(metadata, "revocation_event"),
        (
            {
                "seq": i,
                "kind": "jti",
                "subject": f"jti{i:020d}",
                "not_before": None,
                "expires_at": 2**40,
                "created": _at(i),
            }
            for i in revocation_ids
        ),
    )
    fill_webhooks(engine, metadata, ids, volume, users, META_EVENTS)


FILLS: dict[str, Callable[[Engine, MetaData, Ids, Volume], None]] = {
    "todo": fill_todo,
    "paste": fill_paste,
    "meta": fill_meta,
}


# -- what a request sends ---------------------------------------------------------------------


@dataclass
class Sent:
    """The statements of one request, with their parameters (to EXPLAIN them again)."""

    statements: list[tuple[str, Any]] = field(default_factory=list)

    @property
    def count(self) -> int:
        return len(self.statements)


@contextmanager
def statements(engine: Engine) -> Iterator[Sent]:
    """Every statement *engine*'s connections execute inside the block."""
    sent = Sent()

    def before(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        sent.statements.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", before)
    try:
        yield sent
    finally:
        event.remove(engine, "before_cursor_execute", before)


_SELECT = re.compile(r"^\s*(SELECT|WITH)\b", re.IGNORECASE)


def plan(
    engine: Engine, statement: str, parameters: Any, *, seqscan: bool = False
) -> dict[str, Any]:
    """PostgreSQL's plan of *statement* (``EXPLAIN (FORMAT JSON)``, nothing run), with
    sequential scans priced out: one still in the plan is a table no index serves for
    this statement, whatever the statistics of the moment make the cheapest. *seqscan*:
    the plan the planner would choose by itself."""
    raw = engine.raw_connection()
    try:
        with raw.cursor() as cursor:  # type: ignore[attr-defined]
            if not seqscan:
                cursor.execute("SET LOCAL enable_seqscan = off")
            cursor.execute("EXPLAIN (FORMAT JSON) " + statement, parameters or None)
            found = cursor.fetchone()[0]
        raw.rollback()
    finally:
        raw.close()
    result: dict[str, Any] = found[0]["Plan"]
    return result


def nodes(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield node
    for child in node.get("Plans", ()):
        yield from nodes(child)


def plan_problems(
    engine: Engine, sent: Sent, big: dict[str, int], *, sort_rows: int = 5_000
) -> list[str]:
    """What is wrong with the plans of *sent*'s SELECTs: a sequential scan of a table in
    *big* (name: its rows), or a sort of more than *sort_rows* rows."""
    problems = []
    for statement, parameters in sent.statements:
        if not _SELECT.match(statement) or "pg_advisory" in statement:
            continue
        tree = plan(engine, statement, parameters)
        for node in nodes(tree):
            kind = node["Node Type"]
            relation = node.get("Relation Name")
            if kind == "Seq Scan" and relation in big:
                problems.append(f"Seq Scan on {relation}: {' '.join(statement.split())[:300]}")
            if kind in ("Sort", "Incremental Sort") and node.get("Plan Rows", 0) > sort_rows:
                rows = node["Plan Rows"]
                problems.append(f"Sort of {rows} rows: {' '.join(statement.split())[:300]}")
    return problems


def as_user(user_id: int) -> SimpleNamespace:
    return SimpleNamespace(id=user_id)


def service_app(service: str, config: Path, signing_key: Any) -> Any:
    from joserfc.jwk import KeySet

    from srcore.auth.tokens import StaticKeySource, TokenVerifier
    from srcore.manifest import load_manifest
    from srcore.outbound.targets import set_resolver
    from srcore.testing import TEST_ISSUER

    manifest = load_manifest(service)
    verifier = TokenVerifier(
        keys=StaticKeySource(KeySet([signing_key])), issuer=TEST_ISSUER, audience=manifest.id
    )
    app = importlib.import_module(service).create_app(config=config, token_verifier=verifier)
    app.config["TESTING"] = True
    set_resolver(app, lambda host, port, timeout: None)
    return app


def url_of(engine: Engine) -> str:
    return normalize_url(engine.url).render_as_string(hide_password=False)


__all__ = [
    "ALICE",
    "BIG_TRACKER",
    "BOB",
    "FILLS",
    "LARGE",
    "Ids",
    "Sent",
    "Volume",
    "analyze",
    "as_user",
    "bulk",
    "plan",
    "plan_problems",
    "service_app",
    "statements",
    "url_of",
]
