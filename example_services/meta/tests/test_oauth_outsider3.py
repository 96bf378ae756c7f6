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
    TODO_CALLBACK,
    authorize_url,
    basic,
    get_code,
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


# -- the client endpoints read a form-encoded body, and nothing else ----------------------

CLIENT_ENDPOINTS = ("/oauth/token", "/oauth/revoke", "/oauth/introspect")


def _oauth_refusal(response: Any, status: int = 400) -> str:
    """The error_description of an RFC 6749 5.2 ``invalid_request``."""
    assert response.status_code == status, response.get_data(as_text=True)[:400]
    assert response.mimetype == "application/json"
    body = response.get_json()
    assert body["error"] == "invalid_request", body
    assert response.headers["Cache-Control"] == "no-store"
    return str(body["error_description"])


def test_a_code_sent_as_multipart_is_refused_and_not_spent(oauth_app: Any, browser: Any) -> None:
    verifier, challenge = pkce()
    code = get_code(browser, (verifier, challenge))
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": TODO_CALLBACK,
        "code_verifier": verifier,
    }
    client = oauth_app.test_client()
    refused = client.post(
        "/oauth/token", data=form, headers=basic(), content_type="multipart/form-data"
    )
    assert "multipart/form-data" in _oauth_refusal(refused)
    assert "application/x-www-form-urlencoded" in _oauth_refusal(refused)
    # The code is still good for the request the client meant to send.
    sent = client.post(
        "/oauth/token",
        data=form,
        headers=basic(),
        content_type="application/x-www-form-urlencoded; charset=UTF-8",
    )
    assert sent.status_code == 200 and sent.get_json()["access_token"]


MULTIPART = b'--x\r\nContent-Disposition: form-data; name="token"\r\n\r\nabc\r\n--x--\r\n'
OTHER_BODIES = {
    "multipart": ("multipart/form-data; boundary=x", MULTIPART),
    "json": ("application/json", b'{"grant_type": "refresh_token", "token": "abc"}'),
    "text": ("text/plain", b"grant_type=refresh_token&token=abc"),
    "untyped": (None, b"grant_type=refresh_token&token=abc"),
}


@pytest.mark.parametrize("path", CLIENT_ENDPOINTS)
@pytest.mark.parametrize("kind", OTHER_BODIES)
def test_other_body_types_are_a_clear_invalid_request(oauth_app: Any, path: str, kind: str) -> None:
    content_type, body = OTHER_BODIES[kind]
    headers = basic()
    if content_type is not None:
        headers["Content-Type"] = content_type
    response = oauth_app.test_client().post(path, data=body, headers=headers)
    description = _oauth_refusal(response)
    assert "application/x-www-form-urlencoded" in description
    assert (content_type or "no Content-Type").split(";")[0] in description


@pytest.mark.parametrize("path", CLIENT_ENDPOINTS)
def test_a_body_past_any_token_request_is_a_413_in_oauth_form(oauth_app: Any, path: str) -> None:
    body = b"grant_type=refresh_token&refresh_token=" + b"a" * 100_000 + b"&token=b"
    response = oauth_app.test_client().post(
        path,
        data=body,
        headers={**basic(), "Content-Type": "application/x-www-form-urlencoded"},
    )
    assert "larger than" in _oauth_refusal(response, 413)


@pytest.mark.parametrize("name", ["code", "refresh_token", "grant_type"])
def test_parameters_in_the_url_are_refused(oauth_app: Any, name: str) -> None:
    response = oauth_app.test_client().post(
        f"/oauth/token?{name}=abc",
        data={"grant_type": "refresh_token", "refresh_token": "x"}
        if name != "grant_type"
        else {"refresh_token": "x"},
        headers=basic(),
    )
    assert name in _oauth_refusal(response) and "URL" in _oauth_refusal(response)


def test_a_secret_in_the_url_is_a_failed_authentication(oauth_app: Any) -> None:
    response = oauth_app.test_client().post(
        "/oauth/token?client_id=todo&client_secret=x",
        data={"grant_type": "client_credentials"},
    )
    assert response.status_code == 401 and response.headers["WWW-Authenticate"]
    assert response.get_json()["error"] == "invalid_client"
    assert "never in the URL" in response.get_json()["error_description"]


def test_repeated_and_non_utf8_parameters_are_refused(oauth_app: Any) -> None:
    client = oauth_app.test_client()
    form = {**basic(), "Content-Type": "application/x-www-form-urlencoded"}
    for body in (
        b"grant_type=refresh_token&refresh_token=a&refresh_token=b",
        b"grant_type=refresh_token&grant_type=client_credentials&refresh_token=a",
    ):
        assert "repeated" in _oauth_refusal(client.post("/oauth/token", data=body, headers=form))
    for body in (b"grant_type=refresh_token&refresh_token=\xff\xfe", b"grant_type=%ff"):
        assert "UTF-8" in _oauth_refusal(client.post("/oauth/token", data=body, headers=form))


def test_userinfo_reads_a_token_only_from_a_form_encoded_body(oauth_app: Any) -> None:
    response = oauth_app.test_client().post(
        "/userinfo", data={"access_token": "abc"}, content_type="multipart/form-data"
    )
    assert response.status_code == 400
    assert response.get_json()["error"] == "invalid_request"
    assert "x-www-form-urlencoded" in response.get_json()["error_description"]


def test_odd_bodies_through_gunicorn_get_oauth_errors(served: str) -> None:
    """What a WSGI server really hands meta: past srcore's own size limit, chunked, raw
    bytes. Every answer is an RFC 6749 error body, none a 500 or an HTML page."""
    form = {"Content-Type": "application/x-www-form-urlencoded", **basic()}

    def refusal(response: requests.Response, status: int) -> str:
        assert response.status_code == status, response.text[:300]
        assert response.headers["Content-Type"].startswith("application/json")
        assert response.json()["error"] == "invalid_request"
        return str(response.json()["error_description"])

    huge = b"grant_type=refresh_token&refresh_token=" + b"a" * (17 * 1024 * 1024)
    response = requests.post(served + "/oauth/token", data=huge, headers=form, timeout=30)
    refusal(response, 413)

    def chunks() -> Iterator[bytes]:
        yield b"grant_type=refresh_token&refresh_token="
        for _ in range(32):
            yield b"a" * 4096

    response = requests.post(served + "/oauth/token", data=chunks(), headers=form, timeout=30)
    assert "larger than" in refusal(response, 413)

    raw = b"grant_type=refresh_token&refresh_token=\xc3\x28"
    response = requests.post(served + "/oauth/revoke", data=raw, headers=form, timeout=10)
    assert "UTF-8" in refusal(response, 400)

    response = requests.post(
        served + "/oauth/introspect",
        files={"token": ("token.txt", b"abc")},
        auth=("todo", "wrong"),
        timeout=10,
    )
    assert "multipart/form-data" in refusal(response, 400)


# -- application names that mix scripts within a word ---------------------------------------

CYRILLIC_O, GREEK_OMICRON = "\u043e", "\u03bf"


def _register_named(oauth_app: Any, accounts: Any, name: str) -> tuple[int, str]:
    """POST the /clients form with *name*; the status and the page."""
    client = log_in_client(oauth_app.test_client(), accounts.make("developer"))
    token = csrf_of(client.get("/clients").get_data(as_text=True))
    response = client.post(
        "/clients",
        data={"name": name, "redirect_uris": REDIRECT, "kind": "public", "csrf_token": token},
    )
    return response.status_code, response.get_data(as_text=True)


@pytest.mark.parametrize(
    ("name", "odd"),
    [
        (f"T{CYRILLIC_O}do", "U+043E"),
        (f"G{CYRILLIC_O}{CYRILLIC_O}gle", "U+043E"),
        (f"G{GREEK_OMICRON}ogle", "U+03BF"),
        (f"My {CYRILLIC_O}auth app", "U+043E"),
        # Fullwidth letters are the letters they stand for: still Latin beside Cyrillic.
        ("\uff4d\u0435ta", "U+0435"),
    ],
)
def test_a_name_mixing_scripts_in_a_word_is_refused(
    oauth_app: Any, accounts: Any, name: str, odd: str
) -> None:
    status, page = _register_named(oauth_app, accounts, name)
    assert status == 400
    assert "mixes scripts in one word" in page and odd in page
    assert 'id="client-id"' not in page


@pytest.mark.parametrize(
    "name",
    [
        "\u0422\u043e\u0434\u043e \u043f\u043b\u0430\u043d",  # Cyrillic only: "Todo plan"
        "\u30bf\u30b9\u30af\u7ba1\u7406",  # Japanese: katakana and kanji in one word
        "\u0395\u03c1\u03b3\u03b1\u03c3\u03af\u03b5\u03c2",  # Greek only
        "Caf\u00e9 helper",
        "Todo \u0422\u043e\u0434\u043e",  # a Latin word beside a Cyrillic one
    ],
)
def test_a_name_in_one_script_per_word_is_fine(oauth_app: Any, accounts: Any, name: str) -> None:
    status, page = _register_named(oauth_app, accounts, name)
    assert status == 200, page[:800]
    assert 'id="client-id"' in page


# -- what an attacker or a careless client sends the authorization endpoint -----------------


@pytest.mark.parametrize(
    ("separator", "shown"),
    [("\u00a0", "U+00A0"), ("\u3000", "U+3000"), ("\u2028", "U+2028"), ("\t", "U+0009")],
)
def test_a_scope_split_by_other_whitespace_is_invalid(
    browser: Any, separator: str, shown: str
) -> None:
    """RFC 6749 3.3 separates scopes by spaces: read as separators, these made meta grant
    two scopes where a client reading the RFC sees one."""
    _verifier, challenge = pkce()
    url = authorize_url(challenge=challenge, scope=f"openid{separator}meta/profile:RO")
    location = browser.get(url).headers["Location"]
    assert query_of(location)["error"] == "invalid_scope"
    assert shown in query_of(location)["error_description"]
    assert "code" not in query_of(location)


def test_a_refresh_asking_a_scope_split_by_other_whitespace_is_invalid(
    oauth_app: Any, browser: Any
) -> None:
    verifier, challenge = pkce()
    code = get_code(browser, (verifier, challenge), scope="openid meta/profile:RO")
    client = oauth_app.test_client()
    tokens = client.post(
        "/oauth/token",
        data={
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": TODO_CALLBACK,
            "code_verifier": verifier,
        },
        headers=basic(),
    ).get_json()
    refused = client.post(
        "/oauth/token",
        data={
            "grant_type": "refresh_token",
            "refresh_token": tokens["refresh_token"],
            "scope": "openid\u00a0meta/profile:RO",
        },
        headers=basic(),
    )
    assert refused.status_code == 400 and refused.get_json()["error"] == "invalid_scope"
    assert "U+00A0" in refused.get_json()["error_description"]


@pytest.mark.parametrize(
    ("extra", "error"),
    [
        ({"response_mode": "fragment"}, "invalid_request"),
        ({"response_mode": "form_post"}, "invalid_request"),
        ({"request": "eyJhbGciOiJub25lIn0.eyJzY29wZSI6Im9wZW5pZCJ9."}, "request_not_supported"),
        ({"request_uri": "https://app.invalid/request.jwt"}, "request_uri_not_supported"),
        ({"prompt": "LOGIN"}, "invalid_request"),
        ({"prompt": "login bogus"}, "invalid_request"),
    ],
)
def test_what_meta_does_not_do_is_refused_not_ignored(
    browser: Any, extra: dict[str, str], error: str
) -> None:
    """Ignored, a response_mode asked for (to keep the code out of logs), a signed request
    object's parameters or a prompt to log in again would pass for honoured."""
    _verifier, challenge = pkce()
    location = browser.get(authorize_url(challenge=challenge, scope="openid", **extra)).headers[
        "Location"
    ]
    assert query_of(location)["error"] == error
    assert "code" not in query_of(location)
    assert _query_lists(location)["state"] == ["xyz"]


def test_a_mixed_script_name_from_before_the_rule_is_shown_for_what_it_is(
    oauth_app: Any, browser: Any, accounts: Any
) -> None:
    from meta.oauth.models import OAuthClient
    from sqlalchemy import update

    app = register_client(oauth_app, accounts, confidential=True, redirect=REDIRECT)
    imitation = f"T{CYRILLIC_O}do"
    with oauth_app.extensions["srcore"].db.transaction() as session:
        session.execute(
            update(OAuthClient).where(OAuthClient.client_id == app["id"]).values(name=imitation)
        )
    _verifier, challenge = pkce()
    page = browser.get(authorize_url(app["id"], REDIRECT, challenge=challenge))
    text = page.get_data(as_text=True)
    assert page.status_code == 200
    assert imitation not in text
    assert "T<span" in text and "&lt;U+043E&gt;" in text


def test_a_huge_scope_is_not_quoted_back_whole(oauth_app: Any, browser: Any) -> None:
    """An error that quoted a 60 KB scope back, in a JSON body or a redirect's Location,
    made an answer larger than proxies pass."""
    answer = oauth_app.test_client().post(
        "/oauth/token",
        data={"grant_type": "client_credentials", "scope": "x" * 60_000},
        headers=basic(),
    )
    assert answer.status_code == 400 and answer.get_json()["error"] == "invalid_scope"
    assert len(answer.get_json()["error_description"]) <= 200
    _verifier, challenge = pkce()
    location = browser.get(authorize_url(challenge=challenge, scope="y" * 3000)).headers["Location"]
    assert query_of(location)["error"] == "invalid_scope"
    assert len(query_of(location)["error_description"]) <= 200
