"""meta's per-address limits as an IPv6 subscriber meets them: one subscriber holds a whole
/64 (2^64 addresses), so counting each address apart gives it a fresh allowance per request.
Its registrations, reset mails and password guesses are counted for the /64, as srcore's
write limits count them; an IPv4 address is still its own."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest


def _frozen(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    clock = [time.time()]
    monkeypatch.setattr(time, "time", lambda: clock[0])
    return clock


def test_one_ipv6_subscriber_cannot_rotate_addresses_past_the_reset_mail_limit(
    app: Any, accounts: Any, csrf: Any
) -> None:
    """``/forgot`` mails the account's address, 5 per 15 minutes per client: a subscriber
    taking the next address of its /64 each time would flood that mailbox."""
    accounts.make("alice")
    statuses = []
    for host in range(1, 8):
        client = app.test_client()
        client.environ_base["REMOTE_ADDR"] = f"2001:db8:5:7::{host:x}"
        statuses.append(csrf.post(client, "/forgot", {"email": "alice@example.org"}).status_code)
    assert all(status < 400 for status in statuses[:5]), statuses
    assert statuses[5:] == [429, 429], statuses
    neighbour = app.test_client()  # another subscriber's /64 has its own allowance
    neighbour.environ_base["REMOTE_ADDR"] = "2001:db8:5:8::1"
    assert csrf.post(neighbour, "/forgot", {"email": "alice@example.org"}).status_code < 400


def test_failed_logins_from_one_ipv6_subscriber_are_counted_together(
    app: Any, csrf: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The address throttle slows a client down after a few failures, each with another
    name here (the account throttle never sees the same name twice). A minute passes
    between attempts, so the per-minute cap on login forms is not what answers."""
    from meta.protection import IP_FAILURE_FACTOR
    from meta.settings import meta_settings

    clock = _frozen(monkeypatch)
    most = meta_settings(app).login_max_failures * IP_FAILURE_FACTOR
    answers = []
    for attempt in range(most + 1):
        client = app.test_client()
        client.environ_base["REMOTE_ADDR"] = f"2001:db8:9::{attempt + 1:x}"
        response = csrf.post(
            client, "/login", {"login": f"nobody{attempt}", "password": "wrong password!"}
        )
        answers.append((response.status_code, "Too many failed" in response.get_data(True)))
        clock[0] += 61
    assert (429, True) in answers, answers


def test_an_ipv4_address_is_still_its_own(app: Any, accounts: Any, csrf: Any) -> None:
    accounts.make("alice")
    for host in range(1, 8):
        client = app.test_client()
        client.environ_base["REMOTE_ADDR"] = f"198.18.77.{host}"
        answer = csrf.post(client, "/forgot", {"email": "alice@example.org"})
        assert answer.status_code < 400, host


def test_failures_counted_in_process_start_no_thread(
    app: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without Redis the login throttle counts in process. A storage that expires its
    entries by walking every key after each failure costs CPU in proportion to the names
    and addresses ever tried (half a core at 100,000 of them and 5 failures a second):
    each failure touches its own keys only, with no timer thread."""
    from meta.protection import LoginProtection

    protection: LoginProtection = app.extensions["meta"].protection
    started: list[threading.Thread] = []
    real_start = threading.Thread.start

    def start(thread: threading.Thread) -> None:
        started.append(thread)
        real_start(thread)

    monkeypatch.setattr(threading.Thread, "start", start)
    for attempt in range(5):
        protection.failure(f"nobody{attempt}", f"198.18.90.{attempt}")
        time.sleep(0.05)  # a timer started by the failure before has run out
    assert started == []
