"""meta's pages carry srcore's security headers; above all the consent page, which a
framing page could otherwise overlay to trick a click on "approve"."""

from __future__ import annotations

from typing import Any

from oauth_helpers import authorize_url, oauth_app, pkce  # noqa: F401 - fixture
from test_oauth import _register_client, alice, browser  # noqa: F401 - fixtures


def _not_framable(response: Any) -> None:
    assert response.headers["X-Frame-Options"] == "DENY"
    assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]


def test_consent_page_cannot_be_framed(oauth_app: Any, browser: Any, accounts: Any) -> None:  # noqa: F811
    gadget = _register_client(oauth_app, accounts, confidential=True)
    url = authorize_url(gadget["id"], "https://app.example/cb", challenge=pkce()[1])
    page = browser.get(url)
    assert page.status_code == 200 and "Gadget" in page.get_data(as_text=True)
    _not_framable(page)


def test_account_pages_cannot_be_framed(client: Any) -> None:
    for path in ("/login", "/register", "/forgot"):
        response = client.get(path)
        assert response.status_code in (200, 302), path
        _not_framable(response)
