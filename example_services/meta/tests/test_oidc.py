"""meta as an OpenID Connect provider: discovery, ID tokens (RS256 and EdDSA), nonce,
prompt, max_age, acr/amr, UserInfo, RP-initiated and back-channel logout, and the clear
4xx of every bad request to them."""

from __future__ import annotations

import base64
import hashlib
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import jwt
import pytest
from oauth_helpers import basic, exchange, pkce, query_of, verifier_for
from oidc_helpers import (
    AFTER_LOGOUT,
    REDIRECT,
    authorize,
    code_for,
    consent,
    csrf_of,
    id_claims,
    oidc_app,
    post_client_form,
    receiver,
    register,
    tokens_for,
)

from srcore.testing import log_in_client

__all__ = ["oidc_app", "receiver"]  # fixtures used by this module


@pytest.fixture
def alice(accounts: Any) -> Any:
    return accounts.make("alice", url="https://alice.example/")


@pytest.fixture
def browser(oidc_app: Any, alice: Any) -> Any:
    return log_in_client(oidc_app.test_client(), alice)


@pytest.fixture
def rp(oidc_app: Any, accounts: Any) -> dict[str, str]:
    return register(oidc_app, accounts)


def _age_sessions(app: Any, user_id: int, by: timedelta) -> None:
    from meta.models import WebSession
    from sqlalchemy import update

    from srcore.db import utcnow

    with app.extensions["srcore"].db.transaction() as session:
        session.execute(
            update(WebSession).where(WebSession.user_id == user_id).values(created=utcnow() - by)
        )


def _set_amr(app: Any, user_id: int, amr: str) -> None:
    from meta.models import WebSession
    from sqlalchemy import update

    with app.extensions["srcore"].db.transaction() as session:
        session.execute(update(WebSession).where(WebSession.user_id == user_id).values(amr=amr))


def _log_in_form(browser: Any, location: str, password: str) -> Any:
    """Follow a redirect to /login, fill the form, and return the redirect it answers."""
    page = browser.get(location)
    assert page.status_code == 200, page.status_code
    parts = urlsplit(location)
    response = browser.post(
        parts.path + "?" + parts.query,
        data={
            "login": "alice",
            "password": password,
            "csrf_token": csrf_of(page.get_data(as_text=True)),
        },
    )
    assert response.status_code == 302, response.get_data(as_text=True)[:500]
    return response


# -- discovery and keys ----------------------------------------------------------------------


def test_discovery_names_every_endpoint_and_both_algorithms(oidc_app: Any) -> None:
    client = oidc_app.test_client()
    doc = client.get("/.well-known/openid-configuration").get_json()
    issuer = oidc_app.extensions["meta.oauth"].issuer
    assert doc["issuer"] == issuer
    for key, path in (
        ("authorization_endpoint", "/oauth/authorize"),
        ("token_endpoint", "/oauth/token"),
        ("userinfo_endpoint", "/userinfo"),
        ("jwks_uri", "/oauth/jwks.json"),
        ("end_session_endpoint", "/oauth/logout"),
    ):
        assert doc[key] == issuer + path
    assert doc["id_token_signing_alg_values_supported"] == ["RS256", "EdDSA"]
    assert {"openid", "profile", "email"} <= set(doc["scopes_supported"])
    assert doc["backchannel_logout_supported"] is True
    assert doc["code_challenge_methods_supported"] == ["S256"]
    keys = client.get("/oauth/jwks.json").get_json()["keys"]
    assert {(k["kty"], k["alg"]) for k in keys} == {("OKP", "EdDSA"), ("RSA", "RS256")}
    assert all("d" not in k for k in keys)


# -- ID tokens -----------------------------------------------------------------------------


@pytest.mark.parametrize("alg", ["RS256", "EdDSA"])
def test_id_token_is_signed_as_registered_and_says_how_the_user_logged_in(
    oidc_app: Any, accounts: Any, browser: Any, alice: Any, alg: str
) -> None:
    rp = register(oidc_app, accounts, alg=alg)
    body = tokens_for(browser, rp, scope="openid profile email", nonce="n-0S6_WzA2Mj")
    assert body["scope"] == "openid profile email"
    assert jwt.get_unverified_header(body["id_token"])["alg"] == alg
    claims = id_claims(oidc_app, body["id_token"], rp["id"])
    assert claims["sub"] == str(alice.id)
    assert claims["nonce"] == "n-0S6_WzA2Mj"
    assert claims["amr"] == ["pwd"]
    assert claims["acr"] == "urn:meta:acr:1fa"
    assert abs(claims["auth_time"] - claims["iat"]) < 60
    assert claims["preferred_username"] == "alice"
    assert claims["email"] == "alice@example.org" and claims["email_verified"] is True
    assert claims["sid"]
    digest = (hashlib.sha512 if alg == "EdDSA" else hashlib.sha256)(
        body["access_token"].encode()
    ).digest()
    half = base64.urlsafe_b64encode(digest[: len(digest) // 2]).rstrip(b"=").decode()
    assert claims["at_hash"] == half
    # The access token keeps srcore's grammar: no OpenID scope in it, meta in its audience.
    access = verifier_for(oidc_app, audience="meta").verify(body["access_token"])
    assert access.claims["scope"] == ""


def test_two_factor_login_is_multi_factor(oidc_app: Any, browser: Any, alice: Any, rp: Any) -> None:
    _set_amr(oidc_app, alice.id, "pwd otp")
    claims = id_claims(oidc_app, tokens_for(browser, rp)["id_token"], rp["id"])
    assert claims["amr"] == ["pwd", "otp"]
    assert claims["acr"] == "urn:meta:acr:2fa"


def test_without_openid_there_is_no_id_token(browser: Any, rp: Any) -> None:
    body = tokens_for(browser, rp, scope="meta/profile:RO")
    assert "id_token" not in body


def test_a_nonce_used_before_is_refused(browser: Any, rp: Any) -> None:
    code_for(browser, rp, nonce="once-only")
    _, challenge = pkce()
    response = browser.get(authorize(rp, challenge, nonce="once-only"))
    assert response.status_code == 302  # told to the client, at its checked redirect URI
    query = query_of(response.headers["Location"])
    assert query["error"] == "invalid_request" and "code" not in query
    assert "Replay" in query["error_description"]


# -- prompt and max_age --------------------------------------------------------------------


def test_prompt_none_without_a_session_redirects_login_required(oidc_app: Any, rp: Any) -> None:
    _, challenge = pkce()
    response = oidc_app.test_client().get(authorize(rp, challenge, prompt="none"))
    assert response.status_code == 302
    assert response.headers["Location"].startswith(REDIRECT)
    query = query_of(response.headers["Location"])
    assert query["error"] == "login_required" and query["state"] == "st4te"


def test_prompt_none_needing_consent_redirects_consent_required(browser: Any, rp: Any) -> None:
    _, challenge = pkce()
    response = browser.get(authorize(rp, challenge, prompt="none"))
    assert response.status_code == 302
    assert query_of(response.headers["Location"])["error"] == "consent_required"


def test_prompt_none_with_a_session_and_consent_gives_a_code(browser: Any, rp: Any) -> None:
    code_for(browser, rp)
    _, challenge = pkce()
    response = browser.get(authorize(rp, challenge, prompt="none"))
    assert "code" in query_of(response.headers["Location"])


def test_max_age_forces_a_new_login_when_the_login_is_older(
    oidc_app: Any, browser: Any, alice: Any, rp: Any, password: str
) -> None:
    code_for(browser, rp)  # consent remembered
    _age_sessions(oidc_app, alice.id, timedelta(hours=2))
    verifier, challenge = pkce()
    url = authorize(rp, challenge, max_age="3600")
    response = browser.get(url)
    assert response.status_code == 302
    assert urlsplit(response.headers["Location"]).path == "/login"
    assert parse_qs(urlsplit(response.headers["Location"]).query)["reauth"] == ["1"]
    # prompt=none cannot show the login page: the client is told instead.
    refused = browser.get(authorize(rp, challenge, max_age="3600", prompt="none"))
    assert query_of(refused.headers["Location"])["error"] == "login_required"
    back = _log_in_form(browser, response.headers["Location"], password)
    final = browser.get(back.headers["Location"])
    assert final.status_code == 302, final.get_data(as_text=True)[:300]
    code = query_of(final.headers["Location"])["code"]
    body = exchange(
        browser, code, verifier, redirect_uri=REDIRECT, headers=basic(rp["id"], rp["secret"])
    ).get_json()
    claims = id_claims(oidc_app, body["id_token"], rp["id"])
    assert claims["iat"] - claims["auth_time"] < 60  # the new login, not the old one


def test_max_age_zero_is_satisfied_by_the_login_it_forced(
    oidc_app: Any, browser: Any, alice: Any, rp: Any, password: str
) -> None:
    code_for(browser, rp)
    _age_sessions(oidc_app, alice.id, timedelta(seconds=5))
    _, challenge = pkce()
    response = browser.get(authorize(rp, challenge, max_age="0"))
    back = _log_in_form(browser, response.headers["Location"], password)
    _age_sessions(oidc_app, alice.id, timedelta(seconds=5))  # a slow return: still no loop
    final = browser.get(back.headers["Location"])
    assert "code" in query_of(final.headers["Location"])


def test_a_login_within_max_age_passes(browser: Any, rp: Any) -> None:
    code_for(browser, rp, max_age="3600")


def test_prompt_login_forces_a_new_login_even_when_logged_in(
    oidc_app: Any, browser: Any, alice: Any, rp: Any, password: str
) -> None:
    code_for(browser, rp)
    _, challenge = pkce()
    response = browser.get(authorize(rp, challenge, prompt="login"))
    assert response.status_code == 302
    assert urlsplit(response.headers["Location"]).path == "/login"
    # A wrong password gets nowhere.
    page = browser.get(response.headers["Location"])
    parts = urlsplit(response.headers["Location"])
    wrong = browser.post(
        parts.path + "?" + parts.query,
        data={
            "login": "alice",
            "password": "nope" * 4,
            "csrf_token": csrf_of(page.get_data(as_text=True)),
        },
    )
    assert wrong.status_code == 400
    back = _log_in_form(browser, response.headers["Location"], password)
    assert "prompt=login" not in back.headers["Location"]
    final = browser.get(back.headers["Location"])
    assert "code" in query_of(final.headers["Location"])
    # A forged or stale return mark forces the login again.
    forged = browser.get(authorize(rp, challenge, prompt="login", meta_reauth="forged"))
    assert urlsplit(forged.headers["Location"]).path == "/login"


def test_a_forced_logins_mark_does_not_serve_another_client(
    oidc_app: Any, accounts: Any, browser: Any, rp: Any, password: str
) -> None:
    """The way back from a login one client forced, carried to another client's request
    (the same browser, within the mark's window), does not count as that one's fresh login."""
    other = register(oidc_app, accounts, owner="stranger")
    code_for(browser, rp)
    code_for(browser, other)
    _, challenge = pkce()
    response = browser.get(authorize(rp, challenge, prompt="login"))
    back = _log_in_form(browser, response.headers["Location"], password)
    mark = query_of(back.headers["Location"])["meta_reauth"]
    # The login is new now: the mark's replaced session is gone, as it is for its own client.
    borrowed = browser.get(authorize(other, challenge, prompt="login", meta_reauth=mark))
    assert borrowed.status_code == 302
    assert urlsplit(borrowed.headers["Location"]).path == "/login"
    own = browser.get(back.headers["Location"])
    assert "code" in query_of(own.headers["Location"])


def test_prompt_consent_asks_again(browser: Any, rp: Any) -> None:
    code_for(browser, rp)
    _, challenge = pkce()
    response = browser.get(authorize(rp, challenge, prompt="consent"))
    assert response.status_code == 200
    assert "Authorize Relying Party" in response.get_data(as_text=True)


@pytest.mark.parametrize(
    ("params", "error"),
    [
        ({"max_age": "soon"}, "invalid_request"),
        # Digits to str.isdigit(), but int() fails on the one and reads the other as 10.
        ({"max_age": "\u00b2"}, "invalid_request"),
        ({"max_age": "\u0661\u0660"}, "invalid_request"),
        ({"prompt": "none login"}, "invalid_request"),
    ],
)
def test_bad_prompt_or_max_age_is_the_clients_invalid_request(
    browser: Any, rp: Any, params: dict[str, str], error: str
) -> None:
    _, challenge = pkce()
    response = browser.get(authorize(rp, challenge, **params))
    assert response.status_code == 302
    assert query_of(response.headers["Location"])["error"] == error


# -- UserInfo ------------------------------------------------------------------------------


def test_userinfo_releases_the_claims_of_the_granted_scopes(
    oidc_app: Any, browser: Any, alice: Any, rp: Any
) -> None:
    full = tokens_for(browser, rp, scope="openid profile email")["access_token"]
    client = oidc_app.test_client()
    answer = client.get("/userinfo", headers={"Authorization": f"Bearer {full}"})
    assert answer.status_code == 200
    assert answer.get_json() == {
        "sub": str(alice.id),
        "preferred_username": "alice",
        "name": "alice",
        "profile": oidc_app.extensions["meta.oauth"].issuer + "/profile",
        "website": "https://alice.example/",
        "email": "alice@example.org",
        "email_verified": True,
    }
    posted = client.post("/userinfo", data={"access_token": full})
    assert posted.status_code == 200 and posted.get_json()["sub"] == str(alice.id)
    bare = tokens_for(browser, rp, scope="openid")["access_token"]
    answer = client.get("/userinfo", headers={"Authorization": f"Bearer {bare}"})
    assert answer.get_json() == {"sub": str(alice.id)}
    email_only = tokens_for(browser, rp, scope="openid email")["access_token"]
    answer = client.get("/userinfo", headers={"Authorization": f"Bearer {email_only}"})
    assert set(answer.get_json()) == {"sub", "email", "email_verified"}


def test_userinfo_refuses_bad_tokens_with_a_bearer_challenge(
    oidc_app: Any, browser: Any, rp: Any
) -> None:
    client = oidc_app.test_client()
    none = client.get("/userinfo")
    assert none.status_code == 401 and none.headers["WWW-Authenticate"].startswith("Bearer")
    bad = client.get("/userinfo", headers={"Authorization": "Bearer not.a.token"})
    assert bad.status_code == 401 and bad.get_json()["error"] == "invalid_token"
    basic_auth = client.get("/userinfo", headers={"Authorization": "Basic Zm9vOmJhcg=="})
    assert basic_auth.status_code == 401
    no_openid = tokens_for(browser, rp, scope="meta/profile:RO")["access_token"]
    refused = client.get("/userinfo", headers={"Authorization": f"Bearer {no_openid}"})
    assert refused.status_code == 403 and refused.get_json()["error"] == "insufficient_scope"
    token = tokens_for(browser, rp)["access_token"]
    twice = client.post(
        "/userinfo", data={"access_token": token}, headers={"Authorization": f"Bearer {token}"}
    )
    assert twice.status_code == 400


def test_userinfo_stops_when_the_token_is_revoked(oidc_app: Any, browser: Any, rp: Any) -> None:
    token = tokens_for(browser, rp)["access_token"]
    client = oidc_app.test_client()
    revoked = client.post(
        "/oauth/revoke", data={"token": token}, headers=basic(rp["id"], rp["secret"])
    )
    assert revoked.status_code == 200
    answer = client.get("/userinfo", headers={"Authorization": f"Bearer {token}"})
    assert answer.status_code == 401


# -- RP-initiated logout -------------------------------------------------------------------


def test_logout_with_the_users_id_token_ends_the_session_and_returns(
    oidc_app: Any, browser: Any, rp: Any
) -> None:
    id_token = tokens_for(browser, rp)["id_token"]
    response = browser.get(
        "/oauth/logout?"
        + "&".join(
            [
                f"id_token_hint={id_token}",
                f"post_logout_redirect_uri={AFTER_LOGOUT}",
                "state=bye-state",
            ]
        )
    )
    assert response.status_code == 302
    assert response.headers["Location"] == AFTER_LOGOUT + "?state=bye-state"
    assert browser.get("/profile").status_code == 302  # logged out at meta


def test_logout_without_a_hint_asks_first(oidc_app: Any, browser: Any, rp: Any) -> None:
    query = f"client_id={rp['id']}&post_logout_redirect_uri={AFTER_LOGOUT}"
    page = browser.get("/oauth/logout?" + query)
    assert page.status_code == 200
    assert browser.get("/profile").status_code == 200  # still logged in
    stay = browser.post(
        "/oauth/logout",
        data={
            "client_id": rp["id"],
            "post_logout_redirect_uri": AFTER_LOGOUT,
            "decision": "stay",
            "csrf_token": csrf_of(page.get_data(as_text=True)),
        },
    )
    # Back to the application, still logged in here.
    assert stay.status_code == 302 and stay.headers["Location"] == AFTER_LOGOUT
    assert browser.get("/profile").status_code == 200
    confirmed = browser.post(
        "/oauth/logout",
        data={
            "client_id": rp["id"],
            "post_logout_redirect_uri": AFTER_LOGOUT,
            "decision": "logout",
            "csrf_token": csrf_of(page.get_data(as_text=True)),
        },
    )
    assert confirmed.status_code == 302 and confirmed.headers["Location"] == AFTER_LOGOUT
    assert browser.get("/profile").status_code == 302


def test_logout_when_logged_out_shows_a_page(oidc_app: Any) -> None:
    response = oidc_app.test_client().get("/oauth/logout")
    assert response.status_code == 200
    assert "You are logged out" in response.get_data(as_text=True)


def test_bad_logout_requests_are_clear_400s(
    oidc_app: Any, accounts: Any, browser: Any, rp: Any
) -> None:
    id_token = tokens_for(browser, rp)["id_token"]
    other = register(oidc_app, accounts, owner="someone")
    client = oidc_app.test_client()
    forged = id_token.rsplit(".", 1)[0] + ".AAAA"
    cases = [
        ("id_token_hint=garbage", "id_token_hint"),
        (f"id_token_hint={forged}", "id_token_hint"),
        ("client_id=nobody", "No such client"),
        (f"id_token_hint={id_token}&client_id={other['id']}", "audience"),
        (f"id_token_hint={id_token}&post_logout_redirect_uri=https://evil.example/", "registered"),
        (f"post_logout_redirect_uri={AFTER_LOGOUT}", "needs id_token_hint"),
        (f"client_id={rp['id']}&client_id={rp['id']}", "repeated"),
        ("id_token_hint=" + "a" * 1500, "id_token_hint"),
    ]
    for query, words in cases:
        response = client.get("/oauth/logout?" + query)
        assert response.status_code == 400, (query, response.status_code)
        assert words in response.get_data(as_text=True), query
    huge = client.post("/oauth/logout", data={"id_token_hint": "a" * 20000})
    assert huge.status_code == 400
    # An access token is not an ID token.
    access = tokens_for(browser, rp)["access_token"]
    assert client.get(f"/oauth/logout?id_token_hint={access}").status_code == 400
    assert browser.get("/profile").status_code == 200  # nothing logged anyone out


# -- back-channel logout ------------------------------------------------------------------


def _check_logout_token(app: Any, token: str, rp: dict[str, str], user: Any) -> dict[str, Any]:
    header = jwt.get_unverified_header(token)
    assert header["typ"] == "logout+jwt"
    claims = id_claims(app, token, rp["id"])
    assert claims["sub"] == str(user.id)
    assert claims["events"] == {"http://schemas.openid.net/event/backchannel-logout": {}}
    assert "nonce" not in claims and claims["jti"]
    return claims


def test_logging_out_of_meta_posts_a_logout_token_to_the_client(
    oidc_app: Any, accounts: Any, browser: Any, alice: Any, receiver: Any, csrf: Any
) -> None:
    rp = register(oidc_app, accounts, backchannel=receiver.url)
    quiet = register(oidc_app, accounts, owner="quiet")  # no back-channel URI: nothing sent
    id_token = tokens_for(browser, rp)["id_token"]
    tokens_for(browser, quiet)
    sid = id_claims(oidc_app, id_token, rp["id"])["sid"]
    response = csrf.post(browser, "/logout", {}, page="/profile")
    assert response.status_code == 302
    (body,) = receiver.wait(1)
    claims = _check_logout_token(oidc_app, body["logout_token"], rp, alice)
    assert claims["sid"] == sid


def test_rp_initiated_logout_also_sends_back_channel_logouts(
    oidc_app: Any, accounts: Any, browser: Any, alice: Any, receiver: Any
) -> None:
    rp = register(oidc_app, accounts, backchannel=receiver.url, alg="EdDSA")
    id_token = tokens_for(browser, rp)["id_token"]
    browser.get(f"/oauth/logout?id_token_hint={id_token}")
    (body,) = receiver.wait(1)
    assert jwt.get_unverified_header(body["logout_token"])["alg"] == "EdDSA"
    _check_logout_token(oidc_app, body["logout_token"], rp, alice)


def test_logout_everywhere_names_no_session(
    oidc_app: Any, accounts: Any, browser: Any, alice: Any, receiver: Any, csrf: Any
) -> None:
    rp = register(oidc_app, accounts, backchannel=receiver.url)
    tokens_for(browser, rp)
    csrf.post(browser, "/logout/everywhere", {}, page="/profile")
    (body,) = receiver.wait(1)
    claims = _check_logout_token(oidc_app, body["logout_token"], rp, alice)
    assert "sid" not in claims


@pytest.mark.parametrize("change", ["set_password", "suspend", "delete_user"])
def test_a_back_channel_logout_is_sent_only_once_its_change_commits(
    oidc_app: Any, accounts: Any, browser: Any, alice: Any, receiver: Any, change: str
) -> None:
    from meta import logic
    from meta.models import User

    from srcore.db import session as db

    rp = register(oidc_app, accounts, backchannel=receiver.url)
    tokens_for(browser, rp)
    backchannel = oidc_app.extensions["meta.oauth"].extra["backchannel"]
    args = {"set_password": ("x",), "suspend": ("for a test",), "delete_user": ()}[change]
    with oidc_app.app_context():
        getattr(logic, change)(db, db.get(User, alice.id), *args)
        db.rollback()
        backchannel.close()  # every POST it was handed has been made
        assert receiver.bodies == [], "a logout announced for a change that rolled back"
        assert db.get(User, alice.id) is not None
        getattr(logic, change)(db, db.get(User, alice.id), *args)
        db.commit()
    (body,) = receiver.wait(1)
    assert "sid" not in _check_logout_token(oidc_app, body["logout_token"], rp, alice)


# -- registration ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "words"),
    [
        ({"backchannel_logout_uri": "http://10.0.0.7/logout"}, "will not send"),
        ({"backchannel_logout_uri": "ftp://127.0.0.1/x"}, "will not send"),
        ({"backchannel_logout_uri": "https://127.0.0.1:6379/x"}, "will not send"),
        ({"backchannel_logout_uri": "https://rp.example/x#frag"}, "fragment"),
        ({"backchannel_logout_uri": "http://rp.example/logout"}, "https"),
        ({"post_logout_redirect_uris": "http://rp.example/bye"}, "https"),
        ({"post_logout_redirect_uris": "https://rp.example/bye#x"}, "fragment"),
        ({"id_token_alg": "HS256"}, "ID token signature"),
    ],
)
def test_registration_checks_the_openid_fields(
    oidc_app: Any, accounts: Any, fields: dict[str, str], words: str
) -> None:
    browser = log_in_client(oidc_app.test_client(), accounts.make("dev"))
    data = {"name": "X", "redirect_uris": REDIRECT, "kind": "confidential", **fields}
    response = post_client_form(browser, data)
    assert response.status_code == 400, response.get_data(as_text=True)[:400]
    assert words in response.get_data(as_text=True)


def test_a_consented_openid_request_is_remembered(browser: Any, rp: Any) -> None:
    code_for(browser, rp, scope="openid email")
    _, challenge = pkce()
    again = consent(browser, authorize(rp, challenge, scope="email openid"))
    assert again.status_code == 302


# -- bad input -----------------------------------------------------------------------------


def test_a_nonce_too_long_to_keep_is_the_clients_invalid_request(browser: Any, rp: Any) -> None:
    _, challenge = pkce()
    response = browser.get(authorize(rp, challenge, nonce="n" * 256))
    assert response.status_code == 302
    assert query_of(response.headers["Location"])["error"] == "invalid_request"
    code_for(browser, rp, nonce="n" * 255)


@pytest.mark.parametrize(
    "params",
    [
        {"max_age": "9" * 40},
        {"max_age": "-1"},
        {"prompt": "\x00"},
        {"prompt": "none none"},
        {"prompt": "banana"},
        {"nonce": "\x00"},
        {"meta_reauth": "1.2.3"},
        {"meta_reauth": "x" * 500},
        {"scope": "openid openid"},
        {"scope": "openid nope"},
        {"response_type": "code id_token"},
        {"client_id": "nobody"},
        {"redirect_uri": "https://evil.example/cb"},
    ],
)
def test_bad_openid_authorization_requests_are_4xx_or_told_to_the_client(
    browser: Any, rp: Any, params: dict[str, str]
) -> None:
    _, challenge = pkce()
    response = browser.get(authorize(rp, challenge, **params))
    assert response.status_code < 500, params
    if response.status_code == 302:
        location = response.headers["Location"]
        assert location.startswith((REDIRECT, "/login", "http://localhost/login")), location


@pytest.mark.parametrize(
    ("method", "path", "kwargs"),
    [
        ("GET", "/userinfo", {"headers": {"Authorization": "Bearer \x7f"}}),
        ("GET", "/userinfo", {"headers": {"Authorization": "Bearer " + "a" * 10000}}),
        ("POST", "/userinfo", {"data": {"access_token": ""}}),
        ("GET", "/oauth/logout", {"query_string": {"id_token_hint": "a.b.c"}}),
        ("GET", "/oauth/logout", {"query_string": {"id_token_hint": "\x00"}}),
        ("GET", "/oauth/logout", {"query_string": {"state": "x", "client_id": ""}}),
        ("GET", "/oauth/logout", {"query_string": {"post_logout_redirect_uri": "javascript:x"}}),
        ("GET", "/.well-known/openid-configuration", {"query_string": {"x": "\x00"}}),
    ],
)
def test_bad_requests_to_the_openid_endpoints_are_4xx(
    oidc_app: Any, method: str, path: str, kwargs: dict[str, Any]
) -> None:
    response = oidc_app.test_client().open(path, method=method, **kwargs)
    assert response.status_code < 500, response.get_data(as_text=True)[:300]


@pytest.mark.parametrize(
    ("amr", "acr"),
    [
        (["pwd"], "urn:meta:acr:1fa"),
        (["pwd", "otp"], "urn:meta:acr:2fa"),
        (["hwk", "pin"], "urn:meta:acr:2fa"),
        (["swk", "user"], "urn:meta:acr:1fa"),
        (["pwd", "hwk", "user"], "urn:meta:acr:2fa"),
        (["mfa"], "urn:meta:acr:2fa"),
        ([], "urn:meta:acr:1fa"),
    ],
)
def test_acr_counts_kinds_of_factor(amr: list[str], acr: str) -> None:
    from meta.oauth.oidc import acr_of

    assert acr_of(amr) == acr


@pytest.mark.parametrize(
    ("path", "method"),
    [("/.well-known/openid-configuration", "GET"), ("/userinfo", "GET"), ("/userinfo", "POST")],
)
def test_browser_apps_may_call_discovery_and_userinfo(
    oidc_app: Any, path: str, method: str
) -> None:
    client = oidc_app.test_client()
    origin = {"Origin": "https://spa.example"}
    preflight = client.options(
        path,
        headers={
            **origin,
            "Access-Control-Request-Method": method,
            "Access-Control-Request-Headers": "authorization",
        },
    )
    assert preflight.headers["Access-Control-Allow-Origin"] == "*"
    assert "authorization" in preflight.headers["Access-Control-Allow-Headers"].lower()
    assert "Access-Control-Allow-Credentials" not in preflight.headers
    actual = client.open(path, method=method, headers=origin)
    assert actual.headers["Access-Control-Allow-Origin"] == "*"


def test_the_logout_page_is_no_cors_page(oidc_app: Any) -> None:
    response = oidc_app.test_client().get("/oauth/logout", headers={"Origin": "https://x.example"})
    assert "Access-Control-Allow-Origin" not in response.headers


def test_a_hint_for_another_user_asks_before_logging_out(
    oidc_app: Any, accounts: Any, browser: Any, rp: Any
) -> None:
    bob = log_in_client(oidc_app.test_client(), accounts.make("bob"))
    bobs_token = tokens_for(bob, rp)["id_token"]
    page = browser.get(f"/oauth/logout?id_token_hint={bobs_token}")
    assert page.status_code == 200 and "Log out of" in page.get_data(as_text=True)
    assert browser.get("/profile").status_code == 200


def test_the_consent_page_names_the_identity_scopes(browser: Any, rp: Any) -> None:
    _, challenge = pkce()
    page = browser.get(authorize(rp, challenge, scope="openid email meta/profile:RO"))
    text = page.get_data(as_text=True)
    assert page.status_code == 200
    assert "Your identity" in text and "your email address" in text
    assert "meta/profile:RO" in text


def test_a_public_client_gets_an_id_token_with_pkce_alone(
    oidc_app: Any, accounts: Any, browser: Any, alice: Any
) -> None:
    spa = register(oidc_app, accounts, kind="public", owner="spa-dev")
    assert spa["secret"] == ""
    code, verifier = code_for(browser, spa, nonce="spa-nonce")
    response = exchange(
        browser, code, verifier, redirect_uri=REDIRECT, headers={}, client_id=spa["id"]
    )
    assert response.status_code == 200, response.get_json()
    claims = id_claims(oidc_app, response.get_json()["id_token"], spa["id"])
    assert claims["sub"] == str(alice.id) and claims["nonce"] == "spa-nonce"


def test_a_password_change_logs_the_user_out_of_every_application(
    oidc_app: Any, accounts: Any, browser: Any, alice: Any, receiver: Any, password: str
) -> None:
    rp = register(oidc_app, accounts, backchannel=receiver.url)
    tokens_for(browser, rp)
    page = browser.get("/password").get_data(as_text=True)
    response = browser.post(
        "/password",
        data={
            "current_password": password,
            "password": "a new and long passphrase",
            "csrf_token": csrf_of(page),
        },
    )
    assert response.status_code == 302
    (body,) = receiver.wait(1)
    assert "sid" not in _check_logout_token(oidc_app, body["logout_token"], rp, alice)


def test_a_failing_back_channel_does_not_stop_the_logout(
    oidc_app: Any, accounts: Any, browser: Any, csrf: Any
) -> None:
    from meta.oauth.backchannel import Backchannel

    tried: list[Any] = []

    class Broken(Backchannel):
        def send(self, *args: Any) -> Any:
            tried.append(args)
            raise RuntimeError("no threads left")

    rp = register(oidc_app, accounts, backchannel="http://127.0.0.1:9999/nothing")
    tokens_for(browser, rp)
    oidc_app.extensions["meta.oauth"].extra["backchannel"] = Broken(oidc_app)
    response = csrf.post(browser, "/logout", {}, page="/profile")
    assert response.status_code == 302
    assert len(tried) == 1
    assert browser.get("/profile").status_code == 302


def test_an_application_may_post_its_logout_request(oidc_app: Any, browser: Any, rp: Any) -> None:
    id_token = tokens_for(browser, rp)["id_token"]
    params = {"id_token_hint": id_token, "post_logout_redirect_uri": AFTER_LOGOUT, "state": "s"}
    posted = browser.post("/oauth/logout", data=params)  # no CSRF token: not meta's form
    assert posted.status_code == 303
    assert urlsplit(posted.headers["Location"]).path == "/oauth/logout"
    final = browser.get(posted.headers["Location"])
    assert final.status_code == 302 and final.headers["Location"] == AFTER_LOGOUT + "?state=s"
    assert browser.get("/profile").status_code == 302


def test_the_logout_confirmation_needs_its_csrf_token(oidc_app: Any, browser: Any) -> None:
    forged = browser.post("/oauth/logout", data={"decision": "logout"})
    assert forged.status_code == 400
    assert browser.get("/profile").status_code == 200


def test_a_refresh_keeps_or_narrows_the_openid_scopes(
    oidc_app: Any, browser: Any, alice: Any, rp: Any
) -> None:
    body = tokens_for(browser, rp, scope="openid email meta/profile:RO")
    client = oidc_app.test_client()

    def refresh(token: str, scope: str | None = None) -> Any:
        data = {"grant_type": "refresh_token", "refresh_token": token}
        if scope is not None:
            data["scope"] = scope
        return client.post("/oauth/token", data=data, headers=basic(rp["id"], rp["secret"]))

    wider = refresh(body["refresh_token"], "openid profile")
    assert wider.status_code == 400 and wider.get_json()["error"] == "invalid_scope"
    narrower = refresh(body["refresh_token"], "openid meta/profile:RO")
    assert narrower.status_code == 200, narrower.get_json()
    assert narrower.get_json()["scope"] == "openid meta/profile:RO"
    again = refresh(narrower.get_json()["refresh_token"])
    assert again.status_code == 200
    info = client.get(
        "/userinfo", headers={"Authorization": f"Bearer {narrower.get_json()['access_token']}"}
    )
    # The narrowed token reads only what it carries; the grant keeps the rest.
    assert info.get_json() == {"sub": str(alice.id)}
    # A refresh without scope gets the grant's again (the refresh token keeps the grant).
    assert again.get_json()["scope"] == "openid email meta/profile:RO"
    wide = client.get(
        "/userinfo", headers={"Authorization": f"Bearer {again.get_json()['access_token']}"}
    )
    assert wide.get_json()["email"] == "alice@example.org"
