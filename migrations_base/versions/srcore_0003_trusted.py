"""Trusted (first-party) webhook subscriptions.

meta subscribes each configured service's ``/_srcore/events`` to its revocations and
profile changes. Those URLs are the operator's own internal origins, often private
addresses the SSRF guard refuses; ``trusted`` lets deliveries to them through. Only code
sets it (the API and web UI never expose it), so users cannot use it to reach internal
addresses.

Revision ID: srcore_0003
Revises: srcore_0002
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "srcore_0003"
down_revision: str | Sequence[str] | None = "srcore_0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("srcore_webhook_subscription") as batch:
        batch.add_column(
            sa.Column("trusted", sa.Boolean(), server_default=sa.false(), nullable=False)
        )


def downgrade() -> None:
    with op.batch_alter_table("srcore_webhook_subscription") as batch:
        batch.drop_column("trusted")
