"""The search grammar: a query string to a list of terms, and back.

A query is terms separated by whitespace::

    crash "exact phrase" status:open submitter:"some one" !label:wontfix !flaky

- a bare word or a ``"quoted phrase"`` is *text*: the service matches it, case-insensitively,
  as a substring of its declared text fields;
- ``key:value`` and ``key:"quoted value"`` are *keyed* terms: the service declares which keys
  exist and what each one means (see :mod:`srcore.search.sql`);
- a leading ``!`` negates any term: ``!status:open``, ``!flaky``, ``!"exact phrase"``.

Inside quotes, ``\\"`` is a quote and ``\\\\`` a backslash. A bare word whose part before
the first ``:`` looks like a key (a letter, then letters, digits, ``-`` or ``_``) is a keyed
term, so a text search for ``http://...`` must be quoted. To search for text that starts
with ``!``, quote it.

The scanner is a single left-to-right pass with no regular expression and no
backtracking, over at most :data:`MAX_QUERY_LENGTH` characters, so its cost is linear in
a bounded input whatever the input is. Every problem raises :class:`SearchError`, which
names the offending term; nothing else escapes :func:`parse_query`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

from srcore.validation.rules import Invalid

__all__ = [
    "MAX_QUERY_LENGTH",
    "MAX_TERMS",
    "SearchError",
    "Term",
    "format_query",
    "format_term",
    "parse_query",
]

#: The longest query accepted, in characters.
MAX_QUERY_LENGTH = 1000
#: The most terms one query may hold; each becomes a condition in the WHERE clause.
MAX_TERMS = 20

_QUOTE = '"'
_ESCAPE = "\\"
_NEGATE = "!"
_KEY_SEPARATOR = ":"


class SearchError(Invalid):
    """A query that cannot be searched; ``reason`` is the sentence shown to the user.

    ``term`` is the offending term as typed, when there is one. It is an
    :class:`~srcore.validation.Invalid`, so a :class:`~srcore.validation.Validation` can
    record it as a field error like any other bad value.
    """

    def __init__(self, reason: str, term: str | None = None) -> None:
        super().__init__(reason)
        self.term = term


@dataclasses.dataclass(frozen=True, slots=True)
class Term:
    """One term of a query: text to find, or a key and its value; maybe negated."""

    value: str
    key: str | None = None
    negated: bool = False


def _is_key(text: str) -> bool:
    """Whether *text* has the shape of a key: a letter, then letters, digits, ``-``, ``_``."""
    if not text or not (text[0].isascii() and text[0].isalpha()):
        return False
    return all(c.isascii() and (c.isalnum() or c in "-_") for c in text)


def _encodable(text: str) -> bool:
    """Whether *text* is valid Unicode all through (no lone surrogate a database refuses)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


#: Characters that reorder the text around them (bidirectional embeddings, overrides,
#: isolates and marks): quoted raw, one in a term could turn the rest of the message around.
_BIDI_CONTROLS = frozenset(
    "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
)


def _show(text: str) -> str:
    """A term as quoted in an error message: cut short if it is long, and with any
    character that reorders text written as its visible ``\\uXXXX`` code."""
    short = text if len(text) <= 40 else text[:39] + "…"
    if not _BIDI_CONTROLS.intersection(short):
        return short
    return "".join(f"\\u{ord(c):04x}" if c in _BIDI_CONTROLS else c for c in short)


def _read_quoted(query: str, start: int, term_start: int) -> tuple[str, int]:
    """The text of the quoted string opening at *start*, and the index after its close."""
    chars: list[str] = []
    i = start + 1
    while i < len(query):
        c = query[i]
        if c == _ESCAPE and i + 1 < len(query) and query[i + 1] in (_QUOTE, _ESCAPE):
            chars.append(query[i + 1])
            i += 2
        elif c == _QUOTE:
            return "".join(chars), i + 1
        else:
            chars.append(c)
            i += 1
    raise SearchError(
        f"The quote in {_show(query[term_start:])} is never closed; add the closing quote.",
        query[term_start:],
    )


def _read_term(query: str, start: int) -> tuple[Term, int]:
    """The term starting at *start* (not whitespace), and the index just after it."""
    i = start
    negated = query[i] == _NEGATE
    if negated:
        i += 1
    key: str | None = None
    if i < len(query) and query[i] == _QUOTE:
        value, i = _read_quoted(query, i, start)
        if not value.strip():
            raise SearchError(f"The phrase {_show(query[start:i])} is empty.", query[start:i])
    else:
        end = i
        while end < len(query) and not query[end].isspace() and query[end] != _QUOTE:
            end += 1
        word = query[i:end]
        name, colon, rest = word.partition(_KEY_SEPARATOR)
        if colon and _is_key(name):
            key = name.lower()
            if rest == "" and end < len(query) and query[end] == _QUOTE:
                value, end = _read_quoted(query, end, start)
            else:
                value = rest
            if not value.strip():
                raise SearchError(
                    f"The term {_show(query[start:end])} has no value after the colon.",
                    query[start:end],
                )
        elif not word:
            raise SearchError(
                "A lone ! negates nothing; put it right before a term, as in !status:open.",
                _NEGATE,
            )
        else:
            value = word
        i = end
    if i < len(query) and not query[i].isspace():
        token_end = i
        while token_end < len(query) and not query[token_end].isspace():
            token_end += 1
        bad = query[start:token_end]
        raise SearchError(
            f"The term {_show(bad)} has a quote in the middle; "
            "quotes go around a whole phrase or a whole value.",
            bad,
        )
    return Term(value, key, negated), i


def parse_query(query: str) -> list[Term]:
    """Split *query* into its terms; an empty or blank query has none.

    Raises :class:`SearchError` for a query longer than :data:`MAX_QUERY_LENGTH`, with
    more than :data:`MAX_TERMS` terms, an unclosed quote, a stray quote, a key with no
    value or a lone ``!``. Whether a key exists is for the service's schema to say.
    """
    if len(query) > MAX_QUERY_LENGTH:
        raise SearchError(f"The search is too long; keep it under {MAX_QUERY_LENGTH} characters.")
    if "\x00" in query or not _encodable(query):
        raise SearchError("The search holds characters that cannot be searched for.")
    terms: list[Term] = []
    i = 0
    while i < len(query):
        if query[i].isspace():
            i += 1
            continue
        if len(terms) == MAX_TERMS:
            raise SearchError(f"The search has too many terms; use at most {MAX_TERMS}.")
        term, i = _read_term(query, i)
        terms.append(term)
    return terms


def _quote(text: str) -> str:
    return _QUOTE + text.replace(_ESCAPE, _ESCAPE * 2).replace(_QUOTE, _ESCAPE + _QUOTE) + _QUOTE


def _needs_quotes(text: str, *, is_value: bool) -> bool:
    if not text or any(c.isspace() or c in (_QUOTE, _ESCAPE) for c in text):
        return True
    if is_value:
        return False
    if text.startswith(_NEGATE):
        return True
    name, colon, _ = text.partition(_KEY_SEPARATOR)
    return bool(colon) and _is_key(name)


def format_term(term: Term) -> str:
    """*term* written so that :func:`parse_query` reads it back as the same term."""
    prefix = _NEGATE if term.negated else ""
    if term.key is None:
        text = _quote(term.value) if _needs_quotes(term.value, is_value=False) else term.value
        return prefix + text
    value = _quote(term.value) if _needs_quotes(term.value, is_value=True) else term.value
    return f"{prefix}{term.key}{_KEY_SEPARATOR}{value}"


def format_query(terms: Iterable[Term]) -> str:
    """*terms* written as one query string (see :func:`format_term`)."""
    return " ".join(format_term(term) for term in terms)
