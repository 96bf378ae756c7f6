"""Add the language a paste is highlighted as (empty: plain text).

Revision ID: paste_0002
Revises: paste_0001
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "paste_0002"
down_revision: str | Sequence[str] | None = "paste_0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("paste", schema=None) as batch_op:
        batch_op.add_column(sa.Column("language", sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("paste", schema=None) as batch_op:
        batch_op.drop_column("language")
