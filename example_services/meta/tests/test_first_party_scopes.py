"""A service of the network gets its own scopes and meta's profile without asking; another
service's scopes only as any application gets them.

docs/security.md: whoever controls one service (todo) must not be able to get tokens for
another (paste). todo's client secret let it ask meta, without anyone's yes, for a token of
its own holding ``paste/pastes:RW`` (client credentials), or, at a user's next login
through todo, for one acting as that user at paste.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from typing import Any

import pytest
from argon2 import PasswordHasher
from meta_constants import FAST_HASHER
from oauth_helpers import (
    TODO_CALLBACK,
    authorize_url,
    basic,
    exchange,
    network_config,
    pkce,
    query_of,
    verifier_for,
)

from srcore.testing import log_in_client


@pytest.fixture
def network_app(app: Any, srcore_database: Any, tmp_path: Any) -> Iterator[Any]:
    """meta in a network of todo and paste."""
    import meta

    paste = (
        "\n[paste]\norigin = http://127.0.0.1:5992\n"
        "database-url = sqlite:////nonexistent/paste.db\n"
        f"secret-key = {secrets.token_urlsafe(40)}\n"
        "oauth-client-id = paste\n"
        f"oauth-client-secret = {secrets.token_urlsafe(40)}\n"
    )
    path = tmp_path / "network.ini"
    base = network_config(srcore_database.config_path.read_text())
    path.write_text(base + paste, encoding="utf-8")
    application = meta.create_app(config=path, password_hasher=PasswordHasher(**FAST_HASHER))
    application.config["TESTING"] = True
    try:
        yield application
    finally:
        application.extensions["srcore"].db.dispose()


@pytest.fixture
def alice(accounts: Any) -> Any:
    return accounts.make("alice")


def _client_token(app: Any, scope: str) -> Any:
    data = {"grant_type": "client_credentials", "scope": scope}
    return app.test_client().post("/oauth/token", data=data, headers=basic())


@pytest.mark.parametrize("scope", ["meta/profile:RO", "todo/trackers:RO", "todo/tickets:RW"])
def test_a_service_s_own_token_holds_its_own_scopes(network_app: Any, scope: str) -> None:
    answer = _client_token(network_app, scope)
    assert answer.status_code == 200, answer.get_json()
    assert answer.get_json()["scope"] == scope


@pytest.mark.parametrize(
    "scope",
    ["paste/pastes:RO", "todo/trackers:RO paste/pastes:RW", "meta/profile:RW", "meta/tokens:RW"],
)
def test_a_service_s_own_token_never_holds_another_s(network_app: Any, scope: str) -> None:
    answer = _client_token(network_app, scope)
    assert answer.status_code == 400
    body = answer.get_json()
    assert body["error"] == "invalid_scope"
    assert "its own service's scopes" in body["error_description"]


def test_a_login_through_a_service_asking_for_its_own_scopes_asks_nothing(
    network_app: Any, alice: Any
) -> None:
    browser = log_in_client(network_app.test_client(), alice)
    verifier, challenge = pkce()
    scope = "meta/profile:RO todo/tickets:RW"
    answer = browser.get(authorize_url(scope=scope, challenge=challenge))
    assert answer.status_code == 302
    code = query_of(answer.headers["Location"])["code"]
    tokens = exchange(browser, code, verifier).get_json()
    claims = verifier_for(network_app, audience="todo").verify(tokens["access_token"]).claims
    assert sorted(claims["scope"].split()) == sorted(scope.split())


def test_another_service_s_scopes_need_the_user_s_yes(network_app: Any, alice: Any) -> None:
    browser = log_in_client(network_app.test_client(), alice)
    _verifier, challenge = pkce()
    url = authorize_url(scope="meta/profile:RO paste/pastes:RW", challenge=challenge)
    answer = browser.get(url)
    # The consent page, as for any application: no code went to todo's callback.
    assert answer.status_code == 200
    page = answer.get_data(as_text=True)
    assert 'name="decision"' in page and "paste" in page
    assert TODO_CALLBACK not in answer.headers.get("Location", "")
    # Denied: todo gets an error, no code.
    form = {"csrf_token": _csrf(page), "decision": "deny"}
    denied = browser.post(url, data=form)
    assert denied.status_code == 302
    assert query_of(denied.headers["Location"]).get("error") == "access_denied"


def _csrf(page: str) -> str:
    import re

    found = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', page)
    assert found, "no CSRF token on the consent page"
    return found.group(1)
