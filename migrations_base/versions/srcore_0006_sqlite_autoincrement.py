"""Webhook ids are never reused on SQLite.

SQLite hands a deleted row's id (the largest one) to the next row unless the table is
declared ``AUTOINCREMENT``; a delivery log, a ``webhook-id`` or a subscription id would
then name two different things over time. The webhook tables are rebuilt with it, rows
and ids kept. PostgreSQL sequences never reuse ids: nothing to do there.

Revision ID: srcore_0006
Revises: srcore_0005
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "srcore_0006"
down_revision: str | Sequence[str] | None = "srcore_0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: Parents first; the migration runs with SQLite's foreign keys off.
TABLES = (
    "srcore_webhook_subscription",
    "srcore_webhook_outbox",
    "srcore_webhook_delivery",
    "srcore_webhook_attempt",
)


def _rebuild(autoincrement: bool) -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    for table in TABLES:
        with op.batch_alter_table(
            table, recreate="always", table_kwargs={"sqlite_autoincrement": autoincrement}
        ):
            pass


def upgrade() -> None:
    _rebuild(True)


def downgrade() -> None:
    _rebuild(False)
