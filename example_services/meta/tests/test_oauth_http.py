"""meta under gunicorn, used by off-the-shelf software: Authlib's requests client and PyJWT.

The client knows only meta's address, its client id and secret: everything else comes from
``/.well-known/oauth-authorization-server``. Logging in drives the real HTML login form.
A small HTTP server on 127.0.0.1 stands in for a service and receives the webhooks meta's
worker (``srcore worker meta``) really delivers.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from meta_constants import PASSWORD
from oauth_helpers import TODO_ID, TODO_SECRET, network_config

from srcore.testing import free_port, run_service, run_worker

pytestmark = pytest.mark.slow


class Receiver:
    """A stand-in service: records what is POSTed to it."""

    def __init__(self) -> None:
        self.received: list[tuple[str, dict[str, str], bytes]] = []
        self.event = threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                headers = {k.lower(): v for k, v in self.headers.items()}
                outer.received.append((self.path, headers, body))
                outer.event.set()
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                return None

        self.server = HTTPServer(("127.0.0.1", free_port()), Handler)
        self.origin = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def network(
    app: Any, accounts: Any, srcore_database: Any, tmp_path: Any
) -> Iterator[dict[str, Any]]:
    accounts.make("alice")
    with Receiver() as receiver:
        port = free_port()
        origin = f"http://127.0.0.1:{port}"
        base = srcore_database.config_path.read_text()
        base = re.sub(r"(?m)^origin = .*$", f"origin = {origin}", base, count=1)
        path = tmp_path / "network.ini"
        path.write_text(network_config(base, todo_origin=receiver.origin), encoding="utf-8")
        with run_service("meta", path, port=port) as url, run_worker("meta", path):
            yield {
                "url": url,
                "receiver": receiver,
                "redirect": receiver.origin + "/oauth/callback",
            }


def _log_in(session: requests.Session, url: str, next_url: str) -> requests.Response:
    """Follow meta to its login form, fill it in as a browser would, come back."""
    page = session.get(next_url, allow_redirects=True)
    assert "/login" in page.url, page.url
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert csrf
    action = re.search(r'<form[^>]+action="([^"]+)"', page.text)
    assert action
    target = url + action.group(1).replace("&amp;", "&")
    return session.post(
        target,
        data={"login": "alice", "password": PASSWORD, "csrf_token": csrf.group(1)},
        allow_redirects=False,
    )


def test_stranger_client_completes_code_pkce_refresh_and_revocation(
    network: dict[str, Any],
) -> None:
    import jwt
    from authlib.integrations.requests_client import OAuth2Session

    url = network["url"]
    metadata = requests.get(url + "/.well-known/oauth-authorization-server", timeout=5).json()
    client = OAuth2Session(
        TODO_ID,
        TODO_SECRET,
        scope="meta/profile:RO todo/tickets:RW",
        redirect_uri=network["redirect"],
        code_challenge_method="S256",
        token_endpoint=metadata["token_endpoint"],
    )
    verifier = __import__("secrets").token_urlsafe(48)
    authorize, state = client.create_authorization_url(
        metadata["authorization_endpoint"], code_verifier=verifier
    )

    browser = requests.Session()
    logged_in = _log_in(browser, url, authorize)
    assert logged_in.status_code == 302
    back = browser.get(url + logged_in.headers["Location"], allow_redirects=False)
    assert back.status_code == 302
    callback = back.headers["Location"]
    assert callback.startswith(network["redirect"])
    assert parse_qs(urlsplit(callback).query)["state"] == [state]

    token = client.fetch_token(
        metadata["token_endpoint"], authorization_response=callback, code_verifier=verifier
    )
    assert token["token_type"].lower() == "bearer" and token["refresh_token"]

    # PyJWT verifies the access token from the JWKS alone.
    jwks = jwt.PyJWKClient(metadata["jwks_uri"])
    key = jwks.get_signing_key_from_jwt(token["access_token"])
    claims = jwt.decode(
        token["access_token"],
        key,
        algorithms=["EdDSA"],
        audience=TODO_ID,
        issuer=metadata["issuer"],
    )
    assert jwt.get_unverified_header(token["access_token"])["typ"] == "at+jwt"
    assert claims["scope"] == "meta/profile:RO todo/tickets:RW"
    assert sorted(claims["aud"]) == ["meta", "todo"]

    profile = client.get(url + "/api/profile", timeout=5)
    assert profile.status_code == 200 and profile.json()["username"] == "alice"

    refreshed = client.refresh_token(metadata["token_endpoint"])
    assert refreshed["refresh_token"] != token["refresh_token"]
    assert refreshed["access_token"] != token["access_token"]

    client.revoke_token(
        metadata["revocation_endpoint"],
        token=refreshed["refresh_token"],
        token_type_hint="refresh_token",
    )
    introspected = requests.post(
        metadata["introspection_endpoint"],
        data={"token": refreshed["access_token"]},
        auth=(TODO_ID, TODO_SECRET),
        timeout=5,
    ).json()
    assert introspected == {"active": False}
    assert client.get(url + "/api/profile", timeout=5).status_code == 401

    # The revocation reached the stand-in service as a Standard Webhooks message, signed
    # with the secret derived from todo's client secret.
    from srcore.webhooks import derive_secret, verify

    receiver: Receiver = network["receiver"]
    assert receiver.event.wait(10)
    path, headers, body = receiver.received[-1]
    assert path == "/_srcore/events" and headers["content-type"] == "application/json"
    message = verify(derive_secret(TODO_SECRET, TODO_ID), headers, body)
    assert message["type"] == "revocation:issued"
    events = message["data"]["events"]
    assert [e["kind"] for e in events] == ["grant"]
    assert events[0]["subject"] == claims["grant"]


def test_second_login_is_single_sign_on(network: dict[str, Any]) -> None:
    from authlib.integrations.requests_client import OAuth2Session

    url = network["url"]
    metadata = requests.get(url + "/.well-known/oauth-authorization-server", timeout=5).json()
    browser = requests.Session()
    first = OAuth2Session(
        TODO_ID, TODO_SECRET, redirect_uri=network["redirect"], code_challenge_method="S256"
    )
    authorize, _state = first.create_authorization_url(
        metadata["authorization_endpoint"], code_verifier="v" * 64
    )
    _log_in(browser, url, authorize)
    second = OAuth2Session(
        TODO_ID, TODO_SECRET, redirect_uri=network["redirect"], code_challenge_method="S256"
    )
    again, _ = second.create_authorization_url(
        metadata["authorization_endpoint"], code_verifier="w" * 64
    )
    response = browser.get(again, allow_redirects=False)
    assert response.status_code == 302
    assert response.headers["Location"].startswith(network["redirect"] + "?code=")
