"""The server URL of a service's OpenAPI document when the service is mounted under a
path (``SCRIPT_NAME``) that a proxy set to something odd: it stays on the configured
origin, and a client that joins an operation's path to it reaches that path below the
mount, whatever characters the mount holds."""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote, urlsplit

import pytest


@pytest.fixture(scope="session")
def srcore_service() -> str:
    return "todo"


def _wsgi(text: str) -> str:
    """*text* as a WSGI server hands a path over: its UTF-8 bytes read as Latin-1."""
    return text.encode("utf-8").decode("latin-1")


@pytest.mark.parametrize(
    "mount",
    [
        "/todo",
        "//todo",
        "/my app",
        "/tödo",
        "/a%2Fb",
        "/x?y#z",
        '/a"b',
        "@attacker.invalid",
        ".attacker.invalid",
        ":8443/todo",
    ],
)
def test_the_server_url_stays_on_the_origin_and_keeps_the_mount_as_a_path(
    app: Any, mount: str
) -> None:
    origin = urlsplit(str(app.extensions["srcore"].section["origin"]))
    answer = app.test_client().get(
        "/api/openapi.json", environ_overrides={"SCRIPT_NAME": _wsgi(mount)}
    )
    assert answer.status_code == 200
    (server,) = answer.get_json()["servers"]
    url = urlsplit(server["url"])
    assert (url.scheme, url.netloc) == (origin.scheme, origin.netloc), server
    assert not url.query and not url.fragment, server
    assert server["url"].isascii() and " " not in server["url"], server
    expected = mount if mount.startswith("/") else "/" + mount
    assert unquote(url.path) == expected, server
