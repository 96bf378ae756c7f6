"""The local copy of a meta account: a service's user row, written from meta's profile.

Both a login (:mod:`srcore.auth.oauth_client`) and a profile push from meta
(:mod:`srcore.auth.revocation`) write it, so it sits below them both.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from srcore.service import state

__all__ = ["profile_values", "upsert_user"]

_PROFILE_FIELDS = ("url", "location", "bio", "suspension_notice")


def profile_values(profile: Mapping[str, Any]) -> dict[str, Any]:
    """The user row's values from a profile meta sent; ValueError if it is not one."""
    from srcore.db import UserType

    user_id, username, email = profile.get("id"), profile.get("username"), profile.get("email")
    if not isinstance(user_id, int) or isinstance(user_id, bool) or user_id <= 0:
        raise ValueError("the profile has no valid id")
    if not isinstance(username, str) or not username or len(username) > 256:
        raise ValueError("the profile has no valid username")
    if not isinstance(email, str) or len(email) > 256:
        raise ValueError("the profile has no valid email")
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
    for name in _PROFILE_FIELDS:
        value = profile.get(name)
        values[name] = value if isinstance(value, str) else None
    return values


def upsert_user(values: Mapping[str, Any], *, create: bool = True) -> int:
    """Write meta's view of a user into this service's user table; return the id.

    Runs in its own transaction, so the request's session is left alone. A local row
    holding the username of someone else (renamed at meta since) is moved aside.
    With ``create=False`` only an existing row is updated.
    """
    from sqlalchemy import select
    from sqlalchemy.exc import IntegrityError

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
