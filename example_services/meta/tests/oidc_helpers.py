"""Helpers of the OpenID Connect tests: a meta app that may POST to 127.0.0.1, clients
registered with their OpenID fields, a back-channel logout receiver, the code dance."""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator
from typing import Any

import jwt
import pytest
from oauth_helpers import exchange, pkce, query_of

from srcore.testing import FormReceiver, form_receiver

REDIRECT = "https://rp.example/cb"
AFTER_LOGOUT = "https://rp.example/bye"


@pytest.fixture
def oidc_app(
    app: Any, srcore_database: Any, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Any]:
    """meta whose back-channel logout may reach 127.0.0.1 (the test's receiver)."""
    import meta
    from argon2 import PasswordHasher
    from meta_constants import FAST_HASHER
    from oauth_helpers import network_config

    monkeypatch.setenv("SRCORE__GLOBAL__ALLOW_PRIVATE_WEBHOOK_TARGETS", "127.0.0.0/8")
    path = tmp_path / "network.ini"
    path.write_text(network_config(srcore_database.config_path.read_text()), encoding="utf-8")
    application = meta.create_app(config=path, password_hasher=PasswordHasher(**FAST_HASHER))
    application.config["TESTING"] = True
    try:
        yield application
    finally:
        application.extensions["meta.oauth"].extra["backchannel"].close()
        application.extensions["srcore"].db.dispose()


def csrf_of(page: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert found, page[:500]
    return found.group(1)


def register(
    app: Any,
    accounts: Any,
    *,
    alg: str = "RS256",
    backchannel: str = "",
    after_logout: str = AFTER_LOGOUT,
    redirect: str = REDIRECT,
    owner: str = "developer",
    kind: str = "confidential",
) -> dict[str, str]:
    """Register a client at ``/clients`` with its OpenID fields; its id and secret."""
    from srcore.testing import log_in_client

    user = accounts.make(owner)
    browser = log_in_client(app.test_client(), user)
    response = post_client_form(
        browser,
        {
            "name": "Relying Party",
            "redirect_uris": redirect,
            "kind": kind,
            "id_token_alg": alg,
            "post_logout_redirect_uris": after_logout,
            "backchannel_logout_uri": backchannel,
        },
    )
    page = response.get_data(as_text=True)
    assert response.status_code == 200, page[:800]
    client_id = re.search(r'id="client-id">([^<]+)<', page)
    secret = re.search(r'id="client-secret">([^<]+)<', page)
    assert client_id, page[:800]
    return {"id": client_id.group(1), "secret": secret.group(1) if secret else ""}


def post_client_form(browser: Any, data: dict[str, str]) -> Any:
    token = csrf_of(browser.get("/clients").get_data(as_text=True))
    return browser.post("/clients", data={**data, "csrf_token": token})


def authorize(rp: dict[str, str], challenge: str, **params: str) -> str:
    from urllib.parse import urlencode

    query = {
        "response_type": "code",
        "client_id": rp["id"],
        "redirect_uri": REDIRECT,
        "scope": "openid",
        "state": "st4te",
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        **params,
    }
    return "/oauth/authorize?" + urlencode(query)


def consent(browser: Any, url: str) -> Any:
    """GET *url*; approve on the consent page if one is shown; the final response."""
    response = browser.get(url)
    if response.status_code == 200:
        response = browser.post(
            url,
            data={"decision": "approve", "csrf_token": csrf_of(response.get_data(as_text=True))},
        )
    return response


def code_for(browser: Any, rp: dict[str, str], **params: str) -> tuple[str, str]:
    """(code, PKCE verifier) of an approved authorization request."""
    verifier, challenge = pkce()
    response = consent(browser, authorize(rp, challenge, **params))
    assert response.status_code == 302, response.get_data(as_text=True)[:500]
    query = query_of(response.headers["Location"])
    assert "code" in query, query
    return query["code"], verifier


def tokens_for(browser: Any, rp: dict[str, str], **params: str) -> dict[str, Any]:
    from oauth_helpers import basic

    code, verifier = code_for(browser, rp, **params)
    response = exchange(
        browser, code, verifier, redirect_uri=REDIRECT, headers=basic(rp["id"], rp["secret"])
    )
    assert response.status_code == 200, response.get_json()
    body: dict[str, Any] = response.get_json()
    return body


def id_claims(app: Any, token: str, audience: str) -> dict[str, Any]:
    """Verify an ID token with PyJWT against meta's JWKS, as a relying party does."""
    jwks = app.test_client().get("/oauth/jwks.json").get_json()
    kid = jwt.get_unverified_header(token)["kid"]
    (entry,) = [k for k in jwks["keys"] if k["kid"] == kid]
    claims: dict[str, Any] = jwt.decode(
        token,
        jwt.PyJWK(entry),
        algorithms=[entry["alg"]],
        audience=audience,
        issuer=app.extensions["meta.oauth"].issuer,
    )
    return claims


@pytest.fixture
def receiver() -> Iterator[FormReceiver]:
    with form_receiver(f"/backchannel/{secrets.token_hex(4)}") as found:
        yield found
