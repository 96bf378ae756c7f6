"""Users, their sessions and their tokens, made the way the real services make them.

A test user is a row of the service's user table; a logged-in client carries the
service's real session cookie; a token is signed exactly as meta signs access tokens,
with a key the test app trusts (the ``srcore_signing_key`` fixture).
"""

from __future__ import annotations

import itertools
import time
import uuid
from typing import Any

__all__ = ["TEST_ISSUER", "create_user", "log_in_client", "mint_token", "session_cookie"]


#: The issuer of the tokens minted by :func:`mint_token`.
TEST_ISSUER = "http://meta.srcore.test"


_user_ids = itertools.count(1000)


def _signing_key() -> Any:
    from srcore.auth import jose

    return jose.generate_key("srcore-test")


def mint_token(
    key: Any,
    *,
    audience: str,
    scopes: str,
    user_id: int | None = None,
    client_id: str = "srcore-test-client",
    expires_in: int = 3600,
    issuer: str = TEST_ISSUER,
    **claims: Any,
) -> str:
    """Sign an access token exactly as meta does (RFC 9068, EdDSA over Ed25519)."""
    from srcore.auth import jose

    now = int(time.time())
    payload: dict[str, Any] = {
        "iss": issuer,
        "sub": str(user_id) if user_id is not None else client_id,
        "aud": audience,
        "client_id": client_id,
        "scope": scopes,
        "iat": now,
        "exp": now + expires_in,
        "jti": uuid.uuid4().hex,
    }
    payload.update(claims)
    return jose.sign(payload, key, typ="at+jwt")


def create_user(app: Any, username: str = "alice", **fields: Any) -> Any:
    """Insert a user row into *app*'s database and return it (detached, loaded)."""
    from srcore.db import UserType

    model = app.extensions["srcore"].user_model
    if model is None:
        raise RuntimeError("the service passes no user_model to srcore.create_app")
    values: dict[str, Any] = {
        "id": next(_user_ids),
        "username": username,
        "email": f"{username}@example.org",
        "user_type": UserType.active,
    }
    values.update(fields)
    with app.extensions["srcore"].db.transaction() as session:
        user = model(**values)
        session.add(user)
    return user


def _session_values(app: Any, user: Any) -> dict[str, Any]:
    """What the app's login backend adds to a new session of *user* (a server-side
    session id, for one), if it keeps sessions of its own."""
    backend = app.extensions["srcore"].login
    start = getattr(backend, "session_values", None)
    if start is None:
        return {}
    with app.test_request_context(method="POST"):
        values: dict[str, Any] = start(user.id)
    return values


def log_in_client(client: Any, user: Any) -> Any:
    """Log *user* in on a Flask test *client*, through the service's real session cookie."""
    from srcore.auth.ended import new_session_id

    values = _session_values(client.application, user)
    with client.session_transaction() as session:
        session.clear()
        session["_uid"] = user.id
        session["_sid"] = new_session_id()
        session.update(values)
        session.permanent = True
    return client


def session_cookie(app: Any, user: Any) -> tuple[str, str]:
    """The name and value of *app*'s session cookie with *user* logged in.

    Lets a browser test start logged in, signed with the service's real secret key,
    without any login route in the running app.
    """
    from flask.sessions import SecureCookieSessionInterface

    serializer = SecureCookieSessionInterface().get_signing_serializer(app)
    if serializer is None:
        raise RuntimeError("the app has no secret key")
    from srcore.auth.ended import new_session_id

    values = {"_uid": user.id, "_sid": new_session_id(), **_session_values(app, user)}
    value = serializer.dumps({**values, "_permanent": True})
    # The name the app reads: ``__Host-`` prefixed when its origin is https.
    return app.session_interface.get_cookie_name(app), str(value)
