from __future__ import annotations

import base64
import contextlib
import json
from collections.abc import Iterator
from datetime import datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import String, select
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from srcore.db import TYPE_ANNOTATION_MAP, Database, make_metadata, utcnow
from srcore.pagination import (
    CursorPage,
    InvalidCursor,
    decode_cursor,
    encode_cursor,
    paginate_cursor,
    paginate_pages,
)


class Base(DeclarativeBase):
    metadata = make_metadata()
    type_annotation_map = TYPE_ANNOTATION_MAP


class Ticket(Base):
    __tablename__ = "ticket"

    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str] = mapped_column(String(100))
    created: Mapped[datetime]


EPOCH = datetime(2024, 1, 1, tzinfo=utcnow().tzinfo)


@pytest.fixture
def session(database: Database) -> Iterator[Session]:
    Base.metadata.create_all(database.engine)
    with database.session() as s:
        yield s


def add_tickets(s: Session, ids: range, *, same_time: bool = False) -> None:
    for i in ids:
        created = EPOCH if same_time else EPOCH + timedelta(minutes=i)
        s.add(Ticket(id=i, title=f"ticket {i}", created=created))
    s.commit()


def walk(s: Session, limit: int, **kw: object) -> Iterator[CursorPage[Ticket]]:
    cursor = None
    while True:
        page = paginate_cursor(s, select(Ticket), cursor=cursor, limit=limit, **kw)  # type: ignore[arg-type]
        yield page
        if page.next_cursor is None:
            return
        cursor = page.next_cursor


def ids(page: CursorPage[Ticket]) -> list[int]:
    return [t.id for t in page.items]


def test_cursor_pages_descending_by_default(session: Session) -> None:
    add_tickets(session, range(1, 26))
    pages = list(walk(session, 10, key=Ticket.id))
    assert [ids(p) for p in pages] == [
        list(range(25, 15, -1)),
        list(range(15, 5, -1)),
        list(range(5, 0, -1)),
    ]
    assert pages[-1].next_cursor is None


def test_cursor_exact_multiple_has_no_empty_last_page(session: Session) -> None:
    add_tickets(session, range(1, 21))
    pages = list(walk(session, 10, key=Ticket.id, descending=False))
    assert [ids(p) for p in pages] == [list(range(1, 11)), list(range(11, 21))]


def test_cursor_empty_listing(session: Session) -> None:
    page = paginate_cursor(session, select(Ticket), key=Ticket.id, cursor=None, limit=5)
    assert page.items == []
    assert page.next_cursor is None


def test_cursor_stable_under_inserts(session: Session) -> None:
    add_tickets(session, range(1, 26))
    first = paginate_cursor(session, select(Ticket), key=Ticket.id, cursor=None, limit=10)
    assert ids(first) == list(range(25, 15, -1))
    add_tickets(session, range(26, 31))  # newer rows land before the cursor
    session.delete(session.get_one(Ticket, 14))  # and one row after it goes away
    session.commit()
    second = paginate_cursor(
        session, select(Ticket), key=Ticket.id, cursor=first.next_cursor, limit=10
    )
    assert ids(second) == [15, *range(13, 4, -1)]


def test_cursor_composite_key_with_ties(session: Session) -> None:
    add_tickets(session, range(1, 8), same_time=True)
    add_tickets(session, range(8, 12))
    seen: list[int] = []
    for page in walk(session, 3, key=(Ticket.created, Ticket.id)):
        seen += ids(page)
    assert seen == [11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1]


def test_cursor_respects_filters_and_replaces_ordering(session: Session) -> None:
    add_tickets(session, range(1, 21))
    stmt = select(Ticket).where(Ticket.id % 2 == 0).order_by(Ticket.title)
    first = paginate_cursor(session, stmt, key=Ticket.id, cursor=None, limit=4)
    second = paginate_cursor(session, stmt, key=Ticket.id, cursor=first.next_cursor, limit=4)
    assert ids(first) + ids(second) == [20, 18, 16, 14, 12, 10, 8, 6]


def test_cursor_round_trip_values() -> None:
    when = EPOCH + timedelta(microseconds=17)
    cursor = encode_cursor([when, 5])
    assert decode_cursor(cursor, [Ticket.created, Ticket.id]) == [when, 5]
    assert "=" not in cursor
    assert "/" not in cursor
    assert "+" not in cursor


@pytest.mark.parametrize(
    "cursor",
    [
        "",
        "!!!",
        "a" * 5000,
        base64.urlsafe_b64encode(b"not json").decode(),
        encode_cursor(["5"]),
        encode_cursor([5, 6]),
        encode_cursor([True]),
        encode_cursor([2**64]),
        encode_cursor([2**31]),  # beyond the 32-bit id column: the database would fail
        base64.urlsafe_b64encode(json.dumps({"id": 5}).encode()).decode(),
        base64.urlsafe_b64encode(b"[1.5]").decode(),
        base64.urlsafe_b64encode(b"[" * 10000 + b"]" * 10000).decode()[:1000],
    ],
)
def test_bad_cursor_is_invalid(session: Session, cursor: str) -> None:
    with pytest.raises(InvalidCursor):
        paginate_cursor(session, select(Ticket), key=Ticket.id, cursor=cursor, limit=5)


def test_invalid_cursor_is_value_error() -> None:
    assert issubclass(InvalidCursor, ValueError)


def test_limit_must_be_positive(session: Session) -> None:
    with pytest.raises(ValueError, match="limit"):
        paginate_cursor(session, select(Ticket), key=Ticket.id, cursor=None, limit=0)


KEY = (Ticket.created, Ticket.title, Ticket.id)
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text()
    | st.datetimes(timezones=st.timezones()).map(datetime.isoformat)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=6,
)


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(text=st.text(max_size=200))
def test_arbitrary_strings_only_raise_invalid_cursor(session: Session, text: str) -> None:
    with contextlib.suppress(InvalidCursor):
        paginate_cursor(session, select(Ticket), key=KEY, cursor=text, limit=2)


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(values=st.lists(json_values, min_size=3, max_size=3) | json_values)
def test_forged_json_cursors_only_raise_invalid_cursor(session: Session, values: object) -> None:
    raw = json.dumps(values).encode()
    cursor = base64.urlsafe_b64encode(raw).decode().rstrip("=")
    try:
        paginate_cursor(session, select(Ticket), key=KEY, cursor=cursor, limit=2)
    except InvalidCursor:
        pass
    finally:
        session.rollback()


# --- numbered pages -------------------------------------------------------------------


def test_pages(session: Session) -> None:
    add_tickets(session, range(1, 24))
    stmt = select(Ticket).order_by(Ticket.id)
    first = paginate_pages(session, stmt, page=1, per_page=10)
    assert [t.id for t in first.items] == list(range(1, 11))
    assert (first.total, first.pages, first.has_prev, first.has_next) == (23, 3, False, True)
    assert first.next_page == 2
    assert first.prev_page is None
    last = paginate_pages(session, stmt, page=3, per_page=10)
    assert [t.id for t in last.items] == [21, 22, 23]
    assert (last.has_prev, last.has_next, last.prev_page, last.next_page) == (True, False, 2, None)


def test_page_beyond_last_is_empty(session: Session) -> None:
    add_tickets(session, range(1, 6))
    page = paginate_pages(session, select(Ticket), page=9, per_page=10)
    assert page.items == []
    assert page.total == 5
    assert page.pages == 1
    assert page.has_prev
    assert not page.has_next
    assert page.prev_page == 1


def test_pages_of_nothing(session: Session) -> None:
    page = paginate_pages(session, select(Ticket), page=1, per_page=10)
    assert (page.items, page.total, page.pages, page.has_prev, page.has_next) == (
        [],
        0,
        1,
        False,
        False,
    )


def test_page_arguments_checked(session: Session) -> None:
    with pytest.raises(ValueError, match="page"):
        paginate_pages(session, select(Ticket), page=0, per_page=10)
    with pytest.raises(ValueError, match="per_page"):
        paginate_pages(session, select(Ticket), page=1, per_page=0)
