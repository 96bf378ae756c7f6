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
