"""Search for services: one query grammar, and its translation to a SQL WHERE clause.

:mod:`~srcore.search.grammar` is the plain grammar (a query string to
:class:`Term` objects and back); :mod:`~srcore.search.sql` is the SQLAlchemy adapter a
service declares its searchable fields and keys with. Every problem is a
:class:`SearchError` naming the bad term, which srcore answers with a 400.
"""

from __future__ import annotations

from srcore.search.grammar import (
    MAX_QUERY_LENGTH,
    MAX_TERMS,
    SearchError,
    Term,
    format_query,
    format_term,
    parse_query,
)
from srcore.search.sql import MAX_TEXT_LENGTH, KeyCondition, SearchSchema, choice, read_search

__all__ = [
    "MAX_QUERY_LENGTH",
    "MAX_TERMS",
    "MAX_TEXT_LENGTH",
    "KeyCondition",
    "SearchError",
    "SearchSchema",
    "Term",
    "choice",
    "format_query",
    "format_term",
    "parse_query",
    "read_search",
]
