"""meta never waits on a service for that service's own manifest while the service may be
waiting on meta. A service asks for meta's metadata as it sends a browser to log in, and
calls the token endpoint from its workers: were meta to fetch the manifest of a service not
installed beside it then, it would wait on a worker that is busy waiting for meta (one sync
worker each: every login stalled until a timeout, then failed). Pages a browser asks for at
meta (consent, the token form) still fetch it."""

from __future__ import annotations

from typing import Any

import pytest
from meta.oauth.catalog import Catalog
from oauth_helpers import basic, oauth_app

__all__ = ["oauth_app"]  # a fixture used by this module

MANIFEST = {"name": "Elsewhere", "scopes": [{"name": "things", "description": "Things."}]}


def _catalog(fetched: list[str]) -> Catalog:
    def fetch(url: str) -> Any:
        fetched.append(url)
        return MANIFEST

    return Catalog(services={"elsewhere": "http://127.0.0.1:9"}, local=dict, fetch=fetch)


def test_scopes_without_fetching_are_those_read_already() -> None:
    fetched: list[str] = []
    catalog = _catalog(fetched)
    assert catalog.all_scopes(fetch=False) == []
    assert catalog.check(["elsewhere/nothing:RO"], fetch=False) is None  # not known yet
    assert fetched == []
    assert catalog.all_scopes() == ["elsewhere/things:RO", "elsewhere/things:RW"]
    assert fetched == ["http://127.0.0.1:9/.well-known/srcore-service"]
    assert catalog.all_scopes(fetch=False) == ["elsewhere/things:RO", "elsewhere/things:RW"]
    assert catalog.check(["elsewhere/nothing:RO"], fetch=False) is not None
    assert len(fetched) == 1


@pytest.fixture
def remote(oauth_app: Any) -> list[str]:
    """A service meta is configured with but has no manifest installed for."""
    from meta.oauth.server import oauth_state

    fetched: list[str] = []
    st = oauth_state(oauth_app)
    st.catalog.services["elsewhere"] = "http://127.0.0.1:9"
    original = st.catalog._fetch

    def fetch(url: str) -> Any:
        fetched.append(url)
        return MANIFEST if "127.0.0.1:9/" in url else original(url)

    st.catalog._fetch = fetch
    return fetched


@pytest.mark.parametrize(
    "path", ["/.well-known/oauth-authorization-server", "/.well-known/openid-configuration"]
)
def test_metadata_fetches_no_manifest(oauth_app: Any, remote: list[str], path: str) -> None:
    body = oauth_app.test_client().get(path).get_json()
    assert remote == []
    assert "elsewhere/things:RO" not in body["scopes_supported"]
    assert "todo/tickets:RO" in body["scopes_supported"]  # installed: read from its package


def test_the_token_endpoint_fetches_no_manifest(oauth_app: Any, remote: list[str]) -> None:
    from meta.oauth.clients import FirstPartyClient
    from meta.oauth.server import oauth_state

    # elsewhere's own worker asks for a token of its own service's scope.
    secret = "elsewhere-client-secret-" + "x" * 24
    client = FirstPartyClient("elsewhere", secret, "elsewhere", "http://127.0.0.1:9")
    oauth_state(oauth_app).first_party["elsewhere"] = client
    answer = oauth_app.test_client().post(
        "/oauth/token",
        data={"grant_type": "client_credentials", "scope": "elsewhere/things:RO"},
        headers=basic("elsewhere", secret),
    )
    assert remote == []
    # Not read yet, the scope is allowed, as a service that is down is: logins go on.
    assert answer.status_code == 200, answer.get_json()
