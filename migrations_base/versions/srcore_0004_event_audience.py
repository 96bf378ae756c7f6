"""Who receives an event, decided from the event as emitted; accounts meta suspended.

The outbox row records the owner of what an event is about and its visibility when it
was emitted, so the fan-out never judges an old event by today's rows. Subscriptions
remember when their owner last confirmed them (a password reset disables older ones),
and ``srcore_webhook_account`` keeps the suspensions meta announces.

Revision ID: srcore_0004
Revises: srcore_0003
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "srcore_0004"
down_revision: str | Sequence[str] | None = "srcore_0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

When = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("srcore_webhook_outbox") as batch:
        batch.add_column(sa.Column("owner_id", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("visibility", sa.String(length=16), nullable=True))
    with op.batch_alter_table("srcore_webhook_subscription") as batch:
        batch.add_column(sa.Column("confirmed_at", When, nullable=True))
    op.create_table(
        "srcore_webhook_account",
        sa.Column("user_id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("suspended", sa.Boolean(), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("updated", When, nullable=False),
        sa.PrimaryKeyConstraint("user_id", name=op.f("pk_srcore_webhook_account")),
    )


def downgrade() -> None:
    op.drop_table("srcore_webhook_account")
    with op.batch_alter_table("srcore_webhook_subscription") as batch:
        batch.drop_column("confirmed_at")
    with op.batch_alter_table("srcore_webhook_outbox") as batch:
        batch.drop_column("visibility")
        batch.drop_column("owner_id")
