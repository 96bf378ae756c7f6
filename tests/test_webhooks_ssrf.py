"""The SSRF guard: the policy as a pure function, and the adapter on real connections."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer, ThreadingHTTPServer
from typing import Any

import pytest

from srcore.webhooks.ssrf import AddressPolicy, RefusedAddress, _check_socket, guarded_session

REFUSED = {
    "127.0.0.1": "loopback",
    "127.9.9.9": "loopback",
    "::1": "loopback",
    "10.0.0.5": "private",
    "172.16.3.4": "private",
    "192.168.1.1": "private",
    "169.254.169.254": "metadata",
    "fd00:ec2::254": "metadata",
    "169.254.1.1": "link-local",
    "fe80::1": "link-local",
    "224.0.0.1": "multicast",
    "ff02::1": "multicast",
    "0.0.0.0": "unspecified",
    "::": "unspecified",
    "240.0.0.1": "private",
    "100.64.0.1": "not a public",
    "::ffff:127.0.0.1": "loopback",
    "::ffff:10.0.0.1": "private",
    "::ffff:169.254.169.254": "metadata",
    "fc00::1": "private",
    # IPv4 carried inside IPv6: judged as the IPv4 address they carry.
    "64:ff9b::7f00:1": "loopback",  # NAT64 (RFC 6052) of 127.0.0.1
    "64:ff9b::a00:5": "private",
    "64:ff9b::a9fe:a9fe": "metadata",
    "2002:7f00:1::1": "loopback",  # 6to4 (RFC 3056) of 127.0.0.1
    "2002:a00:5::": "private",
    "2002:c0a8:101:1::1": "private",
    "2002:a9fe:a9fe::": "metadata",
    "::7f00:1": "loopback",  # IPv4-compatible (deprecated)
    "::a00:5": "private",
    "::ffff:0:7f00:1": "loopback",  # IPv4-translated (RFC 2765)
}


@pytest.mark.parametrize(("address", "reason"), sorted(REFUSED.items()))
def test_policy_refuses_internal_addresses(address: str, reason: str) -> None:
    refusal = AddressPolicy().refusal(address)
    assert refusal is not None and reason in refusal


@pytest.mark.parametrize(
    "address",
    [
        "8.8.8.8",
        "1.1.1.1",
        "2001:4860:4860::8888",
        "::ffff:8.8.8.8",
        "64:ff9b::808:808",  # NAT64 of a public address: how IPv6-only hosts reach IPv4
        "2002:808:808::1",
    ],
)
def test_policy_lets_public_addresses_through(address: str) -> None:
    assert AddressPolicy().refusal(address) is None


def test_allowed_ranges() -> None:
    policy = AddressPolicy.from_networks(["10.1.0.0/16", "127.0.0.1/32", "fd00::/8"])
    assert policy.refusal("10.1.2.3") is None
    assert policy.refusal("::ffff:10.1.2.3") is None
    assert policy.refusal("127.0.0.1") is None
    assert policy.refusal("fd12::1") is None
    assert policy.refusal("10.2.0.1") is not None
    assert policy.refusal("127.0.0.2") is not None
    assert policy.refusal("not an ip") == "not an IP address"


class FakeSocket:
    def __init__(self, peer: tuple[Any, ...]) -> None:
        self.peer = peer
        self.closed = False

    def getpeername(self) -> tuple[Any, ...]:
        return self.peer

    def close(self) -> None:
        self.closed = True


@pytest.mark.parametrize(
    "peer", [("10.0.0.1", 80), ("169.254.169.254", 80), ("fd00:ec2::254", 80, 0, 0)]
)
def test_connected_peer_check_closes_refused_sockets(
    peer: tuple[Any, ...], caplog: pytest.LogCaptureFixture
) -> None:
    sock = FakeSocket(peer)
    with pytest.raises(RefusedAddress, match=f"refused: {peer[0]} is"):
        _check_socket(sock, AddressPolicy())  # type: ignore[arg-type]
    assert sock.closed
    assert f"webhook target refused: refused: {peer[0]}" in caplog.text


class Handler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.server.hits += 1  # type: ignore[attr-defined]
        length = int(self.headers.get("content-length", "0"))
        self.rfile.read(length)
        if self.path == "/redirect":
            self.send_response(302)
            self.send_header("location", "http://10.0.0.1/")
        else:
            self.send_response(200)
        self.send_header("content-length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args: Any) -> None:
        pass


def serve(server: HTTPServer) -> Iterator[HTTPServer]:
    server.hits = 0  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, args=(0.05,))
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture
def server() -> Iterator[HTTPServer]:
    yield from serve(ThreadingHTTPServer(("127.0.0.1", 0), Handler))


class V6Server(ThreadingHTTPServer):
    address_family = socket.AF_INET6


@pytest.fixture
def server6() -> Iterator[HTTPServer]:
    from srcore.testing import require_or_skip

    try:
        srv = V6Server(("::1", 0), Handler)
    except OSError:
        require_or_skip(False, "IPv6 loopback (::1)")
        raise
    yield from serve(srv)


def test_loopback_receiver_refused_before_any_byte(
    server: HTTPServer, caplog: pytest.LogCaptureFixture
) -> None:
    port = server.server_address[1]
    with guarded_session(AddressPolicy()) as http:
        for url in (f"http://127.0.0.1:{port}/", f"http://localhost:{port}/"):
            with pytest.raises(RefusedAddress, match=r"127\.0\.0\.1 is a loopback address"):
                http.post(url, data=b"{}", timeout=(2, 2))
    assert server.hits == 0  # type: ignore[attr-defined]
    assert caplog.text.count("webhook target refused") == 2


def test_ipv6_loopback_refused(server6: HTTPServer) -> None:
    port = server6.server_address[1]
    with guarded_session(AddressPolicy()) as http, pytest.raises(RefusedAddress, match="::1"):
        http.post(f"http://[::1]:{port}/", data=b"{}", timeout=(2, 2))
    assert server6.hits == 0  # type: ignore[attr-defined]


def test_allowed_range_lets_the_receiver_through_and_redirects_are_not_followed(
    server: HTTPServer,
) -> None:
    port = server.server_address[1]
    with guarded_session(AddressPolicy.from_networks(["127.0.0.0/8"])) as http:
        assert http.post(f"http://127.0.0.1:{port}/", data=b"{}", timeout=(2, 2)).text == "ok"
        response = http.post(
            f"http://127.0.0.1:{port}/redirect", data=b"{}", timeout=(2, 2), allow_redirects=False
        )
    assert response.status_code == 302
    assert server.hits == 2  # type: ignore[attr-defined]


def test_no_proxies_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, server: HTTPServer
) -> None:
    monkeypatch.setenv("HTTP_PROXY", "http://10.0.0.1:3128")
    port = server.server_address[1]
    with guarded_session(AddressPolicy.from_networks(["127.0.0.1/32"])) as http:
        assert http.post(f"http://127.0.0.1:{port}/", data=b"", timeout=(2, 2)).ok
        with pytest.raises(RefusedAddress, match="proxy"):
            http.post(
                f"http://127.0.0.1:{port}/",
                timeout=(2, 2),
                proxies={"http": "http://127.0.0.1:1"},
            )


# -- through deliver_one: refusals land in the delivery log --------------------------


def _deliver(app: Any, db: Any, url: str, policy: AddressPolicy) -> Any:
    import random
    from datetime import UTC, datetime

    from srcore.webhooks.delivery import WebhookSettings, deliver_one
    from srcore.webhooks.fanout import fan_out
    from srcore.webhooks.models import Subscription
    from srcore.webhooks.outbox import insert_event
    from srcore.webhooks.signing import generate_secret

    db.add(
        Subscription(
            url=url, events="thing:created", scopes="sample/things:RO", secret=generate_secret()
        )
    )
    db.commit()
    outbox_id = insert_event(db, "thing:created", {"id": 1})
    db.commit()
    [delivery_id] = fan_out(db, outbox_id, manifest=app.extensions["srcore"].manifest)
    with guarded_session(policy) as http:
        return deliver_one(
            db,
            delivery_id,
            http=http,
            clock=lambda: datetime.now(UTC),
            policy=policy,
            config=WebhookSettings(),
            rng=random.Random(1),
        )


@pytest.fixture
def clean_webhooks(app: Any) -> Iterator[None]:
    from sqlalchemy import delete

    from srcore.webhooks.models import WebhookBase

    yield
    with app.extensions["srcore"].db.transaction() as s:
        for table in reversed(WebhookBase.metadata.sorted_tables):
            s.execute(delete(table))


@pytest.mark.usefixtures("clean_webhooks")
def test_refusal_recorded_in_the_attempt(
    app: Any, db: Any, server: HTTPServer, caplog: pytest.LogCaptureFixture
) -> None:
    from sqlalchemy import select

    from srcore.webhooks.models import Attempt

    port = server.server_address[1]
    result = _deliver(app, db, f"http://localhost:{port}/", AddressPolicy())
    assert result.error == "refused: 127.0.0.1 is a loopback address"
    assert result.retry_at is not None and not result.delivered
    assert db.scalars(select(Attempt.error)).one() == result.error
    assert "webhook target refused" in caplog.text
    assert server.hits == 0  # type: ignore[attr-defined]


@pytest.mark.usefixtures("clean_webhooks")
def test_redirect_to_a_private_address_is_not_followed(
    app: Any, db: Any, server: HTTPServer
) -> None:
    port = server.server_address[1]
    policy = AddressPolicy.from_networks(["127.0.0.0/8"])
    result = _deliver(app, db, f"http://127.0.0.1:{port}/redirect", policy)
    assert result.status == 302 and not result.delivered
    assert result.error == "redirect to 'http://10.0.0.1/' not followed"
    assert server.hits == 1  # type: ignore[attr-defined]
