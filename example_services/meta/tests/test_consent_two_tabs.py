"""meta's consent page opened in two tabs of one browser: the person's answer on each page
is the one that counts. Allowed in one tab, the access is remembered; "Deny" pressed in the
other must still send the application no code (it sent one: the remembered consent was
checked before the answer)."""

from __future__ import annotations

import re
from typing import Any

import pytest
from oauth_helpers import authorize_url, oauth_app, pkce, query_of, register_client

from srcore.testing import log_in_client

__all__ = ["oauth_app"]  # the fixture this module uses

CALLBACK = "https://app.example/cb"


@pytest.fixture
def browser(oauth_app: Any, accounts: Any) -> Any:
    return log_in_client(oauth_app.test_client(), accounts.make("alice"))


def consent_page(browser: Any, client_id: str, state: str) -> tuple[str, str]:
    """Open the consent page in a tab: its address and the form's token."""
    url = authorize_url(
        client_id, CALLBACK, scope="meta/profile:RO", challenge=pkce()[1], state=state
    )
    page = browser.get(url)
    assert page.status_code == 200, page.status_code
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.get_data(as_text=True))
    assert token is not None
    return url, token.group(1)


def answer(browser: Any, url: str, token: str, decision: str) -> dict[str, str]:
    sent = browser.post(url, data={"decision": decision, "csrf_token": token})
    assert sent.status_code == 302, sent.get_data(as_text=True)[:500]
    return query_of(sent.headers["Location"])


def test_deny_in_one_tab_after_allow_in_the_other_sends_no_code(
    oauth_app: Any, browser: Any, accounts: Any
) -> None:
    app = register_client(oauth_app, accounts, confidential=True, redirect=CALLBACK)
    first = consent_page(browser, app["id"], "first-tab")
    second = consent_page(browser, app["id"], "second-tab")

    allowed = answer(browser, *first, "approve")
    assert "code" in allowed and allowed["state"] == "first-tab"
    denied = answer(browser, *second, "deny")
    assert "code" not in denied, "Deny sent the application a code"
    assert denied["error"] == "access_denied" and denied["state"] == "second-tab"


def test_allow_in_both_tabs_gives_each_its_code(
    oauth_app: Any, browser: Any, accounts: Any
) -> None:
    app = register_client(oauth_app, accounts, confidential=True, redirect=CALLBACK)
    first = consent_page(browser, app["id"], "first-tab")
    second = consent_page(browser, app["id"], "second-tab")
    codes = [answer(browser, *tab, "approve") for tab in (first, second)]
    assert [c["state"] for c in codes] == ["first-tab", "second-tab"]
    assert codes[0]["code"] != codes[1]["code"]
