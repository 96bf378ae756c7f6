"""meta: an application's or a token's name shows everything it holds, and the consent page
cannot be made to read otherwise by the name of the application asking."""

from __future__ import annotations

import base64
import hashlib
import re
from typing import Any
from urllib.parse import urlencode

import pytest

_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


@pytest.fixture(scope="session")
def srcore_service() -> str:
    return "meta"


@pytest.fixture
def user(app: Any) -> Any:
    """alice, with the password and confirmed address meta's accounts have."""
    from datetime import UTC, datetime

    from srcore.testing import create_user

    return create_user(app, "alice", password_hash="x", email_confirmed_at=datetime.now(UTC))


def _csrf(client: Any, path: str) -> str:
    match = _CSRF.search(client.get(path).get_data(as_text=True))
    assert match, path
    return match.group(1)


def consent_path(client_id: str, redirect_uri: str) -> str:
    challenge = base64.urlsafe_b64encode(hashlib.sha256(b"v" * 43).digest()).rstrip(b"=")
    return "/oauth/authorize?" + urlencode(
        {
            "response_type": "code",
            "client_id": client_id,
            "redirect_uri": redirect_uri,
            "scope": "meta/profile:RO",
            "state": "s",
            "code_challenge": challenge.decode(),
            "code_challenge_method": "S256",
        }
    )


def add_client(app: Any, owner: Any, name: str) -> None:
    from meta.oauth.models import OAuthClient

    with app.extensions["srcore"].db.transaction() as session:
        session.add(
            OAuthClient(
                client_id="gadget-client",
                owner_id=owner.id,
                name=name,
                redirect_uris="https://evil.example/cb",
                confidential=False,
            )
        )


@pytest.mark.parametrize("name", ["Gadget\u202emoc.elpmaxe", "Git\u200bHub", "Two\nlines"])
def test_registering_an_application_refuses_a_name_that_reads_otherwise(
    user_client: Any, name: str
) -> None:
    response = user_client.post(
        "/clients",
        data={
            "csrf_token": _csrf(user_client, "/clients"),
            "name": name,
            "redirect_uris": "https://app.example/cb",
            "kind": "public",
        },
    )
    assert response.status_code == 400
    assert "is registered" not in response.get_data(as_text=True)


def test_registering_an_application_keeps_a_right_to_left_name(user_client: Any) -> None:
    response = user_client.post(
        "/clients",
        data={
            "csrf_token": _csrf(user_client, "/clients"),
            "name": "تطبيق الملاحظات",
            "redirect_uris": "https://app.example/cb",
            "kind": "public",
        },
    )
    assert response.status_code == 200
    assert "<bdi>تطبيق الملاحظات</bdi></strong> is registered" in response.get_data(as_text=True)


def test_consent_page_isolates_and_reveals_a_spoofed_name(
    app: Any, user: Any, user_client: Any
) -> None:
    # A name stored before the rule (or by hand): it still cannot reorder the sentence that
    # names where the user is sent, and what it hides is shown.
    add_client(app, user, "Gadget\u202emoc.elpmaxe")
    response = user_client.get(consent_path("gadget-client", "https://evil.example/cb"))
    assert response.status_code == 200
    page = response.get_data(as_text=True)
    assert "\u202e" not in page
    assert '<strong><bdi>Gadget<span class="hidden-char"' in page
    assert "&lt;U+202E&gt;</span>moc.elpmaxe</bdi></strong> wants" in page
    assert '<code><bdi dir="ltr">evil.example</bdi></code>' in page
    assert "<title>Authorize Gadget&lt;U+202E&gt;moc.elpmaxe" in page


def test_consent_page_shows_an_ordinary_name_as_it_is(
    app: Any, user: Any, user_client: Any
) -> None:
    add_client(app, user, "שלום \U0001f468\u200d\U0001f469\u200d\U0001f467")
    page = user_client.get(consent_path("gadget-client", "https://evil.example/cb"))
    assert "<h1>Authorize <bdi>שלום \U0001f468\u200d\U0001f469\u200d\U0001f467</bdi></h1>" in (
        page.get_data(as_text=True)
    )


def test_token_name_with_an_invisible_character_is_refused(user_client: Any) -> None:
    response = user_client.post(
        "/security/tokens",
        data={
            "csrf_token": _csrf(user_client, "/security"),
            "name": "deploy\u2060",
            "scopes": "meta/profile:RO",
            "expires": "30",
        },
    )
    assert response.status_code == 400
    assert "U+2060" in response.get_data(as_text=True)
