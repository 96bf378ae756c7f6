"""A receiver's answer affects only its own delivery, however it answers: it is recorded as
an attempt with a status or a clear, bounded error and retried per the schedule, the record of
its batch goes through on SQLite and PostgreSQL, the next receiver in the batch is delivered,
and nothing it sends is inflated, stored or logged past a cap.

The hostile receivers are raw TCP listeners on 127.0.0.1 that answer scripted bytes."""

from __future__ import annotations

import gzip
import json
import logging
import socket
import threading
import time
import tracemalloc
from datetime import timedelta
from functools import cache
from typing import Any

import pytest
from sqlalchemy import select

from srcore.outbound.sender import BODY_CAP, ERROR_CAP, PooledSender
from srcore.webhooks.models import Attempt
from srcore.webhooks.settings import WebhookSettings
from tests.test_webhooks_delivery import (
    LOOPBACK,
    Clock,
    Receiver,
    deliver_now,
    emit_and_fan_out,
    subscribe,
)

#: A script entry: bytes to answer, then what to do with the connection: keep it, close it,
#: or answer as soon as it opens (before reading the request) and close it for writing.
Answer = tuple[bytes, int]
KEEP, CLOSE, EARLY = 0, 1, 2
#: A log record, traceback included, is shorter than this.
LOG_CAP = 4000
OK = b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n"


class Raw:
    """Reads each request on 127.0.0.1 (any connection) and answers the next of *script*,
    then 204s; counts connections."""

    def __init__(self, script: list[Answer]) -> None:
        self.script = list(script)
        self.connections = 0
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/hook"
        self.thread = threading.Thread(target=self.serve, daemon=True)

    def serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self.answer, args=(conn,), daemon=True).start()

    def answer(self, conn: socket.socket) -> None:
        conn.settimeout(10)
        with conn:
            try:
                if self.script and self.script[0][1] == EARLY:
                    conn.sendall(self.script.pop(0)[0])
                    conn.shutdown(socket.SHUT_WR)
                    while conn.recv(65536):  # read the request after all: no reset
                        pass
                    return
                while self.read_request(conn):
                    data, close = self.script.pop(0) if self.script else (OK, KEEP)
                    conn.sendall(data)
                    if close:
                        return
            except OSError:
                return

    @staticmethod
    def read_request(conn: socket.socket) -> bool:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(65536)
            if not chunk:
                return False
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        length = next(
            (
                int(h.split(b":")[1])
                for h in head.split(b"\r\n")
                if h.lower().startswith(b"content-length:")
            ),
            0,
        )
        while len(body) < length:
            chunk = conn.recv(65536)
            if not chunk:
                return False
            body += chunk
        return True

    def __enter__(self) -> Raw:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.shutdown(socket.SHUT_RDWR)  # wakes accept()
        self.sock.close()
        self.thread.join(timeout=5)


@cache
def bomb() -> bytes:
    """Gzip twice: under 300 bytes that inflate to 64 MiB."""
    return gzip.compress(gzip.compress(b"\0" * (64 << 20), 9), 9)


def answer(status: bytes, headers: bytes = b"", body: bytes = b"") -> bytes:
    return b"HTTP/1.1 " + status + b"\r\n" + headers + b"\r\n" + body


def sized(status: bytes, body: bytes, headers: bytes = b"") -> bytes:
    return answer(status, headers + b"content-length: %d\r\n" % len(body), body)


#: id, script for the hostile receiver, the status recorded and what the error says.
CASES: list[tuple[str, list[Answer], int | None, str]] = [
    ("100-then-close", [(answer(b"100 Continue"), CLOSE)], None, "without response"),
    ("101", [(answer(b"101 Switching Protocols", b"upgrade: x\r\n"), KEEP)], 101, "HTTP 101"),
    # An informational answer is read past, to the final one (RFC 9110, 15.2).
    ("199", [(answer(b"199 Odd") + sized(b"200 OK", b""), KEEP)], 200, ""),
    ("299", [(sized(b"299 Odd", b""), KEEP)], 299, ""),  # a 2xx: delivered
    ("600", [(sized(b"600 Odd", b""), KEEP)], 600, "HTTP 600"),
    ("999", [(sized(b"999 Odd", b""), KEEP)], 999, "HTTP 999"),
    ("1000", [(sized(b"1000 Odd", b""), KEEP)], None, "connection failed: HTTP/1.1 1000"),
    ("not-http", [(b"SSH-2.0-x\x1b[2J\x00\r\n", KEEP)], None, r"SSH-2.0-x\x1b[2J\x00\r\n"),
    ("http-0.9", [(b"<html>hello</html>", CLOSE)], None, "connection failed: <html>hello"),
    ("odd-reason", [(sized(b"500 \x00\xff\x1b\x7f", b"oops"), KEEP)], 500, "HTTP 500"),
    ("long-reason", [(sized(b"500 " + b"r" * 65000, b""), KEEP)], 500, "HTTP 500"),
    ("status-line-too-long", [(b"HTTP/1.1 500 " + b"r" * 70000, KEEP)], None, "status line"),
    (
        "length-over-body",
        [(answer(b"200 OK", b"content-length: 99\r\n", b"abc"), CLOSE)],
        200,
        "IncompleteRead(3 bytes read, 96 more expected)",
    ),
    (
        "length-under-body",
        [(answer(b"500 X", b"content-length: 2\r\n", b"abcdef"), KEEP)],
        500,
        "HTTP 500",
    ),
    (
        "bad-chunk",
        [(answer(b"200 OK", b"transfer-encoding: chunked\r\n", b"zz\r\nab\r\n"), KEEP)],
        200,
        "reading the response failed",
    ),
    (
        "chunk-line-too-long",
        [(answer(b"200 OK", b"transfer-encoding: chunked\r\n", b"1" * 70000), KEEP)],
        200,
        "reading the response failed",
    ),
    (
        "length-and-chunked",
        [
            (
                answer(
                    b"500 X",
                    b"content-length: 1\r\ntransfer-encoding: chunked\r\n",
                    b"3\r\nabc\r\n0\r\n\r\n",
                ),
                KEEP,
            )
        ],
        500,
        "HTTP 500",
    ),
    (
        "204-with-body",
        [(answer(b"204 No Content", b"", b"HTTP/1.1 200 OK\r\n\r\n"), KEEP)],
        204,
        "",
    ),
    ("close-in-headers", [(b"HTTP/1.1 500 X\r\nx-a: b", CLOSE)], 500, "HTTP 500"),
    ("answer-before-request", [(sized(b"500 X", b"early"), EARLY)], 500, "HTTP 500"),
    ("close-unanswered", [(b"", CLOSE)], None, "Remote end closed connection without response"),
    (
        "gzip-bomb",
        [(sized(b"500 X", bomb(), b"content-encoding: gzip, gzip\r\n"), KEEP)],
        500,
        "HTTP 500",
    ),
    (
        "bad-gzip",
        [(sized(b"200 OK", b"\x1f\x8bxxxx", b"content-encoding: gzip\r\n"), KEEP)],
        200,
        "",
    ),
    (
        "unknown-encoding",
        [(sized(b"500 X", b"abc", b"content-encoding: xyz\r\n"), KEEP)],
        500,
        "HTTP 500",
    ),
    (
        "six-encodings",
        [(sized(b"200 OK", b"abc", b"content-encoding: gzip" + b",gzip" * 5 + b"\r\n"), KEEP)],
        200,
        "Too many content encodings",
    ),
    ("duplicate-headers", [(sized(b"500 X", b"", b"x-a: 1\r\nx-a: 2\r\n"), KEEP)], 500, "HTTP 500"),
    ("101-headers", [(answer(b"500 X", b"x-a: 1\r\n" * 101), KEEP)], None, "more than 100 headers"),
    (
        "header-too-long",
        [(answer(b"500 X", b"x-a: " + b"1" * 70000 + b"\r\n"), KEEP)],
        None,
        "header line",
    ),
    (
        "header-without-colon",
        [(sized(b"500 X", b"", b"no colon " + b"x" * 60000 + b"\r\n"), CLOSE)],
        500,
        "HTTP 500",
    ),
    (
        "non-latin-1-header",
        [(sized(b"500 X", b"", b"x-\xff\xfe: \xc3\xa9\x80\x00\r\n"), CLOSE)],
        500,
        "HTTP 500",
    ),
    (
        "huge-location",
        [
            (
                sized(b"302 Found", b"", b"location: http://" + b"a\x00\xff\x1b" * 16000 + b"\r\n"),
                KEEP,
            )
        ],
        302,
        r"redirect to 'http://a\x00ÿ\x1ba",
    ),
]


@pytest.mark.parametrize(
    ("script", "status", "error"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_a_receivers_answer_only_affects_its_own_delivery(
    app: Any,
    db: Any,
    caplog: pytest.LogCaptureFixture,
    script: list[Answer],
    status: int | None,
    error: str,
) -> None:
    settings = WebhookSettings(timeout=timedelta(seconds=5))
    sender = PooledSender(LOOPBACK, body_cap=settings.body_cap)
    with Raw(script) as hostile, Receiver() as healthy, caplog.at_level(logging.DEBUG):
        subscribe(db, hostile.url)
        subscribe(db, healthy.url)
        ids = sorted(emit_and_fan_out(app, db))  # one batch: the hostile receiver's first
        try:
            first, second = deliver_now(db, ids, Clock(), settings, http=sender)
        finally:
            sender.close()
    assert second.delivered and len(healthy.requests) == 1
    assert first.attempted and first.status == status
    if error:
        assert not first.delivered and first.error is not None and error in first.error
        assert first.retry_at is not None  # pending, per the schedule
    else:
        assert first.delivered
    [attempt] = db.scalars(select(Attempt).where(Attempt.delivery_id == ids[0])).all()
    assert len(attempt.response_body) <= settings.body_cap
    assert len(attempt.response_headers) <= 6 * settings.body_cap + 100  # JSON-escaped
    assert attempt.error is None or (
        len(attempt.error) <= ERROR_CAP and attempt.error.isprintable()
    )
    # Nothing a receiver sent is logged past the caps, urllib3's warnings included.
    assert max(len(caplog.handler.format(r)) for r in caplog.records) < LOG_CAP


@pytest.mark.usefixtures("clean_webhooks")
def test_a_repeated_header_is_logged_with_each_of_its_values(app: Any, db: Any) -> None:
    sender = PooledSender(LOOPBACK)
    with Raw([(sized(b"500 X", b"", b"x-a: 1\r\nX-A: 2\r\n"), KEEP)]) as hostile:
        subscribe(db, hostile.url)
        ids = emit_and_fan_out(app, db)
        try:
            deliver_now(db, ids, Clock(), http=sender)
        finally:
            sender.close()
    [logged] = db.scalars(select(Attempt.response_headers)).all()
    assert {k.lower(): v for k, v in json.loads(logged).items()}["x-a"] == "1, 2"


@pytest.mark.usefixtures("clean_webhooks")
@pytest.mark.parametrize(
    "script",
    [
        [(sized(b"302 Found", b"", b"location: /" + b"\x1b[2J" * 16000 + b"\r\n"), KEEP)],
        [(b"\x1b[2J" * 16000 + b"\r\n", KEEP)],
    ],
    ids=["huge-location", "long-non-http-line"],
)
def test_an_error_quoting_a_receiver_is_cut_and_escaped(
    app: Any, db: Any, caplog: pytest.LogCaptureFixture, script: list[Answer]
) -> None:
    """Given up after the last attempt, the error is logged: not 130 KB of a receiver's bytes,
    terminal escapes included."""
    settings = WebhookSettings(schedule=(timedelta(0),))  # one attempt
    sender = PooledSender(LOOPBACK)
    with Raw(script) as hostile, caplog.at_level(logging.INFO):
        subscribe(db, hostile.url)
        [delivery_id] = emit_and_fan_out(app, db)
        try:
            [outcome] = deliver_now(db, [delivery_id], Clock(), settings, http=sender)
        finally:
            sender.close()
    assert outcome.attempted and not outcome.delivered and outcome.retry_at is None
    assert outcome.error is not None and r"\x1b[2J" in outcome.error
    assert "gave up on" in caplog.text and "\x1b" not in caplog.text
    assert max(len(caplog.handler.format(r)) for r in caplog.records) < LOG_CAP


def test_a_bomb_is_not_inflated() -> None:
    """A body compressed twice though ``identity`` was asked for is kept as it came: urllib3
    before 2.6 inflated each read of a stack of encodings whole (1 GiB for 1 KiB)."""
    sender = PooledSender(LOOPBACK)
    script = [(sized(b"500 X", bomb(), b"content-encoding: gzip, gzip\r\n"), KEEP)]
    with Raw(script) as hostile:
        tracemalloc.start()
        try:
            exchange = sender.post(hostile.url, {}, b"{}", deadline=time.monotonic() + 30)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
            sender.close()
    assert peak < 4 << 20
    assert exchange.status == 500 and exchange.error is None
    assert exchange.body == bomb()[:BODY_CAP]


@pytest.mark.usefixtures("clean_webhooks")
def test_a_poisoned_keep_alive_connection_is_not_used_again(app: Any, db: Any) -> None:
    """A receiver answers with a second response tacked on (for the next request on the
    connection), then garbage on the connection reused: each of its deliveries is recorded
    with its own answer, the next goes over a new connection, the other receiver's too."""
    smuggled = sized(b"500 X", b"") + sized(b"200 OK", b"")
    script = [(smuggled, KEEP), (b"\x00garbage\r\n", KEEP), (sized(b"503 X", b""), KEEP)]
    sender = PooledSender(LOOPBACK)
    with Raw(script) as hostile, Receiver() as healthy:
        subscribe(db, hostile.url)
        subscribe(db, healthy.url)
        ids = sorted(i for _ in range(3) for i in emit_and_fan_out(app, db))
        try:
            outcomes = deliver_now(db, ids, Clock(), http=sender)
        finally:
            sender.close()
    hostile_ones, healthy_ones = outcomes[0::2], outcomes[1::2]
    assert all(o.delivered for o in healthy_ones) and len(healthy.requests) == 3
    assert [o.status for o in hostile_ones] == [500, None, 503]
    assert not any(o.delivered for o in hostile_ones)
    assert hostile_ones[1].error is not None and "garbage" in hostile_ones[1].error
    assert hostile.connections == 2  # the one that answered garbage was closed
