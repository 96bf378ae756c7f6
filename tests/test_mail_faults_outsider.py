"""Mail through a stranger's SMTP server that misbehaves (srcore.testing.smtp's FaultySMTP,
on 127.0.0.1): one that never says a word, answers one byte at a time (its greeting, or a
TLS handshake), refuses for now or for good, resets the connection in the middle of the
message, hangs up after its greeting, or takes the message and never says so.

Whatever it does, handing one message over takes at most ``smtp-timeout`` all told, and
fails with a :class:`MailError` that says why in the server's words; a message the server
accepted counts as sent. meta under gunicorn, mailing through a server that drips its
greeting, answers its page within that bound, and its worker serves the next request.
Every test is bounded: a call that never returns fails the test after :data:`LIMIT`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import requests

from srcore.mail import Mailer, MailError, SMTPTransport
from srcore.testing import bounded, free_port, run_service, write_config
from srcore.testing.smtp import FAULTS, FaultySMTP, serve_faulty_smtp
from tests.conftest import run_config_check

#: smtp-timeout in these tests, in seconds.
BOUND = 1.5
#: How long a test waits for a call that should be over within BOUND, before it fails.
LIMIT = 30.0
#: The faults that stop the message, and what the error says of each.
REFUSALS = {
    "silent": "no complete answer within 1.5 s",
    "drip": "no complete answer within 1.5 s",
    "drip-handshake": "no complete answer within 1.5 s",
    "close-after-greeting": "closed",
    "421-on-connect": "421",
    "451-recipient": "451",
    "550-recipient": "550",
    "552-size": "552",
    "reset-in-data": "",
    "hang-after-data": "no complete answer within 1.5 s",
}
_CSRF = re.compile(r'name="csrf_token"[^>]*value="([^"]+)"')


def _mailer(server: FaultySMTP, tls: str = "none") -> Mailer:
    transport = SMTPTransport("127.0.0.1", port=server.port, tls=tls, timeout=BOUND)  # type: ignore[arg-type]
    return Mailer(transport, sender="noreply@net.example")


@pytest.fixture(params=sorted(set(FAULTS) - {"drip-handshake", "hang-after-accepting"}))
def fault(request: pytest.FixtureRequest) -> Iterator[FaultySMTP]:
    with serve_faulty_smtp(request.param) as server:
        yield server


def test_every_fault_is_a_mail_error_within_the_bound(fault: FaultySMTP) -> None:
    mailer = _mailer(fault)
    with pytest.raises(MailError) as raised:
        bounded(lambda: mailer.send("alice@example.org", "Hello", "Body\n"))
    said = str(raised.value)
    assert f"cannot send mail through 127.0.0.1:{fault.port}: " in said
    assert REFUSALS[fault.fault].lower() in said.lower(), said
    assert fault.connections == 1
    assert fault.accepted == 0


@pytest.mark.parametrize("tls", ["tls", "starttls"])
def test_a_tls_handshake_one_byte_at_a_time_is_cut_at_the_bound(tls: str) -> None:
    """Each byte comes before a step's timeout: only the bound on the whole exchange ends it."""
    with serve_faulty_smtp("drip-handshake", drip_interval=0.2) as server:
        mailer = _mailer(server, tls)
        with pytest.raises(MailError, match=r"no complete answer within 1\.5 s \(smtp-timeout\)"):
            bounded(lambda: mailer.send("alice@example.org", "Hello", "Body\n"))
        assert server.stalled.is_set()


def test_a_greeting_one_byte_at_a_time_is_cut_at_the_bound() -> None:
    with serve_faulty_smtp("drip", drip_interval=0.1) as server:
        mailer = _mailer(server)
        with pytest.raises(MailError, match=r"no complete answer within 1\.5 s"):
            bounded(lambda: mailer.send("alice@example.org", "Hello", "Body\n"))


def test_a_message_accepted_is_sent_whatever_quit_gets() -> None:
    """The server said 250 to the message, then never answers QUIT: the mail is sent, and
    the sender does not wait the whole bound to learn nothing more."""
    with serve_faulty_smtp("hang-after-accepting") as server:
        bounded(lambda: _mailer(server).send("alice@example.org", "Hello", "Body\n"))
        assert server.accepted == 1
        assert server.stalled.is_set()


def test_a_disabled_webhook_notice_to_a_silent_server_gives_up_within_the_bound(
    app: Any, clean_webhooks: None
) -> None:
    """The webhook worker tells an owner their subscription was disabled: a server that
    never answers holds it no longer than the bound (its callers log the MailError)."""
    from sqlalchemy.orm import Session

    from srcore.testing import create_user
    from srcore.webhooks.models import Subscription
    from srcore.webhooks.settings import MailNotifier

    owner = create_user(app, "carol")
    db = app.extensions["srcore"].db
    with db.transaction() as session:
        row = Subscription(
            owner_id=owner.id, url="https://hooks.example.org/x", events="a", secret="s"
        )
        session.add(row)
        session.flush()
        sid = row.id
    with serve_faulty_smtp("drip") as server, Session(db.engine) as session:
        app.extensions["srcore_mail"] = _mailer(server)
        subscription = session.get(Subscription, sid)
        assert subscription is not None
        holding: list[bool] = []
        server.on_stall = lambda: holding.append(session.in_transaction())
        with pytest.raises(MailError, match=r"within 1\.5 s"):
            bounded(lambda: MailNotifier(app)(session, subscription, "failing for three days"))
        # It read what the notice says, then let the connection go before mailing.
        assert holding == [False]


# -- the setting -------------------------------------------------------------------------


def test_smtp_timeout_is_read_from_the_config() -> None:
    settings = {"smtp-host": "mail.example.org", "smtp-timeout": timedelta(seconds=4)}
    transport = Mailer.from_config(settings).transport
    assert isinstance(transport, SMTPTransport)
    assert transport.timeout == 4.0
    default = Mailer.from_config({"smtp-host": "mail.example.org"}).transport
    assert isinstance(default, SMTPTransport)
    assert default.timeout == 10.0


@pytest.mark.parametrize("value", ["0s", "1m"])
def test_smtp_timeout_beyond_its_range_is_refused(tmp_path: Path, value: str) -> None:
    path = write_config(tmp_path / "config.ini", service_id="sample", database_url="sqlite:///x.db")
    text = path.read_text(encoding="utf-8")
    path.write_text(text.replace("[global]\n", f"[global]\nsmtp-timeout = {value}\n"), "utf-8")
    code, output = run_config_check(path)
    assert code != 0
    assert "smtp-timeout" in output and "1s" in output and "25s" in output, output


# -- meta under gunicorn --------------------------------------------------------------------


def _csrf(http: requests.Session, url: str) -> str:
    page = http.get(url, timeout=LIMIT)
    assert page.status_code == 200
    found = _CSRF.search(page.text)
    assert found
    return found.group(1)


@pytest.mark.parametrize("threads", [1, 2], ids=["sync", "threads"])
def test_under_gunicorn_a_dripping_mail_server_holds_a_page_no_longer_than_smtp_timeout(
    tmp_path: Path, threads: int
) -> None:
    """Registering at meta mails the confirmation to a server that drips its greeting, a
    byte every half second, for ever: the page answers once smtp-timeout (2 s here) has
    passed, saying the mail could not be sent, well before gunicorn's 30 s would stop the
    worker; the worker then serves the next request."""
    from srcore.app import migration_target
    from srcore.migrate import upgrade_all

    port = free_port()
    origin = f"http://127.0.0.1:{port}"
    with serve_faulty_smtp("drip") as server:
        config = write_config(
            tmp_path / "config.ini",
            service_id="meta",
            database_url=f"sqlite:///{tmp_path / 'meta.db'}",
            origin=origin,
        )
        keys = {**server.config_keys("noreply@example.org"), "smtp-timeout": "2s"}
        text = config.read_text(encoding="utf-8").replace(
            "[global]\n", "[global]\n" + "".join(f"{k} = {v}\n" for k, v in keys.items())
        )
        config.write_text(text, encoding="utf-8")
        upgrade_all(migration_target("meta", config))
        with run_service("meta", config, port=port, threads=threads, timeout=60) as url:
            http = requests.Session()
            form = {
                "username": "alice",
                "email": "alice@example.org",
                "password": "correct horse battery staple",
                "csrf_token": _csrf(http, url + "/register"),
            }
            # Under LIMIT (which is below gunicorn's 30 s): a worker stopped by gunicorn
            # answers nothing, and the request fails.
            answer = http.post(url + "/register", data=form, allow_redirects=False, timeout=25)
            assert answer.status_code == 302, answer.text[:500]
            assert server.stalled.is_set()
            profile = http.get(url + "/profile", timeout=LIMIT)
            assert profile.status_code == 200
            assert "the confirmation mail could not be sent" in profile.text
            assert requests.get(url + "/healthz", timeout=LIMIT).status_code == 200
