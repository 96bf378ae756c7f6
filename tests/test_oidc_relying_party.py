"""End to end: a relying party built on libraries srcore does not use logs in to meta.

meta runs under gunicorn on 127.0.0.1. The relying party is requests-oauthlib (the OAuth
2.0 code flow with PKCE) and PyJWT (ID token and logout token checks against the JWKS it
fetches): it reads meta's discovery document, sends a user through the authorization
code flow with PKCE and a nonce, verifies the ID token (RS256, and EdDSA for a client
that registered it), reads /userinfo, and logs the user out through the end-session
endpoint, which also POSTs a logout token to its back-channel URI.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit

import jwt
import pytest
import requests
from requests_oauthlib import OAuth2Session

from srcore.testing import FormReceiver, form_receiver, free_port, run_service

pytestmark = [pytest.mark.slow]

_CSRF = re.compile(r'name="csrf_token"[^>]*value="([^"]+)"')
PASSWORD = "correct horse battery staple"


@dataclass
class Meta:
    url: str
    rp_base: str
    receiver: FormReceiver


@pytest.fixture(scope="module")
def receiver() -> Iterator[FormReceiver]:
    with form_receiver("/backchannel") as found:
        yield found


@pytest.fixture(scope="module")
def meta(tmp_path_factory: pytest.TempPathFactory, receiver: FormReceiver) -> Iterator[Meta]:
    from srcore.app import migration_target
    from srcore.migrate import upgrade_all

    tmp = tmp_path_factory.mktemp("oidc")
    port = free_port()
    config = tmp / "config.ini"
    config.write_text(
        "\n".join(
            [
                "[global]",
                "environment = development",
                # The relying party's back-channel receiver is on this machine.
                "allow-private-webhook-targets = 127.0.0.0/8",
                "",
                "[meta]",
                f"origin = http://127.0.0.1:{port}",
                f"database-url = sqlite:///{tmp / 'meta.db'}",
                f"secret-key = {secrets.token_urlsafe(40)}",
                "",
            ]
        ),
        encoding="utf-8",
    )
    upgrade_all(migration_target("meta", config))
    _make_account(config)
    with run_service("meta", config, port=port) as url:
        # The relying party's own pages are never fetched: its callback URL is only read.
        yield Meta(url=url, rp_base=f"http://127.0.0.1:{free_port()}", receiver=receiver)


def _make_account(config: Path) -> None:
    import meta
    from meta import logic

    from srcore.db import UserType, utcnow

    app = meta.create_app(config=config)
    st = app.extensions["srcore"]
    passwords = app.extensions["meta"].passwords
    with st.db.transaction() as session:
        user = logic.create_user(
            session,
            username="alice",
            email="alice@example.org",
            password_hash=passwords.hash(PASSWORD),
        )
        user.user_type = UserType.active
        user.email_confirmed_at = utcnow()
    st.db.dispose()


def _csrf(page: requests.Response) -> str:
    found = _CSRF.search(page.text)
    assert found, page.text[:500]
    return found.group(1)


def _browser(meta: Meta) -> requests.Session:
    """The user's browser, logged in to meta through its login form."""
    browser = requests.Session()
    page = browser.get(meta.url + "/login", timeout=10)
    response = browser.post(
        meta.url + "/login",
        data={"login": "alice", "password": PASSWORD, "csrf_token": _csrf(page)},
        allow_redirects=False,
        timeout=10,
    )
    assert response.status_code == 302, response.text[:500]
    return browser


def _register(meta: Meta, browser: requests.Session, *, alg: str) -> dict[str, str]:
    """The relying party's developer registers it at /clients (here: alice herself)."""
    page = browser.get(meta.url + "/clients", timeout=10)
    response = browser.post(
        meta.url + "/clients",
        data={
            "name": f"RP {alg}",
            "redirect_uris": meta.rp_base + "/callback",
            "kind": "confidential",
            "id_token_alg": alg,
            "post_logout_redirect_uris": meta.rp_base + "/logged-out",
            "backchannel_logout_uri": meta.receiver.url,
            "csrf_token": _csrf(page),
        },
        timeout=10,
    )
    assert response.status_code == 200, response.text[:800]
    client_id = re.search(r'id="client-id">([^<]+)<', response.text)
    secret = re.search(r'id="client-secret">([^<]+)<', response.text)
    assert client_id and secret
    return {"id": client_id.group(1), "secret": secret.group(1)}


def _through_consent(browser: requests.Session, url: str) -> str:
    """What the browser does with the authorization URL: approve, return the callback."""
    response = browser.get(url, allow_redirects=False, timeout=10)
    if response.status_code == 200:
        response = browser.post(
            url,
            data={"decision": "approve", "csrf_token": _csrf(response)},
            allow_redirects=False,
            timeout=10,
        )
    assert response.status_code == 302, response.text[:500]
    return response.headers["Location"]


@pytest.mark.parametrize("alg", ["RS256", "EdDSA"])
def test_a_relying_party_logs_in_reads_userinfo_and_logs_out(
    meta: Meta, alg: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # oauthlib refuses plain http; meta's origin is loopback http in this test.
    monkeypatch.setenv("OAUTHLIB_INSECURE_TRANSPORT", "1")
    browser = _browser(meta)
    rp = _register(meta, browser, alg=alg)

    # Discovery.
    config = requests.get(meta.url + "/.well-known/openid-configuration", timeout=10).json()
    assert config["issuer"] == meta.url
    assert alg in config["id_token_signing_alg_values_supported"]

    # Authorization code + PKCE (S256) + nonce.
    nonce = secrets.token_urlsafe(16)
    session = OAuth2Session(
        rp["id"],
        redirect_uri=meta.rp_base + "/callback",
        scope=["openid", "profile", "email"],
        pkce="S256",
    )
    url, state = session.authorization_url(config["authorization_endpoint"], nonce=nonce)
    callback = _through_consent(browser, url)
    assert parse_qs(urlsplit(callback).query)["state"] == [state]
    token = session.fetch_token(
        config["token_endpoint"],
        authorization_response=callback,
        client_secret=rp["secret"],
        timeout=10,
    )

    # The ID token, checked against the JWKS the discovery document names.
    keys = jwt.PyJWKClient(config["jwks_uri"])
    signing_key = keys.get_signing_key_from_jwt(token["id_token"])
    claims = jwt.decode(
        token["id_token"],
        signing_key.key,
        algorithms=[alg],
        audience=rp["id"],
        issuer=config["issuer"],
        options={"require": ["exp", "iat", "sub", "auth_time", "nonce"]},
    )
    assert jwt.get_unverified_header(token["id_token"])["alg"] == alg
    assert claims["nonce"] == nonce
    assert claims["amr"] == ["pwd"]
    assert claims["preferred_username"] == "alice"

    # UserInfo, with the access token.
    info = session.get(config["userinfo_endpoint"], timeout=10)
    assert info.status_code == 200, info.text
    assert info.json()["sub"] == claims["sub"]
    assert info.json()["email"] == "alice@example.org"

    # The same nonce again is refused (told to the client at its redirect URI).
    replay = OAuth2Session(
        rp["id"], redirect_uri=meta.rp_base + "/callback", scope=["openid"], pkce="S256"
    )
    url, _ = replay.authorization_url(config["authorization_endpoint"], nonce=nonce)
    refused = browser.get(url, allow_redirects=False, timeout=10)
    assert parse_qs(urlsplit(refused.headers["Location"]).query)["error"] == ["invalid_request"]

    # RP-initiated logout: back to the registered page with the state, session gone.
    meta.receiver.bodies.clear()
    meta.receiver.arrived.clear()
    query = urlencode(
        {
            "id_token_hint": token["id_token"],
            "post_logout_redirect_uri": meta.rp_base + "/logged-out",
            "state": "after-logout",
        }
    )
    response = browser.get(
        config["end_session_endpoint"] + "?" + query, allow_redirects=False, timeout=10
    )
    assert response.status_code == 302, response.text[:500]
    assert response.headers["Location"] == meta.rp_base + "/logged-out?state=after-logout"
    profile = browser.get(meta.url + "/profile", allow_redirects=False, timeout=10)
    assert profile.status_code == 302 and "/login" in profile.headers["Location"]

    # The back-channel logout token, as the relying party's receiver checks it.
    assert meta.receiver.arrived.wait(10)
    (body,) = meta.receiver.bodies
    logout = jwt.decode(
        body["logout_token"],
        keys.get_signing_key_from_jwt(body["logout_token"]).key,
        algorithms=[alg],
        audience=rp["id"],
        issuer=config["issuer"],
    )
    assert logout["sub"] == claims["sub"] and logout["sid"] == claims["sid"]
    assert "http://schemas.openid.net/event/backchannel-logout" in logout["events"]
    assert "nonce" not in logout
