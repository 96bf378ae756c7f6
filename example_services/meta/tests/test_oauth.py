"""The authorization server through Flask's test client, on SQLite and PostgreSQL."""

from __future__ import annotations

import time
from typing import Any

import pytest
from oauth_helpers import (
    TODO_CALLBACK,
    TODO_ID,
    TODO_SECRET,
    Captured,
    authorize_url,
    basic,
    events_in_db,
    exchange,
    get_code,
    oauth_app,
    pkce,
    pushes,
    query_of,
    verifier_for,
)

from srcore.auth.tokens import TokenError
from srcore.testing import log_in_client

__all__ = ["oauth_app", "pushes"]  # fixtures used by this module


@pytest.fixture
def alice(accounts: Any) -> Any:
    return accounts.make("alice")


@pytest.fixture
def browser(oauth_app: Any, alice: Any) -> Any:
    """A test client with alice logged in at meta."""
    return log_in_client(oauth_app.test_client(), alice)


def _tokens(browser: Any, **options: Any) -> dict[str, Any]:
    verifier, challenge = pkce()
    code = get_code(browser, (verifier, challenge), **options)
    response = exchange(browser, code, verifier)
    assert response.status_code == 200, response.get_json()
    body: dict[str, Any] = response.get_json()
    return body


def _introspect(client: Any, token: str) -> dict[str, Any]:
    response = client.post("/oauth/introspect", data={"token": token}, headers=basic())
    assert response.status_code == 200, response.get_data(as_text=True)
    body: dict[str, Any] = response.get_json()
    return body


# -- metadata and keys ------------------------------------------------------------------------


def test_metadata_names_every_endpoint(oauth_app: Any) -> None:
    body = oauth_app.test_client().get("/.well-known/oauth-authorization-server").get_json()
    issuer = oauth_app.extensions["meta.oauth"].issuer
    assert body["issuer"] == issuer
    assert body["token_endpoint"] == issuer + "/oauth/token"
    assert body["jwks_uri"] == issuer + "/oauth/jwks.json"
    assert body["code_challenge_methods_supported"] == ["S256"]
    assert "todo/tickets:RW" in body["scopes_supported"]
    assert "meta/profile:RO" in body["scopes_supported"]


def test_key_rotation_keeps_the_retired_key_published(oauth_app: Any, browser: Any) -> None:
    first = _tokens(browser)["access_token"]
    ((new_kid, _, _), _rsa) = oauth_app.extensions["meta.oauth"].ring.rotate(at_once=True)
    second = _tokens(browser)["access_token"]
    keys = browser.get("/oauth/jwks.json").get_json()["keys"]
    kids = {k["kid"] for k in keys if k["kty"] == "OKP"}  # the RSA key signs ID tokens only
    assert new_kid in kids and len(kids) == 2
    verify = verifier_for(oauth_app, audience=TODO_ID)
    assert verify.verify(first).subject == verify.verify(second).subject
    assert verify.verify(second).claims != verify.verify(first).claims


# -- authorization code + PKCE ---------------------------------------------------------------


def test_first_party_single_sign_on_issues_tokens(oauth_app: Any, browser: Any, alice: Any) -> None:
    verifier, challenge = pkce()
    response = browser.get(authorize_url(challenge=challenge, state="s-1"))
    assert response.status_code == 302
    assert response.headers["Location"].startswith(TODO_CALLBACK + "?")
    params = query_of(response.headers["Location"])
    assert params["state"] == "s-1"
    body = exchange(browser, params["code"], verifier).get_json()
    assert body["token_type"] == "Bearer" and body["refresh_token"]
    claims = verifier_for(oauth_app, audience=TODO_ID).verify(body["access_token"]).claims
    assert claims["iss"] == oauth_app.extensions["meta.oauth"].issuer
    assert claims["sub"] == str(alice.id)
    assert claims["client_id"] == TODO_ID
    assert sorted(claims["aud"]) == ["meta", "todo"]
    assert claims["scope"] == "meta/profile:RO"
    assert claims["exp"] - claims["iat"] == 3600
    assert claims["grant"] and claims["jti"]
    profile = browser.get(
        "/api/profile", headers={"Authorization": "Bearer " + body["access_token"]}
    )
    assert profile.status_code == 200
    assert profile.get_json()["username"] == "alice"


def test_logged_out_user_is_sent_to_login_and_back(oauth_app: Any) -> None:
    client = oauth_app.test_client()
    url = authorize_url(challenge=pkce()[1])
    response = client.get(url)
    assert response.status_code == 302
    location = response.headers["Location"]
    assert location.startswith("/login?")
    assert query_of(location)["next"] == url


def test_code_is_single_use_and_a_replay_revokes_its_tokens(
    oauth_app: Any, browser: Any, pushes: Captured
) -> None:
    verifier, challenge = pkce()
    code = get_code(browser, (verifier, challenge))
    first = exchange(browser, code, verifier)
    assert first.status_code == 200
    tokens = first.get_json()
    replay = exchange(browser, code, verifier)
    assert replay.status_code == 400
    assert replay.get_json()["error"] == "invalid_grant"
    assert _introspect(browser, tokens["access_token"]) == {"active": False}
    assert _introspect(browser, tokens["refresh_token"]) == {"active": False}
    grant = verifier_for(oauth_app, audience=TODO_ID).verify(tokens["access_token"]).claims
    assert ("grant", grant["grant"]) in events_in_db(oauth_app)
    assert any(
        e["kind"] == "grant" and e["subject"] == grant["grant"] for e in pushes.events(oauth_app)
    )


def test_expired_code_is_refused(oauth_app: Any, browser: Any) -> None:
    from datetime import timedelta

    oauth_app.extensions["meta.oauth"].code_lifetime = timedelta(seconds=-1)
    verifier, challenge = pkce()
    code = get_code(browser, (verifier, challenge))
    assert exchange(browser, code, verifier).get_json()["error"] == "invalid_grant"


def test_wrong_redirect_uri_is_an_error_page_never_a_redirect(browser: Any) -> None:
    for uri in (
        "https://evil.example/cb",
        TODO_CALLBACK + "/x",
        "http://127.0.0.1:5991/oauth/callback?x=1",
    ):
        response = browser.get(authorize_url(redirect_uri=uri, challenge=pkce()[1]))
        assert response.status_code == 400, uri
        assert "Location" not in response.headers
        assert "evil.example" not in response.headers.get("Refresh", "")


def test_unknown_client_is_an_error_page(browser: Any) -> None:
    response = browser.get(authorize_url(client_id="nobody", redirect_uri="https://evil.example/"))
    assert response.status_code == 400
    assert "Location" not in response.headers


def test_redirect_uri_must_match_at_the_token_endpoint(browser: Any) -> None:
    verifier, challenge = pkce()
    code = get_code(browser, (verifier, challenge))
    response = exchange(browser, code, verifier, redirect_uri=TODO_CALLBACK + "?other")
    assert response.status_code == 400
    assert response.get_json()["error"] == "invalid_grant"


def test_missing_pkce_is_refused(browser: Any) -> None:
    response = browser.get(authorize_url(challenge=None))
    assert response.status_code == 302
    params = query_of(response.headers["Location"])
    assert params["error"] == "invalid_request" and params["state"] == "xyz"
    assert "code" not in params


def test_wrong_code_verifier_is_refused(browser: Any) -> None:
    _verifier, challenge = pkce()
    code = get_code(browser, ("", challenge))
    other, _ = pkce()
    assert exchange(browser, code, other).get_json()["error"] == "invalid_grant"


def test_bad_client_secret_is_refused(browser: Any) -> None:
    verifier, challenge = pkce()
    code = get_code(browser, (verifier, challenge))
    response = exchange(browser, code, verifier, headers=basic(TODO_ID, "wrong"))
    assert response.status_code == 401
    assert response.get_json()["error"] == "invalid_client"


def test_unknown_scope_is_refused(browser: Any) -> None:
    response = browser.get(authorize_url(scope="todo/nothing:RW", challenge=pkce()[1]))
    assert query_of(response.headers["Location"])["error"] == "invalid_scope"
    response = browser.get(authorize_url(scope="elsewhere/x:RO", challenge=pkce()[1]))
    assert query_of(response.headers["Location"])["error"] == "invalid_scope"


def test_suspended_user_gets_no_tokens(oauth_app: Any, browser: Any, alice: Any) -> None:
    from srcore.db import UserType

    verifier, challenge = pkce()
    code = get_code(browser, (verifier, challenge))
    with oauth_app.extensions["srcore"].db.transaction() as session:
        from meta.models import User

        session.get(User, alice.id).user_type = UserType.suspended
    assert exchange(browser, code, verifier).get_json()["error"] == "invalid_grant"
    response = browser.get(authorize_url(challenge=challenge))
    assert response.status_code == 403
    assert "Location" not in response.headers


# -- refresh tokens ----------------------------------------------------------------------------


def test_refresh_rotates_and_a_reused_refresh_token_revokes_the_grant(
    oauth_app: Any, browser: Any, pushes: Captured
) -> None:
    tokens = _tokens(browser)
    form = {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]}
    rotated = browser.post("/oauth/token", data=form, headers=basic())
    assert rotated.status_code == 200
    fresh = rotated.get_json()
    assert fresh["refresh_token"] != tokens["refresh_token"]
    verify = verifier_for(oauth_app, audience=TODO_ID)
    grant = verify.verify(fresh["access_token"]).claims["grant"]
    assert grant == verify.verify(tokens["access_token"]).claims["grant"]

    reused = browser.post("/oauth/token", data=form, headers=basic())
    assert reused.status_code == 400 and reused.get_json()["error"] == "invalid_grant"
    # The whole grant is dead: the newest refresh token and access token too.
    again = {"grant_type": "refresh_token", "refresh_token": fresh["refresh_token"]}
    assert browser.post("/oauth/token", data=again, headers=basic()).status_code == 400
    assert _introspect(browser, fresh["access_token"]) == {"active": False}
    assert ("grant", grant) in events_in_db(oauth_app)
    assert {"kind": "grant", "subject": grant} in [
        {"kind": e["kind"], "subject": e["subject"]} for e in pushes.events(oauth_app)
    ]


def test_refresh_token_of_another_client_is_refused(
    oauth_app: Any, browser: Any, accounts: Any
) -> None:
    tokens = _tokens(browser)
    client = _register_client(oauth_app, accounts, confidential=True)
    form = {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]}
    response = browser.post(
        "/oauth/token", data=form, headers=basic(client["id"], client["secret"])
    )
    assert response.status_code == 400


# -- client credentials and the users API ----------------------------------------------------


def test_client_credentials_token_reads_users(oauth_app: Any, alice: Any) -> None:
    client = oauth_app.test_client()
    response = client.post(
        "/oauth/token",
        data={"grant_type": "client_credentials", "scope": "meta/profile:RO"},
        headers=basic(),
    )
    assert response.status_code == 200
    body = response.get_json()
    assert "refresh_token" not in body
    claims = verifier_for(oauth_app).verify(body["access_token"]).claims
    assert claims["sub"] == TODO_ID and "grant" not in claims
    auth = {"Authorization": "Bearer " + body["access_token"]}
    user = client.get(f"/api/users/{alice.id}", headers=auth)
    assert user.status_code == 200 and user.get_json()["username"] == "alice"
    assert client.get("/api/users/999999", headers=auth).status_code == 404
    assert client.get("/api/profile", headers=auth).status_code == 403


def test_user_tokens_cannot_read_other_users(oauth_app: Any, browser: Any, alice: Any) -> None:
    token = _tokens(browser)["access_token"]
    response = browser.get(f"/api/users/{alice.id}", headers={"Authorization": "Bearer " + token})
    assert response.status_code == 403


def test_scope_of_another_service_is_refused_by_the_scope_check(
    oauth_app: Any, browser: Any
) -> None:
    token = _tokens(browser, scope="todo/tickets:RW")["access_token"]
    claims = verifier_for(oauth_app, audience=TODO_ID).verify(token).claims
    assert claims["scope"] == "todo/tickets:RW"
    response = browser.get("/api/profile", headers={"Authorization": "Bearer " + token})
    assert response.status_code == 403
    assert 'error="insufficient_scope"' in response.headers["WWW-Authenticate"]


# -- verification by srcore's TokenVerifier over the JWKS ---------------------------------------


def test_expired_token_is_refused(oauth_app: Any, browser: Any) -> None:
    token = _tokens(browser)["access_token"]
    later = verifier_for(oauth_app, audience=TODO_ID, clock=lambda: time.time() + 3600 + 31)
    with pytest.raises(TokenError, match="expired"):
        later.verify(token)
    st = oauth_app.extensions["meta.oauth"]
    old, _ = st.sign_access_token(
        subject="1",
        client_id=TODO_ID,
        scope="meta/profile:RO",
        audience="meta",
        lifetime=60,
        now=int(time.time()) - 3600,
    )
    with pytest.raises(TokenError, match="expired"):
        verifier_for(oauth_app).verify(old)
    assert _introspect(oauth_app.test_client(), old) == {"active": False}


def _b64(data: bytes) -> str:
    import base64

    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def test_tampered_tokens_are_refused(oauth_app: Any, browser: Any) -> None:
    import json

    from srcore.auth import jose

    token = _tokens(browser)["access_token"]
    verify = verifier_for(oauth_app, audience=TODO_ID)
    verify.verify(token)
    header_b64, payload_b64, _sig = token.split(".")
    payload = json.loads(_b64decode(payload_b64))

    none_header = _b64(json.dumps({"alg": "none", "typ": "at+jwt"}).encode())
    with pytest.raises(TokenError):
        verify.verify(f"{none_header}.{payload_b64}.")
    header = json.loads(_b64decode(header_b64))
    wrong_key = jose.generate_key(header["kid"])
    with pytest.raises(TokenError, match="signature"):
        verify.verify(jose.sign(payload, wrong_key, typ="at+jwt"))
    st = oauth_app.extensions["meta.oauth"]
    with pytest.raises(TokenError, match="typ"):
        verify.verify(jose.sign(payload, st.ring.signing_key(), typ="JWT"))
    forged = dict(payload, sub="1", scope="meta/tokens:RW")
    with pytest.raises(TokenError, match="signature"):
        verify.verify(f"{header_b64}.{_b64(json.dumps(forged).encode())}.{_sig}")
    # meta's own API refuses them too.
    for bad in (f"{none_header}.{payload_b64}.", jose.sign(payload, wrong_key, typ="at+jwt")):
        response = browser.get("/api/profile", headers={"Authorization": "Bearer " + bad})
        assert response.status_code == 401


def _b64decode(text: str) -> bytes:
    import base64

    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


# -- revocation and introspection ------------------------------------------------------------


def test_revoking_an_access_token_emits_a_token_event(
    oauth_app: Any, browser: Any, pushes: Captured
) -> None:
    tokens = _tokens(browser)
    jti = verifier_for(oauth_app, audience=TODO_ID).verify(tokens["access_token"]).claims["jti"]
    assert _introspect(browser, tokens["access_token"])["active"] is True
    response = browser.post(
        "/oauth/revoke", data={"token": tokens["access_token"]}, headers=basic()
    )
    assert response.status_code == 200
    assert ("token", jti) in events_in_db(oauth_app)
    assert _introspect(browser, tokens["access_token"]) == {"active": False}
    # The refresh token lives on: only the access token was revoked.
    assert _introspect(browser, tokens["refresh_token"])["active"] is True
    event = next(e for e in pushes.events(oauth_app) if e["kind"] == "token")
    assert event["subject"] == jti and isinstance(event["expires_at"], int)
    response = browser.get(
        "/api/profile", headers={"Authorization": "Bearer " + tokens["access_token"]}
    )
    assert response.status_code == 401


def test_revoking_a_refresh_token_revokes_the_grant(oauth_app: Any, browser: Any) -> None:
    tokens = _tokens(browser)
    response = browser.post(
        "/oauth/revoke",
        data={"token": tokens["refresh_token"], "token_type_hint": "refresh_token"},
        headers=basic(),
    )
    assert response.status_code == 200
    assert _introspect(browser, tokens["access_token"]) == {"active": False}
    assert any(kind == "grant" for kind, _ in events_in_db(oauth_app))


def test_introspection_needs_client_authentication(oauth_app: Any, browser: Any) -> None:
    token = _tokens(browser)["access_token"]
    response = browser.post("/oauth/introspect", data={"token": token})
    assert response.status_code == 401
    body = _introspect(browser, token)
    assert body["active"] is True and body["username"] == "alice"
    assert body["client_id"] == TODO_ID and body["token_type"] == "Bearer"
    assert _introspect(browser, "garbage") == {"active": False}


def test_revocations_pull_needs_a_first_party_client(oauth_app: Any, browser: Any) -> None:
    tokens = _tokens(browser)
    browser.post("/oauth/revoke", data={"token": tokens["access_token"]}, headers=basic())
    assert browser.get("/oauth/revocations").status_code == 401
    assert browser.get("/oauth/revocations", headers=basic(TODO_ID, "nope")).status_code == 401
    body = browser.get("/oauth/revocations?since=0", headers=basic()).get_json()
    assert [e["kind"] for e in body["events"]] == ["token"]
    assert body["last"] == body["events"][-1]["seq"]
    after = browser.get(f"/oauth/revocations?since={body['last']}", headers=basic()).get_json()
    assert after == {"events": [], "last": body["last"]}
    assert browser.get("/oauth/revocations?since=-1", headers=basic()).status_code == 400
    for odd in ("%C2%B2", "%D9%A1"):  # superscript two, Arabic-Indic one: not ASCII digits
        assert browser.get(f"/oauth/revocations?since={odd}", headers=basic()).status_code == 400


def test_token_endpoint_locks_out_guessing(oauth_app: Any) -> None:
    client = oauth_app.test_client()
    form = {"grant_type": "client_credentials"}
    statuses = [
        client.post("/oauth/token", data=form, headers=basic(TODO_ID, f"guess{i}")).status_code
        for i in range(12)
    ]
    assert statuses[0] == 401
    assert 429 in statuses
    locked = client.post("/oauth/token", data=form, headers=basic(TODO_ID, TODO_SECRET))
    assert locked.status_code == 429 and int(locked.headers["Retry-After"]) > 0


# -- third-party clients and consent -----------------------------------------------------------


def _register_client(
    app: Any, accounts: Any, *, confidential: bool, redirect: str = "https://app.example/cb"
) -> dict[str, str]:
    owner = accounts.make(f"dev{int(time.time() * 1000000) % 10**9}")
    client = log_in_client(app.test_client(), owner)
    token = _csrf_token(client, "/clients")
    response = client.post(
        "/clients",
        data={
            "name": "Gadget",
            "redirect_uris": redirect,
            "kind": "confidential" if confidential else "public",
            "csrf_token": token,
        },
    )
    assert response.status_code == 200, response.get_data(as_text=True)[:800]
    page = response.get_data(as_text=True)
    import re

    client_id = re.search(r'id="client-id">([^<]+)<', page)
    secret = re.search(r'id="client-secret">([^<]+)<', page)
    assert client_id
    return {"id": client_id.group(1), "secret": secret.group(1) if secret else ""}


def _csrf_token(client: Any, path: str) -> str:
    import re

    page = client.get(path).get_data(as_text=True)
    match = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert match, path
    return match.group(1)


def test_third_party_client_gets_a_consent_screen_then_remembers(
    oauth_app: Any, browser: Any, accounts: Any
) -> None:
    gadget = _register_client(oauth_app, accounts, confidential=True)
    _verifier, challenge = pkce()
    url = authorize_url(
        gadget["id"],
        "https://app.example/cb",
        scope="todo/tickets:RO meta/profile:RO",
        challenge=challenge,
    )
    page = browser.get(url)
    assert page.status_code == 200
    text = page.get_data(as_text=True)
    assert "Gadget" in text and "todo/tickets:RO" in text
    assert "Tickets and comments" in text  # todo's manifest description
    assert "Todo" in text and "Meta" in text

    token = _csrf_token(browser, url)
    denied = browser.post(url, data={"decision": "deny", "csrf_token": token})
    assert denied.status_code == 302
    assert query_of(denied.headers["Location"])["error"] == "access_denied"

    approved = browser.post(url, data={"decision": "approve", "csrf_token": token})
    assert approved.status_code == 302
    assert "code" in query_of(approved.headers["Location"])
    again = browser.get(url)
    assert again.status_code == 302 and "code" in query_of(again.headers["Location"])
    # A wider request asks again.
    wider = authorize_url(
        gadget["id"], "https://app.example/cb", scope="todo/tickets:RW", challenge=challenge
    )
    assert browser.get(wider).status_code == 200


def test_consent_post_needs_csrf(oauth_app: Any, browser: Any, accounts: Any) -> None:
    gadget = _register_client(oauth_app, accounts, confidential=True)
    url = authorize_url(gadget["id"], "https://app.example/cb", challenge=pkce()[1])
    response = browser.post(url, data={"decision": "approve"})
    assert response.status_code == 400
    assert "Location" not in response.headers


def test_public_client_must_use_s256(oauth_app: Any, browser: Any, accounts: Any) -> None:
    app_client = _register_client(
        oauth_app, accounts, confidential=False, redirect="http://127.0.0.1:8765/cb"
    )
    verifier, challenge = pkce()
    plain = browser.get(
        authorize_url(
            app_client["id"], "http://127.0.0.1:8765/cb", challenge=verifier, method="plain"
        )
    )
    assert query_of(plain.headers["Location"])["error"] == "invalid_request"
    no_method = browser.get(
        authorize_url(app_client["id"], "http://127.0.0.1:8765/cb", challenge=verifier, method=None)
    )
    assert query_of(no_method.headers["Location"])["error"] == "invalid_request"
    missing = browser.get(authorize_url(app_client["id"], "http://127.0.0.1:8765/cb"))
    assert query_of(missing.headers["Location"])["error"] == "invalid_request"

    url = authorize_url(app_client["id"], "http://127.0.0.1:8765/cb", challenge=challenge)
    approved = browser.post(
        url, data={"decision": "approve", "csrf_token": _csrf_token(browser, url)}
    )
    code = query_of(approved.headers["Location"])["code"]
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": "http://127.0.0.1:8765/cb",
        "client_id": app_client["id"],
    }
    no_verifier = browser.post("/oauth/token", data=form)
    assert no_verifier.status_code == 400
    # A native app is asked about every time (RFC 8252 8.6): approve again.
    approved = browser.post(
        url, data={"decision": "approve", "csrf_token": _csrf_token(browser, url)}
    )
    code = query_of(approved.headers["Location"])["code"]
    ok = browser.post("/oauth/token", data={**form, "code": code, "code_verifier": verifier})
    assert ok.status_code == 200, ok.get_json()
    claims = verifier_for(oauth_app).verify(ok.get_json()["access_token"]).claims
    assert claims["aud"] == "meta" and claims["client_id"] == app_client["id"]
    # A public client cannot use client credentials.
    cc = browser.post(
        "/oauth/token", data={"grant_type": "client_credentials", "client_id": app_client["id"]}
    )
    assert cc.status_code in (400, 401)


def test_client_registration_checks_redirect_uris(oauth_app: Any, accounts: Any) -> None:
    owner = accounts.make("maker")
    client = log_in_client(oauth_app.test_client(), owner)
    for bad in (
        "http://app.example/cb",
        "https://app.example/cb#frag",
        "javascript:alert(1)",
        "/relative",
    ):
        response = client.post(
            "/clients",
            data={
                "name": "X",
                "redirect_uris": bad,
                "kind": "confidential",
                "csrf_token": _csrf_token(client, "/clients"),
            },
        )
        assert response.status_code == 400, bad


def test_deleting_a_client_emits_a_client_event(
    oauth_app: Any, accounts: Any, pushes: Captured
) -> None:
    gadget = _register_client(oauth_app, accounts, confidential=True)
    from meta.oauth.models import OAuthClient
    from sqlalchemy import select

    with oauth_app.extensions["srcore"].db.transaction() as session:
        owner_id = session.scalar(
            select(OAuthClient.owner_id).where(OAuthClient.client_id == gadget["id"])
        )
    owner = accounts.get(owner_id)
    client = log_in_client(oauth_app.test_client(), owner)
    response = client.post(
        f"/clients/{gadget['id']}/delete", data={"csrf_token": _csrf_token(client, "/clients")}
    )
    assert response.status_code == 302
    assert ("client", gadget["id"]) in events_in_db(oauth_app)
    form = {"grant_type": "refresh_token", "refresh_token": "x"}
    assert (
        client.post(
            "/oauth/token", data=form, headers=basic(gadget["id"], gadget["secret"])
        ).status_code
        == 401
    )


def test_login_next_cannot_leave_meta(oauth_app: Any, accounts: Any) -> None:
    from meta_constants import PASSWORD

    accounts.make("bob")
    oauth_app.config["WTF_CSRF_ENABLED"] = False
    for target in ("https://evil.example/", "//evil.example/", "/\\evil.example"):
        client = oauth_app.test_client()
        response = client.post(
            "/login?" + __import__("urllib.parse").parse.urlencode({"next": target}),
            data={"login": "bob", "password": PASSWORD},
        )
        assert response.status_code == 302
        assert response.headers["Location"].startswith("/"), target
        assert not response.headers["Location"].startswith(("//", "/\\")), target
    # The authorize URL itself is a fine target: log in, come back, get the code.
    client = oauth_app.test_client()
    url = authorize_url(challenge=pkce()[1])
    response = client.post(
        "/login?" + __import__("urllib.parse").parse.urlencode({"next": url}),
        data={"login": "bob", "password": PASSWORD},
    )
    assert response.headers["Location"] == url
    back = client.get(url)
    assert back.status_code == 302 and back.headers["Location"].startswith(TODO_CALLBACK)


# -- personal access tokens ----------------------------------------------------------------------


def test_personal_access_tokens_through_the_api(
    oauth_app: Any, alice: Any, pushes: Captured
) -> None:
    from meta.oauth.pats import create_token

    with oauth_app.test_request_context():
        from srcore.db import session

        _row, admin_token = create_token(
            session.get(type(alice), alice.id),
            name="boot",
            scope="meta/tokens:RW todo/tickets:RO",
            days=1,
        )
        session.commit()
    client = oauth_app.test_client()
    auth = {"Authorization": "Bearer " + admin_token}
    created = client.post(
        "/api/tokens",
        json={"name": "ci", "scopes": ["todo/tickets:RO"], "expires_in_days": 30},
        headers=auth,
    )
    assert created.status_code == 201, created.get_json()
    body = created.get_json()
    pat = body["token"]
    claims = verifier_for(oauth_app, audience=TODO_ID).verify(pat).claims
    assert claims["client_id"] == "pat" and claims["grant"] == f"pat:{body['id']}"
    assert claims["sub"] == str(alice.id) and claims["aud"] == TODO_ID
    listed = client.get("/api/tokens", headers=auth).get_json()["results"]
    assert {t["name"] for t in listed} == {"boot", "ci"}
    assert all("token" not in t for t in listed)

    bad = client.post("/api/tokens", json={"name": "x", "scopes": ["nope/x:RW"]}, headers=auth)
    assert bad.status_code == 400

    assert client.delete(f"/api/tokens/{body['id']}", headers=auth).status_code == 204
    assert _introspect(client, pat) == {"active": False}
    assert ("token", claims["jti"]) in events_in_db(oauth_app)
    assert any(
        e["kind"] == "token" and e["subject"] == claims["jti"] for e in pushes.events(oauth_app)
    )
    read_only = {"Authorization": "Bearer " + pat}
    assert client.get("/api/tokens", headers=read_only).status_code == 401


def test_security_page_creates_lists_and_revokes(oauth_app: Any, browser: Any) -> None:
    import re

    page = browser.get("/security")
    assert page.status_code == 200
    response = browser.post(
        "/security/tokens",
        data={
            "name": "laptop",
            "scopes": ["meta/profile:RO"],
            "expires": "never",
            "csrf_token": _csrf_token(browser, "/security"),
        },
    )
    assert response.status_code == 200
    token = re.search(r'id="new-token">([^<]+)<', response.get_data(as_text=True))
    assert token
    claims = verifier_for(oauth_app).verify(token.group(1)).claims
    assert claims["exp"] - claims["iat"] >= 3649 * 86400
    assert token.group(1) not in browser.get("/security").get_data(as_text=True)
    pat_id = int(claims["grant"].split(":")[1])
    revoked = browser.post(
        f"/security/tokens/{pat_id}/revoke", data={"csrf_token": _csrf_token(browser, "/security")}
    )
    assert revoked.status_code == 302
    assert _introspect(browser, token.group(1)) == {"active": False}

    _tokens(browser)
    assert "todo" in browser.get("/security").get_data(as_text=True)
    browser.post(
        f"/security/applications/{TODO_ID}/revoke",
        data={"csrf_token": _csrf_token(browser, "/security")},
    )
    assert any(kind == "grant" for kind, _ in events_in_db(oauth_app))


# -- hooks of the accounts side ----------------------------------------------------------


def _call_hook(app: Any, name: str, user_id: int, **changes: Any) -> None:
    import meta.oauth
    from meta.models import User

    with app.extensions["srcore"].db.transaction() as session:
        user = session.get(User, user_id)
        for key, value in changes.items():
            setattr(user, key, value)
        getattr(meta.oauth, name)(user)


def test_hooks_emit_user_events_and_push_them(
    oauth_app: Any, browser: Any, alice: Any, pushes: Captured
) -> None:
    from srcore.db import UserType

    tokens = _tokens(browser)
    time.sleep(1.05)  # not_before has a one-second resolution
    _call_hook(oauth_app, "on_logout", alice.id)
    # logging out ends web sessions only: API tokens keep working
    assert _introspect(browser, tokens["access_token"])["active"] is True
    _call_hook(oauth_app, "on_password_change", alice.id)
    assert _introspect(browser, tokens["access_token"]) == {"active": False}
    assert _introspect(browser, tokens["refresh_token"]) == {"active": False}
    _call_hook(oauth_app, "on_suspend", alice.id, user_type=UserType.suspended)
    _call_hook(oauth_app, "on_unsuspend", alice.id, user_type=UserType.active)
    kinds = [(e["kind"], e["subject"]) for e in pushes.events(oauth_app)]
    me = str(alice.id)
    grant = verifier_for(oauth_app).verify(tokens["access_token"]).claims["grant"]
    # The password change ends the grant by its own event too (exact, whatever the second).
    # A suspension ends the sessions (a session cut-off), not as a password change would.
    assert kinds == [
        ("session", me),
        ("grant", grant),
        ("user", me),
        ("session", me),
        ("suspend", me),
        ("unsuspend", me),
    ]
    assert [k for k, _ in events_in_db(oauth_app)] == [
        "session",
        "grant",
        "user",
        "session",
        "suspend",
        "unsuspend",
    ]
    user_event = pushes.events(oauth_app)[0]
    assert isinstance(user_event["not_before"], int) and user_event["seq"] >= 1


def test_hook_events_are_not_pushed_when_the_transaction_rolls_back(
    oauth_app: Any, alice: Any, pushes: Captured
) -> None:
    import meta.oauth
    from meta.models import User

    def failing_change() -> None:
        with oauth_app.extensions["srcore"].db.transaction() as session:
            meta.oauth.on_logout(session.get(User, alice.id))
            raise RuntimeError("the change failed")

    with pytest.raises(RuntimeError):
        failing_change()
    assert pushes.events(oauth_app) == []
    assert events_in_db(oauth_app) == []


def test_profile_change_pushes_the_profile(oauth_app: Any, alice: Any, pushes: Captured) -> None:
    _call_hook(oauth_app, "on_profile_change", alice.id, bio="Hello", location="Here")
    profiles = pushes.events(oauth_app, "profile:updated")
    assert len(profiles) == 1
    assert profiles[0]["id"] == alice.id
    assert profiles[0]["bio"] == "Hello"
    assert set(profiles[0]) == {
        "id",
        "username",
        "email",
        "user_type",
        "url",
        "location",
        "bio",
        "suspension_notice",
    }


def test_first_party_subscriptions_match_the_config(oauth_app: Any, alice: Any) -> None:
    from meta.oauth.network import Target
    from oauth_helpers import TODO_ID, TODO_ORIGIN, TODO_SECRET
    from sqlalchemy import select

    from srcore.webhooks import derive_secret
    from srcore.webhooks.models import Subscription

    def rows() -> list[Subscription]:
        with oauth_app.extensions["srcore"].db.transaction() as session:
            return list(session.scalars(select(Subscription).order_by(Subscription.id)))

    assert rows() == []  # nothing at app build
    _call_hook(oauth_app, "on_logout", alice.id)  # ensured before the first emit
    _call_hook(oauth_app, "on_logout", alice.id)
    (sub,) = rows()
    assert (sub.owner_id, sub.owner_client, sub.trusted, sub.enabled) == (None, TODO_ID, True, True)
    assert sub.url == TODO_ORIGIN + "/_srcore/events"
    assert sub.events == "revocation:issued profile:updated"
    assert sub.scopes == "meta/profile:RO"
    assert sub.secret == derive_secret(TODO_SECRET, TODO_ID)

    # A worker's start makes them match the config again: a new secret keeps the old one
    # signing for a while, a moved service gets the new URL, a removed one is disabled.
    network = oauth_app.extensions["meta.oauth"].network
    network.targets = [Target(TODO_ID, "http://10.0.0.5/_srcore/events", "whsec_bmV3")]
    with oauth_app.extensions["srcore"].db.session() as session:
        network.prepare(session)
    (sub,) = rows()
    assert sub.url == "http://10.0.0.5/_srcore/events"
    assert (sub.secret, sub.previous_secret) == ("whsec_bmV3", derive_secret(TODO_SECRET, TODO_ID))
    network.targets = []
    with oauth_app.extensions["srcore"].db.session() as session:
        network.prepare(session)
    (sub,) = rows()
    assert not sub.enabled


def test_subscription_changes_are_logged_only_once_committed(
    oauth_app: Any, caplog: pytest.LogCaptureFixture
) -> None:
    from meta.oauth.network import Target, ensure_subscriptions

    from srcore.db import utcnow

    db = oauth_app.extensions["srcore"].db
    targets = [Target(TODO_ID, "http://127.0.0.1:9/_srcore/events", "whsec_bmV3")]
    caplog.set_level("INFO", logger="meta.oauth.network")
    with db.session() as session:
        ensure_subscriptions(session, targets, now=utcnow())
        session.rollback()
    assert "subscribed" not in caplog.text  # nothing was subscribed: nothing is said
    with db.session() as session:
        ensure_subscriptions(session, targets, now=utcnow())
        session.commit()
        assert caplog.text.count(f"subscribed {TODO_ID} to meta's events") == 1
        ensure_subscriptions(session, [], now=utcnow())
        session.rollback()
        ensure_subscriptions(session, [], now=utcnow())
        session.commit()
    assert caplog.text.count("not configured") == 1
