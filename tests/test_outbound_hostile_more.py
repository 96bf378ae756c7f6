"""More of what a receiver, or whoever writes its URL, may try on the sender: a URL read one
way by the check and another by the connection, a negative chunk size, every kind of
redirect, answers that never end (1xx, trailers, TLS handshakes), and the other spellings of
a loopback address.

The receivers are raw TCP listeners on 127.0.0.1; one that would hold an attempt holds it
for :data:`HOLD` seconds at most, and each attempt's deadline is :data:`DEADLINE`.
"""

from __future__ import annotations

import ipaddress
import socket
import ssl
import threading
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

import pytest
import urllib3

from srcore.outbound.policy import DEFAULT_PORTS, AddressPolicy
from srcore.outbound.sender import Exchange, PooledSender
from srcore.outbound.targets import target_problem
from tests.test_webhooks_delivery import (
    LOOPBACK,
    Clock,
    Receiver,
    deliver_now,
    emit_and_fan_out,
    subscribe,
)
from tests.test_webhooks_hostile_receivers import KEEP, Raw, answer, sized
from tests.test_webhooks_sender import Listener
from tests.test_webhooks_ssrf import self_signed

DEADLINE = 1.0
HOLD = 15.0

#: What a hostile listener does with each connection it accepts, until *stop* is set.
Handler = Callable[[socket.socket, threading.Event], None]


class Hostile:
    """Accepts connections on 127.0.0.1 and hands each to *handler* on a thread of its own;
    counts them."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections = 0
        self.stop = threading.Event()
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self.serve, daemon=True)

    def serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self.handle, args=(conn,), daemon=True).start()

    def handle(self, conn: socket.socket) -> None:
        conn.settimeout(HOLD)
        with conn:
            try:
                self.handler(conn, self.stop)
            except OSError:
                return

    def __enter__(self) -> Hostile:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.sock.shutdown(socket.SHUT_RDWR)  # wakes accept()
        self.sock.close()
        self.thread.join(timeout=5)


def read_request(conn: socket.socket) -> None:
    """Read one request (its head and a small body)."""
    Raw.read_request(conn)


def flood(head: bytes, repeat: bytes, limit: int = 1 << 40) -> Handler:
    """Reads the request, answers *head*, then *repeat* again and again (*limit* bytes at
    most), then holds the connection."""

    def handler(conn: socket.socket, stop: threading.Event) -> None:
        read_request(conn)
        conn.sendall(head)
        sent = 0
        while not stop.is_set() and sent < limit:
            conn.sendall(repeat)
            sent += len(repeat)
        stop.wait(HOLD)

    return handler


def post(sender: PooledSender, url: str, body: bytes = b"{}") -> tuple[Exchange, float]:
    """POST *body* to *url* with a :data:`DEADLINE`; the exchange and the seconds taken."""
    started = time.monotonic()
    exchange = sender.post(url, {}, body, deadline=started + DEADLINE)
    return exchange, time.monotonic() - started


# -- a URL read one way by the check and another by the connection -----------------------


@pytest.mark.parametrize("tail", ["\\[::1]:8080/hook", "\\[::1]/hook", "\\[v1.x]:8080/hook"])
def test_a_backslash_cannot_hide_a_refused_port(tail: str) -> None:
    """urllib3 ends the host part at a backslash, urlsplit does not: the URL check read
    ``http://127.0.0.1:<refused>\\[::1]:8080/`` as port 8080, and the request went to the
    refused port."""
    with Listener("none") as listener:
        policy = AddressPolicy.from_networks(
            ["127.0.0.0/8"],
            ports=[*DEFAULT_PORTS, f"!{listener.port}"],
            ports_setting="webhook-allowed-ports",
        )
        url = f"http://127.0.0.1:{listener.port}{tail}"
        sender = PooledSender(policy)
        try:
            exchange, _ = post(sender, url)
        finally:
            sender.close()
        assert not listener.pending()
    assert exchange.refused and exchange.status is None
    assert exchange.error is not None and "backslash" in exchange.error
    # Said when the URL is submitted too.
    assert "backslash" in (target_problem(url, policy, resolve=None) or "")


def test_the_port_connected_to_is_checked_whatever_the_url_check_said(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The connection checks its own port, as it checks its own address: a URL the check
    reads otherwise than urllib3 cannot open one to a refused port."""
    monkeypatch.setattr(AddressPolicy, "url_refusal", lambda self, url: None)
    with Listener("none") as listener:
        policy = AddressPolicy.from_networks(
            ["127.0.0.0/8"],
            ports=[*DEFAULT_PORTS, f"!{listener.port}"],
            ports_setting="webhook-allowed-ports",
        )
        sender = PooledSender(policy)
        try:
            exchange, _ = post(sender, f"http://127.0.0.1:{listener.port}/hook")
        finally:
            sender.close()
        assert not listener.pending()
    assert exchange.refused and exchange.status is None
    assert exchange.error == f"refused: port {listener.port} is not one of webhook-allowed-ports"


def test_a_percent_encoded_host_is_judged_as_the_host_it_names() -> None:
    """urllib3 decodes ``%31%32%37.0.0.1`` to 127.0.0.1: the check when a URL is submitted
    refuses it, rather than accept a subscription every delivery of which is refused."""
    problem = target_problem("http://%31%32%37.0.0.1:8080/hook", AddressPolicy(), resolve=None)
    assert problem is not None and "loopback" in problem


@pytest.mark.parametrize(
    ("host", "looked_up"),
    [("straße.example", "xn--strae-oqa.example"), ("BÜCHER.example", "xn--bcher-kva.example")],
)
def test_a_name_beyond_ascii_is_judged_as_the_name_the_sender_looks_up(
    host: str, looked_up: str
) -> None:
    """urllib3 writes such a name in its IDNA 2008 form; the system resolver, given it as
    typed, would look up its IDNA 2003 form (``strasse.example``), another name whose
    addresses say nothing of where deliveries go."""
    asked: list[str] = []

    def resolver(name: str, port: int, timeout: float) -> list[Any]:
        asked.append(name)
        return [ipaddress.ip_address("127.0.0.1")]

    problem = target_problem(f"https://{host}/hook", AddressPolicy(), resolve=resolver)
    assert asked == [looked_up]
    assert problem is not None and problem.startswith(f"{looked_up} resolves to 127.0.0.1")
    assert urllib3.util.parse_url(f"https://{host}/hook").host == looked_up


def test_a_name_no_sender_could_write_is_refused_when_submitted() -> None:
    problem = target_problem("https://a\u200db.example/hook", AddressPolicy(), resolve=None)
    assert problem is not None and "not a valid name" in problem


#: Spellings of 127.0.0.1 (and 0.0.0.0, which reaches this host too) that resolvers take.
LOOPBACK_SPELLINGS = [
    "2130706433",
    "0x7f.1",
    "017700000001",
    "0x7f000001",
    "127.1",
    "0177.0.0.1",
    "127.0.0.1.",
    "localhost.",
    "LOCALHOST",
    "%31%32%37.0.0.1",
    "[0:0:0:0:0:ffff:7f00:1]",
    "[::127.0.0.1]",
    "0",
]


@pytest.mark.parametrize("host", LOOPBACK_SPELLINGS)
def test_other_spellings_of_loopback_are_refused_without_connecting(host: str) -> None:
    with Listener("none") as listener:
        sender = PooledSender(AddressPolicy())
        try:
            exchange, _ = post(sender, f"HTTP://{host}:{listener.port}/hook")
        finally:
            sender.close()
        assert not listener.pending()
    assert exchange.refused and exchange.status is None, exchange.error
    assert exchange.error is not None
    assert "loopback" in exchange.error or "unspecified" in exchange.error


def test_control_characters_in_a_url_do_not_reach_the_request_head() -> None:
    """A path's CR LF, space and NUL are percent-encoded in the request line, no header is
    injected; in the host part they make the URL fail before any connection."""
    with Receiver() as receiver:
        base = receiver.url.removesuffix("/hook")
        sender = PooledSender(LOOPBACK)
        try:
            sent, _ = post(sender, f"{base}/a b\r\nX-Injected: 1\r\n\r\n\x00")
            bad_hosts = [
                post(sender, f"http://127.0.0.1{junk}:{base.rsplit(':', 1)[1]}/hook")[0]
                for junk in (" ", "%00", "\x00", "\r\nX-Injected: 1")
            ]
        finally:
            sender.close()
    assert sent.status == 204
    [(path, headers, _)] = receiver.requests
    assert path == "/a%20b%0D%0AX-Injected:%201%0D%0A%0D%0A%00"
    assert "x-injected" not in headers
    for exchange in bad_hosts:
        assert exchange.status is None and exchange.error is not None
        assert exchange.error.isprintable()


# -- answers ----------------------------------------------------------------------------


@pytest.mark.usefixtures("clean_webhooks")
@pytest.mark.parametrize("size", [b"-5", b"-1", b"-0x10"])
def test_a_negative_chunk_size_is_a_recorded_failure(app: Any, db: Any, size: bytes) -> None:
    """urllib3 raised ValueError for a negative chunk size, out of the sender: the attempt
    went unrecorded, left to its lease and claimed again, as often as the receiver liked."""
    body = size + b"\r\nabc\r\n0\r\n\r\n"
    script = [(answer(b"500 X", b"transfer-encoding: chunked\r\n", body), KEEP)]
    sender = PooledSender(LOOPBACK)
    with Raw(script) as hostile:
        subscribe(db, hostile.url)
        ids = emit_and_fan_out(app, db)
        try:
            [outcome] = deliver_now(db, ids, Clock(), http=sender)
        finally:
            sender.close()
    assert outcome.attempted and outcome.status == 500 and not outcome.delivered
    assert outcome.error is not None and "reading the response failed" in outcome.error
    assert outcome.retry_at is not None


def test_a_chunk_size_of_minus_one_does_not_read_all_the_receiver_sends() -> None:
    """urllib3 read a ``-1`` chunk as "all there is": everything the receiver sent until the
    deadline was kept in memory (hundreds of MB a second on a fast link)."""
    head = b"HTTP/1.1 500 X\r\ntransfer-encoding: chunked\r\n\r\n-1\r\n"
    sender = PooledSender(LOOPBACK)
    with Hostile(flood(head, b"z" * 65536, limit=64 << 20)) as hostile:
        tracemalloc.start()
        try:
            exchange, _ = post(sender, f"http://127.0.0.1:{hostile.port}/hook")
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
            sender.close()
    assert peak < 8 << 20
    assert exchange.status == 500 and exchange.body == b""
    assert exchange.error is not None and "InvalidChunkLength" in exchange.error


@pytest.mark.parametrize("status", [301, 303, 307, 308])
def test_no_kind_of_redirect_is_followed(status: int) -> None:
    with Listener("none") as elsewhere:
        location = b"location: http://127.0.0.1:%d/x\r\n" % elsewhere.port
        script = [(sized(b"%d R" % status, b"", location), KEEP)]
        sender = PooledSender(LOOPBACK)
        with Raw(script) as hostile:
            try:
                exchange, _ = post(sender, hostile.url)
            finally:
                sender.close()
        assert not elsewhere.pending()
    assert exchange.status == status and not exchange.refused
    assert exchange.error == f"redirect to 'http://127.0.0.1:{elsewhere.port}/x' not followed"
    assert hostile.connections == 1


ENDLESS = {
    # A 100 Continue, then another, and another: http.client skips each one.
    "endless-100-continue": flood(b"", b"HTTP/1.1 100 Continue\r\nx-a: b\r\n\r\n"),
    # A chunked body's trailer that never ends: urllib3 reads it line after line.
    "endless-trailer": flood(
        b"HTTP/1.1 500 X\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n",
        b"x-trailer: 1\r\n" * 100,
    ),
    # A body without a length, then nothing: it ends when the connection does.
    "no-length-then-silence": flood(b"HTTP/1.1 200 OK\r\n\r\n", b"", limit=0),
}


@pytest.mark.parametrize("handler", ENDLESS.values(), ids=ENDLESS.keys())
def test_an_answer_that_never_ends_is_cut_at_the_deadline(handler: Handler) -> None:
    sender = PooledSender(LOOPBACK)
    with Hostile(handler) as hostile:
        tracemalloc.start()
        try:
            exchange, took = post(sender, f"http://127.0.0.1:{hostile.port}/hook")
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
            sender.close()
    assert exchange.error is not None and exchange.error.startswith("timeout"), exchange
    assert not exchange.refused
    assert peak < 8 << 20
    assert took < HOLD / 2  # a generous bound between the deadline and the hold


def test_a_receiver_that_never_reads_a_large_request_is_cut_at_the_deadline() -> None:
    """The request does not fit in the socket buffers: sending it blocks until the deadline
    shuts the socket."""
    sender = PooledSender(LOOPBACK)
    with Hostile(lambda conn, stop: stop.wait(HOLD)) as hostile:
        try:
            exchange, took = post(sender, f"http://127.0.0.1:{hostile.port}/hook", b"x" * (8 << 20))
        finally:
            sender.close()
    assert exchange.status is None
    assert exchange.error is not None and exchange.error.startswith("timeout")
    assert took < HOLD / 2


# -- TLS --------------------------------------------------------------------------------


def _hold(conn: socket.socket, stop: threading.Event) -> None:
    stop.wait(HOLD)


def _trickle_handshake(conn: socket.socket, stop: threading.Event) -> None:
    """The header of a 16 KiB handshake record, then its bytes one at a time: each comes
    well within the socket's timeout, the record never ends."""
    conn.recv(65536)  # the client hello
    conn.sendall(b"\x16\x03\x03\x40\x00")
    while not stop.wait(0.2):
        conn.sendall(b"\x02")


def _plain_http(conn: socket.socket, stop: threading.Event) -> None:
    """An HTTP server at an https:// URL: it waits for a request head that never comes."""
    read_request(conn)


TLS_STALLS = {"silent": _hold, "trickled-handshake": _trickle_handshake, "plain": _plain_http}


@pytest.mark.parametrize("handler", TLS_STALLS.values(), ids=TLS_STALLS.keys())
def test_the_deadline_holds_during_the_tls_handshake(handler: Handler) -> None:
    # The connect timeout (which each handshake read gets) is longer than the deadline.
    sender = PooledSender(LOOPBACK, connect_timeout=HOLD)
    with Hostile(handler) as hostile:
        try:
            exchange, took = post(sender, f"https://127.0.0.1:{hostile.port}/hook")
        finally:
            sender.close()
    assert hostile.connections == 1
    assert exchange.status is None
    assert exchange.error is not None and exchange.error.startswith("timeout"), exchange.error
    assert took < HOLD / 2


def test_an_untrusted_certificate_is_a_clear_failure(tmp_path: Any) -> None:
    cert_file, key_file = self_signed(tmp_path, "localhost")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)

    def handler(conn: socket.socket, stop: threading.Event) -> None:
        with context.wrap_socket(conn, server_side=True) as tls:
            read_request(tls)
            tls.sendall(sized(b"200 OK", b""))

    sender = PooledSender(LOOPBACK)  # certifi's bundle: the listener's CA is not in it
    with Hostile(handler) as hostile:
        try:
            exchange, _ = post(sender, f"https://127.0.0.1:{hostile.port}/hook")
        finally:
            sender.close()
    assert exchange.status is None and not exchange.refused
    assert exchange.error is not None and "certificate verify failed" in exchange.error
