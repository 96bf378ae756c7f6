"""Fixtures for Paste's tests.

srcore's pytest plugin provides ``app``, ``client``, ``db``, ``user`` (alice),
``user_client`` and ``make_token``, and runs every database test on SQLite and on
PostgreSQL; this file asks for the plugin and names the package under test.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

# srcore's fixtures (app, client, db, user, ...) are opt-in: this suite asks for them.
pytest_plugins = ["srcore.testing"]

_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


@pytest.fixture(scope="session")
def srcore_service() -> str:
    return "paste"


@pytest.fixture
def csrf_token() -> Any:
    """``csrf_token(client, path)``: read the form's CSRF token from a page, as a browser does."""

    def read(client: Any, path: str = "/") -> str:
        response = client.get(path)
        assert response.status_code == 200, (path, response.status_code)
        match = _CSRF.search(response.get_data(as_text=True))
        assert match, f"no CSRF token on {path}"
        return match.group(1)

    return read
