"""The fan-out and a token's delivery log stay index reads with large webhook tables.

The sample service's database is filled straight to its tables (``tests/scale_fill.py``:
20,000 subscriptions of other users, 50,000 events and 100,000 deliveries on PostgreSQL,
fewer on SQLite), its statistics fresh. Then:

- a fan-out of owner-audience events of alice's must find her subscriptions (and the
  trusted ones) by index, never read every user's enabled subscriptions: it did, matching
  the event names as text in each of them, so every batch of a worker read the whole table;
- a token's delivery log (``GET /api/webhooks/<id>/deliveries``) must read its events by
  their ids: PostgreSQL's planner, as it chooses by itself, hashed the whole outbox to
  check the token may see each delivery's event.

Plans are read, nothing is timed: PostgreSQL's ``EXPLAIN`` as the planner chooses with
sequential scans allowed, SQLite's ``EXPLAIN QUERY PLAN``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import MetaData, select, text, update

from srcore import migrate, testdb
from srcore.manifest import parse_manifest
from srcore.testing import _signing_key, create_user, mint_token, write_config
from srcore.webhooks.fanout import fan_out
from srcore.webhooks.models import Delivery, Subscription
from srcore.webhooks.outbox import insert_event
from tests.conftest import require_postgres
from tests.scale_fill import (
    ALICE,
    LARGE,
    Ids,
    analyze,
    fill_webhooks,
    nodes,
    plan,
    service_app,
    statements,
)

SAMPLE = Path(__file__).resolve().parent / "sample_service"
EVENT = "thing:created"
SCOPE = "sample/things:RO"
#: An event the service no longer declares: most of the log is of it, and no token sees it.
RETIRED = "thing:retired"
#: Big tables at these volumes; a sequential scan of one, or a hash of it, is the bug.
BIG = ("srcore_webhook_subscription", "srcore_webhook_outbox", "srcore_webhook_delivery")
VOLUMES = {"postgresql": LARGE, "sqlite": LARGE.scaled(0.2)}


@dataclass
class Sample:
    backend: str
    app: Any
    key: Any

    @property
    def engine(self) -> Any:
        return self.app.extensions["srcore"].db.engine


@pytest.fixture(params=["sqlite", "postgresql"])
def sample(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Sample]:
    """The sample service on a database of its own, filled, its statistics fresh."""
    backend: str = request.param
    url = f"sqlite:///{tmp_path / 'scale.db'}"
    if backend == "postgresql":
        require_postgres()
        url = testdb.create_test_database(prefix="srcore_fanout")
    config = write_config(tmp_path / "config.ini", service_id="sample", database_url=url)
    key = _signing_key()
    app = service_app("sample_service", config, key)
    state = app.extensions["srcore"]
    try:
        versions = SAMPLE / "migrations" / "versions"
        migrate.upgrade_all(
            migrate.MigrationTarget("sample", url, state.metadata, versions_dir=versions)
        )
        create_user(app, "alice", id=ALICE)
        metadata = MetaData()
        metadata.reflect(state.db.engine)
        volume = VOLUMES[backend]
        engine = state.db.engine
        fill_webhooks(engine, metadata, Ids(engine), volume, 20_000, [EVENT, *[RETIRED] * 999])
        with state.db.transaction() as session:  # each held the scope; and the network's own
            session.execute(update(Subscription).values(scopes=SCOPE))
            hook = dict(url="https://hooks.example.invalid/", events=EVENT, scopes=SCOPE)
            network = dict(id=volume.subscriptions + 1, owner_client="todo", trusted=True)
            session.add(Subscription(secret="whsec_x", **network, **hook))
        analyze(state.db.engine)
        yield Sample(backend, app, key)
    finally:
        state.db.dispose()
        if backend == "postgresql":
            testdb.drop_test_database(url)


def _problems(sample: Sample, sent: list[tuple[str, Any]]) -> list[str]:
    """Each SELECT of *sent* that reads a big table whole (or hashes one), as planned."""
    found = []
    for statement, parameters in sent:
        if not statement.lstrip().upper().startswith("SELECT"):
            continue
        short = " ".join(statement.split())[:300]
        if sample.backend == "postgresql":
            for node in nodes(plan(sample.engine, statement, parameters, seqscan=True)):
                if node["Node Type"] == "Seq Scan" and node.get("Relation Name") in BIG:
                    found.append(f"Seq Scan on {node['Relation Name']}: {short}")
            continue
        with sample.engine.connect() as connection:
            rows = connection.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, parameters)
            for row in rows:
                # "SCAN t" reads t whole; "SEARCH t USING ..." and "SCAN t USING INDEX" do not.
                words = str(row[-1]).split()
                if words[:1] == ["SCAN"] and words[1] in BIG and "USING" not in words:
                    found.append(f"{row[-1]}: {short}")
    return found


def test_fan_out_of_owner_events_reads_their_owners_subscriptions(sample: Sample) -> None:
    manifest = parse_manifest(
        {
            "id": "sample",
            "scopes": [{"name": "things", "description": "Things"}],
            "events": [{"name": EVENT, "scope": "things", "audience": "owner"}],
        },
        package="sample_service",
    )
    db = sample.app.extensions["srcore"].db
    with db.transaction() as session:
        ids = [insert_event(session, EVENT, {"n": n}, owner_id=ALICE) for n in range(20)]
        wanted = session.scalars(
            select(Subscription.id).where(
                Subscription.enabled.is_(True),
                (Subscription.owner_id == ALICE) | Subscription.trusted.is_(True),
            )
        ).all()
    assert len(wanted) > 30  # alice's 40 less the disabled ones, and the trusted one
    with statements(sample.engine) as sent, db.transaction() as session:
        created = fan_out(session, ids, manifest=manifest)
    assert len(created) == 20 * len(wanted)
    with db.transaction() as session:
        chosen = select(Delivery.subscription_id).where(Delivery.outbox_id.in_(ids)).distinct()
        assert sorted(session.scalars(chosen)) == sorted(wanted)
    problems = _problems(sample, sent.statements)
    assert not problems, "the fan-out reads a big table whole:\n" + "\n".join(problems)


def test_a_tokens_delivery_log_reads_its_events_by_id(sample: Sample) -> None:
    token = mint_token(sample.key, audience="sample", scopes=SCOPE, user_id=ALICE)
    headers = {"Authorization": f"Bearer {token}"}
    client = sample.app.test_client()
    with statements(sample.engine) as sent:
        response = client.get("/api/webhooks/1/deliveries", headers=headers)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert {delivery["event"] for delivery in response.get_json()["results"]} == {EVENT}
    problems = _problems(sample, sent.statements)
    assert not problems, "the delivery log reads a big table whole:\n" + "\n".join(problems)
    with sample.engine.connect() as connection:  # the fill is as large as the test says
        outbox = connection.execute(text("SELECT count(*) FROM srcore_webhook_outbox")).scalar()
    assert outbox >= 10_000
