"""A registered but malicious application, and whoever else holds a code or a client id.

Each test plays the application (or another program on the user's machine) against
meta's endpoints with what such a party has: its own client id and secret, a code it
received, a public client's id and a loopback port of its own.
"""

from __future__ import annotations

from typing import Any

import pytest
from meta_constants import PASSWORD
from oauth_helpers import (
    authorize_url,
    basic,
    exchange,
    oauth_app,
    pkce,
    query_of,
    register_client,
)
from oidc_helpers import csrf_of

from srcore.testing import log_in_client

__all__ = ["oauth_app"]  # fixtures used by this module

REDIRECT = "https://app.example/cb"


@pytest.fixture
def alice(accounts: Any) -> Any:
    return accounts.make("alice")


@pytest.fixture
def browser(oauth_app: Any, alice: Any) -> Any:
    """A test client with alice logged in at meta."""
    return log_in_client(oauth_app.test_client(), alice)


def _approve(browser: Any, url: str) -> Any:
    """GET the authorization request and, if meta asks, press Allow."""
    page = browser.get(url)
    if page.status_code != 200:
        return page
    token = csrf_of(page.get_data(as_text=True))
    return browser.post(url, data={"decision": "approve", "csrf_token": token})


def _code(browser: Any, client_id: str, redirect: str = REDIRECT) -> tuple[str, str]:
    verifier, challenge = pkce()
    response = _approve(browser, authorize_url(client_id, redirect, challenge=challenge))
    assert response.status_code == 302, response.get_data(as_text=True)[:400]
    return query_of(response.headers["Location"])["code"], verifier


def _profile(app: Any, access: str) -> int:
    response = app.test_client().get("/api/profile", headers={"Authorization": f"Bearer {access}"})
    return int(response.status_code)


# -- a code the application has not exchanged yet ----------------------------------------------


def test_a_code_from_before_the_user_revoked_the_application_gives_nothing(
    oauth_app: Any, browser: Any, accounts: Any
) -> None:
    """The application holds back the code of its authorization (up to the code's
    lifetime); the user revokes its access on /security; the code must not make a grant
    the user never sees and believes is gone."""
    gadget = register_client(oauth_app, accounts, confidential=True)
    code, verifier = _code(browser, gadget["id"])
    token = csrf_of(browser.get("/security").get_data(as_text=True))
    revoked = browser.post(
        f"/security/applications/{gadget['id']}/revoke", data={"csrf_token": token}
    )
    assert revoked.status_code == 302
    response = exchange(
        oauth_app.test_client(),
        code,
        verifier,
        redirect_uri=REDIRECT,
        headers=basic(gadget["id"], gadget["secret"]),
    )
    assert response.status_code == 400, response.get_json()
    assert response.get_json()["error"] == "invalid_grant"
    # And it asks again: the consent went with the rest.
    again = browser.get(authorize_url(gadget["id"], REDIRECT, challenge=pkce()[1]))
    assert again.status_code == 200


def test_a_code_from_before_a_password_change_gives_nothing(
    oauth_app: Any, browser: Any, accounts: Any
) -> None:
    """A password change ends every grant of the account: a code someone got with the
    old session (a stolen cookie, a borrowed laptop) must not make a new one after it."""
    gadget = register_client(oauth_app, accounts, confidential=True)
    code, verifier = _code(browser, gadget["id"])
    token = csrf_of(browser.get("/password").get_data(as_text=True))
    changed = browser.post(
        "/password",
        data={
            "current_password": PASSWORD,
            "password": "a brand new passphrase",
            "csrf_token": token,
        },
    )
    assert changed.status_code == 302, changed.get_data(as_text=True)[:400]
    response = exchange(
        oauth_app.test_client(),
        code,
        verifier,
        redirect_uri=REDIRECT,
        headers=basic(gadget["id"], gadget["secret"]),
    )
    assert response.status_code == 400, response.get_json()
    assert response.get_json()["error"] == "invalid_grant"


def test_a_code_exchanged_before_the_revocation_dies_with_its_grant(
    oauth_app: Any, browser: Any, accounts: Any
) -> None:
    gadget = register_client(oauth_app, accounts, confidential=True)
    code, verifier = _code(browser, gadget["id"])
    tokens = exchange(
        oauth_app.test_client(),
        code,
        verifier,
        redirect_uri=REDIRECT,
        headers=basic(gadget["id"], gadget["secret"]),
    ).get_json()
    assert _profile(oauth_app, tokens["access_token"]) == 200
    token = csrf_of(browser.get("/security").get_data(as_text=True))
    browser.post(f"/security/applications/{gadget['id']}/revoke", data={"csrf_token": token})
    assert _profile(oauth_app, tokens["access_token"]) == 401


# -- another program on the user's machine, with a public client's id -----------------------


@pytest.mark.parametrize(
    ("registered", "used"),
    [
        ("http://127.0.0.1/cb", "http://127.0.0.1:5555/cb"),
        ("com.example.app:/cb", "com.example.app:/cb"),
    ],
)
def test_a_native_apps_remembered_consent_is_not_given_to_whoever_names_it(
    oauth_app: Any, browser: Any, accounts: Any, registered: str, used: str
) -> None:
    """A native app's client id is public, and any program on the machine can listen on a
    loopback port or claim a private-use scheme: a request naming the app proves nothing
    of who sent it (RFC 8252 8.6). The user approved the real app once; the impostor's
    request, with a verifier of its own, must get the consent page, not a code."""
    native = register_client(oauth_app, accounts, confidential=False, redirect=registered)
    real_port = "http://127.0.0.1:4444/cb" if registered.startswith("http:") else registered
    _code(browser, native["id"], real_port)  # the real app, approved by the user
    verifier, challenge = pkce()
    silent = browser.get(authorize_url(native["id"], used, challenge=challenge))
    assert silent.status_code == 200, silent.headers.get("Location")
    assert "Authorize" in silent.get_data(as_text=True)
    # prompt=none cannot skip the page either: the client is told consent is required.
    none = browser.get(
        authorize_url(native["id"], used, challenge=challenge, scope="openid", prompt="none")
    )
    assert none.status_code == 302
    assert query_of(none.headers["Location"])["error"] == "consent_required"
    # Approved on the page, the flow works as before.
    approved = _approve(browser, authorize_url(native["id"], used, challenge=challenge))
    code = query_of(approved.headers["Location"])["code"]
    response = oauth_app.test_client().post(
        "/oauth/token",
        data={
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": used,
            "client_id": native["id"],
            "code_verifier": verifier,
        },
    )
    assert response.status_code == 200, response.get_json()


def test_a_browser_apps_consent_is_remembered(oauth_app: Any, browser: Any, accounts: Any) -> None:
    """A public client whose redirect URI is https gets its code only on its own site:
    the consent is remembered for it as for a confidential client."""
    spa = register_client(oauth_app, accounts, confidential=False)
    _code(browser, spa["id"])
    again = browser.get(authorize_url(spa["id"], REDIRECT, challenge=pkce()[1]))
    assert again.status_code == 302 and "code" in query_of(again.headers["Location"])


# -- what the consent page says ---------------------------------------------------------------


@pytest.mark.parametrize(
    "uri",
    [
        "https://\u0430pple.com/cb",  # a Cyrillic a: the browser goes to xn--pple-43d.com
        "https://ex\u202eample.com/cb",  # a right-to-left override
        "https://app.example/c\u200bb",  # a zero-width space
        "com.example.app:/\u202ecb",
    ],
)
def test_a_redirect_uri_must_be_printable_ascii(oauth_app: Any, accounts: Any, uri: str) -> None:
    """The consent page names where the browser will be sent; a host written in another
    script (or reversed by a bidi override) reads as a trusted name while the browser
    goes to its xn-- form. A redirect URI is registered as ASCII (RFC 3986)."""
    from oidc_helpers import post_client_form

    developer = log_in_client(oauth_app.test_client(), accounts.make("developer"))
    for field in ("redirect_uris", "post_logout_redirect_uris"):
        data = {"name": "Gadget", "redirect_uris": REDIRECT, "kind": "public", field: uri}
        response = post_client_form(developer, data)
        assert response.status_code == 400, (field, uri)
        assert "ASCII" in response.get_data(as_text=True)


def test_the_consent_page_shows_a_non_ascii_host_for_what_it_is(
    oauth_app: Any, browser: Any, accounts: Any
) -> None:
    """An application registered before the rule, with a host in another script: the page
    shows each character that is not ASCII as its code point, never the look-alike."""
    from meta.oauth.models import OAuthClient
    from sqlalchemy import update

    gadget = register_client(oauth_app, accounts, confidential=True)
    spoof = "https://\u0430pple.com/cb"
    with oauth_app.extensions["srcore"].db.transaction() as session:
        session.execute(
            update(OAuthClient)
            .where(OAuthClient.client_id == gadget["id"])
            .values(redirect_uris=spoof)
        )
    page = browser.get(authorize_url(gadget["id"], spoof, challenge=pkce()[1]))
    assert page.status_code == 200
    text = page.get_data(as_text=True)
    assert "\u0430pple.com" not in text
    assert "&lt;U+0430&gt;pple.com" in text


# -- meta's address as a way to the application's site ------------------------------------------


@pytest.mark.parametrize(
    "wrong",
    [
        {"scope": "made/up:RO"},  # a scope no service has
        {"challenge": None},  # no PKCE
    ],
)
def test_a_wrong_request_does_not_bounce_a_stranger_to_the_application(
    oauth_app: Any, accounts: Any, wrong: dict[str, Any]
) -> None:
    """An application sends people a link to meta that it made wrong on purpose: its error
    goes to the application's redirect URI. Followed by someone not logged in, it must
    lead to meta's login page, not straight through meta to the application's site (RFC
    9700 4.11.2: authenticate the user first)."""
    gadget = register_client(oauth_app, accounts, confidential=True)
    options: dict[str, Any] = {"challenge": pkce()[1], **wrong}
    url = authorize_url(gadget["id"], REDIRECT, **options)
    stranger = oauth_app.test_client()
    response = stranger.get(url)
    assert response.status_code == 302
    assert response.headers["Location"].startswith("/login?"), response.headers["Location"]
    # Logged in, the application is told what was wrong, as before.
    browser = log_in_client(oauth_app.test_client(), accounts.make("alice"))
    told = browser.get(url)
    assert told.status_code == 302 and told.headers["Location"].startswith(REDIRECT)
    assert "error" in query_of(told.headers["Location"])


def test_prompt_none_without_a_session_is_still_answered_at_once(
    oauth_app: Any, accounts: Any
) -> None:
    gadget = register_client(oauth_app, accounts, confidential=True)
    url = authorize_url(
        gadget["id"], REDIRECT, challenge=pkce()[1], scope="made/up:RO", prompt="none"
    )
    response = oauth_app.test_client().get(url)
    assert response.status_code == 302 and response.headers["Location"].startswith(REDIRECT)


@pytest.mark.parametrize(
    "name",
    [
        "meta",
        "Todo",
        "T.O.D.O",
        "srcore test network",
        "SRCORE-Test-Network",
        "\uff34\uff4f\uff44\uff4f",  # fullwidth: reads as "Todo"
        "\U0001d413\U0001d428\U0001d41d\U0001d428",  # mathematical bold
    ],
)
def test_an_application_cannot_take_the_name_of_the_site_or_a_service(
    oauth_app: Any, accounts: Any, name: str
) -> None:
    """The network's services never show a consent page; an application that calls
    itself "Todo" shows one that reads as the service's own."""
    from oidc_helpers import post_client_form

    developer = log_in_client(oauth_app.test_client(), accounts.make("developer"))
    data = {"name": name, "redirect_uris": REDIRECT, "kind": "public"}
    response = post_client_form(developer, data)
    assert response.status_code == 400, name
    assert "name of this site or one of its services" in response.get_data(as_text=True)
    assert post_client_form(developer, {**data, "name": f"{name} helper"}).status_code == 200
