"""Web sessions logged out at the service.

Logging out of a service cleared its cookie in that browser only: a copy of the cookie
taken earlier still logged in until the session expired. Each login now names its session
and a logout records the name here, where every process of the service reads it.

Revision ID: srcore_0008
Revises: srcore_0007
Create Date: 2026-12-04
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "srcore_0008"
down_revision: str | Sequence[str] | None = "srcore_0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLE = "srcore_ended_session"


def upgrade() -> None:
    op.create_table(
        TABLE,
        sa.Column("sid", sa.String(length=64), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("sid", name=op.f(f"pk_{TABLE}")),
    )
    op.create_index(op.f(f"ix_{TABLE}_expires_at"), TABLE, ["expires_at"])


def downgrade() -> None:
    op.drop_index(op.f(f"ix_{TABLE}_expires_at"), table_name=TABLE)
    op.drop_table(TABLE)
