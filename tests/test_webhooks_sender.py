"""The webhook sender on real sockets: one deadline per attempt, and a refused target
never sees a connection.

The receivers here are raw TCP listeners on 127.0.0.1, so a test can see whether a
connection was made at all and can answer as slowly as it likes.
"""

from __future__ import annotations

import select
import socket
import threading
import time
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select as sql_select

from srcore.outbound.policy import DEFAULT_PORTS, AddressPolicy
from srcore.signatures import generate_secret
from srcore.webhooks.models import Attempt, Delivery, Subscription
from srcore.webhooks.outbox import insert_event
from srcore.webhooks.settings import WebhookSettings
from srcore.webhooks.worker import Worker

LOOPBACK = AddressPolicy.from_networks(["127.0.0.0/8"])
#: Each attempt's deadline in these tests, and how long a trickling receiver would last.
DEADLINE = 1.5
TRICKLE_FOR = 15.0


pytestmark = pytest.mark.usefixtures("clean_webhooks")


class Listener:
    """A TCP listener on 127.0.0.1 that counts connections and answers per *mode*.

    ``trickle-body``: a 200 whose declared body comes a byte every 0.5 s;
    ``trickle-headers``: a 204 whose header block comes a byte every 0.5 s;
    ``none``: accepts nothing (a test checks that no connection is even pending).
    """

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self.stop = threading.Event()
        self.thread: threading.Thread | None = None

    def pending(self) -> bool:
        """Whether a connection waits to be accepted (mode ``none``)."""
        readable, _, _ = select.select([self.sock], [], [], 0.3)
        return bool(readable)

    def serve(self) -> None:
        self.sock.settimeout(0.2)
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self.answer, args=(conn,), daemon=True).start()

    def answer(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(2)
            try:
                conn.recv(65536)  # the request (small: one event)
                if self.mode == "trickle-body":
                    conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\n")
                    self.trickle(conn, b"x" * 1000)
                else:
                    conn.sendall(b"HTTP/1.1 204 No Content\r\n")
                    self.trickle(conn, b"x-slow: " + b"y" * 1000 + b"\r\n")
                    conn.sendall(b"content-length: 0\r\n\r\n")
            except OSError:
                return

    def trickle(self, conn: socket.socket, data: bytes) -> None:
        ends = time.monotonic() + TRICKLE_FOR
        for byte in data:
            if self.stop.is_set() or time.monotonic() > ends:
                return
            conn.sendall(bytes([byte]))
            time.sleep(0.5)

    def __enter__(self) -> Listener:
        if self.mode != "none":
            self.thread = threading.Thread(target=self.serve, daemon=True)
            self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.sock.close()
        if self.thread is not None:
            self.thread.join(timeout=5)


def subscribe(db: Any, url: str) -> int:
    sub = Subscription(
        owner_id=None,
        url=url,
        events="thing:created",
        scopes="sample/things:RO",
        secret=generate_secret(),
    )
    db.add(sub)
    db.commit()
    return int(sub.id)


def run_worker(app: Any, db: Any, policy: AddressPolicy) -> float:
    """Emit one event, let a worker with *policy* fan it out and deliver it; seconds taken."""
    insert_event(db, "thing:created", {"id": 1, "name": "x"})
    db.commit()
    settings = WebhookSettings(
        timeout=timedelta(seconds=DEADLINE), connect_timeout=timedelta(seconds=1)
    )
    worker = Worker(app, policy=policy, settings=settings, poll_interval=0.01)
    started = time.monotonic()
    try:
        worker.drain()
        return time.monotonic() - started
    finally:
        worker.close()


def outcomes(db: Any) -> dict[str, tuple[str, str | None]]:
    """Each delivery's subscription URL, status and last attempt's error."""
    db.expire_all()
    rows = db.execute(
        sql_select(Subscription.url, Delivery.status, Attempt.error)
        .join(Delivery, Delivery.subscription_id == Subscription.id)
        .join(Attempt, Attempt.delivery_id == Delivery.id)
    ).all()
    return {url: (status, error) for url, status, error in rows}


# -- one deadline per attempt -----------------------------------------------------------


@pytest.mark.parametrize("mode", ["trickle-body", "trickle-headers"])
def test_a_trickling_receiver_is_cut_at_the_deadline(app: Any, db: Any, mode: str) -> None:
    with Listener(mode) as receiver:
        url = f"http://127.0.0.1:{receiver.port}/hook"
        subscribe(db, url)
        took = run_worker(app, db, LOOPBACK)
    assert receiver.connections == 1
    status, error = outcomes(db)[url]
    assert status == "pending"  # failed, to be retried
    assert error is not None and "timeout" in error
    # The receiver would have kept the attempt for TRICKLE_FOR seconds; the deadline is
    # DEADLINE. A generous bound between the two, not a timing assertion.
    assert took < TRICKLE_FOR / 2


# -- the SSRF policy before any connection ------------------------------------------------


def test_a_refused_target_sees_no_connection_and_is_not_retried(app: Any, db: Any) -> None:
    with Listener("none") as listener:
        closed = socket.socket()
        closed.bind(("127.0.0.1", 0))
        closed_port = closed.getsockname()[1]
        closed.close()  # nothing listens there
        urls = [
            f"http://localhost:{listener.port}/hook",
            f"http://127.0.0.1:{listener.port}/hook",
            f"http://127.0.0.1:{closed_port}/hook",
        ]
        for url in urls:
            subscribe(db, url)
        run_worker(app, db, AddressPolicy())  # private targets not allowed
        assert not listener.pending()
    found = outcomes(db)
    for url in urls:
        status, error = found[url]
        assert status == "failed", url  # final: retrying cannot change the answer
        assert error is not None and "loopback" in error, (url, error)
        assert "connection refused" not in error


def test_ports_outside_the_allowed_ones_are_refused_without_connecting(app: Any, db: Any) -> None:
    with Listener("none") as listener:
        policy = AddressPolicy.from_networks(
            ["127.0.0.0/8"],
            ports=[*DEFAULT_PORTS, f"!{listener.port}"],
            ports_setting="webhook-allowed-ports",
        )
        urls = [
            f"http://127.0.0.1:{listener.port}/hook",
            "http://127.0.0.1:0/hook",
            "http://127.0.0.1:22/hook",
            "http://127.0.0.1:6379/hook",
        ]
        for url in urls:
            subscribe(db, url)
        run_worker(app, db, policy)
        assert not listener.pending()
    found = outcomes(db)
    for url in urls:
        status, error = found[url]
        assert status == "failed", url
        assert error is not None and "webhook-allowed-ports" in error, (url, error)


def test_the_deadline_cuts_a_trickle_over_tls_too(tmp_path: Any) -> None:
    import ssl

    from srcore.outbound.sender import PooledSender
    from tests.test_webhooks_ssrf import self_signed

    cert_file, key_file = self_signed(tmp_path, "localhost")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    stop = threading.Event()
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        port = listener.getsockname()[1]

        def serve() -> None:
            conn, _ = listener.accept()
            with context.wrap_socket(conn, server_side=True) as tls:
                tls.recv(65536)
                tls.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n")
                ends = time.monotonic() + TRICKLE_FOR
                while not stop.is_set() and time.monotonic() < ends:
                    try:
                        tls.sendall(b"x")
                    except OSError:
                        return
                    time.sleep(0.5)

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        sender = PooledSender(LOOPBACK, ca_certs=cert_file)
        started = time.monotonic()
        try:
            exchange = sender.post(
                f"https://localhost:{port}/hook", {}, b"{}", deadline=started + DEADLINE
            )
        finally:
            took = time.monotonic() - started
            sender.close()
            stop.set()
            thread.join(timeout=5)
    assert exchange.status == 200  # the headers came in time; the body did not
    assert exchange.error is not None and "timeout" in exchange.error
    assert took < TRICKLE_FOR / 2


def test_a_slow_name_lookup_counts_against_the_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    from srcore.outbound.sender import PooledSender

    real = socket.getaddrinfo
    released = threading.Event()

    def slow(host: str, *args: Any, **kwargs: Any) -> Any:
        if host == "slow.example.test":
            released.wait(TRICKLE_FOR / 3)  # a resolver that takes its time
            host = "127.0.0.1"
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", slow)
    sender = PooledSender(LOOPBACK)
    started = time.monotonic()
    try:
        exchange = sender.post(
            "http://slow.example.test:8080/hook", {}, b"{}", deadline=started + DEADLINE
        )
    finally:
        took = time.monotonic() - started
        released.set()
        sender.close()
    assert exchange.status is None
    assert exchange.error is not None and "timeout" in exchange.error
    assert took < TRICKLE_FOR / 3 - 1


def test_a_forked_child_still_cuts_a_trickling_receiver_at_the_deadline() -> None:
    """The deadline thread of the parent is not in a forked child (a Celery pool process):
    the child's first attempt starts its own, so a trickling receiver is still cut."""
    import os

    from srcore.outbound.sender import PooledSender

    sender = PooledSender(LOOPBACK)
    with Listener("trickle-body") as listener:
        url = f"http://127.0.0.1:{listener.port}/hook"
        first = sender.post(url, {}, b"{}", deadline=time.monotonic() + 0.6)
        assert first.error is not None  # the parent's deadline thread is running now
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: report what its attempt got, then leave at once
            try:
                got = sender.post(url, {}, b"{}", deadline=time.monotonic() + 0.6)
                os.write(write, (got.error or "no error").encode()[:200])
            finally:
                os._exit(0)
        os.close(write)
        ready, _, _ = select.select([read], [], [], 10)
        report = os.read(read, 200).decode() if ready else "the child never answered"
        os.close(read)
        if not ready:
            os.kill(pid, 9)
        os.waitpid(pid, 0)
        sender.close()
    assert report.startswith("timeout:"), report
