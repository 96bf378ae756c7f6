"""Manual redeliveries beside the automatic retry schedule.

A manual redelivery is an attempt of its own: the delivery remembers the status it had
and the automatic attempt it was waiting for, and goes back to them if the manual
attempt fails, so redelivering by hand never uses up or moves an automatic retry.

Revision ID: srcore_0005
Revises: srcore_0004
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "srcore_0005"
down_revision: str | Sequence[str] | None = "srcore_0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("srcore_webhook_delivery") as batch:
        batch.add_column(sa.Column("manual_status", sa.String(length=16), nullable=True))
        batch.add_column(sa.Column("resume_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("srcore_webhook_delivery") as batch:
        batch.drop_column("resume_at")
        batch.drop_column("manual_status")
