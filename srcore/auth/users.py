"""The local copy of a meta account: a service's user row, written from meta's profile.

Both a login (:mod:`srcore.auth.oauth_client`) and a profile push from meta
(:mod:`srcore.auth.revocation`) write it, so it sits below them both.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from srcore.service import state

__all__ = ["profile_values", "upsert_user"]

#: The optional text fields of a profile and the longest each column holds (None: Text).
_PROFILE_FIELDS: dict[str, int | None] = {
    "url": 256,
    "location": 256,
    "bio": None,
    "suspension_notice": None,
}
_MAX_NAME = 256
# NUL cannot be stored in PostgreSQL text and a lone surrogate cannot be encoded to UTF-8.
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def _text(name: str, value: object, limit: int | None, *, required: bool) -> str | None:
    """A profile's text field as a user row can hold it; ValueError naming the field."""
    if value is None and not required:
        return None
    if not isinstance(value, str):
        if required:
            raise ValueError(f"the profile has no valid {name}")
        return None
    if (limit is not None and len(value) > limit) or _UNSTORABLE.search(value):
        raise ValueError(f"the profile's {name} is not text a user row can hold")
    return value


def profile_values(profile: Mapping[str, Any]) -> dict[str, Any]:
    """The user row's values from a profile meta sent; ValueError if it is not one.

    Everything is checked against the user table's columns (the id's range, each text's
    length, characters no database stores), so a profile that would not fit is refused
    here, not by the database halfway through a login or a push.
    """
    from srcore.db import UserType
    from srcore.routing import ID_MAX

    user_id = profile.get("id")
    if not isinstance(user_id, int) or isinstance(user_id, bool) or not 0 < user_id <= ID_MAX:
        raise ValueError("the profile has no valid id")
    username = _text("username", profile.get("username"), _MAX_NAME, required=True)
    if not username:
        raise ValueError("the profile has no valid username")
    email = _text("email", profile.get("email"), _MAX_NAME, required=True)
    try:
        user_type = UserType(str(profile.get("user_type") or "active"))
    except ValueError:
        raise ValueError(f"unknown user_type {profile.get('user_type')!r}") from None
    values: dict[str, Any] = {
        "id": user_id,
        "username": username,
        "email": email,
        "user_type": user_type,
    }
    for name, limit in _PROFILE_FIELDS.items():
        values[name] = _text(name, profile.get(name), limit, required=False)
    return values


def upsert_user(values: Mapping[str, Any], *, create: bool = True) -> int:
    """Write meta's view of a user into this service's user table; return the id.

    Runs in its own transaction, so the request's session is left alone. A local row
    holding the username of someone else (renamed at meta since) is moved aside.
    With ``create=False`` only an existing row is updated. A row of a deleted account
    is never written again (a profile push retried after the deletion would bring the
    dropped profile back).
    """
    from sqlalchemy import select
    from sqlalchemy.exc import IntegrityError

    from srcore.db import UserType

    st = state()
    model = st.user_model
    user_id = int(values["id"])
    if model is None:
        return user_id
    for attempt in range(2):
        try:
            with st.db.transaction() as db:
                row = db.get(model, user_id)
                if row is None and not create:
                    return user_id
                if row is not None and row.user_type == UserType.deleted:
                    return user_id
                clash = db.scalars(
                    select(model).where(model.username == values["username"], model.id != user_id)
                ).first()
                if clash is not None:
                    clash.username = f"~{clash.id}"
                    db.flush()
                if row is None:
                    row = model(**values)
                    db.add(row)
                else:
                    for name, value in values.items():
                        if name != "id" and getattr(row, name) != value:
                            setattr(row, name, value)
            return user_id
        except IntegrityError:
            if attempt:
                raise
            # Another request inserted the same user at the same time: update it instead.
    return user_id  # pragma: no cover
