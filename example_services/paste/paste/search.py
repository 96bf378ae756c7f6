"""What lists of pastes can be searched by, in srcore's search grammar.

Words and phrases are looked for in a paste's title and text; the keys are
``visibility:public|unlisted``, ``format:plain|markdown``, ``lang:LANGUAGE`` (any of the
language's aliases, as the form offers them) and ``owner:USERNAME``. Any term can be
negated with ``!``.
"""

from __future__ import annotations

from sqlalchemy import ColumnElement, func, select

from paste.models import Format, Paste, User, Visibility
from srcore.highlighting import canonical_language
from srcore.search import SearchError, SearchSchema, choice

__all__ = ["PASTES"]


def _owner(username: str) -> ColumnElement[bool]:
    # A subquery keeps the list's own query free of joins; names match whatever their case.
    named = func.lower(User.username) == username.lower()
    return Paste.owner_id.in_(select(User.id).where(named))


def _language(name: str) -> ColumnElement[bool]:
    canonical = canonical_language(name.strip())
    if canonical is None:
        raise SearchError("no language is called that.")
    return Paste.language == canonical


PASTES = SearchSchema(
    text=[Paste.title, Paste.text],
    keys={
        "visibility": choice(Paste.visibility, Visibility),
        "format": choice(Paste.format, Format),
        "lang": _language,
        "owner": _owner,
    },
)
