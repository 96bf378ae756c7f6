"""A paste's owner edits or deletes it from one tab while another request changes or
deletes it: the write judges the paste as it is when it writes, not as it was read.

The other request's change runs, committed in its own transaction, just before the
request under test writes anything: the widest window a concurrent request could hit.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from paste import logic
from paste.models import Paste, Visibility
from sqlalchemy import delete, func, select, update

from srcore.testing import log_in_client, races
from srcore.webhooks.models import OutboxRow


@pytest.fixture
def before_first_write(app: Any) -> Iterator[Callable[[Callable[[], None]], None]]:
    """``before_first_write(change)``: run *change* once, in a transaction of its own,
    just before the next request's first INSERT, UPDATE, DELETE or flush."""
    with races.before_first_write(app) as change_meanwhile:
        yield change_meanwhile


@pytest.fixture
def paste(app: Any, user: Any) -> Paste:
    with app.extensions["srcore"].db.transaction() as session:
        found = Paste(owner_id=user.id, short_id=logic.new_short_id(), text="hello")
        session.add(found)
    return found


def meanwhile(app: Any, paste: Paste, what: str) -> Callable[[], None]:
    def change() -> None:
        with app.extensions["srcore"].db.transaction() as session:
            if what == "deleted":
                session.execute(delete(Paste).where(Paste.id == paste.id))
            else:
                unlisted = {"visibility": Visibility.unlisted}
                session.execute(update(Paste).where(Paste.id == paste.id).values(unlisted))

    return change


def outbox(app: Any) -> list[tuple[str, str | None]]:
    with app.extensions["srcore"].db.transaction() as session:
        rows = session.scalars(select(OutboxRow).order_by(OutboxRow.id))
        return [(row.event, row.visibility) for row in rows]


@pytest.mark.parametrize("action", ["edit", "delete"])
def test_a_paste_deleted_meanwhile_is_a_404(
    app: Any, user: Any, paste: Paste, csrf_token: Any, before_first_write: Any, action: str
) -> None:
    """Not a 500 (the edit's UPDATE matched nothing), nor a second paste:deleted."""
    client = log_in_client(app.test_client(), user)
    path = f"/p/{paste.short_id}/{action}"
    token = csrf_token(client, path)
    before_first_write(meanwhile(app, paste, "deleted"))
    answer = client.post(path, data={"text": "changed", "csrf_token": token})
    assert answer.status_code == 404
    with app.extensions["srcore"].db.transaction() as session:
        assert session.scalar(select(func.count()).select_from(Paste)) == 0
    assert outbox(app) == []


def test_an_edit_records_the_visibility_set_meanwhile(
    app: Any, user: Any, paste: Paste, csrf_token: Any, before_first_write: Any
) -> None:
    """The paste became unlisted from another tab before this edit (which says nothing of
    its visibility) wrote: the edit's paste:updated, with the new text, is recorded
    unlisted and reaches the owner alone; it was recorded public and reached everyone."""
    client = log_in_client(app.test_client(), user)
    path = f"/p/{paste.short_id}/edit"
    token = csrf_token(client, path)
    before_first_write(meanwhile(app, paste, "unlisted"))
    answer = client.post(path, data={"text": "changed", "csrf_token": token})
    assert answer.status_code == 302
    assert outbox(app) == [("paste:updated", "unlisted")]
    with app.extensions["srcore"].db.transaction() as session:
        stored = session.scalars(select(Paste)).one()
        assert (stored.text, stored.visibility) == ("changed", Visibility.unlisted)
