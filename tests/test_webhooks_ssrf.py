"""The SSRF guard: the policy as a pure function, and the sender on real connections."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer, ThreadingHTTPServer
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from srcore.outbound.policy import DEFAULT_PORTS, AddressPolicy, PortRule
from srcore.outbound.sender import PooledSender
from srcore.testing import serving

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
    "2002:7f00:1::": "loopback",  # 6to4 with the host part left out
    "2002:7f00:1:0:0:0:0:1%1": "loopback",  # and with a zone
    "0:0:0:0:0:ffff:7f00:1": "loopback",
    "192.88.99.1": "6to4 relay",  # the deprecated 6to4 relay anycast (RFC 7526)
    "2002:c058:6301::1": "6to4 relay",  # and its 6to4 form
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


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://hooks.example.org:0/", "port 0"),
        ("http://hooks.example.org:22/", "port 22"),
        ("http://hooks.example.org:6379/", "port 6379"),
        ("http://hooks.example.org:5432/", "port 5432"),
        ("http://hooks.example.org:11211/", "port 11211"),
        ("http://hooks.example.org:27017/", "port 27017"),
        ("http://hooks.example.org:99999/", "not valid"),
        ("http://alice:s3cret@hooks.example.org/", "credentials"),
        ("http://alice@hooks.example.org/", "credentials"),
        ("ftp://hooks.example.org/", "not http or https"),
        ("http:///nohost", "no host"),
    ],
)
def test_url_refusals(url: str, reason: str) -> None:
    refusal = AddressPolicy().url_refusal(url)
    assert refusal is not None and reason in refusal
    assert "s3cret" not in refusal


@pytest.mark.parametrize(
    "url",
    [
        "https://hooks.example.org/",
        "http://hooks.example.org/",
        "http://hooks.example.org:8080/x",
        "https://hooks.example.org:65535/",
    ],
)
def test_url_allowed(url: str) -> None:
    assert AddressPolicy().url_refusal(url) is None


def test_port_rules() -> None:
    default = PortRule.parse(DEFAULT_PORTS)
    assert default.allows(80) and default.allows(443) and default.allows(8080)
    assert not any(default.allows(p) for p in (0, 1, 22, 25, 3306, 6379, 65536, -1))
    only = PortRule.parse(["443", "8000-8999", "!8443"])
    assert only.allows(443) and only.allows(8000) and only.allows(8999)
    assert not only.allows(80) and not only.allows(8443)
    for bad in (["0"], ["70000"], ["9-1"], ["http"], ["!"]):
        with pytest.raises(ValueError, match="not a port"):
            PortRule.parse(bad)
    policy = AddressPolicy.from_networks([], ports=["443"])
    assert policy.url_refusal("https://hooks.example.org/") is None
    assert policy.url_refusal("http://hooks.example.org/") is not None


class Handler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.server.hits += 1  # type: ignore[attr-defined]
        self.server.last_host = self.headers.get("host")  # type: ignore[attr-defined]
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
    with serving(server):
        yield server


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


def post(sender: PooledSender, url: str) -> Any:
    import time

    return sender.post(url, {}, b"{}", deadline=time.monotonic() + 5)


def test_loopback_receiver_refused_before_any_byte(
    server: HTTPServer, caplog: pytest.LogCaptureFixture
) -> None:
    port = server.server_address[1]
    sender = PooledSender(AddressPolicy())
    try:
        for url in (f"http://127.0.0.1:{port}/", f"http://localhost:{port}/"):
            exchange = post(sender, url)
            assert exchange.refused and exchange.status is None
            assert "loopback address" in (exchange.error or "")
            for form in ("[::ffff:127.0.0.1]", "[::ffff:7f00:1]", "[2002:7f00:1::1]"):
                mapped = post(sender, f"http://{form}:{port}/")
                assert mapped.refused and "loopback" in (mapped.error or ""), form
    finally:
        sender.close()
    assert server.hits == 0  # type: ignore[attr-defined]
    assert caplog.text.count("target refused") >= 2


def test_a_name_with_any_refused_address_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    # One public and one private address: the name is refused, whichever would be used.
    calls: list[str] = []

    def getaddrinfo(host: str, port: int, *args: Any, **kwargs: Any) -> list[Any]:
        calls.append(host)
        return [
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.215.14", port)),
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.0.0.7", port)),
        ]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    sender = PooledSender(AddressPolicy())
    try:
        exchange = post(sender, "http://hooks.example.org/")
    finally:
        sender.close()
    assert calls == ["hooks.example.org"]
    assert exchange.refused and "hooks.example.org (10.0.0.7) is a private address" in (
        exchange.error or ""
    )


def test_the_checked_address_is_the_one_connected_to(
    server: HTTPServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A name resolved once: the connection goes to that address, with Host: the name.
    port = server.server_address[1]
    real = socket.getaddrinfo
    answers = iter(["127.0.0.1", "10.9.9.9"])

    def getaddrinfo(host: str, *args: Any, **kwargs: Any) -> Any:
        if host == "hooks.example.org":
            host = next(answers)
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    sender = PooledSender(AddressPolicy.from_networks(["127.0.0.0/8"]))
    try:
        exchange = post(sender, f"http://hooks.example.org:{port}/")
    finally:
        sender.close()
    assert exchange.status == 200 and exchange.body == b"ok"
    assert server.hits == 1  # type: ignore[attr-defined]
    assert server.last_host == f"hooks.example.org:{port}"  # type: ignore[attr-defined]


def test_ipv6_loopback_refused(server6: HTTPServer) -> None:
    port = server6.server_address[1]
    sender = PooledSender(AddressPolicy())
    try:
        exchange = post(sender, f"http://[::1]:{port}/")
    finally:
        sender.close()
    assert exchange.refused and "::1" in (exchange.error or "")
    assert server6.hits == 0  # type: ignore[attr-defined]


def test_allowed_range_lets_the_receiver_through_and_redirects_are_not_followed(
    server: HTTPServer,
) -> None:
    port = server.server_address[1]
    sender = PooledSender(AddressPolicy.from_networks(["127.0.0.0/8"]))
    try:
        assert post(sender, f"http://127.0.0.1:{port}/").body == b"ok"
        response = post(sender, f"http://127.0.0.1:{port}/redirect")
    finally:
        sender.close()
    assert response.status == 302 and "not followed" in (response.error or "")
    assert server.hits == 2  # type: ignore[attr-defined]


def test_no_proxies_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, server: HTTPServer
) -> None:
    monkeypatch.setenv("HTTP_PROXY", "http://10.0.0.1:3128")
    monkeypatch.setenv("http_proxy", "http://10.0.0.1:3128")
    port = server.server_address[1]
    sender = PooledSender(AddressPolicy.from_networks(["127.0.0.1/32"]))
    try:
        assert post(sender, f"http://127.0.0.1:{port}/").status == 200
    finally:
        sender.close()
    assert server.hits == 1  # type: ignore[attr-defined]


def test_a_trusted_sender_skips_the_checks(server: HTTPServer) -> None:
    port = server.server_address[1]
    sender = PooledSender(None)
    try:
        assert post(sender, f"http://127.0.0.1:{port}/").status == 200
    finally:
        sender.close()


# -- sent and recorded: refusals land in the delivery log -------------------------------


def _deliver(app: Any, db: Any, url: str, policy: AddressPolicy) -> Any:
    from datetime import UTC, datetime

    from srcore.signatures import generate_secret
    from srcore.webhooks.fanout import fan_out
    from srcore.webhooks.models import Subscription
    from srcore.webhooks.outbox import insert_event
    from tests.test_webhooks_delivery import Clock, deliver

    db.add(
        Subscription(
            url=url, events="thing:created", scopes="sample/things:RO", secret=generate_secret()
        )
    )
    db.commit()
    outbox_id = insert_event(db, "thing:created", {"id": 1})
    db.commit()
    [delivery_id] = fan_out(db, [outbox_id], manifest=app.extensions["srcore"].manifest)
    return deliver(db, delivery_id, Clock(datetime.now(UTC)), policy=policy)


@pytest.mark.usefixtures("clean_webhooks")
def test_refusal_recorded_in_the_attempt(
    app: Any, db: Any, server: HTTPServer, caplog: pytest.LogCaptureFixture
) -> None:
    from sqlalchemy import select

    from srcore.webhooks.models import Attempt

    port = server.server_address[1]
    result = _deliver(app, db, f"http://localhost:{port}/", AddressPolicy())
    assert result.error == "refused: localhost (127.0.0.1) is a loopback address"
    assert result.retry_at is None and not result.delivered  # final: not retried
    assert db.scalars(select(Attempt.error)).one() == result.error
    assert "target refused" in caplog.text
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


# -- at subscription time: the API and the page refuse what the sender would -------------

REFUSED_URLS = [
    ("https://alice:s3cret@hooks.example.org/hook", "credentials"),
    ("https://alice@hooks.example.org/hook", "credentials"),
    ("https://hooks.example.org:22/hook", "port 22"),
    ("http://hooks.example.org:0/hook", "port 0"),
    ("http://hooks.example.org:6379/hook", "port 6379"),
    ("http://[2002:7f00:1::1]/hook", "loopback"),
]


@pytest.mark.usefixtures("clean_webhooks")
@pytest.mark.parametrize(("url", "reason"), REFUSED_URLS)
def test_the_api_refuses_such_urls_with_a_400(
    client: Any, make_token: Any, user: Any, url: str, reason: str
) -> None:
    token = make_token("sample/things:RW", user=user)
    response = client.post(
        "/api/webhooks",
        json={"url": url, "events": ["thing:created"]},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert response.status_code == 400
    [error] = response.get_json()["errors"]
    assert error["field"] == "url" and reason in error["reason"]
    assert "s3cret" not in response.get_data(as_text=True)


@pytest.mark.usefixtures("clean_webhooks")
@pytest.mark.parametrize(("url", "reason"), REFUSED_URLS[:3])
def test_the_page_refuses_such_urls_with_a_400(
    app: Any, user_client: Any, url: str, reason: str
) -> None:
    import re

    from sqlalchemy import func, select

    from srcore.webhooks.models import Subscription

    page = user_client.get("/webhooks/new").get_data(as_text=True)
    match = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert match
    response = user_client.post(
        "/webhooks/new",
        data={"csrf_token": match.group(1), "url": url, "events": "thing:created"},
    )
    assert response.status_code == 400
    assert reason in response.get_data(as_text=True)
    with app.extensions["srcore"].db.transaction() as session:
        assert session.scalar(select(func.count()).select_from(Subscription)) == 0


def test_webhook_allowed_ports_is_a_checked_global_key(tmp_path: Any) -> None:
    from types import SimpleNamespace

    from srcore.config import ConfigError, load_config
    from srcore.outbound import policy_for

    good = tmp_path / "good.ini"
    good.write_text("[global]\nwebhook-allowed-ports = 443, 8000-9000, !8443\n")
    config = load_config(good, specs={}, environ={})
    app = SimpleNamespace(extensions={"srcore": SimpleNamespace(config=config)})
    policy = policy_for(app)  # type: ignore[arg-type]
    assert policy.url_refusal("https://hooks.example.org/") is None
    assert policy.url_refusal("http://hooks.example.org:8080/") is None
    assert "port 8443" in (policy.url_refusal("https://hooks.example.org:8443/") or "")
    assert "port 80 " in (policy.url_refusal("http://hooks.example.org/") or "")

    bad = tmp_path / "bad.ini"
    bad.write_text("[global]\nwebhook-allowed-ports = 443, 0\n")
    with pytest.raises(ConfigError) as info:
        load_config(bad, specs={}, environ={})
    [problem] = info.value.errors
    assert problem.key == "webhook-allowed-ports" and "'0' is not a port" in problem.message

    empty = tmp_path / "empty.ini"
    empty.write_text("[global]\n")
    default = load_config(empty, specs={}, environ={})
    assert default.global_["webhook-allowed-ports"] == DEFAULT_PORTS


def self_signed(directory: Any, name: str) -> tuple[str, str]:
    """A self-signed certificate for *name* and its key, as PEM files in *directory*."""
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / "cert.pem", directory / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return str(cert_file), str(key_file)


def test_tls_to_the_pinned_address_keeps_the_name_for_sni_certificate_and_host(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import ssl

    name = "hooks.example.test"
    cert_file, key_file = self_signed(tmp_path, name)
    names: list[str | None] = []
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    context.sni_callback = lambda _sock, server_name, _ctx: names.append(server_name)
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.socket = context.wrap_socket(srv.socket, server_side=True)
    port = srv.server_address[1]
    real = socket.getaddrinfo
    looked_up: list[str] = []

    def getaddrinfo(host: str, *args: Any, **kwargs: Any) -> Any:
        looked_up.append(host)
        return real("127.0.0.1" if host == name else host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    for server in serve(srv):
        sender = PooledSender(AddressPolicy.from_networks(["127.0.0.0/8"]), ca_certs=str(cert_file))
        try:
            exchange = post(sender, f"https://{name}:{port}/")
            # The same address under another name fails the certificate check.
            other = post(sender, f"https://127.0.0.1:{port}/")
        finally:
            sender.close()
        assert exchange.status == 200 and exchange.body == b"ok", exchange.error
        assert names[0] == name
        assert server.last_host == f"{name}:{port}"  # type: ignore[attr-defined]
        assert looked_up.count(name) == 1
        assert other.status is None and "certificate" in (other.error or "").lower()


@pytest.mark.usefixtures("clean_webhooks")
def test_patching_the_url_is_checked_the_same_way(client: Any, make_token: Any, user: Any) -> None:
    headers = {"Authorization": f"Bearer {make_token('sample/things:RW', user=user)}"}
    made = client.post(
        "/api/webhooks",
        json={"url": "https://hooks.example.org/hook", "events": ["thing:created"]},
        headers=headers,
    )
    assert made.status_code == 201, made.get_data(as_text=True)
    path = f"/api/webhooks/{made.get_json()['id']}"
    for url, reason in REFUSED_URLS:
        response = client.patch(path, json={"url": url}, headers=headers)
        assert response.status_code == 400, url
        [error] = response.get_json()["errors"]
        assert error["field"] == "url" and reason in error["reason"]
    assert client.get(path, headers=headers).get_json()["url"] == "https://hooks.example.org/hook"


@given(st.text(max_size=80) | st.from_regex(r"https?://[^/]{0,30}(:\d{0,7})?/.*", fullmatch=True))
def test_url_refusal_answers_any_text(text: str) -> None:
    reason = AddressPolicy().url_refusal(text)
    assert reason is None or isinstance(reason, str)


@given(st.lists(st.text(max_size=12), max_size=4))
def test_port_rules_parse_or_say_why(items: list[str]) -> None:
    problem = ""
    try:
        rule = PortRule.parse(items)
    except ValueError as exc:
        problem = str(exc)
    if problem:
        assert "not a port" in problem
    else:
        assert not rule.allows(0)
