"""Every service's bearer API answers browser apps and challenges every 401 with a realm.

The same checks over each route of meta, todo and paste under ``/api/``: a preflight is
answered with ``Access-Control-Allow-Origin: *`` (no credentials), a request without a
token is a 401 whose ``WWW-Authenticate`` names the Bearer scheme and the service's realm,
and the cookie-authenticated pages send no CORS headers at all.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

SERVICES = ["meta", "todo", "paste"]


@pytest.fixture(scope="module", params=SERVICES)
def srcore_service(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


def _api_routes(app: Any) -> list[tuple[str, str]]:
    """(path, method) of every /api/ route, with path variables filled with 1."""
    routes = []
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith("/api/"):
            continue
        path = re.sub(r"<[^>]+>", "1", rule.rule)
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            routes.append((path, method))
    return routes


def test_every_api_route_answers_cors_and_challenges(
    app: Any, client: Any, srcore_service: str
) -> None:
    routes = _api_routes(app)
    assert routes, f"{srcore_service} has no API routes"
    origin = {"Origin": "https://app.example"}
    for path, method in routes:
        preflight = client.options(
            path,
            headers={
                **origin,
                "Access-Control-Request-Method": method,
                "Access-Control-Request-Headers": "authorization",
            },
        )
        assert preflight.status_code in (200, 204), (path, method, preflight.status_code)
        assert preflight.headers.get("Access-Control-Allow-Origin") == "*", (path, method)
        assert "Access-Control-Allow-Credentials" not in preflight.headers
        response = client.open(path, method=method, headers=origin, json={})
        assert response.headers.get("Access-Control-Allow-Origin") == "*", (path, method)
        if response.status_code == 401:
            challenge = response.headers.get("WWW-Authenticate", "")
            assert challenge.startswith(f'Bearer realm="{srcore_service}"'), (path, challenge)


def test_pages_send_no_cors(client: Any, srcore_service: str) -> None:
    for path in ("/", "/login", "/profile"):
        response = client.get(path, headers={"Origin": "https://evil.example"})
        assert "Access-Control-Allow-Origin" not in response.headers, path
