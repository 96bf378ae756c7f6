"""Requests gunicorn itself refuses at meta's machine endpoints, sent with raw sockets to meta
under srcore's gunicorn worker: a request line past gunicorn's limit, too many or too large
header fields, bytes it cannot parse in a header. The app never sees them, yet their answer
is the protocol's JSON error (``error``, ``error_description``, ``no-store``, the challenge
UserInfo's 400 carries), as for every other error of these endpoints, with gunicorn's
status and srcore's security headers; a page of meta's keeps gunicorn's small HTML page.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
from oauth_helpers import network_config

from srcore import testing
from srcore.testing import free_port, run_service

pytestmark = pytest.mark.slow

#: Each machine endpoint, a method it takes, and what kind of error its clients read.
MACHINE = {
    "/oauth/token": ("POST", "client"),
    "/oauth/revoke": ("POST", "client"),
    "/oauth/introspect": ("POST", "client"),
    "/oauth/revocations": ("GET", "client"),
    "/userinfo": ("GET", "bearer"),
    "/oauth/jwks.json": ("GET", "document"),
    "/.well-known/openid-configuration": ("GET", "document"),
    "/.well-known/oauth-authorization-server": ("GET", "document"),
}

#: What gunicorn refuses (its limits are srcore.serving's, above srcore's own): the query
#: after the path, the header lines, and the status gunicorn answers.
REFUSED: dict[str, tuple[str, bytes, int]] = {
    "request line too long": ("?q=" + "a" * 9000, b"", 414),
    "too many header fields": ("", b"".join(b"X-%d: 1\r\n" % i for i in range(250)), 431),
    "a header field too large": ("", b"X-Big: " + b"b" * 20_000 + b"\r\n", 431),
    "a control byte in a header name": ("", b"X\x01: y\r\n", 400),
    "a NUL in a header value": ("", b"X-Value: a\x00b\r\n", 400),
    "obsolete line folding": ("", b"X-Folded: one\r\n  two\r\n", 400),
}


def exchange(port: int, data: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send *data* on a connection of its own; the status, headers and body answered."""
    reply = testing.exchange(port, data)
    return reply.status, reply.headers, reply.body


def _request(method: str, target: str, fields: bytes) -> bytes:
    length = b"Content-Length: 0\r\n" if method == "POST" else b""
    return (
        f"{method} {target} HTTP/1.1\r\nHost: 127.0.0.1\r\n".encode()
        + fields
        + length
        + b"Connection: close\r\n\r\n"
    )


@pytest.fixture
def port(srcore_database: Any, tmp_path: Any) -> Iterator[int]:
    """meta under gunicorn on 127.0.0.1, in a network with todo."""
    port = free_port()
    base = srcore_database.config_path.read_text()
    base = re.sub(r"(?m)^origin = .*$", f"origin = http://127.0.0.1:{port}", base, count=1)
    path = tmp_path / "network.ini"
    path.write_text(network_config(base), encoding="utf-8")
    with run_service("meta", path, port=port):
        yield port


def test_a_refused_request_at_a_machine_endpoint_is_its_protocols_json_error(port: int) -> None:
    failures = []
    for path, (method, kind) in MACHINE.items():
        for what, (query, fields, status) in REFUSED.items():
            got, headers, body = exchange(port, _request(method, path + query, fields))
            where = f"{method} {path}, {what}"
            if got != status or headers.get("content-type") != "application/json":
                failures.append(f"{where}: {got} {headers.get('content-type')} {body[:80]!r}")
                continue
            answer = json.loads(body)
            assert set(answer) == {"error", "error_description"}, (where, answer)
            assert answer["error"] == "invalid_request", (where, answer)
            assert answer["error_description"], where
            assert headers["cache-control"] == "no-store", where
            assert headers["x-frame-options"] == "DENY", where
            assert headers["connection"] == "close", where
            assert int(headers["content-length"]) == len(body), where
            # RFC 6750 3.1: a resource's 400 names its error in the challenge.
            if kind == "bearer" and status == 400:
                challenge = headers["www-authenticate"]
                assert challenge.startswith('Bearer realm="meta"'), (where, challenge)
                assert 'error="invalid_request"' in challenge, (where, challenge)
            else:
                assert "www-authenticate" not in headers, (where, headers)
    assert not failures, "\n".join(failures)


def test_a_percent_encoded_machine_path_is_the_same_endpoint(port: int) -> None:
    """The app routes ``/oauth/%6Awks.json`` to the keys: so does the refusal's form."""
    got, headers, body = exchange(port, _request("GET", "/oauth/%6Awks.json", b"X\x01: y\r\n"))
    assert got == 400 and headers["content-type"] == "application/json", (got, body[:80])
    assert json.loads(body)["error"] == "invalid_request"


def test_a_refused_request_for_a_page_keeps_gunicorns_page(port: int) -> None:
    """A person's page (and what only begins like a machine endpoint) is not a program's."""
    for path in ("/login", "/oauth/authorize", "/oauth/token/more"):
        for what, (query, fields, status) in REFUSED.items():
            got, headers, body = exchange(port, _request("GET", path + query, fields))
            where = f"GET {path}, {what}"
            assert got == status, (where, got, body[:80])
            assert headers["content-type"].startswith("text/html"), (where, headers)
            assert headers["x-frame-options"] == "DENY", where
