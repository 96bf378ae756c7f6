"""Mail from the outside: what a stranger can put into the mail srcore and meta send.

meta runs in process on its own SQLite database and mails through a real SMTP exchange
(the session's aiosmtpd sink, or a server on 127.0.0.1 that fails on purpose). Each test
sends what a hostile client would: a forged Host or X-Forwarded-Host on every route that
mails, addresses and webhook URLs holding line breaks that Python's mail package knows
beyond CR and LF (U+0085, U+2028, vertical tab, ...), and a mail server that refuses,
answers 5xx or hangs up.
"""

from __future__ import annotations

import re
import socket
import socketserver
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from argon2 import PasswordHasher

from srcore.mail import Mailer, MailError, MailHeaderError, SMTPTransport
from srcore.testing import SMTPSink, free_port, serving
from srcore.validation import Invalid
from srcore.validation.rules import coerce_email, coerce_url

ORIGIN = "https://accounts.example.org"
PASSWORD = "correct horse battery staple"
FORGED = {"Host": "evil.invalid", "X-Forwarded-Host": "evil.invalid"}
_CSRF = re.compile(r'name="csrf_token"[^>]*value="([^"]+)"')

#: Every character Python's str.splitlines() breaks a line at, and other controls.
BREAKS = ["\r", "\n", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029"]
CONTROLS = ["\x00", "\x07", "\x1b", "\x7f", "\x9b"]
#: The headers a message srcore builds carries; anything else was smuggled in.
HEADERS = {
    "from",
    "to",
    "subject",
    "date",
    "message-id",
    "auto-submitted",
    "content-type",
    "content-transfer-encoding",
    "mime-version",
}


class Recorder:
    def __init__(self) -> None:
        self.sent: list[Any] = []

    def send(self, message: Any) -> None:
        self.sent.append(message)


# -- the mailer itself ------------------------------------------------------------------------


@pytest.mark.parametrize("char", BREAKS + CONTROLS)
@pytest.mark.parametrize("where", ["to", "subject", "header"])
def test_no_line_break_or_control_reaches_a_header(char: str, where: str) -> None:
    recorder = Recorder()
    mailer = Mailer(recorder, sender="noreply@net.example")
    values = {"to": "a@example.org", "subject": "Hello", "header": "x"}
    values[where] += char + "Bcc: victim@evil.invalid"
    with pytest.raises(MailHeaderError, match="not allowed") as raised:
        mailer.send(values["to"], values["subject"], "body\n", headers={"X-Tag": values["header"]})
    # A caller that reports a failed send (MailError) reports this one too.
    assert isinstance(raised.value, MailError)
    assert recorder.sent == []


def test_a_header_name_cannot_carry_a_header() -> None:
    with pytest.raises(MailHeaderError, match="header name"):
        Mailer(Recorder(), sender="n@x.example").send(
            "a@example.org", "Hi", "t", headers={"X-A: 1\r\nBcc": "v@evil.invalid"}
        )


def test_long_and_non_ascii_values_stay_one_header(smtp_sink: SMTPSink) -> None:
    transport = SMTPTransport("127.0.0.1", port=smtp_sink.port, tls="none", timeout=5)
    subject = "Ünïcødé \t" + "ticket title " * 80 + "Bcc: victim@evil.invalid"
    Mailer(transport, sender="noreply@net.example").send("bob@example.org", subject, "Body\n")
    (mail,) = smtp_sink.wait(1, timeout=5)
    assert {name.lower() for name in mail} == HEADERS
    assert mail.recipients == ["bob@example.org"]
    assert " ".join(mail.subject.split()) == " ".join(subject.split())


# -- validation: what may become a recipient or a subject -----------------------------------


@pytest.mark.parametrize("char", [*BREAKS[2:], "\u200b", "\u202e", "\u3000", "\xa0"])
def test_addresses_and_urls_are_printable(char: str) -> None:
    with pytest.raises(Invalid):
        coerce_email(f"alice{char}x@example.org")
    with pytest.raises(Invalid):
        coerce_email(f"alice@example.org{char}x")
    with pytest.raises(Invalid):
        coerce_url(f"https://hooks.example.org/{char}x")
    # Letters of any script stay welcome.
    assert coerce_email("zoë@exämple.org") == "zoë@exämple.org"
    assert coerce_url("https://bücher.example/ü") == "https://bücher.example/ü"


# -- meta, in process ------------------------------------------------------------------------


@pytest.fixture
def meta_app(tmp_path: Path, smtp_sink: SMTPSink) -> Iterator[Any]:
    import meta

    from srcore.app import migration_target
    from srcore.migrate import upgrade_all
    from srcore.testing import write_config

    config = write_config(
        tmp_path / "config.ini",
        service_id="meta",
        database_url=f"sqlite:///{tmp_path / 'meta.db'}",
        origin=ORIGIN,
    )
    text = config.read_text(encoding="utf-8").replace(
        "[global]\n",
        "[global]\n"
        + "".join(f"{key} = {value}\n" for key, value in smtp_sink.config_keys().items()),
    )
    config.write_text(text, encoding="utf-8")
    upgrade_all(migration_target("meta", config))
    hasher = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
    app = meta.create_app(config=config, password_hasher=hasher)
    app.config["TESTING"] = True
    try:
        yield app
    finally:
        app.extensions["srcore"].db.dispose()


def _post(client: Any, path: str, data: dict[str, str], *, headers: dict[str, str] = FORGED) -> Any:
    """POST *data* with the CSRF token of a page, by default from a hostile client (forged
    Host and X-Forwarded-Host)."""
    found = _CSRF.search(client.get("/forgot", headers=headers).get_data(as_text=True))
    assert found
    response = client.post(path, data={**data, "csrf_token": found.group(1)}, headers=headers)
    response.get_data()
    response.close()  # /forgot mails once its answer is gone
    return response


def _accounts(app: Any) -> list[tuple[str, str | None]]:
    from meta.models import User
    from sqlalchemy import select

    with app.extensions["srcore"].db.transaction() as session:
        return [(u.email, u.pending_email) for u in session.scalars(select(User))]


def _change_tokens(app: Any) -> int:
    from meta.models import EmailToken, TokenPurpose
    from sqlalchemy import func, select

    with app.extensions["srcore"].db.transaction() as session:
        query = select(func.count()).where(EmailToken.purpose == TokenPurpose.change_email)
        return int(session.scalar(query) or 0)


def _register(client: Any, name: str, email: str, headers: dict[str, str] = FORGED) -> Any:
    form = {"username": name, "email": email, "password": PASSWORD}
    return _post(client, "/register", form, headers=headers)


def _assert_clean(mail: Any) -> None:
    assert {name.lower() for name in mail} == HEADERS, mail.keys()
    assert "evil.invalid" not in mail.as_string()
    assert mail.links and all(link.startswith(ORIGIN + "/") for link in mail.links), mail.links


def test_every_mailing_route_links_to_the_origin_whatever_the_host(
    meta_app: Any, smtp_sink: SMTPSink
) -> None:
    client = meta_app.test_client()
    assert _register(client, "alice", "alice@example.org").status_code == 302
    assert _post(client, "/confirm/resend", {}).status_code == 302
    changed = {"email": "alice.new@example.org", "current_password": PASSWORD}
    assert _post(client, "/email", changed).status_code == 302
    other = meta_app.test_client()
    assert _post(other, "/forgot", {"email": "alice@example.org"}).status_code == 200

    mails = smtp_sink.wait(5, timeout=10)
    links = [link for mail in mails for link in mail.links]
    assert sum("/confirm/" in link for link in links) >= 3, links
    assert any("/reset/" in link for link in links), links
    for mail in mails:
        _assert_clean(mail)


@pytest.mark.parametrize("char", ["\u2028", "\x85", "\u2029"])
def test_an_address_with_a_line_break_is_refused_at_the_form(
    meta_app: Any, smtp_sink: SMTPSink, char: str
) -> None:
    client = meta_app.test_client()
    response = _register(client, "mallory", f"mallory@example.org{char}x")
    assert response.status_code == 400
    assert "Not a valid email address." in response.get_data(as_text=True)
    assert _accounts(meta_app) == []
    assert smtp_sink.messages == []


# -- a mail server that fails ------------------------------------------------------------------


class _FailingSMTP(socketserver.StreamRequestHandler):
    """Speaks SMTP until the message, then fails as ``server.mode`` says."""

    def handle(self) -> None:
        mode = self.server.mode  # type: ignore[attr-defined]
        self.wfile.write(b"220 failing.test ESMTP\r\n")
        while line := self.rfile.readline(4096):
            verb = line[:4].upper()
            if verb in (b"EHLO", b"HELO"):
                self.wfile.write(b"250 failing.test\r\n")
            elif verb == b"DATA":
                if mode == "reject":
                    self.wfile.write(b"554 5.7.1 Message rejected\r\n")
                    continue
                self.wfile.write(b"354 go on\r\n")
                while self.rfile.readline(65536) not in (b".\r\n", b""):
                    pass
                # "drop": hang up where the answer to the message should be.
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            elif verb == b"QUIT":
                self.wfile.write(b"221 bye\r\n")
                return
            else:
                self.wfile.write(b"250 ok\r\n")


@pytest.fixture(params=["refused", "reject", "drop"])
def failing_mailer(request: pytest.FixtureRequest, meta_app: Any) -> Iterator[str]:
    """meta's mailer pointed at a mail server that refuses, rejects or hangs up."""
    mode = request.param
    if mode == "refused":
        port = free_port()
        server = None
    else:
        server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _FailingSMTP)
        server.daemon_threads = True
        server.mode = mode  # type: ignore[attr-defined]
        port = server.server_address[1]
    transport = SMTPTransport("127.0.0.1", port=port, tls="none", timeout=5)
    meta_app.extensions["srcore_mail"] = Mailer(transport, sender="noreply@example.org")
    if server is None:
        yield mode
        return
    with serving(server):
        yield mode


def test_a_failing_mail_server_leaves_no_pending_address_change(
    meta_app: Any, smtp_sink: SMTPSink, failing_mailer: str
) -> None:
    client = meta_app.test_client()
    # Registering says the mail could not be sent, and the account can ask again.
    response = _register(client, "alice", "alice@example.org", headers={})
    assert response.status_code == 302
    profile = client.get("/profile").get_data(as_text=True)
    assert "the confirmation mail could not be sent" in profile
    assert "Try sending it again" in profile

    changed = {"email": "alice.new@example.org", "current_password": PASSWORD}
    response = _post(client, "/email", changed, headers={})
    assert response.status_code == 302
    profile = client.get("/profile").get_data(as_text=True)
    assert "could not be sent" in profile
    # No change waits on a link that never went out.
    assert 'id="pending-email"' not in profile
    assert _accounts(meta_app) == [("alice@example.org", None)]
    assert _change_tokens(meta_app) == 0
    assert smtp_sink.messages == []


# -- srcore's webhook notices ------------------------------------------------------------------


def test_a_disabled_webhook_notice_reaches_its_owner_whatever_its_url(
    app: Any, smtp_sink: SMTPSink, clean_webhooks: None
) -> None:
    """A URL saved before URLs had to be printable still gets its owner told, in one
    Subject header."""
    from sqlalchemy.orm import Session

    from srcore.testing import create_user
    from srcore.webhooks.models import Subscription
    from srcore.webhooks.settings import MailNotifier

    transport = SMTPTransport("127.0.0.1", port=smtp_sink.port, tls="none", timeout=5)
    app.extensions["srcore_mail"] = Mailer(transport, sender="noreply@sample.example.org")
    owner = create_user(app, "carol")
    url = "https://hooks.example.org/a\u2028Bcc: victim@evil.invalid\u0085b"
    db = app.extensions["srcore"].db
    with db.transaction() as session:
        row = Subscription(owner_id=owner.id, url=url, events="ticket:created", secret="s")
        session.add(row)
        session.flush()
        sid = row.id
    with Session(db.engine) as session:  # as the worker's: the notifier ends its reads
        subscription = session.get(Subscription, sid)
        assert subscription is not None
        MailNotifier(app)(session, subscription, "failing for three days")
    (mail,) = smtp_sink.wait(1, timeout=5)
    assert {name.lower() for name in mail} == HEADERS
    assert mail.recipients == [owner.email]
    assert "webhook disabled: https://hooks.example.org/a%E2%80%A8Bcc" in mail.subject
    assert "URL: " + url in mail.body
