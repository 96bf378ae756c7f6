"""meta's surfaces for the network's services, probed by an outsider on the network.

The revocation pull, the profile API a service's token reaches, token revocation and
introspection by a client that is not the token's. Hostile tokens are minted with PyJWT,
which meta does not use itself.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import jwt
import pytest
from oauth_helpers import (
    TODO_ID,
    basic,
    events_in_db,
    exchange,
    get_code,
    oauth_app,
    pkce,
    register_client,
)

from srcore.identity.protocol import MAX_SEQ
from srcore.testing import log_in_client

__all__ = ["oauth_app"]  # the fixture this module uses


@pytest.fixture
def alice(accounts: Any) -> Any:
    return accounts.make("alice")


def _todo_tokens(oauth_app: Any, alice: Any) -> dict[str, Any]:
    browser = log_in_client(oauth_app.test_client(), alice)
    verifier, challenge = pkce()
    code = get_code(browser, (verifier, challenge))
    response = exchange(browser, code, verifier)
    assert response.status_code == 200, response.get_json()
    body: dict[str, Any] = response.get_json()
    return body


def test_the_pull_answers_every_seq_a_service_may_hold(oauth_app: Any) -> None:
    client = oauth_app.test_client()
    for since in (2**31 - 2, 2**31 - 1, 2**31, 10**17, MAX_SEQ):
        # Past the seq column's range on PostgreSQL too: nothing after it, not a 500.
        last = client.get(f"/oauth/revocations?since={since}", headers=basic())
        assert last.status_code == 200, since
        assert last.get_json() == {"events": [], "last": since}
    for since in (str(MAX_SEQ + 1), "9" * 20, "1" * 400, "1e3", "0x10", " 1", "+1"):
        refused = client.get(
            "/oauth/revocations",
            query_string={"since": since},
            headers={**basic(), "Accept": "application/json"},
        )
        assert refused.status_code == 400, since
        # The OAuth error form srcore's puller reads (error, error_description).
        assert refused.get_json()["error"] == "invalid_request", since
        assert "since" in refused.get_json()["error_description"]


def test_a_third_party_client_cannot_pull_the_networks_revocations(
    oauth_app: Any, accounts: Any
) -> None:
    app = register_client(oauth_app, accounts, confidential=True)
    client = oauth_app.test_client()
    refused = client.get("/oauth/revocations", headers=basic(app["id"], app["secret"]))
    assert refused.status_code == 401
    assert "Basic" in refused.headers["WWW-Authenticate"]


def test_a_token_meta_signed_for_todo_alone_is_refused_by_meta(oauth_app: Any, alice: Any) -> None:
    st = oauth_app.extensions["meta.oauth"]
    token, _ = st.sign_access_token(
        subject=str(alice.id),
        client_id=TODO_ID,
        scope="meta/profile:RO",
        audience="todo",
        lifetime=300,
    )
    response = oauth_app.test_client().get(
        "/api/profile", headers={"Authorization": f"Bearer {token}"}
    )
    assert response.status_code == 401
    assert "another service" in response.get_json()["errors"][0]["reason"]


def test_hostile_tokens_at_meta_are_refused(oauth_app: Any, alice: Any) -> None:
    st = oauth_app.extensions["meta.oauth"]
    now = int(time.time())
    claims = {
        "iss": st.issuer,
        "sub": str(alice.id),
        "aud": "meta",
        "client_id": TODO_ID,
        "scope": "meta/profile:RO",
        "iat": now,
        "exp": now + 300,
        "jti": uuid.uuid4().hex,
    }
    jwks = oauth_app.test_client().get("/oauth/jwks.json").get_json()
    assert all("d" not in key for key in jwks["keys"])
    public_x = jwks["keys"][0]["x"].encode()
    typ = {"typ": "at+jwt"}
    for name, token in {
        "alg none": jwt.encode(claims, None, "none", typ),
        "HS256 keyed with the public key": jwt.encode(claims, public_x, "HS256", typ),
        "HS256 with a jku": jwt.encode(
            claims, b"k" * 32, "HS256", {**typ, "jku": "https://keys.invalid/jwks.json"}
        ),
    }.items():
        for path in ("/api/profile", f"/api/users/{alice.id}", "/oauth/userinfo"):
            response = oauth_app.test_client().get(
                path, headers={"Authorization": f"Bearer {token}"}
            )
            assert response.status_code in (401, 404), (name, path, response.status_code)
            assert response.status_code != 404 or path == "/oauth/userinfo"


def test_another_client_can_neither_revoke_nor_read_todos_token(
    oauth_app: Any, alice: Any, accounts: Any
) -> None:
    tokens = _todo_tokens(oauth_app, alice)
    gadget = register_client(oauth_app, accounts, confidential=True)
    client = oauth_app.test_client()
    before = events_in_db(oauth_app)
    for token in (tokens["access_token"], tokens["refresh_token"]):
        client.post("/oauth/revoke", data={"token": token}, headers=basic(*gadget.values()))
        seen = client.post(
            "/oauth/introspect", data={"token": token}, headers=basic(*gadget.values())
        )
        assert seen.status_code in (200, 401, 403), seen.status_code
        assert seen.status_code != 200 or seen.get_json() == {"active": False}
    assert events_in_db(oauth_app) == before
    mine = client.post("/oauth/introspect", data={"token": tokens["access_token"]}, headers=basic())
    assert mine.get_json()["active"] is True
