"""Two-factor sign-in (TOTP and recovery codes), the audit log, and how a session logged in.

Revision ID: 0004_security
Revises: 0003_sessions
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004_security"
down_revision: str | Sequence[str] | None = "0003_sessions"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "totp_factor",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("secret", sa.String(length=64), nullable=False),
        sa.Column("created", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_counter", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(
            ["user_id"], ["user.id"], name=op.f("fk_totp_factor_user_id_user"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_totp_factor")),
    )
    op.create_index(op.f("ix_totp_factor_user_id"), "totp_factor", ["user_id"], unique=True)
    op.create_table(
        "recovery_code",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("code_hash", sa.String(length=64), nullable=False),
        sa.Column("created", sa.DateTime(timezone=True), nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["user.id"],
            name=op.f("fk_recovery_code_user_id_user"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_recovery_code")),
        sa.UniqueConstraint("code_hash", name=op.f("uq_recovery_code_code_hash")),
    )
    op.create_index(op.f("ix_recovery_code_user_id"), "recovery_code", ["user_id"])
    op.create_table(
        "audit_entry",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("created", sa.DateTime(timezone=True), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=True),
        sa.Column("actor_id", sa.Integer(), nullable=True),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("address", sa.String(length=64), nullable=False),
        sa.Column("user_agent", sa.String(length=256), nullable=False),
        sa.Column("detail", sa.String(length=256), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_entry")),
    )
    op.create_index(op.f("ix_audit_entry_created"), "audit_entry", ["created"])
    op.create_index(op.f("ix_audit_entry_user_id"), "audit_entry", ["user_id"])
    op.create_index(op.f("ix_audit_entry_kind"), "audit_entry", ["kind"])
    with op.batch_alter_table("web_session") as batch:
        batch.add_column(
            sa.Column("amr", sa.String(length=64), nullable=False, server_default="pwd")
        )


def downgrade() -> None:
    with op.batch_alter_table("web_session") as batch:
        batch.drop_column("amr")
    op.drop_index(op.f("ix_audit_entry_kind"), table_name="audit_entry")
    op.drop_index(op.f("ix_audit_entry_user_id"), table_name="audit_entry")
    op.drop_index(op.f("ix_audit_entry_created"), table_name="audit_entry")
    op.drop_table("audit_entry")
    op.drop_index(op.f("ix_recovery_code_user_id"), table_name="recovery_code")
    op.drop_table("recovery_code")
    op.drop_index(op.f("ix_totp_factor_user_id"), table_name="totp_factor")
    op.drop_table("totp_factor")
