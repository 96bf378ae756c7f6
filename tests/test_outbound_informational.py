"""Informational (1xx) answers are read past to the final one (RFC 9110, section 15.2).

http.client reads past ``100 Continue`` only: a receiver answering ``103 Early Hints`` then
``200 OK`` had 103 recorded, and the 200 left on the kept-alive connection was read as the
answer to the next request sent on it. A ``101 Switching Protocols`` kept its connection in
the pool, though what follows it is another protocol.

The receivers are raw TCP listeners on 127.0.0.1 that hold a connection :data:`HOLD`
seconds at most; each attempt has a deadline.
"""

from __future__ import annotations

import socket
import threading
import time
import tracemalloc
from typing import Any

import pytest
from sqlalchemy import select

from srcore.outbound.sender import PooledSender
from srcore.webhooks.models import Attempt
from tests.test_outbound_hostile_more import HOLD, Handler, Hostile, flood, post, read_request
from tests.test_webhooks_delivery import LOOPBACK, Clock, deliver_now, emit_and_fan_out, subscribe
from tests.test_webhooks_hostile_receivers import KEEP, Raw, answer, sized

EARLY_HINTS = answer(b"103 Early Hints", b"link: </style.css>; rel=preload; as=style\r\n")

#: id, what the receiver answers the one request with, the status and body recorded.
ANSWERS = [
    ("103-then-200", EARLY_HINTS + sized(b"200 OK", b"ok"), 200, b"ok"),
    (
        "every-kind-then-204",
        answer(b"100 Continue")
        + answer(b"102 Processing", b"x-a: 1\r\n")
        + EARLY_HINTS * 3
        + answer(b"104 Upload Resumption Supported", b"upload-draft-interop-version: 6\r\n")
        + answer(b"199 Unknown", b"content-length: 5\r\n")  # a 1xx has no body
        + sized(b"204 No Content", b""),
        204,
        b"",
    ),
    ("103-then-500", EARLY_HINTS + sized(b"500 X", b"no"), 500, b"no"),
    (
        "103-then-chunked-200",
        EARLY_HINTS + answer(b"200 OK", b"transfer-encoding: chunked\r\n", b"2\r\nok\r\n0\r\n\r\n"),
        200,
        b"ok",
    ),
]


@pytest.mark.usefixtures("clean_webhooks")
@pytest.mark.parametrize(
    ("reply", "status", "body"), [a[1:] for a in ANSWERS], ids=[a[0] for a in ANSWERS]
)
def test_the_final_answer_is_the_one_recorded(
    app: Any, db: Any, reply: bytes, status: int, body: bytes
) -> None:
    sender = PooledSender(LOOPBACK)
    with Raw([(reply, KEEP)]) as receiver:
        subscribe(db, receiver.url)
        ids = emit_and_fan_out(app, db)
        try:
            [outcome] = deliver_now(db, ids, Clock(), http=sender)
        finally:
            sender.close()
    assert outcome.status == status
    assert outcome.delivered == (200 <= status < 300)
    [attempt] = db.scalars(select(Attempt).where(Attempt.delivery_id == ids[0])).all()
    assert attempt.response_status == status and attempt.response_body == body.decode()
    assert "link" not in attempt.response_headers  # the 103's headers are not the answer's


def _interim_then_final(conn: socket.socket, stop: threading.Event) -> None:
    """Answers the first request with a 103, a moment later its 200; the second with a 202."""
    read_request(conn)
    conn.sendall(EARLY_HINTS)
    stop.wait(0.3)  # the 200 comes after the sender could have sent its next request
    conn.sendall(sized(b"200 OK", b"first"))
    read_request(conn)
    conn.sendall(sized(b"202 Accepted", b"second"))
    stop.wait(HOLD)


def test_the_next_request_on_the_connection_gets_its_own_answer() -> None:
    sender = PooledSender(LOOPBACK)
    with Hostile(_interim_then_final) as receiver:
        url = f"http://127.0.0.1:{receiver.port}/hook"
        try:
            deadline = time.monotonic() + 10
            first = sender.post(url, {}, b"{}", deadline=deadline)
            second = sender.post(url, {}, b"{}", deadline=deadline)
        finally:
            sender.close()
    assert [(e.status, e.body, e.error) for e in (first, second)] == [
        (200, b"first", None),
        (202, b"second", None),
    ]
    assert receiver.connections == 1  # clean after the final answer: kept and used again


def _trickle_interim(conn: socket.socket, stop: threading.Event) -> None:
    """An informational answer every 50 ms, each well within the socket's timeout."""
    read_request(conn)
    while not stop.wait(0.05):
        conn.sendall(EARLY_HINTS)


ENDLESS: dict[str, Handler] = {
    "flooded-103": flood(b"", EARLY_HINTS),
    "flooded-mixed": flood(b"", answer(b"102 Processing") + EARLY_HINTS + answer(b"199 X")),
    "trickled-103": _trickle_interim,
}


@pytest.mark.parametrize("handler", ENDLESS.values(), ids=ENDLESS.keys())
def test_endless_informational_answers_are_cut_at_the_deadline(handler: Handler) -> None:
    sender = PooledSender(LOOPBACK)
    with Hostile(handler) as receiver:
        tracemalloc.start()
        try:
            exchange, _ = post(sender, f"http://127.0.0.1:{receiver.port}/hook")
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
            sender.close()
    assert exchange.status is None and not exchange.refused
    # The deadline's own verdict: the receivers never stop sending before the test ends.
    assert exchange.error is not None, exchange
    assert exchange.error.startswith("timeout: no complete response within"), exchange
    assert peak < 8 << 20


OVER_CAPS = {
    "101-header-lines": (EARLY_HINTS + answer(b"103 Early Hints", b"x-a: 1\r\n" * 101), "headers"),
    "long-header-line": (
        EARLY_HINTS + answer(b"103 Early Hints", b"x-a: " + b"1" * 70000 + b"\r\n"),
        "header line",
    ),
    "long-status-line": (EARLY_HINTS + b"HTTP/1.1 103 " + b"r" * 70000, "status line"),
}


@pytest.mark.parametrize(("reply", "error"), OVER_CAPS.values(), ids=OVER_CAPS.keys())
def test_an_informational_head_is_read_under_the_caps_of_any_head(reply: bytes, error: str) -> None:
    sender = PooledSender(LOOPBACK)
    with Raw([(reply + sized(b"200 OK", b""), KEEP)]) as receiver:
        tracemalloc.start()
        try:
            exchange = sender.post(receiver.url, {}, b"{}", deadline=time.monotonic() + 10)
            again = sender.post(receiver.url, {}, b"{}", deadline=time.monotonic() + 10)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
            sender.close()
    assert exchange.status is None and exchange.error is not None
    assert exchange.error.startswith("connection failed") and error in exchange.error
    assert peak < 4 << 20
    # The failed connection is not used again: the next request gets its own answer.
    assert again.status == 204 and receiver.connections == 2


#: A 101, then what the receiver would say next in the protocol it switched to: read on
#: the same connection, it would be taken for the answer to the next request.
SWITCHED = answer(
    b"101 Switching Protocols", b"upgrade: websocket\r\nconnection: upgrade\r\n"
) + sized(b"200 OK", b"not yours")


def test_a_switch_of_protocols_fails_and_its_connection_is_not_used_again() -> None:
    sender = PooledSender(LOOPBACK)
    with Raw([(SWITCHED, KEEP)]) as receiver:
        try:
            switched = sender.post(receiver.url, {}, b"{}", deadline=time.monotonic() + 10)
            after = sender.post(receiver.url, {}, b"{}", deadline=time.monotonic() + 10)
        finally:
            sender.close()
    assert switched.status == 101 and switched.body == b""
    assert switched.error is not None and switched.error.startswith("HTTP 101")
    assert (after.status, after.body, after.error) == (204, b"", None)
    assert receiver.connections == 2


@pytest.mark.usefixtures("clean_webhooks")
def test_a_switch_of_protocols_is_a_failed_delivery(app: Any, db: Any) -> None:
    sender = PooledSender(LOOPBACK)
    with Raw([(EARLY_HINTS + SWITCHED, KEEP)]) as receiver:
        subscribe(db, receiver.url)
        ids = emit_and_fan_out(app, db)
        try:
            [outcome] = deliver_now(db, ids, Clock(), http=sender)
        finally:
            sender.close()
    assert outcome.status == 101 and not outcome.delivered
    assert outcome.error is not None and "HTTP 101" in outcome.error
    assert outcome.retry_at is not None
