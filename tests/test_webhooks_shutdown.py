"""``srcore worker`` stops within ``webhook-timeout`` of SIGTERM, whatever is in flight.

A real worker process (todo's, on SQLite) delivers to a 127.0.0.1 receiver that accepts
connections and never answers; SIGTERM must end it well before the batch's requests
would all have timed out one round after another.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from srcore.app import migration_target
from srcore.db import Database, utcnow
from srcore.migrate import upgrade_all
from srcore.signatures import generate_secret
from srcore.testing import free_port, run_worker, write_network_config
from srcore.webhooks.models import Delivery, OutboxRow, Subscription

TIMEOUT = 3  # webhook-timeout, seconds
SUBSCRIPTIONS = 40  # a batch several rounds of the delivery pool deep


class StallingReceiver:
    """Accepts connections on 127.0.0.1 and never reads or answers them."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(128)
        self.sock.settimeout(0.1)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/hook"
        self.accepted: list[socket.socket] = []
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while not self.done.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.accepted.append(conn)

    def close(self) -> None:
        self.done.set()
        self.thread.join(timeout=5)
        for conn in self.accepted:
            conn.close()
        self.sock.close()


@pytest.fixture
def stalling() -> Iterator[StallingReceiver]:
    receiver = StallingReceiver()
    try:
        yield receiver
    finally:
        receiver.close()


def test_sigterm_ends_the_worker_within_the_webhook_timeout(
    tmp_path: Path, stalling: StallingReceiver
) -> None:
    config = write_network_config(
        tmp_path / "config.ini",
        {"meta": free_port(), "todo": free_port()},
        global_keys={
            "webhook-timeout": f"{TIMEOUT}s",
            "allow-private-webhook-targets": "127.0.0.0/8",
        },
    )
    upgrade_all(migration_target("todo", config))
    db = Database(f"sqlite:///{tmp_path / 'todo.db'}")
    now = utcnow()
    with db.transaction() as s:
        outbox = OutboxRow(event="ticket:created", payload="{}", created=now, fanned_out_at=now)
        s.add(outbox)
        s.flush()
        for _ in range(SUBSCRIPTIONS):
            sub = Subscription(
                url=stalling.url, events="ticket:created", scopes="", secret=generate_secret()
            )
            s.add(sub)
            s.flush()
            s.add(Delivery(subscription_id=sub.id, outbox_id=outbox.id, next_attempt_at=now))

    with run_worker("todo", config, timeout=60) as process:
        deadline = time.monotonic() + 30
        while not stalling.accepted:
            assert process.poll() is None, "the worker exited before sending anything"
            assert time.monotonic() < deadline, "the worker sent nothing within 30 s"
            time.sleep(0.05)
        process.send_signal(signal.SIGTERM)
        # The requests in flight end within webhook-timeout; nothing new starts. Without
        # that, the batch's rounds of stalled requests take several times as long.
        bound = 2 * TIMEOUT + 2
        try:
            process.wait(timeout=bound)
        except subprocess.TimeoutExpired:
            pytest.fail(f"srcore worker still ran {bound} s after SIGTERM")
        assert process.returncode == 0

    with db.session() as s:
        pending = s.scalar(select(func.count()).select_from(Delivery).where(Delivery.attempts == 0))
        # Deliveries never sent are not lost: still pending, free for the next worker.
        assert pending and pending > 0
        held = s.scalar(
            select(func.count())
            .select_from(Delivery)
            .where(Delivery.attempts == 0, Delivery.claimed_until > now + timedelta(seconds=1))
        )
        assert held == 0
    db.dispose()
