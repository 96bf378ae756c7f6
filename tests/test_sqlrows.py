"""srcore.sqlrows: many rows in one statement, the same on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa

from srcore.db import Database
from srcore.sqlrows import execute_rows, insert_rows, lazy_commit, rows_of

metadata = sa.MetaData()
things = sa.Table(
    "sqlrows_thing",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("name", sa.String(64)),
    sa.Column("seen", sa.DateTime(timezone=True)),
    sa.Column("count", sa.Integer, default=0),
)
WHEN = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def test_insert_then_update_many_rows_in_one_statement_each(database: Database) -> None:
    metadata.create_all(database.engine)
    rows = [{"id": i, "name": f"n{i} 'quoted' \"and\" ünïcode", "seen": WHEN} for i in range(50)]
    with database.session() as session:
        lazy_commit(session)
        conn = session.connection()
        insert_rows(conn, things, [])  # nothing to insert: no statement at all
        insert_rows(conn, things, rows)
        new = rows_of(conn, {"u_id": sa.Integer(), "u_count": sa.Integer()})
        change = sa.update(things).where(things.c.id == new["u_id"])
        execute_rows(conn, change.values(count=new["u_count"]), [])
        execute_rows(
            conn,
            change.values(count=new["u_count"]),
            [{"u_id": i, "u_count": i * 2} for i in range(0, 50, 5)],
        )
        session.commit()
        found = session.execute(sa.select(things).order_by(things.c.id)).all()
    assert [(r.id, r.name) for r in found] == [(r["id"], r["name"]) for r in rows]
    assert {r.seen.replace(tzinfo=UTC) for r in found} == {WHEN}
    assert [r.count for r in found] == [i * 2 if i % 5 == 0 else 0 for i in range(50)]
    metadata.drop_all(database.engine)
