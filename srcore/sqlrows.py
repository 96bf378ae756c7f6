"""Set-based writes of many rows in one statement: on PostgreSQL the rows travel as one
JSON parameter read by ``json_to_recordset`` (one statement of fixed text however many
rows), elsewhere as an executemany; and :func:`lock_row`, which holds one row for the
rest of a transaction."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value
from sqlalchemy.types import TypeEngine

__all__ = ["execute_rows", "insert_rows", "lazy_commit", "lock_row", "rows_of"]


def lock_row(session: Session, obj: Any) -> bool:
    """Hold the row of *obj* (a persistent ORM object) until *session*'s transaction ends,
    and read its columns again; False if the row is gone.

    A write that acts on a row read earlier in the request (who may see it, what it holds)
    races any request that deletes or changes it meanwhile: the write then matches no row
    (a 500, or srcore's 409), or records what was read, not what is. Call this before the
    first write and judge the row as it now is. It is an ``UPDATE`` that sets columns to
    themselves, with ``RETURNING``, where ``SELECT ... FOR UPDATE`` would do on PostgreSQL
    alone: SQLite ignores ``FOR UPDATE``, but an ``UPDATE`` takes its write lock. On both
    it waits for a concurrent change to commit, answers the row as that left it, and keeps
    any other change out until this transaction ends. Columns that move on every update
    (``onupdate``, like ``updated``) keep their value.
    """
    state = sa.inspect(obj)
    mapper = state.mapper
    if state.identity is None:
        raise ValueError(f"{obj!r} has no row yet")
    model = mapper.class_
    keys = list(mapper.primary_key)
    attrs = list(mapper.column_attrs)
    same = {
        attr.key: getattr(model, attr.key)
        for attr in attrs
        if attr.columns[0] not in keys and attr.columns[0].onupdate is not None
    }
    if not same:
        spare = next((a for a in attrs if a.columns[0] not in keys), attrs[0])
        same[spare.key] = getattr(model, spare.key)
    statement = (
        sa.update(model)
        .where(*(column == value for column, value in zip(keys, state.identity, strict=True)))
        .values(same)
        .returning(*(getattr(model, attr.key) for attr in attrs))
        .execution_options(synchronize_session=False)
    )
    row = session.execute(statement).first()
    if row is None:
        return False
    for attr, value in zip(attrs, row, strict=True):
        set_committed_value(obj, attr.key, value)
    return True


def lazy_commit(session: Session) -> None:
    """Let this transaction's commit return before its WAL reaches the disk (PostgreSQL):
    only for writes that may be lost in a crash and done again."""
    if session.get_bind().dialect.name == "postgresql":
        session.connection().exec_driver_sql("SET LOCAL synchronous_commit TO OFF")


def rows_of(conn: sa.Connection, types: Mapping[str, TypeEngine[Any]]) -> Any:
    """The columns *types* of the rows :func:`execute_rows` sends, to build a statement on."""
    if conn.dialect.name != "postgresql":
        return {name: sa.bindparam(name, type_=t) for name, t in types.items()}
    text = sa.cast(sa.bindparam("rows", type_=sa.String()), sa.JSON)
    table = sa.func.json_to_recordset(text).table_valued(*map(sa.column, types, types.values()))
    return table.render_derived(name="rows", with_types=True).c


def execute_rows(conn: sa.Connection, statement: Any, rows: Sequence[Mapping[str, Any]]) -> None:
    """Run *statement*, built on :func:`rows_of`, for *rows* (mappings of its columns)."""
    if rows and conn.dialect.name == "postgresql":
        conn.execute(statement, {"rows": json.dumps(rows, default=datetime.isoformat)})
    elif rows:
        conn.execute(statement, rows)


def insert_rows(
    conn: sa.Connection,
    table: sa.Table,
    rows: list[dict[str, Any]],
    *,
    where: Callable[[Any], sa.ColumnElement[bool]] | None = None,
) -> None:
    """INSERT *rows* (mappings of the same columns) into *table*; with *where*, only the rows
    for which ``where(columns)`` holds, judged in the statement (a row it refers to may have
    been deleted by a transaction that committed a moment before)."""
    if rows:
        source = rows_of(conn, {name: table.c[name].type for name in rows[0]})
        chosen = sa.select(*(source[name] for name in rows[0]))
        if where is not None:
            chosen = chosen.where(where(source))
        execute_rows(conn, sa.insert(table).from_select(list(rows[0]), chosen), rows)
