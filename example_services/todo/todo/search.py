"""What a tracker's tickets can be searched by, in srcore's search grammar.

Words and phrases are looked for in a ticket's title and description; the keys are
``status:open|resolved``, ``resolution:fixed|implemented|duplicate|wont_fix|invalid`` and
``submitter:USERNAME``. Any term can be negated with ``!``.
"""

from __future__ import annotations

from sqlalchemy import ColumnElement, func, select

from srcore.search import SearchSchema, choice
from todo.models import Resolution, Ticket, TicketStatus, User

__all__ = ["TICKETS"]


def _submitter(username: str) -> ColumnElement[bool]:
    # A subquery keeps the list's own query free of joins; names match whatever their case.
    named = func.lower(User.username) == username.lower()
    return Ticket.submitter_id.in_(select(User.id).where(named))


TICKETS = SearchSchema(
    text=[Ticket.title, Ticket.description],
    keys={
        "status": choice(Ticket.status, TicketStatus),
        "resolution": choice(Ticket.resolution, Resolution),
        "submitter": _submitter,
    },
)
