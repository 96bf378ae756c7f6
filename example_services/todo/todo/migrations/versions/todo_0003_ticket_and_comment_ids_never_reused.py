"""Ticket and comment ids are never reused on SQLite either.

Every ticket and comment event carries the row's id, and the API answers with it: a
receiver keeping tickets by id would take a new ticket for one deleted with its tracker,
as SQLite hands the largest deleted id to the next row unless the table is declared
``AUTOINCREMENT``. Both tables are rebuilt with it, rows and ids kept; PostgreSQL never
reuses ids.

Revision ID: todo_0003
Revises: todo_0002
Create Date: 2026-12-04
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "todo_0003"
down_revision: str | Sequence[str] | None = "todo_0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TABLES = ("ticket", "comment")


def _rebuild(autoincrement: bool) -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    for table in _TABLES:
        with op.batch_alter_table(
            table, recreate="always", table_kwargs={"sqlite_autoincrement": autoincrement}
        ):
            pass


def upgrade() -> None:
    _rebuild(True)


def downgrade() -> None:
    _rebuild(False)
