"""Pagination: keyset cursors for the API, numbered pages for HTML.

A cursor names the last row a client has seen (its key values), not an offset, so rows
inserted between two requests neither repeat nor vanish from the listing. Cursors are
opaque to clients and checked on the way back in: a forged one is a 400, not a 500.

Views use the request-driven pair: :func:`cursor_page` (``?cursor=`` and ``?limit=``)
and :func:`page_number` (``?page=``); a bad value raises
:class:`~srcore.validation.ValidationFailed`, which srcore answers with a 400.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Generic, TypedDict, TypeVar

from sqlalchemy import ColumnElement, Integer, Select, and_, func, or_, select
from sqlalchemy.orm import QueryableAttribute, Session

if TYPE_CHECKING:
    from srcore.validation import Validation

__all__ = [
    "DEFAULT_LIMIT",
    "MAX_LIMIT",
    "CursorList",
    "CursorPage",
    "InvalidCursor",
    "KeyColumn",
    "Page",
    "cursor_page",
    "decode_cursor",
    "encode_cursor",
    "page_number",
    "paginate_cursor",
    "paginate_pages",
    "read_page",
    "read_page_number",
]

_T = TypeVar("_T")
_J = TypeVar("_J")

#: Cursors longer than this are refused before any decoding.
MAX_CURSOR_LENGTH = 1024
#: Items per API page unless ``?limit=`` says otherwise, and the most it may ask for.
DEFAULT_LIMIT = 25
MAX_LIMIT = 100
#: The highest ``?page=`` of a numbered listing (far past any real one).
MAX_PAGE = 1_000_000

_INT64 = (-(2**63), 2**63 - 1)

#: A key column: a mapped attribute (``Ticket.id``) or a column expression.
KeyColumn = ColumnElement[Any] | QueryableAttribute[Any]


class InvalidCursor(ValueError):
    """The cursor was not made by this server for this listing (the API answers 400)."""


@dataclass(frozen=True)
class CursorPage(Generic[_T]):
    """One page of a keyset listing; ``next_cursor`` is None on the last page."""

    items: list[_T]
    next_cursor: str | None

    def listing(self, convert: Callable[[_T], _J]) -> CursorList[_J]:
        """The page as the API answers it, each item turned into JSON by *convert*."""
        return {"results": [convert(item) for item in self.items], "next": self.next_cursor}


class CursorList(TypedDict, Generic[_T]):
    """One page of an API listing; pass ``next`` back as ``?cursor=`` for the next one."""

    results: list[_T]
    next: str | None


def read_page(
    valid: Validation, *, max_limit: int = MAX_LIMIT, default_limit: int = DEFAULT_LIMIT
) -> tuple[str | None, int]:
    """The ``cursor`` and ``limit`` of an API listing's query string, as read by *valid*.

    A bad value is recorded on *valid* (the limit is then the default): raise it with
    ``valid.raise_if_invalid()``.
    """
    cursor = valid.optional("cursor", max_length=MAX_CURSOR_LENGTH)
    limit = valid.optional("limit", int, min=1, max=max_limit, default=default_limit)
    return cursor, limit if limit is not None else default_limit


def read_page_number(valid: Validation) -> int:
    """The ``page`` of a numbered listing's query string (from 1), as read by *valid*."""
    return valid.optional("page", int, min=1, max=MAX_PAGE, default=1) or 1


def page_number(valid: Validation | None = None) -> int:
    """The current request's ``?page=``; raises ``ValidationFailed`` if it (or anything
    *valid* recorded before) is bad."""
    from srcore.validation import Validation

    valid = valid if valid is not None else Validation()
    number = read_page_number(valid)
    valid.raise_if_invalid()
    return number


def cursor_page(
    session: Session,
    stmt: Select[_T],
    *,
    key: KeyColumn | Sequence[KeyColumn],
    descending: bool = True,
    valid: Validation | None = None,
    max_limit: int = MAX_LIMIT,
    default_limit: int = DEFAULT_LIMIT,
    per_page: int | None = None,
) -> CursorPage[_T]:
    """The page of *stmt* the current request's ``?cursor=`` and ``?limit=`` ask for.

    *per_page* fixes the page's size and ``?limit=`` is not read: a page's listing, where
    the site, not the address, says how much one page shows. ``Validation(data={})`` as
    *valid* gives the first page (a form shown again, whose request has no query string).
    A bad value, a cursor made for another listing, or anything *valid* (the request's
    query, already read for filters) recorded before raises ``ValidationFailed``.
    """
    from srcore.validation import Validation

    valid = valid if valid is not None else Validation()
    if per_page is None:
        cursor, limit = read_page(valid, max_limit=max_limit, default_limit=default_limit)
    else:
        cursor = valid.optional("cursor", max_length=MAX_CURSOR_LENGTH)
        limit = max(per_page, 1)
    valid.raise_if_invalid()
    try:
        return paginate_cursor(
            session, stmt, key=key, cursor=cursor, limit=limit, descending=descending
        )
    except InvalidCursor:
        valid.fail("This cursor was not made for this listing.", "cursor")


@dataclass(frozen=True)
class Page(Generic[_T]):
    """One numbered page of a listing, with what a pager template needs."""

    items: list[_T]
    page: int
    per_page: int
    total: int
    pages: int

    @property
    def has_prev(self) -> bool:
        return self.page > 1

    @property
    def has_next(self) -> bool:
        return self.page < self.pages

    @property
    def prev_page(self) -> int | None:
        return min(self.page - 1, self.pages) if self.has_prev else None

    @property
    def next_page(self) -> int | None:
        return self.page + 1 if self.has_next else None


def _jsonable(value: object) -> object:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError("cursor key values must be timezone-aware datetimes")
        return value.astimezone(UTC).isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"cannot put a {type(value).__name__} in a cursor")


def encode_cursor(values: Sequence[object]) -> str:
    """Encode key values as an opaque, URL-safe cursor."""
    payload = json.dumps([_jsonable(v) for v in values], separators=(",", ":"))
    return base64.urlsafe_b64encode(payload.encode()).rstrip(b"=").decode("ascii")


def _python_type(column: ColumnElement[Any]) -> type:
    try:
        return column.type.python_type
    except NotImplementedError:
        return object


def _int_range(column: ColumnElement[Any]) -> tuple[int, int]:
    """The values the column's integer type holds: a wider one would make the database fail."""
    from sqlalchemy import BigInteger, SmallInteger

    if isinstance(column.type, BigInteger):
        return _INT64
    if isinstance(column.type, SmallInteger):
        return (-(2**15), 2**15 - 1)
    if isinstance(column.type, Integer):
        return (-(2**31), 2**31 - 1)
    return _INT64


def _check_value(value: object, expected: type, int_range: tuple[int, int] = _INT64) -> object:
    """Turn a decoded JSON value back into a key value of the expected type, or refuse."""
    if issubclass(expected, bool):
        if isinstance(value, bool):
            return value
    elif issubclass(expected, int):
        if (
            isinstance(value, int)
            and not isinstance(value, bool)
            and int_range[0] <= value <= int_range[1]
        ):
            return value
    elif issubclass(expected, float):
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            return float(value)
    elif issubclass(expected, datetime):
        if isinstance(value, str):
            try:
                parsed = datetime.fromisoformat(value)
                if parsed.tzinfo is not None and parsed.utcoffset() is not None:
                    return parsed.astimezone(UTC)
            except (ValueError, OverflowError):
                pass
    elif issubclass(expected, uuid.UUID):
        if isinstance(value, str):
            try:
                return uuid.UUID(value)
            except ValueError:
                pass
    elif issubclass(expected, str) and isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            pass
        else:
            if "\x00" not in value:
                return value
    raise InvalidCursor("invalid cursor")


def decode_cursor(cursor: str, key: Sequence[ColumnElement[Any]]) -> list[object]:
    """Decode a cursor made by :func:`encode_cursor` for these key columns.

    Raises :class:`InvalidCursor` for anything else, whatever the input.
    """
    if not isinstance(cursor, str) or not cursor or len(cursor) > MAX_CURSOR_LENGTH:
        raise InvalidCursor("invalid cursor")
    try:
        raw = base64.b64decode(cursor + "=" * (-len(cursor) % 4), altchars=b"-_", validate=True)
        values = json.loads(raw.decode("utf-8"))
    except (ValueError, binascii.Error, RecursionError) as exc:
        raise InvalidCursor("invalid cursor") from exc
    if not isinstance(values, list) or len(values) != len(key):
        raise InvalidCursor("invalid cursor")
    return [
        _check_value(v, _python_type(col), _int_range(col))
        for v, col in zip(values, key, strict=True)
    ]


def _after(
    key: Sequence[ColumnElement[Any]], values: Sequence[object], *, descending: bool
) -> ColumnElement[bool]:
    """Rows strictly after ``values`` in key order (lexicographic over the columns)."""
    clauses: list[ColumnElement[bool]] = []
    for i, column in enumerate(key):
        equal = [key[j] == values[j] for j in range(i)]
        beyond = column < values[i] if descending else column > values[i]
        clauses.append(and_(*equal, beyond))
    return or_(*clauses)


def paginate_cursor(
    session: Session,
    stmt: Select[_T],
    *,
    key: KeyColumn | Sequence[KeyColumn],
    cursor: str | None,
    limit: int,
    descending: bool = True,
) -> CursorPage[_T]:
    """Return up to ``limit`` items of ``stmt`` following ``cursor``, ordered by ``key``.

    ``stmt`` selects one entity or column; its own ORDER BY is replaced by the key, which
    must be unique (end it with the primary key). Costs one query per page.
    Raises :class:`InvalidCursor` for a cursor this listing did not produce.
    """
    if limit < 1:
        raise ValueError("limit must be at least 1")
    keys = list(key) if isinstance(key, Sequence) else [key]
    columns = [k.expression if isinstance(k, QueryableAttribute) else k for k in keys]
    if not columns:
        raise ValueError("at least one key column is needed")
    query = stmt.order_by(None).order_by(
        *(column.desc() if descending else column.asc() for column in columns)
    )
    if cursor is not None:
        values = decode_cursor(cursor, columns)
        query = query.where(_after(columns, values, descending=descending))
    query = query.add_columns(*columns).limit(limit + 1)
    rows = session.execute(query).all()
    items: list[_T] = [row[0] for row in rows[:limit]]
    next_cursor = None
    if len(rows) > limit:
        next_cursor = encode_cursor(list(rows[limit - 1][1:]))
    return CursorPage(items=items, next_cursor=next_cursor)


def paginate_pages(session: Session, stmt: Select[_T], *, page: int, per_page: int) -> Page[_T]:
    """Return page ``page`` (from 1) of ``stmt``; a page past the last one is empty.

    Costs a COUNT query plus, unless the page is past the end, one SELECT.
    """
    if page < 1:
        raise ValueError("page must be at least 1")
    if per_page < 1:
        raise ValueError("per_page must be at least 1")
    total = session.scalar(select(func.count()).select_from(stmt.order_by(None).subquery())) or 0
    pages = max(1, math.ceil(total / per_page))
    items: list[_T] = []
    if page <= pages and total:
        items = list(session.scalars(stmt.limit(per_page).offset((page - 1) * per_page)))
    return Page(items=items, page=page, per_page=per_page, total=total, pages=pages)
