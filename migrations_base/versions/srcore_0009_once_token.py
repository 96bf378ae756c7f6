"""One-time form tokens taken, shared by every process of the service.

Used tokens were kept in Redis, or without it in each process: a form sent twice whose
POSTs reached two workers was taken twice. They are kept here now, where every process
and host of the service sees the first claim before the second.

Revision ID: srcore_0009
Revises: srcore_0008
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "srcore_0009"
down_revision: str | Sequence[str] | None = "srcore_0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLE = "srcore_once_token"


def upgrade() -> None:
    op.create_table(
        TABLE,
        sa.Column("key", sa.String(length=128), nullable=False),
        sa.Column("location", sa.Text(), nullable=True),
        sa.Column("expires", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f(f"pk_{TABLE}")),
    )
    op.create_index(op.f(f"ix_{TABLE}_expires"), TABLE, ["expires"])


def downgrade() -> None:
    op.drop_index(op.f(f"ix_{TABLE}_expires"), table_name=TABLE)
    op.drop_table(TABLE)
