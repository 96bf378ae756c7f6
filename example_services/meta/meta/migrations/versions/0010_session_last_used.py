"""When each web session was last used: a login lasts ``session-lifetime`` past its use.

A session's row was judged by when it was created: the account's next login deleted the
rows created more than a lifetime ago, so a browser used every day (its cookie renewed on
every page) was logged out as soon as the account logged in from another one; and
nothing could tell an abandoned browser's row from one in use, so the rows of accounts
that never logged in again stayed for good. Each session starts with its creation time
as its last use.

Revision ID: 0010_session_last_used
Revises: 0009_canonical_addresses
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010_session_last_used"
down_revision: str | Sequence[str] | None = "0009_canonical_addresses"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_SESSION = sa.table("web_session", sa.column("created"), sa.column("last_used"))
#: SQLite copies the table to change a column: "user", which its foreign key names, is
#: left unread there (its index on an expression cannot be reflected; the copy needs no
#: more of it than its name).
_UNREAD_USER = {"resolve_fks": False}


def upgrade() -> None:
    with op.batch_alter_table("web_session") as batch:
        batch.add_column(sa.Column("last_used", sa.DateTime(timezone=True), nullable=True))
    op.execute(sa.update(_SESSION).values(last_used=_SESSION.c.created))
    with op.batch_alter_table("web_session", reflect_kwargs=_UNREAD_USER) as batch:
        batch.alter_column("last_used", existing_type=sa.DateTime(timezone=True), nullable=False)


def downgrade() -> None:
    with op.batch_alter_table("web_session", reflect_kwargs=_UNREAD_USER) as batch:
        batch.drop_column("last_used")
