"""The search grammar's SQLAlchemy adapter: a service's schema turns terms into a WHERE.

A service declares, once, what its lists can be searched by::

    TICKETS = SearchSchema(
        text=[Ticket.title, Ticket.description],
        keys={
            "status": choice(Ticket.status, TicketStatus),
            "submitter": lambda name: Ticket.submitter_id.in_(
                select(User.id).where(User.username == name)
            ),
        },
    )
    stmt = select(Ticket).where(TICKETS.where(query))

Text terms match as case-insensitive substrings of any text field, found with the
database's plain substring function (``instr``; ``strpos`` on PostgreSQL) rather than
``LIKE``: a pattern match backtracks, and a long self-similar term against a long field
(``aaa…ab`` in a paste of ``a``'s) costs the product of their lengths, while a substring
search stays near the length of the field. The words and phrases of one query hold at most
:data:`MAX_TEXT_LENGTH` characters together, which bounds what remains of that product.
A key maps to a callable from the typed value to a condition. Every value reaches the
database as a bound parameter, never as SQL or as a pattern. A negated term excludes the
rows its condition holds for and keeps the rest, including rows where it is unknown (a
``NULL`` column).
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sqlalchemy import Boolean, ColumnElement, Integer, and_, false, func, not_, or_, true
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement

from srcore.search.grammar import (
    MAX_QUERY_LENGTH,
    SearchError,
    Term,
    _is_key,
    _show,
    format_term,
    parse_query,
)
from srcore.validation import Validation

__all__ = ["MAX_TEXT_LENGTH", "KeyCondition", "SearchSchema", "choice", "read_search"]

#: The most characters the words and phrases of one query may hold together (keyed terms'
#: values do not count: they are compared, not looked for in text).
MAX_TEXT_LENGTH = 200

#: What a key maps to: the term's value to a condition; raise :class:`SearchError` for a
#: value that makes no sense (its reason is shown after the term).
KeyCondition = Callable[[str], ColumnElement[bool]]


class _position(FunctionElement[int]):
    """Where a string first occurs in another, from 1; 0 where it does not occur.

    Compiled to each database's own substring function: no wildcard, no escape character,
    no pattern to backtrack over.
    """

    type = Integer()
    inherit_cache = True


@compiles(_position)
def _instr(element: _position, compiler: SQLCompiler, **kw: Any) -> str:
    return f"instr({compiler.process(element.clauses, **kw)})"


@compiles(_position, "postgresql")
def _strpos(element: _position, compiler: SQLCompiler, **kw: Any) -> str:
    return f"strpos({compiler.process(element.clauses, **kw)})"


def choice(column: Any, values: type[enum.Enum] | Mapping[str, Any]) -> KeyCondition:
    """A key whose value is one of *values*: an enum (by member value) or a name mapping.

    The value is matched case-insensitively, and compared to *column* with ``=``.
    """
    if isinstance(values, type) and issubclass(values, enum.Enum):
        allowed: dict[str, Any] = {str(m.value).lower(): m for m in values}
    else:
        allowed = {name.lower(): value for name, value in values.items()}
    names = ", ".join(allowed)

    def condition(value: str) -> ColumnElement[bool]:
        found = allowed.get(value.strip().lower())
        if found is None:
            raise SearchError(f"use one of {names}.")
        result: ColumnElement[bool] = column == found
        return result

    return condition


@dataclasses.dataclass(frozen=True)
class SearchSchema:
    """What one list can be searched by: its text fields and its keys.

    ``text`` are the columns (or SQL expressions) bare words and phrases are looked for
    in; ``keys`` maps each lowercase key to its :data:`KeyCondition`.
    """

    text: Sequence[Any] = ()
    keys: Mapping[str, KeyCondition] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        for key in self.keys:
            if not _is_key(key) or key != key.lower():
                raise ValueError(f"search key {key!r} must be lowercase letters, digits, - or _")

    def _text(self, term: Term) -> ColumnElement[bool]:
        if not self.text:
            typed = format_term(term)
            raise SearchError(
                f"This list cannot be searched for words like {_show(typed)}; "
                f"use a key: {', '.join(self.keys)}.",
                typed,
            )
        needle = func.lower(term.value)
        return or_(
            *(_position(func.lower(func.coalesce(column, "")), needle) > 0 for column in self.text)
        )

    def _keyed(self, term: Term) -> ColumnElement[bool]:
        assert term.key is not None
        typed = format_term(term)
        make = self.keys.get(term.key)
        # The term is echoed cut short, as the grammar's own messages do: a message quotes
        # what was typed, it does not hand a 1000-character query back.
        if make is None:
            known = ", ".join(self.keys) or "none"
            raise SearchError(
                f"Unknown key {_show(term.key)!r} in {_show(typed)}; known keys: {known}.", typed
            )
        try:
            return make(term.value)
        except SearchError as exc:
            raise SearchError(f"In {_show(typed)}: {exc.reason}", typed) from None

    def condition(self, terms: Sequence[Term]) -> ColumnElement[bool]:
        """The WHERE condition that all of *terms* hold (``TRUE`` for no terms).

        Raises :class:`SearchError` for an unknown key, a value its key refuses, or words
        and phrases longer than :data:`MAX_TEXT_LENGTH` together.
        """
        text_length = sum(len(term.value) for term in terms if term.key is None)
        if text_length > MAX_TEXT_LENGTH:
            raise SearchError(
                f"The words and phrases of the search hold {text_length} characters together; "
                f"use at most {MAX_TEXT_LENGTH}, or narrow the search with a key."
            )
        parts: list[ColumnElement[bool]] = []
        for term in terms:
            cond = self._text(term) if term.key is None else self._keyed(term)
            if term.negated:
                cond = not_(func.coalesce(cond, false(), type_=Boolean))
            parts.append(cond)
        return and_(true(), *parts)

    def where(self, query: str) -> ColumnElement[bool]:
        """Parse *query* and build its condition; raises :class:`SearchError` if it is bad."""
        return self.condition(parse_query(query))


def read_search(
    valid: Validation, schema: SearchSchema, field: str = "search"
) -> tuple[str, ColumnElement[bool]]:
    """The query in *field* of a :class:`Validation` and its condition.

    A bad query is recorded as an error on *field* (``valid.raise_if_invalid()`` raises
    it) and gives a condition that matches nothing, so a view can still show the page
    around the error.
    """
    before = len(valid.errors)
    query = valid.optional(field, max_length=MAX_QUERY_LENGTH, default="") or ""
    if any(error.field == field for error in valid.errors[before:]):
        # Sent twice or too long: no search was read, so the list shows nothing rather
        # than everything under a message that says the search is wrong.
        return query, false()
    try:
        return query, schema.where(query)
    except SearchError as exc:
        valid.error(exc.reason, field)
        return query, false()
