"""Webhook lookups by index: trusted subscriptions, and events by name.

The fan-out read every enabled subscription of every user for each batch of events,
matching event names as text inside each one. For events only their owner receives it now
reads the owners' subscriptions (``owner_id``, indexed already) and the trusted ones,
which this index finds. A token's delivery log keeps the events it may read: where they
are few, PostgreSQL starts from them, and the outbox's index by event name spares it
reading the whole table.

Revision ID: srcore_0010
Revises: srcore_0009
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "srcore_0010"
down_revision: str | Sequence[str] | None = "srcore_0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SUBSCRIPTION, OUTBOX = "srcore_webhook_subscription", "srcore_webhook_outbox"


def upgrade() -> None:
    # Partial: SQLite, with no histogram, would price a full index at half the table.
    only = sa.column("trusted").is_(True)
    name = op.f(f"ix_{SUBSCRIPTION}_trusted")
    op.create_index(name, SUBSCRIPTION, ["trusted"], sqlite_where=only, postgresql_where=only)
    op.create_index(op.f(f"ix_{OUTBOX}_event"), OUTBOX, ["event"])


def downgrade() -> None:
    op.drop_index(op.f(f"ix_{OUTBOX}_event"), table_name=OUTBOX)
    op.drop_index(op.f(f"ix_{SUBSCRIPTION}_trusted"), table_name=SUBSCRIPTION)
