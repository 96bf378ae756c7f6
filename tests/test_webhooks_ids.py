"""Webhook ids are never reused, on SQLite too: a deleted subscription's, delivery's or
log entry's id never names a new one (SQLite ``AUTOINCREMENT``, migrated in place)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import delete

from srcore.signatures import generate_secret
from srcore.webhooks.models import Subscription, WebhookBase

WEBHOOK_TABLES = (
    "srcore_webhook_subscription",
    "srcore_webhook_outbox",
    "srcore_webhook_delivery",
    "srcore_webhook_attempt",
)


def _new_subscription(db: Any) -> int:
    sub = Subscription(url="https://hooks.invalid/x", events="thing:created", secret="x")
    sub.secret = generate_secret()
    db.add(sub)
    db.commit()
    return sub.id


def test_a_deleted_subscriptions_id_is_never_given_again(app: Any, db: Any) -> None:
    first = _new_subscription(db)
    second = _new_subscription(db)
    db.execute(delete(Subscription).where(Subscription.id == second))
    db.commit()
    third = _new_subscription(db)
    assert third not in (first, second) and third > second
    db.execute(delete(Subscription))
    db.commit()
    assert _new_subscription(db) > third


def test_the_metadata_declares_autoincrement_for_sqlite() -> None:
    for name in WEBHOOK_TABLES:
        table = WebhookBase.metadata.tables[name]
        assert table.dialect_kwargs.get("sqlite_autoincrement") is True, name


def test_migration_rebuilds_existing_sqlite_tables_keeping_rows(tmp_path: Path) -> None:
    from srcore import migrate
    from srcore.migrate import core_metadata

    url = f"sqlite:///{tmp_path / 'old.db'}"
    target = migrate.MigrationTarget(
        service_id="old",
        database_url=url,
        metadata=core_metadata(),
        versions_dir=tmp_path / "versions",
    )
    (tmp_path / "versions").mkdir()
    migrate.upgrade(target, "srcore_0005", lineage="srcore")
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql("PRAGMA foreign_keys = ON")
        for n in (1, 2, 3):
            conn.exec_driver_sql(
                "INSERT INTO srcore_webhook_subscription (id, url, events, scopes, secret,"
                " enabled, trusted, created, updated) VALUES"
                f" ({n}, 'https://h.invalid/', 'e', '', 's', 1, 0, '2026-01-01', '2026-01-01')"
            )
        conn.exec_driver_sql(
            "INSERT INTO srcore_webhook_outbox (id, event, payload, created)"
            " VALUES (7, 'e', '{}', '2026-01-01')"
        )
        conn.exec_driver_sql(
            "INSERT INTO srcore_webhook_delivery (id, subscription_id, outbox_id, message_id,"
            " status, attempts, next_attempt_at, created) VALUES"
            " (5, 2, 7, 'msg_1', 'pending', 0, '2026-01-01', '2026-01-01')"
        )
        conn.exec_driver_sql("DELETE FROM srcore_webhook_subscription WHERE id = 3")
    migrate.upgrade(target, "heads", lineage="srcore")
    with engine.begin() as conn:
        for name in WEBHOOK_TABLES:
            sql = conn.exec_driver_sql(
                "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)
            ).scalar_one()
            assert "AUTOINCREMENT" in sql.upper(), name
        # Rows, ids and the references between them survived the rebuild.
        assert conn.exec_driver_sql(
            "SELECT id, subscription_id, outbox_id FROM srcore_webhook_delivery"
        ).all() == [(5, 2, 7)]
        conn.exec_driver_sql(
            "INSERT INTO srcore_webhook_subscription (url, events, scopes, secret, enabled,"
            " trusted, created, updated) VALUES"
            " ('https://h.invalid/', 'e', '', 's', 1, 0, '2026-01-01', '2026-01-01')"
        )
        newest = conn.exec_driver_sql("SELECT max(id) FROM srcore_webhook_subscription").scalar()
        assert newest == 3  # 3 was deleted before the migration: from now on, none reused
        conn.exec_driver_sql("DELETE FROM srcore_webhook_subscription WHERE id = 3")
        conn.exec_driver_sql(
            "INSERT INTO srcore_webhook_subscription (url, events, scopes, secret, enabled,"
            " trusted, created, updated) VALUES"
            " ('https://h.invalid/', 'e', '', 's', 1, 0, '2026-01-01', '2026-01-01')"
        )
        newest = conn.exec_driver_sql("SELECT max(id) FROM srcore_webhook_subscription").scalar()
        assert newest == 4
    migrate.downgrade(target, "srcore_0005", lineage="srcore")
    with engine.begin() as conn:
        sql = conn.exec_driver_sql(
            "SELECT sql FROM sqlite_master WHERE name = 'srcore_webhook_delivery'"
        ).scalar_one()
        assert "AUTOINCREMENT" not in sql.upper()
        assert conn.exec_driver_sql("SELECT count(*) FROM srcore_webhook_delivery").scalar() == 1
    engine.dispose()
