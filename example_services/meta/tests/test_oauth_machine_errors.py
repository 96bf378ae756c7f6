"""The errors of meta's machine endpoints, as a client that knows only the RFCs reads them.

Programs call the token, revocation and introspection endpoints, the services' pull of
revocations, UserInfo, the keys and the metadata documents: each error they get is the
protocol's JSON (``error``, ``error_description``), with the status and challenge the
spec names, whatever produced it (routing, srcore before the view, the view, a failure
after it). oauthlib, which meta does not use, turns such a body into its exception class
(``InvalidClientError``, ...) and an HTML page into a parse error; PyJWT makes the tokens
meta must refuse. Personal access tokens' names follow the rule of applications' names.
"""

from __future__ import annotations

import base64
import json
import re
import time
from collections.abc import Iterator
from typing import Any

import jwt
import pytest
import requests
from oauth_helpers import TODO_ID, TODO_SECRET, basic, network_config, oauth_app
from oauthlib.oauth2 import BackendApplicationClient
from oauthlib.oauth2.rfc6749 import errors as oauth_errors

from srcore.testing import free_port, log_in_client, run_service

__all__ = ["oauth_app"]  # fixtures used by this module

#: Each machine endpoint and the methods it takes (OPTIONS: CORS preflights, answered 200).
MACHINE = {
    "/oauth/token": ("POST",),
    "/oauth/revoke": ("POST",),
    "/oauth/introspect": ("POST",),
    "/oauth/revocations": ("GET", "HEAD"),
    "/userinfo": ("GET", "HEAD", "POST"),
    "/oauth/jwks.json": ("GET", "HEAD"),
    "/.well-known/openid-configuration": ("GET", "HEAD"),
    "/.well-known/oauth-authorization-server": ("GET", "HEAD"),
}
METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH")
#: Where a client authenticates with its id and secret.
CLIENT_AUTHENTICATED = ("/oauth/token", "/oauth/revoke", "/oauth/introspect", "/oauth/revocations")


@pytest.fixture
def machine(oauth_app: Any) -> Any:
    """meta's app without the brute-force lockout: these tests fail authentication on
    purpose, more often than the lockout lets an address."""
    oauth_app.extensions["meta.oauth"].extra.pop("token_throttle", None)
    return oauth_app


def _basic_raw(raw: bytes) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(raw).decode("ascii")}


def _oauthlib_error(response: Any) -> str:
    """The OAuth error oauthlib raises for *response*'s body (the token endpoint's through a
    client's own parsing of a token response, the others' through its error table), or
    what else it raised: an HTML page is a parse error to it."""
    text = response.get_data(as_text=True)
    try:
        body = json.loads(text)
        oauth_errors.raise_from_error(body.get("error"), body)
        BackendApplicationClient(TODO_ID).parse_request_body_response(text)
    except oauth_errors.OAuth2Error as exc:
        return str(exc.error)
    except Exception as exc:  # what a client sees instead
        return f"not an OAuth error: {exc!r}"
    raise AssertionError(f"oauthlib took {text[:200]!r} for a token response")


def _challenge(response: Any) -> tuple[str, dict[str, str]]:
    """The scheme and parameters of *response*'s one WWW-Authenticate challenge."""
    values = response.headers.getlist("WWW-Authenticate")
    assert len(values) == 1, values
    scheme, _, rest = values[0].partition(" ")
    return scheme, dict(re.findall(r'(\w+)="([^"]*)"', rest))


def _is_protocol_json(response: Any, status: int) -> dict[str, Any]:
    where = f"{response.request.method} {response.request.path}"
    assert response.status_code == status, (where, response.get_data(as_text=True)[:300])
    assert response.mimetype == "application/json", (where, response.mimetype)
    assert response.headers["Cache-Control"] == "no-store", where
    if response.request.method == "HEAD":
        return {}
    body: dict[str, Any] = response.get_json()
    assert set(body) == {"error", "error_description"}, (where, body)
    return body


# -- methods an endpoint does not take ---------------------------------------------------


def test_every_method_a_machine_endpoint_refuses_is_a_json_405(machine: Any) -> None:
    client = machine.test_client()
    for path, taken in MACHINE.items():
        for method in METHODS:
            if method in taken:
                continue
            response = client.open(path, method=method, headers=basic())
            body = _is_protocol_json(response, 405)
            assert set(taken) <= set(response.headers["Allow"].split(", ")), path
            if method != "HEAD":
                assert body["error"] == "invalid_request", (path, method)
                assert _oauthlib_error(response) == "invalid_request"
            assert "WWW-Authenticate" not in response.headers, (path, method)


# -- failed client authentication ------------------------------------------------------------


def test_every_failed_client_authentication_is_invalid_client_with_a_basic_challenge(
    machine: Any,
) -> None:
    client = machine.test_client()
    credentials = {
        "bad base64": {"Authorization": "Basic !!not-base64!!"},
        "not UTF-8": _basic_raw(b"\xff\xfe:\xfd"),
        "no colon": _basic_raw(TODO_ID.encode()),
        "wrong secret": basic(TODO_ID, "not-the-secret"),
        "unknown client": basic("nobody-registered-this", "secret"),
    }
    form = {"grant_type": "client_credentials", "token": "x"}
    for path in CLIENT_AUTHENTICATED:
        for what, headers in credentials.items():
            if path == "/oauth/revocations":
                response = client.get(path + "?since=0", headers=headers)
            else:
                response = client.post(path, data=form, headers=headers)
            body = _is_protocol_json(response, 401)
            assert body["error"] == "invalid_client", (path, what, body)
            assert _oauthlib_error(response) == "invalid_client", (path, what)
            scheme, params = _challenge(response)
            assert scheme == "Basic" and params["realm"] == "meta", (path, what)
    # No credentials at all: the feed is for the network's services only.
    absent = client.get("/oauth/revocations?since=0")
    assert _is_protocol_json(absent, 401)["error"] == "invalid_client"
    assert _challenge(absent)[0] == "Basic"


def test_a_failed_client_authentication_says_what_failed(machine: Any) -> None:
    """A wrong secret was "cannot authenticate with methods: [...]", as if the method
    were wrong; no credentials at all, the same. An unknown client stays "does not exist"."""
    client = machine.test_client()
    for path in ("/oauth/token", "/oauth/revoke", "/oauth/introspect"):
        form = {"grant_type": "client_credentials", "token": "x"}
        by_basic = client.post(path, data=form, headers=basic(TODO_ID, "wrong"))
        by_post = client.post(path, data={**form, "client_id": TODO_ID, "client_secret": "wrong"})
        for wrong in (by_basic, by_post):
            description = _is_protocol_json(wrong, 401)["error_description"]
            assert "secret is wrong" in description, (path, description)
            assert "client_secret_basic" in description, (path, description)
        absent = client.post(path, data=form)
        assert "No client credentials" in _is_protocol_json(absent, 401)["error_description"]
        unknown = client.post(path, data=form, headers=basic("nobody", "x"))
        assert "does not exist" in _is_protocol_json(unknown, 401)["error_description"]
    untyped = client.post("/oauth/token", headers=basic())
    description = _is_protocol_json(untyped, 400)["error_description"]
    assert description.endswith("the request has no Content-Type."), description


def test_the_revocations_feed_refuses_a_bad_since_as_invalid_request(machine: Any) -> None:
    client = machine.test_client()
    for since in ("-1", "x", "9" * 30):
        response = client.get(f"/oauth/revocations?since={since}", headers=basic())
        assert _is_protocol_json(response, 400)["error"] == "invalid_request", since
        assert "since" in response.get_json()["error_description"]
    assert client.get("/oauth/revocations?since=0", headers=basic()).status_code == 200


def test_two_authorization_headers_are_one_parameter_twice(machine: Any) -> None:
    """RFC 6749 5.2: a request that repeats a parameter or uses two authentication
    methods is invalid_request, whichever of them is right."""
    client = machine.test_client()
    good = basic()["Authorization"]
    for path in ("/oauth/token", "/oauth/revoke", "/oauth/introspect"):
        twice = client.post(
            path,
            data={"grant_type": "client_credentials", "token": "x"},
            headers=[("Authorization", good), ("Authorization", good)],
        )
        assert _is_protocol_json(twice, 400)["error"] == "invalid_request", path
        assert "Authorization" in twice.get_json()["error_description"]
        both = client.post(
            path,
            data={"grant_type": "client_credentials", "token": "x", "client_secret": TODO_SECRET},
            headers={"Authorization": good},
        )
        assert _is_protocol_json(both, 400)["error"] == "invalid_request", path


# -- failures after the view --------------------------------------------------------------


def test_a_failure_inside_the_token_endpoint_is_a_json_server_error(
    machine: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sqlalchemy.exc import OperationalError

    machine.config["PROPAGATE_EXCEPTIONS"] = False
    server = machine.extensions["meta.oauth"].server
    client = machine.test_client()
    form = {"grant_type": "client_credentials"}

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("a bug")

    monkeypatch.setattr(server, "create_token_response", broken)
    crashed = client.post("/oauth/token", data=form, headers=basic())
    assert _is_protocol_json(crashed, 500)["error"] == "server_error"
    assert _oauthlib_error(crashed) == "server_error"
    assert "a bug" not in crashed.get_data(as_text=True)

    def database_gone(*args: Any, **kwargs: Any) -> Any:
        raise OperationalError("SELECT 1", {}, Exception("connection refused"))

    monkeypatch.setattr(server, "create_token_response", database_gone)
    unavailable = client.post("/oauth/token", data=form, headers=basic())
    assert _is_protocol_json(unavailable, 503)["error"] == "temporarily_unavailable"
    assert _oauthlib_error(unavailable) == "temporarily_unavailable"
    assert int(unavailable.headers["Retry-After"]) > 0


# -- UserInfo: RFC 6750 3 ------------------------------------------------------------------


def test_userinfo_challenges_as_rfc_6750_says(machine: Any, accounts: Any) -> None:
    client = machine.test_client()
    # Another scheme is no token at all: a bare challenge, no error in it (3.1).
    for headers in (basic(), {"Authorization": "Digest username=x"}, {}):
        response = client.get("/userinfo", headers=headers)
        _is_protocol_json(response, 401)
        assert _challenge(response) == ("Bearer", {"realm": "meta"}), headers
    # A Bearer header without a token is a malformed request (3.1: invalid_request, 400).
    empty = client.get("/userinfo", headers={"Authorization": "Bearer"})
    assert _is_protocol_json(empty, 400)["error"] == "invalid_request"
    assert _challenge(empty)[1]["error"] == "invalid_request"
    # Tokens meta did not sign (PyJWT's): invalid_token, named in the challenge.
    now = int(time.time())
    claims = {"iss": machine.extensions["meta.oauth"].issuer, "sub": "1", "aud": "meta"}
    claims |= {"iat": now, "exp": now + 60, "scope": "openid"}
    for forged in (
        jwt.encode(claims, "a-secret-meta-never-had-but-long-enough", algorithm="HS256"),
        jwt.encode(claims, None, algorithm="none"),
    ):
        response = client.get("/userinfo", headers={"Authorization": f"Bearer {forged}"})
        assert _is_protocol_json(response, 401)["error"] == "invalid_token"
        scheme, params = _challenge(response)
        assert scheme == "Bearer" and params["error"] == "invalid_token", params
        assert params["realm"] == "meta"


# -- a real client over HTTP ---------------------------------------------------------------


@pytest.fixture
def served(srcore_database: Any, tmp_path: Any) -> Iterator[str]:
    """meta under gunicorn on 127.0.0.1, in a network with todo."""
    port = free_port()
    base = srcore_database.config_path.read_text()
    base = re.sub(r"(?m)^origin = .*$", f"origin = http://127.0.0.1:{port}", base, count=1)
    path = tmp_path / "network.ini"
    path.write_text(network_config(base), encoding="utf-8")
    with run_service("meta", path, port=port) as url:
        yield url


def test_requests_oauthlib_reads_each_refusal_as_its_oauth_error(
    served: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """requests-oauthlib, configured to fetch tokens with GET (which meta does not take),
    and with a wrong secret, raises the OAuth error each time, not a parse error."""
    from requests_oauthlib import OAuth2Session

    monkeypatch.setenv("OAUTHLIB_INSECURE_TRANSPORT", "1")
    metadata = requests.get(served + "/.well-known/oauth-authorization-server", timeout=10)
    endpoint = metadata.json()["token_endpoint"]
    session = OAuth2Session(client=BackendApplicationClient(TODO_ID))
    # oauthlib raises the first class of its table with the error's code.
    with pytest.raises(oauth_errors.OAuth2Error) as refused:
        session.fetch_token(
            endpoint, client_id=TODO_ID, client_secret=TODO_SECRET, method="GET", timeout=10
        )
    assert refused.value.error == "invalid_request"
    with pytest.raises(oauth_errors.InvalidClientError):
        session.fetch_token(endpoint, client_id=TODO_ID, client_secret="wrong", timeout=10)
    token = session.fetch_token(endpoint, client_id=TODO_ID, client_secret=TODO_SECRET, timeout=10)
    keys = jwt.PyJWKClient(served + "/oauth/jwks.json", timeout=10)
    claims = jwt.decode(
        token["access_token"],
        keys.get_signing_key_from_jwt(token["access_token"]).key,
        algorithms=["EdDSA"],
        audience="meta",
    )
    assert claims["sub"] == TODO_ID
    feed = requests.get(served + "/oauth/revocations", auth=(TODO_ID, "wrong"), timeout=10)
    assert feed.status_code == 401 and feed.json()["error"] == "invalid_client"


# -- personal access tokens' names ---------------------------------------------------------

#: "Todo" with its first o Cyrillic (U+043E): the name the applications rule refuses.
LOOK_ALIKE = "T\u043edo deploy"


def test_a_token_name_may_not_mix_scripts_in_a_word(oauth_app: Any, accounts: Any) -> None:
    from meta.oauth.models import PersonalAccessToken
    from meta.oauth.pats import create_token
    from sqlalchemy import func, select

    alice = accounts.make("alice")
    browser = log_in_client(oauth_app.test_client(), alice)
    page = browser.get("/security").get_data(as_text=True)
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert csrf
    refused = browser.post(
        "/security/tokens",
        data={
            "name": LOOK_ALIKE,
            "scopes": "meta/profile:RO",
            "expires": "30",
            "csrf_token": csrf.group(1),
        },
    )
    assert refused.status_code == 400, refused.status_code
    assert "U+043E" in refused.get_data(as_text=True)

    with oauth_app.test_request_context("/api/tokens", method="POST"):
        from meta.models import User

        from srcore.db import session

        _row, boot = create_token(
            session.get(User, alice.id), name="boot", scope="meta/tokens:RW", days=30
        )
        session.commit()
    api = oauth_app.test_client().post(
        "/api/tokens",
        json={"name": LOOK_ALIKE, "scopes": ["meta/tokens:RO"]},
        headers={"Authorization": f"Bearer {boot}"},
    )
    assert api.status_code == 400, api.get_json()
    assert "U+043E" in str(api.get_json())
    # Words of one script each, side by side, are a name like any other.
    fine = oauth_app.test_client().post(
        "/api/tokens",
        json={"name": "Todo \u0434\u0435\u043f\u043b\u043e\u0439", "scopes": ["meta/tokens:RO"]},
        headers={"Authorization": f"Bearer {boot}"},
    )
    assert fine.status_code == 201, fine.get_json()
    with oauth_app.extensions["srcore"].db.transaction() as db:
        names = db.scalars(select(PersonalAccessToken.name)).all()
        assert LOOK_ALIKE not in names
        assert db.scalar(select(func.count()).select_from(PersonalAccessToken)) == 2
