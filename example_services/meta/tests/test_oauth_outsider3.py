"""meta's OAuth server as a client written against the RFCs sees it, and as an attacker does.

The end-to-end tests run meta under gunicorn on 127.0.0.1 and drive it with
requests-oauthlib, which knows nothing of meta: the client reads the metadata, sends the
browser (a ``requests`` session filling in the HTML forms) to the authorization endpoint
and checks the response's ``iss`` itself (RFC 9207), as a client defending against the
mix-up attack does. The rest use Flask's test client.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from meta_constants import PASSWORD
from oauth_helpers import (
    authorize_url,
    network_config,
    oauth_app,
    pkce,
    query_of,
    register_client,
)
from oidc_helpers import csrf_of

from srcore.testing import free_port, log_in_client, run_service

__all__ = ["oauth_app"]  # fixtures used by this module

REDIRECT = "https://app.example/cb"


def _query_lists(location: str) -> dict[str, list[str]]:
    return parse_qs(urlsplit(location).query, keep_blank_values=True)


def _issuer_of(location: str) -> str:
    """The one ``iss`` of an authorization response, as a careful client reads it."""
    values = _query_lists(location).get("iss", [])
    assert len(values) == 1, location
    return values[0]


# -- RFC 9207: the issuer in every authorization response -----------------------------------


@pytest.fixture
def alice(accounts: Any) -> Any:
    return accounts.make("alice")


@pytest.fixture
def browser(oauth_app: Any, alice: Any) -> Any:
    """A test client with alice logged in at meta."""
    return log_in_client(oauth_app.test_client(), alice)


def test_both_metadata_documents_say_iss_is_sent(oauth_app: Any) -> None:
    client = oauth_app.test_client()
    for path in ("/.well-known/oauth-authorization-server", "/.well-known/openid-configuration"):
        document = client.get(path).get_json()
        assert document["authorization_response_iss_parameter_supported"] is True, path


def test_every_authorization_response_names_the_issuer(
    oauth_app: Any, browser: Any, accounts: Any
) -> None:
    issuer = oauth_app.test_client().get("/.well-known/oauth-authorization-server").get_json()
    issuer = issuer["issuer"]
    _verifier, challenge = pkce()
    locations = []
    # A code, to a first-party client that needs no consent.
    locations.append(browser.get(authorize_url(challenge=challenge)).headers["Location"])
    # Errors found in the request: no PKCE, a made-up scope, a bad max_age.
    locations.append(browser.get(authorize_url(challenge=None)).headers["Location"])
    locations.append(
        browser.get(authorize_url(challenge=challenge, scope="nowhere/x:RO")).headers["Location"]
    )
    locations.append(
        browser.get(authorize_url(challenge=challenge, scope="openid", max_age="soon")).headers[
            "Location"
        ]
    )
    # A third-party application: consent required with prompt=none, then refused.
    app = register_client(oauth_app, accounts, confidential=True, redirect=REDIRECT)
    url = authorize_url(app["id"], REDIRECT, challenge=challenge, scope="openid")
    locations.append(browser.get(url + "&prompt=none").headers["Location"])
    token = csrf_of(browser.get(url).get_data(as_text=True))
    denied = browser.post(url, data={"decision": "deny", "csrf_token": token})
    locations.append(denied.headers["Location"])
    # No session and prompt=none: login_required, at once.
    locations.append(oauth_app.test_client().get(url + "&prompt=none").headers["Location"])
    kinds = [
        (query_of(location).get("code") and "code") or query_of(location)["error"]
        for location in locations
    ]
    assert kinds == [
        "code",
        "invalid_request",
        "invalid_scope",
        "invalid_request",
        "consent_required",
        "access_denied",
        "login_required",
    ]
    for location in locations:
        assert _issuer_of(location) == issuer, location
        # RFC 6749 4.1.2.1: the client's state comes back with errors too.
        assert _query_lists(location)["state"] == ["xyz"], location


@pytest.fixture
def served(alice: Any, srcore_database: Any, tmp_path: Any) -> Iterator[str]:
    """meta under gunicorn on 127.0.0.1, in a network with todo; alice has an account."""
    port = free_port()
    base = srcore_database.config_path.read_text()
    base = re.sub(r"(?m)^origin = .*$", f"origin = http://127.0.0.1:{port}", base, count=1)
    path = tmp_path / "network.ini"
    path.write_text(network_config(base), encoding="utf-8")
    with run_service("meta", path, port=port) as url:
        yield url


def _form(page: requests.Response, marker: str = "csrf_token") -> tuple[str, str]:
    """The action and CSRF token of the form on *page* that holds *marker*."""
    for form in re.findall(r"<form[^>]*>.*?</form>", page.text, re.S):
        action = re.search(r'action="([^"]*)"', form)
        if marker in form and action:
            return action.group(1).replace("&amp;", "&"), csrf_of(form)
    raise AssertionError(page.text[:800])


def _log_in(browser: requests.Session, url: str, start: str) -> requests.Response:
    """Follow *start* to meta's login form, log in as alice; the response to the login."""
    page = browser.get(start, timeout=10)
    assert "/login" in page.url, page.url
    action, token = _form(page, 'name="password"')
    return browser.post(
        url + action if action.startswith("/") else page.url,
        data={"login": "alice", "password": PASSWORD, "csrf_token": token},
        allow_redirects=False,
        timeout=10,
    )


def _register(browser: requests.Session, url: str, name: str = "Gadget") -> dict[str, str]:
    page = browser.get(url + "/clients", timeout=10)
    answer = browser.post(
        url + "/clients",
        data={
            "name": name,
            "redirect_uris": REDIRECT,
            "kind": "confidential",
            "csrf_token": csrf_of(page.text),
        },
        timeout=10,
    )
    assert answer.status_code == 200, answer.text[:800]
    client_id = re.search(r'id="client-id">([^<]+)<', answer.text)
    secret = re.search(r'id="client-secret">([^<]+)<', answer.text)
    assert client_id and secret, answer.text[:800]
    return {"id": client_id.group(1), "secret": secret.group(1)}


class MixUpError(Exception):
    """The authorization response did not come from the server the client asked."""


def _checked_callback(location: str, metadata: dict[str, Any]) -> str:
    """What an RFC 9207 client does before it spends a code: the response must name the
    issuer it sent the browser to, exactly."""
    issuers = _query_lists(location).get("iss", [])
    if metadata.get("authorization_response_iss_parameter_supported") is not True:
        raise MixUpError("the server does not say it sends iss")
    if issuers != [metadata["issuer"]]:
        raise MixUpError(f"iss {issuers!r} is not {metadata['issuer']!r}")
    return location


def test_a_client_checking_iss_logs_in_end_to_end(
    served: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from requests_oauthlib import OAuth2Session

    # oauthlib refuses plain http unless told: meta runs on loopback here.
    monkeypatch.setenv("OAUTHLIB_INSECURE_TRANSPORT", "1")

    url = served
    metadata = requests.get(url + "/.well-known/oauth-authorization-server", timeout=10).json()
    browser = requests.Session()
    assert _log_in(browser, url, url + "/clients").status_code == 302
    app = _register(browser, url)

    client = OAuth2Session(app["id"], redirect_uri=REDIRECT, scope=["meta/profile:RO"], pkce="S256")
    start, state = client.authorization_url(metadata["authorization_endpoint"])
    consent = browser.get(start, timeout=10)
    assert consent.status_code == 200 and "Authorize" in consent.text
    action, token = _form(consent, 'value="approve"')
    answer = browser.post(
        url + action,
        data={"decision": "approve", "csrf_token": token},
        allow_redirects=False,
        timeout=10,
    )
    assert answer.status_code == 302
    callback = _checked_callback(answer.headers["Location"], metadata)
    assert callback.startswith(REDIRECT + "?") and query_of(callback)["state"] == state
    tokens = client.fetch_token(
        metadata["token_endpoint"],
        authorization_response=callback,
        client_secret=app["secret"],
        timeout=10,
    )
    assert tokens["token_type"].lower() == "bearer"
    profile = client.get(url + "/api/profile", timeout=10)
    assert profile.status_code == 200 and profile.json()["username"] == "alice"

    # A refusal is an authorization response too: it names the issuer as well.
    other = OAuth2Session(app["id"], redirect_uri=REDIRECT, scope=["openid"], pkce="S256")
    again, _state = other.authorization_url(metadata["authorization_endpoint"], prompt="none")
    refused = browser.get(again, allow_redirects=False, timeout=10)
    assert refused.status_code == 302
    _checked_callback(refused.headers["Location"], metadata)
    assert query_of(refused.headers["Location"])["error"] == "consent_required"
