"""A HEAD (a link checker, a mail scanner, a preview) to a link that does something when a
person opens it runs nothing: the confirmation link stays unused for the person."""

from __future__ import annotations

from datetime import timedelta
from typing import Any


def test_head_on_a_confirmation_link_confirms_nothing(app: Any, accounts: Any) -> None:
    from meta import logic
    from meta.models import TokenPurpose

    from srcore.db import UserType

    user = accounts.make("alice", confirmed=False)
    with app.extensions["srcore"].db.transaction() as session:
        secret = logic.issue_token(
            session,
            session.merge(user),
            TokenPurpose.confirm,
            email=user.email,
            lifetime=timedelta(hours=1),
        )
    client = app.test_client()
    head = client.head(f"/confirm/{secret}")
    assert head.status_code == 405
    assert head.headers["Allow"] == "GET"
    assert client.options(f"/confirm/{secret}").status_code == 200
    assert accounts.get(user.id).user_type == UserType.unconfirmed
    opened = client.get(f"/confirm/{secret}")
    assert opened.status_code == 302
    assert accounts.get(user.id).user_type == UserType.active
