"""Tracker ids are never reused on SQLite.

Webhook subscriptions can follow one tracker, named by its id (``tracker:12``). SQLite
hands a deleted row's id (the largest one) to the next row unless the table is declared
``AUTOINCREMENT``, so a subscription to a deleted tracker would follow the next one
created. The table is rebuilt with it, rows and ids kept; PostgreSQL never reuses ids.

Revision ID: todo_0002
Revises: todo_0001
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "todo_0002"
down_revision: str | Sequence[str] | None = "todo_0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _rebuild(autoincrement: bool) -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    with op.batch_alter_table(
        "tracker", recreate="always", table_kwargs={"sqlite_autoincrement": autoincrement}
    ):
        pass


def upgrade() -> None:
    _rebuild(True)


def downgrade() -> None:
    _rebuild(False)
