"""Create the paste table.

The ``user`` table belongs to the core lineage (``srcore_0001``), which runs first.

Revision ID: paste_0001
Revises:
Create Date: 2026-11-22
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import srcore.db

revision: str = "paste_0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "paste",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("short_id", sa.String(length=10), nullable=False),
        sa.Column("owner_id", sa.Integer(), nullable=False),
        sa.Column("title", sa.String(length=256), nullable=True),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column(
            "format",
            sa.Enum("markdown", "plain", name="paste_format", native_enum=False, length=16),
            nullable=False,
        ),
        sa.Column(
            "visibility",
            sa.Enum("public", "unlisted", name="paste_visibility", native_enum=False, length=16),
            nullable=False,
        ),
        sa.Column("created", srcore.db.UTCDateTime(), nullable=False),
        sa.Column("updated", srcore.db.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["owner_id"], ["user.id"], name=op.f("fk_paste_owner_id_user"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_paste")),
        sa.UniqueConstraint("short_id", name=op.f("uq_paste_short_id")),
    )
    with op.batch_alter_table("paste", schema=None) as batch_op:
        batch_op.create_index("ix_paste_owner_id_id", ["owner_id", "id"], unique=False)
        batch_op.create_index("ix_paste_visibility_id", ["visibility", "id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("paste", schema=None) as batch_op:
        batch_op.drop_index("ix_paste_visibility_id")
        batch_op.drop_index("ix_paste_owner_id_id")

    op.drop_table("paste")
