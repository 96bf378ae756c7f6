"""Accounts: meta's own columns of the user table, mailed tokens, and the id source.

The ``user`` table and its core columns belong to the core lineage (``srcore_0001``),
which runs first; this lineage only adds meta's columns to it. Account ids come from the
sequence ``user_id_seq`` on PostgreSQL and from the ``AUTOINCREMENT`` table
``user_id_allocation`` on SQLite, so that no id is ever handed out twice.

Revision ID: 0001_accounts
Revises:
Create Date: 2026-11-21
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001_accounts"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "postgresql":
        op.execute(sa.schema.CreateSequence(sa.Sequence("user_id_seq")))
    else:
        op.create_table(
            "user_id_allocation",
            sa.Column("id", sa.Integer(), primary_key=True),
            sqlite_autoincrement=True,
        )

    # SQLite only adds a NOT NULL column with a default; every row sets its own hash.
    op.add_column(
        "user",
        sa.Column("password_hash", sa.String(length=256), nullable=False, server_default=""),
    )
    op.add_column("user", sa.Column("email_confirmed_at", sa.DateTime(timezone=True)))
    op.add_column("user", sa.Column("pending_email", sa.String(length=256)))
    op.add_column("user", sa.Column("last_login_at", sa.DateTime(timezone=True)))
    op.add_column("user", sa.Column("sessions_valid_after", sa.DateTime(timezone=True)))

    op.create_table(
        "email_token",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("purpose", sa.String(length=16), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("email", sa.String(length=256), nullable=False),
        sa.Column("created", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires", sa.DateTime(timezone=True), nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["user_id"], ["user.id"], name=op.f("fk_email_token_user_id_user"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_email_token")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_email_token_token_hash")),
    )
    op.create_index(op.f("ix_email_token_user_id"), "email_token", ["user_id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_email_token_user_id"), table_name="email_token")
    op.drop_table("email_token")
    with op.batch_alter_table("user") as batch_op:
        for column in (
            "sessions_valid_after",
            "last_login_at",
            "pending_email",
            "email_confirmed_at",
            "password_hash",
        ):
            batch_op.drop_column(column)
    if op.get_bind().dialect.name == "postgresql":
        op.execute(sa.schema.DropSequence(sa.Sequence("user_id_seq")))
    else:
        op.drop_table("user_id_allocation")
