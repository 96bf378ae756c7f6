"""Fixtures and helpers of the OAuth tests: a network config with todo as a first-party
client, the webhooks meta sends, PKCE pairs and the authorization-code dance on a test client."""

from __future__ import annotations

import base64
import hashlib
import secrets
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
from argon2 import PasswordHasher
from meta_constants import FAST_HASHER

TODO_ID = "todo"
TODO_SECRET = "todo-client-secret-" + "x" * 24
TODO_ORIGIN = "http://127.0.0.1:5991"
TODO_CALLBACK = TODO_ORIGIN + "/oauth/callback"


def network_config(base: str, *, todo_origin: str = TODO_ORIGIN) -> str:
    """The plugin's meta-only config plus a [todo] section that is a first-party client."""
    return (
        base
        + "\n[todo]\n"
        + f"origin = {todo_origin}\n"
        + "database-url = sqlite:////nonexistent/todo.db\n"
        + f"secret-key = {secrets.token_urlsafe(40)}\n"
        + f"oauth-client-id = {TODO_ID}\n"
        + f"oauth-client-secret = {TODO_SECRET}\n"
    )


class Captured:
    """What meta would send the services: its webhooks in srcore's outbox, in order."""

    def rows(self, app: Any, event: str) -> list[dict[str, Any]]:
        """The data of every outbox row of *event*, oldest first."""
        import json

        from sqlalchemy import select

        from srcore.webhooks.models import OutboxRow

        with app.extensions["srcore"].db.transaction() as session:
            rows = session.scalars(
                select(OutboxRow).where(OutboxRow.event == event).order_by(OutboxRow.id)
            )
            return [json.loads(row.payload) for row in rows]

    def events(self, app: Any, event: str = "revocation:issued") -> list[dict[str, Any]]:
        """The revocation events sent (``revocation:issued``), or the profiles
        (``profile:updated``)."""
        rows = self.rows(app, event)
        if event != "revocation:issued":
            return rows
        return [e for row in rows for e in row["events"]]


@pytest.fixture
def pushes() -> Captured:
    return Captured()


@pytest.fixture
def oauth_app(app: Any, srcore_database: Any, tmp_path: Any) -> Iterator[Any]:
    """meta in a network with todo; what it sends stays in its outbox (no worker runs)."""
    import meta

    path = tmp_path / "network.ini"
    path.write_text(network_config(srcore_database.config_path.read_text()), encoding="utf-8")
    application = meta.create_app(config=path, password_hasher=PasswordHasher(**FAST_HASHER))
    application.config["TESTING"] = True
    try:
        yield application
    finally:
        application.extensions["srcore"].db.dispose()


def pkce() -> tuple[str, str]:
    """A (verifier, S256 challenge) pair."""
    verifier = secrets.token_urlsafe(48)
    digest = hashlib.sha256(verifier.encode()).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def authorize_url(
    client_id: str = TODO_ID,
    redirect_uri: str | None = TODO_CALLBACK,
    *,
    scope: str | None = "meta/profile:RO",
    challenge: str | None = None,
    method: str | None = "S256",
    state: str = "xyz",
    **extra: str,
) -> str:
    params = {"response_type": "code", "client_id": client_id, "state": state, **extra}
    if redirect_uri is not None:
        params["redirect_uri"] = redirect_uri
    if scope is not None:
        params["scope"] = scope
    if challenge is not None:
        params["code_challenge"] = challenge
        if method is not None:
            params["code_challenge_method"] = method
    return "/oauth/authorize?" + urlencode(params)


def query_of(location: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}


def get_code(client: Any, verifier_challenge: tuple[str, str] | None = None, **options: Any) -> str:
    """Run /oauth/authorize for a logged-in client that needs no consent; return the code."""
    challenge = (verifier_challenge or pkce())[1]
    response = client.get(authorize_url(challenge=challenge, **options))
    assert response.status_code == 302, response.get_data(as_text=True)[:500]
    params = query_of(response.headers["Location"])
    assert "code" in params, params
    return params["code"]


def basic(client_id: str = TODO_ID, secret: str = TODO_SECRET) -> dict[str, str]:
    raw = f"{client_id}:{secret}".encode()
    return {"Authorization": "Basic " + base64.b64encode(raw).decode()}


def exchange(client: Any, code: str, verifier: str, *, headers: Any = None, **form: str) -> Any:
    data = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": TODO_CALLBACK,
        "code_verifier": verifier,
        **form,
    }
    return client.post("/oauth/token", data=data, headers=basic() if headers is None else headers)


def verifier_for(app: Any, audience: str = "meta", **options: Any) -> Any:
    """srcore's TokenVerifier over meta's published JWKS (as a service would see it)."""
    from joserfc.jwk import KeySet

    from srcore.auth.tokens import StaticKeySource, TokenVerifier

    jwks = app.test_client().get("/oauth/jwks.json").get_json()
    return TokenVerifier(
        keys=StaticKeySource(KeySet.import_key_set(jwks)),
        issuer=app.extensions["meta.oauth"].issuer,
        audience=audience,
        **options,
    )


def events_in_db(app: Any) -> list[tuple[str, str]]:
    from meta.oauth.models import RevocationEvent
    from sqlalchemy import select

    with app.extensions["srcore"].db.transaction() as session:
        rows = session.scalars(select(RevocationEvent).order_by(RevocationEvent.seq))
        return [(row.kind, row.subject) for row in rows]


def register_client(
    app: Any,
    accounts: Any,
    *,
    confidential: bool,
    redirect: str = "https://app.example/cb",
    owner: str = "developer",
) -> dict[str, str]:
    """Register a third-party client through the ``/clients`` page; its id and secret."""
    import re

    from srcore.testing import log_in_client

    user = accounts.make(owner)
    client = log_in_client(app.test_client(), user)
    page = client.get("/clients").get_data(as_text=True)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert token, page[:500]
    response = client.post(
        "/clients",
        data={
            "name": "Gadget",
            "redirect_uris": redirect,
            "kind": "confidential" if confidential else "public",
            "csrf_token": token.group(1),
        },
    )
    assert response.status_code == 200, response.get_data(as_text=True)[:800]
    page = response.get_data(as_text=True)
    client_id = re.search(r'id="client-id">([^<]+)<', page)
    secret = re.search(r'id="client-secret">([^<]+)<', page)
    assert client_id, page[:800]
    return {"id": client_id.group(1), "secret": secret.group(1) if secret else ""}
