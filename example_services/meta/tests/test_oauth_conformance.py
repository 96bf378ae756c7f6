"""The OAuth endpoints against the RFCs, as clients other than srcore's would call them.

Requests are built by hand (form bodies, Basic headers, CORS preflights, a PyJWT check of
the issued tokens), on SQLite and PostgreSQL.
"""

from __future__ import annotations

import base64
import re
from typing import Any

import jwt
import pytest
from oauth_helpers import (
    TODO_CALLBACK,
    TODO_ID,
    TODO_SECRET,
    authorize_url,
    basic,
    exchange,
    get_code,
    oauth_app,
    pkce,
    query_of,
    register_client,
)

from srcore.testing import log_in_client

__all__ = ["oauth_app"]  # fixtures used by this module

RFC6749_ERRORS = {
    "invalid_request",
    "invalid_client",
    "invalid_grant",
    "unauthorized_client",
    "unsupported_grant_type",
    "invalid_scope",
}
STRANGER = {"REMOTE_ADDR": "203.0.113.9"}
OWNER = {"REMOTE_ADDR": "198.51.100.7"}


@pytest.fixture
def alice(accounts: Any) -> Any:
    return accounts.make("alice")


@pytest.fixture
def browser(oauth_app: Any, alice: Any) -> Any:
    return log_in_client(oauth_app.test_client(), alice)


def _tokens(browser: Any, scope: str = "meta/profile:RO") -> dict[str, Any]:
    verifier, challenge = pkce()
    code = get_code(browser, (verifier, challenge), scope=scope)
    response = exchange(browser, code, verifier)
    assert response.status_code == 200, response.get_json()
    body: dict[str, Any] = response.get_json()
    return body


def _introspect(client: Any, token: str, **form: str) -> dict[str, Any]:
    response = client.post("/oauth/introspect", data={"token": token, **form}, headers=basic())
    assert response.status_code == 200, response.get_data(as_text=True)
    body: dict[str, Any] = response.get_json()
    return body


def _refresh(client: Any, refresh_token: str, *, headers: Any = None, **form: str) -> Any:
    data = {"grant_type": "refresh_token", "refresh_token": refresh_token, **form}
    return client.post("/oauth/token", data=data, headers=basic() if headers is None else headers)


def _realm_challenge(response: Any) -> None:
    challenge = response.headers.get("WWW-Authenticate", "")
    assert re.match(r'^(Basic|Bearer) realm="[^"]+"', challenge), (
        response.status_code,
        challenge,
    )


# -- brute-force protection of the token endpoint -------------------------------------------


def test_strangers_failures_do_not_lock_the_real_client_out(oauth_app: Any) -> None:
    client = oauth_app.test_client()
    form = {"grant_type": "client_credentials"}
    answers = [
        client.post(
            "/oauth/token",
            data=form,
            headers=basic(TODO_ID, f"guess{i}"),
            environ_base=STRANGER,
        )
        for i in range(14)
    ]
    assert answers[0].status_code == 401
    throttled = [a for a in answers if a.status_code == 429]
    assert throttled, [a.status_code for a in answers]
    body = throttled[0].get_json()
    assert body["error"] in RFC6749_ERRORS, body
    assert throttled[0].headers["Cache-Control"] == "no-store"
    assert int(throttled[0].headers["Retry-After"]) > 0
    # The stranger's address stays throttled, even with the right secret ...
    again = client.post(
        "/oauth/token", data=form, headers=basic(TODO_ID, TODO_SECRET), environ_base=STRANGER
    )
    assert again.status_code == 429
    # ... but the real client, from its own address, is not locked out.
    real = client.post(
        "/oauth/token", data=form, headers=basic(TODO_ID, TODO_SECRET), environ_base=OWNER
    )
    assert real.status_code == 200, real.get_json()


def test_a_success_resets_the_clients_own_counter(oauth_app: Any) -> None:
    client = oauth_app.test_client()
    form = {"grant_type": "client_credentials"}

    def attempt(secret: str) -> int:
        response = client.post(
            "/oauth/token", data=form, headers=basic(TODO_ID, secret), environ_base=OWNER
        )
        return int(response.status_code)

    for round_ in range(3):
        assert [attempt(f"typo{round_}{i}") for i in range(3)] == [401, 401, 401]
        assert attempt(TODO_SECRET) == 200


# -- refresh: a refused request changes nothing ---------------------------------------------


@pytest.mark.parametrize(
    "refused",
    [
        {"scope": "meta/profile:RW"},  # wider than granted
        {"scope": "todo/tickets:RO"},  # another scope
        {"scope": "no such scope"},
        {"scope": "meta/profile:RO meta/profile:RO\x7f"},
    ],
)
def test_a_refused_refresh_does_not_burn_the_refresh_token(
    oauth_app: Any, browser: Any, refused: dict[str, str]
) -> None:
    tokens = _tokens(browser)
    bad = _refresh(browser, tokens["refresh_token"], **refused)
    assert bad.status_code == 400, bad.get_json()
    assert bad.get_json()["error"] in ("invalid_scope", "invalid_request")
    retry = _refresh(browser, tokens["refresh_token"])
    assert retry.status_code == 200, retry.get_json()
    assert _introspect(browser, retry.get_json()["access_token"])["active"] is True


def test_a_refresh_by_the_wrong_client_does_not_burn_the_refresh_token(
    oauth_app: Any, browser: Any, accounts: Any
) -> None:
    tokens = _tokens(browser)
    other = register_client(oauth_app, accounts, confidential=True)
    stolen = _refresh(browser, tokens["refresh_token"], headers=basic(other["id"], other["secret"]))
    assert stolen.status_code == 400 and stolen.get_json()["error"] == "invalid_grant"
    retry = _refresh(browser, tokens["refresh_token"])
    assert retry.status_code == 200, retry.get_json()


def test_refresh_may_narrow_the_scope(oauth_app: Any, browser: Any) -> None:
    tokens = _tokens(browser, scope="meta/profile:RO todo/tickets:RW")
    narrow = _refresh(browser, tokens["refresh_token"], scope="todo/tickets:RO")
    assert narrow.status_code == 200, narrow.get_json()
    body = narrow.get_json()
    assert body["scope"] == "todo/tickets:RO"
    claims = jwt.decode(body["access_token"], options={"verify_signature": False})
    assert claims["scope"] == "todo/tickets:RO"
    # The grant itself keeps what the user granted.
    full = _refresh(browser, body["refresh_token"])
    assert full.status_code == 200, full.get_json()
    assert set(full.get_json()["scope"].split()) == {"meta/profile:RO", "todo/tickets:RW"}


# -- revocation and introspection hints -------------------------------------------------------


def test_a_wrong_token_type_hint_does_not_stop_the_search(oauth_app: Any, browser: Any) -> None:
    tokens = _tokens(browser)
    access, refresh = tokens["access_token"], tokens["refresh_token"]
    assert _introspect(browser, access, token_type_hint="refresh_token")["active"] is True
    assert _introspect(browser, refresh, token_type_hint="access_token")["active"] is True
    revoked = browser.post(
        "/oauth/revoke",
        data={"token": access, "token_type_hint": "refresh_token"},
        headers=basic(),
    )
    assert revoked.status_code == 200
    assert _introspect(browser, access)["active"] is False
    browser.post(
        "/oauth/revoke",
        data={"token": refresh, "token_type_hint": "access_token"},
        headers=basic(),
    )
    assert _introspect(browser, refresh)["active"] is False


@pytest.mark.parametrize("path", ["/oauth/revoke", "/oauth/introspect"])
def test_an_unknown_token_type_hint_is_unsupported(oauth_app: Any, browser: Any, path: str) -> None:
    tokens = _tokens(browser)
    response = browser.post(
        path, data={"token": tokens["access_token"], "token_type_hint": "id_token"}, headers=basic()
    )
    assert response.status_code == 400
    assert response.get_json()["error"] == "unsupported_token_type"


def test_every_401_carries_a_challenge_with_a_realm(oauth_app: Any, browser: Any) -> None:
    client = oauth_app.test_client()
    wrong = basic(TODO_ID, "wrong")
    answers = [
        client.post("/oauth/token", data={"grant_type": "client_credentials"}, headers=wrong),
        client.post("/oauth/introspect", data={"token": "x"}, headers=wrong),
        client.post("/oauth/introspect", data={"token": "x"}),
        client.post("/oauth/revoke", data={"token": "x"}, headers=wrong),
        client.get("/oauth/revocations"),
        client.get("/api/profile"),
        client.get("/api/profile", headers={"Authorization": "Bearer nonsense"}),
    ]
    for response in answers:
        if response.status_code == 401:
            _realm_challenge(response)
    assert [r.status_code for r in answers].count(401) >= 5


# -- malformed requests -----------------------------------------------------------------------


def test_missing_grant_type_is_an_invalid_request(oauth_app: Any) -> None:
    response = oauth_app.test_client().post("/oauth/token", data={}, headers=basic())
    assert response.status_code == 400
    assert response.get_json()["error"] == "invalid_request"


def test_missing_response_type_is_an_invalid_request(browser: Any) -> None:
    url = authorize_url(challenge=pkce()[1]).replace("response_type=code&", "")
    response = browser.get(url)
    if response.status_code == 302:
        assert query_of(response.headers["Location"])["error"] == "invalid_request"
    else:
        assert response.status_code == 400
        assert "invalid_request" in response.get_data(as_text=True)


def test_repeated_parameters_are_refused(oauth_app: Any, browser: Any) -> None:
    client = oauth_app.test_client()
    twice = client.post(
        "/oauth/token",
        data={"grant_type": ["client_credentials", "client_credentials"]},
        headers=basic(),
    )
    assert twice.status_code == 400 and twice.get_json()["error"] == "invalid_request"
    tokens = _tokens(browser)
    revoke = browser.post(
        "/oauth/revoke", data={"token": [tokens["access_token"], "other"]}, headers=basic()
    )
    assert revoke.status_code == 400 and revoke.get_json()["error"] == "invalid_request"
    assert _introspect(browser, tokens["access_token"])["active"] is True
    url = authorize_url(challenge=pkce()[1]) + "&client_id=" + TODO_ID
    page = browser.get(url)
    assert page.status_code == 400 and "Location" not in page.headers


def test_basic_and_form_credentials_together_are_refused(oauth_app: Any) -> None:
    response = oauth_app.test_client().post(
        "/oauth/token",
        data={
            "grant_type": "client_credentials",
            "client_id": TODO_ID,
            "client_secret": TODO_SECRET,
        },
        headers=basic(),
    )
    assert response.status_code == 400
    assert response.get_json()["error"] == "invalid_request"
    other_id = oauth_app.test_client().post(
        "/oauth/token",
        data={"grant_type": "client_credentials", "client_id": "someone-else"},
        headers=basic(),
    )
    assert other_id.status_code == 400
    assert other_id.get_json()["error"] == "invalid_request"


def test_an_authorization_request_may_be_posted(browser: Any) -> None:
    """RFC 6749 3.1: the authorization endpoint takes POST as well as GET."""
    from urllib.parse import parse_qsl, urlsplit

    url = authorize_url(challenge=pkce()[1])
    form = dict(parse_qsl(urlsplit(url).query))
    token = re.search(
        r'name="csrf_token" value="([^"]+)"', browser.get("/forgot").get_data(as_text=True)
    )
    assert token
    response = browser.post("/oauth/authorize", data={**form, "csrf_token": token.group(1)})
    assert response.status_code == 302, response.get_data(as_text=True)[:300]
    assert "code" in query_of(response.headers["Location"])


def _raw_basic(raw: bytes) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(raw).decode()}


@pytest.mark.parametrize(
    "headers",
    [
        _raw_basic(b"\xff\xfe:\xff"),  # not UTF-8
        {"Authorization": "Basic !!!not base64!!!"},
        _raw_basic(b"no-colon-here"),
        _raw_basic(b"todo\x00:secret"),
        {"Authorization": "Basic"},
    ],
)
@pytest.mark.parametrize(
    ("method", "path", "form"),
    [
        ("POST", "/oauth/token", {"grant_type": "client_credentials"}),
        ("POST", "/oauth/revoke", {"token": "abc"}),
        ("POST", "/oauth/introspect", {"token": "abc"}),
        ("GET", "/oauth/revocations", {}),
        ("GET", "/api/profile", {}),
    ],
)
def test_a_malformed_basic_header_is_a_clear_client_error(
    oauth_app: Any, headers: dict[str, str], method: str, path: str, form: dict[str, str]
) -> None:
    client = oauth_app.test_client()
    response = client.open(path, method=method, data=form or None, headers=headers)
    assert response.status_code in (400, 401), (response.status_code, response.data[:300])
    if path.startswith("/oauth/") and path != "/oauth/revocations":
        assert response.get_json()["error"] in ("invalid_client", "invalid_request")
    if response.status_code == 401:
        _realm_challenge(response)


@pytest.mark.parametrize(
    ("path", "form"),
    [
        ("/oauth/token", {"grant_type": "client_credentials", "client_id": "\x00"}),
        ("/oauth/token", {"grant_type": "authorization_code", "code": "a\x00b"}),
        ("/oauth/token", {"grant_type": "refresh_token", "refresh_token": "\x00"}),
        ("/oauth/revoke", {"token": "ab\x00", "client_id": "x"}),
        ("/oauth/introspect", {"token": "\x00"}),
    ],
)
def test_nul_bytes_in_oauth_parameters_are_invalid_requests(
    oauth_app: Any, path: str, form: dict[str, str]
) -> None:
    headers = {} if "client_id" in form else basic()
    response = oauth_app.test_client().post(path, data=form, headers=headers)
    assert response.status_code in (400, 401), response.data[:300]
    assert response.get_json()["error"] in ("invalid_request", "invalid_client")


def test_nul_bytes_at_the_authorization_endpoint_are_refused(browser: Any) -> None:
    for url in (
        "/oauth/authorize?response_type=code&client_id=%00",
        authorize_url(challenge=pkce()[1], state="a%00b".replace("%00", "\x00")),
        authorize_url(TODO_ID, TODO_CALLBACK + "\x00", challenge=pkce()[1]),
    ):
        response = browser.get(url)
        assert response.status_code == 400, (url, response.status_code)
        assert "Location" not in response.headers


# -- transport: decided by the configured origin ----------------------------------------------


@pytest.mark.parametrize("path", ["/oauth/token", "/oauth/introspect", "/oauth/revoke"])
def test_any_host_header_on_plain_http_is_served(oauth_app: Any, path: str) -> None:
    """Behind a TLS proxy (or through an internal origin) meta sees http and another Host."""
    client = oauth_app.test_client()
    form = {"grant_type": "client_credentials"} if path == "/oauth/token" else {"token": "x"}
    response = client.post(path, data=form, headers=basic(), base_url="http://meta.internal")
    assert response.status_code == 200, response.get_data(as_text=True)[:300]


# -- CORS for browser apps ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "method"),
    [
        ("/oauth/token", "POST"),
        ("/oauth/revoke", "POST"),
        ("/.well-known/oauth-authorization-server", "GET"),
        ("/oauth/jwks.json", "GET"),
        ("/api/profile", "GET"),
    ],
)
def test_cors_preflight_and_response_for_public_clients(
    oauth_app: Any, path: str, method: str
) -> None:
    client = oauth_app.test_client()
    origin = {"Origin": "https://app.example"}
    preflight = client.options(
        path,
        headers={
            **origin,
            "Access-Control-Request-Method": method,
            "Access-Control-Request-Headers": "authorization, content-type",
        },
    )
    assert preflight.status_code in (200, 204)
    assert preflight.headers["Access-Control-Allow-Origin"] == "*"
    assert method in preflight.headers["Access-Control-Allow-Methods"]
    allowed = preflight.headers["Access-Control-Allow-Headers"].lower()
    assert "authorization" in allowed and "content-type" in allowed
    assert "Access-Control-Allow-Credentials" not in preflight.headers
    actual = client.open(path, method=method, headers=origin)
    assert actual.headers["Access-Control-Allow-Origin"] == "*"
    assert "Access-Control-Allow-Credentials" not in actual.headers


@pytest.mark.parametrize("path", ["/login", "/oauth/authorize", "/clients", "/profile"])
def test_no_cors_on_cookie_pages(oauth_app: Any, path: str) -> None:
    client = oauth_app.test_client()
    response = client.get(path, headers={"Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in response.headers
    preflight = client.options(
        path,
        headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
    )
    assert "Access-Control-Allow-Origin" not in preflight.headers


def test_a_public_browser_client_completes_the_flow(
    oauth_app: Any, browser: Any, accounts: Any
) -> None:
    """A single-page app: public client, PKCE, token and revocation from another origin."""
    spa = register_client(oauth_app, accounts, confidential=False)
    verifier, challenge = pkce()
    url = authorize_url(spa["id"], "https://app.example/cb", challenge=challenge)
    page = browser.get(url).get_data(as_text=True)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert token
    approved = browser.post(url, data={"decision": "approve", "csrf_token": token.group(1)})
    code = query_of(approved.headers["Location"])["code"]
    app_origin = {"Origin": "https://app.example"}
    response = oauth_app.test_client().post(
        "/oauth/token",
        data={
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": "https://app.example/cb",
            "client_id": spa["id"],
            "code_verifier": verifier,
        },
        headers=app_origin,
    )
    assert response.status_code == 200, response.get_json()
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    access = response.get_json()["access_token"]
    jwks = oauth_app.test_client().get("/oauth/jwks.json").get_json()
    key = jwt.PyJWK(jwks["keys"][0])
    claims = jwt.decode(
        access,
        key,
        algorithms=["EdDSA"],
        audience="meta",
        issuer=oauth_app.extensions["meta.oauth"].issuer,
    )
    assert claims["client_id"] == spa["id"]
    profile = oauth_app.test_client().get(
        "/api/profile", headers={**app_origin, "Authorization": f"Bearer {access}"}
    )
    assert profile.status_code == 200
    assert profile.headers["Access-Control-Allow-Origin"] == "*"


# -- native apps (RFC 8252) ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("registered", "used"),
    [
        ("http://127.0.0.1/cb", "http://127.0.0.1:53123/cb"),
        ("http://[::1]/cb", "http://[::1]:61000/cb"),
        ("http://127.0.0.1:8000/cb", "http://127.0.0.1:49152/cb"),
        ("com.example.app:/oauth/cb", "com.example.app:/oauth/cb"),
    ],
)
def test_native_app_redirects(
    oauth_app: Any, browser: Any, accounts: Any, registered: str, used: str
) -> None:
    app_client = register_client(oauth_app, accounts, confidential=False, redirect=registered)
    verifier, challenge = pkce()
    url = authorize_url(app_client["id"], used, challenge=challenge)
    page = browser.get(url)
    assert page.status_code == 200, page.get_data(as_text=True)[:400]
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.get_data(as_text=True))
    assert token
    approved = browser.post(url, data={"decision": "approve", "csrf_token": token.group(1)})
    assert approved.status_code == 302
    assert approved.headers["Location"].startswith(used + "?")
    code = query_of(approved.headers["Location"])["code"]
    response = browser.post(
        "/oauth/token",
        data={
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": used,
            "client_id": app_client["id"],
            "code_verifier": verifier,
        },
    )
    assert response.status_code == 200, response.get_json()


def test_loopback_port_freedom_is_only_for_loopback(
    oauth_app: Any, browser: Any, accounts: Any
) -> None:
    app_client = register_client(
        oauth_app, accounts, confidential=False, redirect="https://app.example/cb"
    )
    for other in ("https://app.example:8443/cb", "http://127.0.0.1:5000/cb"):
        page = browser.get(authorize_url(app_client["id"], other, challenge=pkce()[1]))
        assert page.status_code == 400 and "Location" not in page.headers
    loop = register_client(
        oauth_app, accounts, confidential=False, redirect="http://127.0.0.1/cb", owner="dev2"
    )
    for other in ("http://127.0.0.1:5000/other", "http://localhost:5000/cb"):
        page = browser.get(authorize_url(loop["id"], other, challenge=pkce()[1]))
        assert page.status_code == 400 and "Location" not in page.headers


@pytest.mark.parametrize(
    "uri",
    ["javascript:alert(1)", "data:text/html,x", "myapp:/cb", "com.example.app://x#frag", "file:/x"],
)
def test_unsafe_custom_schemes_are_refused(uri: str) -> None:
    from meta.oauth.clients import check_redirect_uri_value

    assert check_redirect_uri_value(uri) is not None


def test_a_plain_http_public_origin_is_a_clear_400(oauth_app: Any, monkeypatch: Any) -> None:
    """Transport security is the configured origin's: plain http off loopback is refused
    with an OAuth error (never Authlib's exception as a 500), whatever the request says."""
    monkeypatch.delenv("AUTHLIB_INSECURE_TRANSPORT", raising=False)
    monkeypatch.setattr(oauth_app.extensions["meta.oauth"], "issuer", "http://meta.example")
    client = oauth_app.test_client()
    for path, form in (
        ("/oauth/token", {"grant_type": "client_credentials"}),
        ("/oauth/introspect", {"token": "x"}),
        ("/oauth/revoke", {"token": "x"}),
    ):
        response = client.post(path, data=form, headers=basic(), base_url="https://meta.example")
        assert response.status_code == 400, (path, response.data[:200])
        assert response.get_json()["error"] == "invalid_request"
