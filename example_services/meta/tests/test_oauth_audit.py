"""Every token and application event of the OAuth side lands in the user's audit log:
tokens revoked at /oauth/revoke (RFC 7009), tokens made and revoked through the API, and
applications authorized and revoked."""

from __future__ import annotations

import re
from typing import Any

import pytest
from oauth_helpers import basic
from oidc_helpers import oidc_app, register, tokens_for
from sqlalchemy import select

from srcore.testing import log_in_client

__all__ = ["oidc_app"]  # fixtures used by this module


def entries(app: Any, user_id: int, kind: str) -> list[Any]:
    from meta.models import AuditEntry

    with app.extensions["srcore"].db.transaction() as session:
        return list(
            session.scalars(
                select(AuditEntry)
                .where(AuditEntry.user_id == user_id, AuditEntry.kind == kind)
                .order_by(AuditEntry.id)
            )
        )


@pytest.fixture
def alice(accounts: Any) -> Any:
    return accounts.make("alice")


@pytest.fixture
def browser(oidc_app: Any, alice: Any) -> Any:
    return log_in_client(oidc_app.test_client(), alice)


@pytest.fixture
def rp(oidc_app: Any, accounts: Any) -> dict[str, str]:
    return register(oidc_app, accounts)


def test_revoking_an_access_token_at_the_endpoint_is_audited(
    oidc_app: Any, browser: Any, alice: Any, rp: Any
) -> None:
    access = tokens_for(browser, rp, scope="openid meta/profile:RO")["access_token"]
    client = oidc_app.test_client()
    for _ in range(2):  # a second revocation of the same token changes nothing
        response = client.post(
            "/oauth/revoke", data={"token": access}, headers=basic(rp["id"], rp["secret"])
        )
        assert response.status_code == 200
    (entry,) = entries(oidc_app, alice.id, "token-revoked")
    assert entry.detail == "access token of Relying Party, at the revocation endpoint"


def test_revoking_a_refresh_token_at_the_endpoint_is_audited(
    oidc_app: Any, browser: Any, alice: Any, rp: Any
) -> None:
    refresh = tokens_for(browser, rp, scope="openid")["refresh_token"]
    response = oidc_app.test_client().post(
        "/oauth/revoke",
        data={"token": refresh, "token_type_hint": "refresh_token"},
        headers=basic(rp["id"], rp["secret"]),
    )
    assert response.status_code == 200
    (entry,) = entries(oidc_app, alice.id, "token-revoked")
    assert entry.detail == "refresh token of Relying Party, at the revocation endpoint"


def test_a_refused_revocation_is_not_audited(
    oidc_app: Any, accounts: Any, browser: Any, alice: Any, rp: Any
) -> None:
    access = tokens_for(browser, rp)["access_token"]
    other = register(oidc_app, accounts, owner="mallory")
    response = oidc_app.test_client().post(
        "/oauth/revoke", data={"token": access}, headers=basic(other["id"], other["secret"])
    )
    assert response.status_code in (200, 400)
    assert entries(oidc_app, alice.id, "token-revoked") == []


def test_authorizing_and_revoking_an_application_are_audited(
    oidc_app: Any, browser: Any, alice: Any, rp: Any
) -> None:
    tokens_for(browser, rp, scope="openid email")
    (authorized,) = entries(oidc_app, alice.id, "app-authorized")
    assert authorized.detail == "Relying Party"
    page = browser.get("/security").get_data(as_text=True)
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert csrf
    response = browser.post(
        f"/security/applications/{rp['id']}/revoke", data={"csrf_token": csrf.group(1)}
    )
    assert response.status_code == 302
    (revoked,) = entries(oidc_app, alice.id, "app-revoked")
    assert revoked.detail == "Relying Party"


def test_tokens_made_and_revoked_through_the_api_are_audited(
    oidc_app: Any, browser: Any, alice: Any, rp: Any
) -> None:
    access = tokens_for(browser, rp, scope="meta/tokens:RW")["access_token"]
    client = oidc_app.test_client()
    auth = {"Authorization": f"Bearer {access}"}
    made = client.post(
        "/api/tokens", json={"name": "ci", "scopes": ["meta/tokens:RO"]}, headers=auth
    )
    assert made.status_code == 201, made.get_json()
    (created,) = entries(oidc_app, alice.id, "token-created")
    assert created.detail == "ci"
    gone = client.delete(f"/api/tokens/{made.get_json()['id']}", headers=auth)
    assert gone.status_code == 204
    (revoked,) = entries(oidc_app, alice.id, "token-revoked")
    assert revoked.detail == "ci"
