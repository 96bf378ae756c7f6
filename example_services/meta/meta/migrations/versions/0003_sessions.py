"""Server-side web sessions, and the parent of a personal access token made by a token.

Revision ID: 0003_sessions
Revises: 0002_oauth
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003_sessions"
down_revision: str | Sequence[str] | None = "0002_oauth"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "web_session",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("secret_hash", sa.String(length=64), nullable=False),
        sa.Column("created", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"], ["user.id"], name=op.f("fk_web_session_user_id_user"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_web_session")),
        sa.UniqueConstraint("secret_hash", name=op.f("uq_web_session_secret_hash")),
    )
    op.create_index(op.f("ix_web_session_user_id"), "web_session", ["user_id"])
    with op.batch_alter_table("personal_access_token") as batch:
        batch.add_column(sa.Column("parent", sa.String(length=80), nullable=True))
        batch.create_index(batch.f("ix_personal_access_token_parent"), ["parent"])


def downgrade() -> None:
    with op.batch_alter_table("personal_access_token") as batch:
        batch.drop_index(batch.f("ix_personal_access_token_parent"))
        batch.drop_column("parent")
    op.drop_index(op.f("ix_web_session_user_id"), table_name="web_session")
    op.drop_table("web_session")
