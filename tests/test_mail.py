"""srcore.mail: messages, the development log transport and SMTP against a real local sink."""

from __future__ import annotations

import logging
from email.message import EmailMessage
from pathlib import Path

import pytest

from srcore.mail import LogTransport, Mailer, MailError, SMTPTransport, mailer
from srcore.testing import SMTPSink, free_port, write_config


class Recorder:
    def __init__(self) -> None:
        self.sent: list[EmailMessage] = []

    def send(self, message: EmailMessage) -> None:
        self.sent.append(message)


def test_build_sets_the_headers() -> None:
    recorder = Recorder()
    Mailer(recorder, sender="Net <noreply@net.example>").send(
        "alice@example.org", "Hello", "Line one\nhttps://net.example/confirm/abc\n"
    )
    (message,) = recorder.sent
    assert message["From"] == "Net <noreply@net.example>"
    assert message["To"] == "alice@example.org"
    assert message["Subject"] == "Hello"
    assert message["Message-ID"].endswith("@net.example>")
    assert message["Date"]
    assert message["Auto-Submitted"] == "auto-generated"
    assert message.get_content_type() == "text/plain"
    assert "https://net.example/confirm/abc" in message.get_content()


@pytest.mark.parametrize(("to", "subject"), [("a@b.c\nBcc: x@y.z", "Hi"), ("a@b.c", "Hi\r\nX: y")])
def test_header_injection_is_refused(to: str, subject: str) -> None:
    with pytest.raises(ValueError, match="line breaks"):
        Mailer(Recorder(), sender="n@x.y").send(to, subject, "text")


def test_empty_host_writes_the_whole_mail_to_the_log(caplog: pytest.LogCaptureFixture) -> None:
    built = Mailer.from_config({"smtp-host": ""}, default_sender="noreply@net.example")
    assert isinstance(built.transport, LogTransport)
    with caplog.at_level(logging.WARNING, logger="srcore.mail"):
        built.send("dev@example.org", "Confirm", "Open https://net.example/confirm/xyz\n")
    (record,) = [r for r in caplog.records if r.name == "srcore.mail"]
    text = record.getMessage()
    assert "https://net.example/confirm/xyz" in text
    assert "To: dev@example.org" in text


def test_the_log_shows_long_links_whole(caplog: pytest.LogCaptureFixture) -> None:
    link = "https://accounts.a-rather-long-host-name.example.org/confirm/" + "x" * 60
    built = Mailer.from_config({"smtp-host": ""}, default_sender="noreply@net.example")
    with caplog.at_level(logging.WARNING, logger="srcore.mail"):
        built.send("dev@example.org", "Confirm · net", f"Hello,\n\n{link}\n")
    (record,) = [r for r in caplog.records if r.name == "srcore.mail"]
    assert f"\n{link}\n" in record.getMessage()
    assert "Subject: Confirm · net" in record.getMessage()


def test_from_config_builds_an_smtp_transport() -> None:
    built = Mailer.from_config(
        {
            "smtp-host": "mail.example",
            "smtp-port": None,
            "smtp-tls": "tls",
            "smtp-user": "u",
            "smtp-password": "p",
            "smtp-from": "Net <n@net.example>",
        }
    )
    transport = built.transport
    assert isinstance(transport, SMTPTransport)
    assert (transport.host, transport.port, transport.tls, transport.user) == (
        "mail.example",
        465,
        "tls",
        "u",
    )
    assert built.sender == "Net <n@net.example>"
    assert SMTPTransport("h", tls="starttls").port == 587
    assert SMTPTransport("h", tls="none").port == 25
    with pytest.raises(ValueError, match="smtp-tls"):
        SMTPTransport("h", tls="ssl")  # type: ignore[arg-type]


def test_smtp_delivers_to_a_real_server(smtp_sink: SMTPSink) -> None:
    transport = SMTPTransport("127.0.0.1", port=smtp_sink.port, tls="none", timeout=5)
    Mailer(transport, sender="noreply@net.example").send("bob@example.org", "Hi", "Body\n")
    (message,) = smtp_sink.messages
    mail_from, rcpt = message.sender, message.recipients
    assert mail_from == "noreply@net.example"
    assert rcpt == ["bob@example.org"]
    assert message["Subject"] == "Hi"
    assert message.get_content().splitlines() == ["Body"]


def test_starttls_refused_by_a_plain_server_is_a_mail_error(smtp_sink: SMTPSink) -> None:
    port = smtp_sink.port
    transport = SMTPTransport("127.0.0.1", port=port, tls="starttls", timeout=5)
    with pytest.raises(MailError, match=f"127.0.0.1:{port}"):
        Mailer(transport, sender="n@x.y").send("a@b.c", "s", "t")


def test_unreachable_server_is_a_mail_error() -> None:
    transport = SMTPTransport("127.0.0.1", port=free_port(), tls="none", timeout=2)
    with pytest.raises(MailError, match="cannot send mail"):
        Mailer(transport, sender="n@x.y").send("a@b.c", "s", "t")


def test_connect_is_injectable() -> None:
    calls: list[tuple[str, int, float]] = []

    class FakeSMTP:
        def __init__(self, host: str, port: int, *, timeout: float) -> None:
            calls.append((host, port, timeout))
            self.logged_in: tuple[str, str] | None = None
            self.sent: list[EmailMessage] = []

        def __enter__(self) -> FakeSMTP:
            return self

        def __exit__(self, *exc: object) -> None:
            return None

        def login(self, user: str, password: str) -> None:
            self.logged_in = (user, password)

        def send_message(self, message: EmailMessage) -> None:
            self.sent.append(message)

    transport = SMTPTransport(
        "smtp.example",
        tls="none",
        user="u",
        password="p",
        connect=FakeSMTP,  # type: ignore[arg-type]
    )
    Mailer(transport, sender="n@x.y").send("a@b.c", "s", "t")
    assert calls == [("smtp.example", 25, 10.0)]


def test_mailer_is_built_once_per_app_from_the_config(
    tmp_path: Path, smtp_sink: SMTPSink, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sample_service

    port = smtp_sink.port
    path = write_config(
        tmp_path / "config.ini",
        service_id="sample",
        database_url=f"sqlite:///{tmp_path / 'db.sqlite'}",
        origin="http://net.example:8000",
    )
    monkeypatch.setenv("SRCORE__GLOBAL__SMTP_HOST", "127.0.0.1")
    monkeypatch.setenv("SRCORE__GLOBAL__SMTP_PORT", str(port))
    monkeypatch.setenv("SRCORE__GLOBAL__SMTP_TLS", "none")
    app = sample_service.create_app(config=path)
    assert "srcore_mail" not in app.extensions
    with app.app_context():
        first = mailer()
        assert mailer() is first is mailer(app)
        first.send("carol@example.org", "Hi", "Body\n")
    assert first.sender == "noreply@net.example"
    (message,) = smtp_sink.messages
    rcpt = message.recipients
    assert rcpt == ["carol@example.org"]
    app.extensions["srcore"].db.dispose()


def test_the_sink_reads_envelopes_bodies_and_links(smtp_sink: SMTPSink) -> None:
    """srcore.testing's sink: what e2e and service tests read their mail through."""
    transport = SMTPTransport("127.0.0.1", port=smtp_sink.port, tls="none", timeout=5)
    sender = Mailer(transport, sender="noreply@net.example")
    sender.send("bob@example.org", "Old", "Open http://net.example/confirm/old?x=1\n")
    alt = EmailMessage()
    alt["From"], alt["To"], alt["Subject"] = "noreply@net.example", "bob@example.org", "New"
    alt.set_content("Open https://net.example/confirm/new\nor https://net.example/help\n")
    alt.add_alternative("<p><a href='https://net.example/confirm/html'>here</a></p>", "html")
    transport.send(alt)
    sender.send("carol@example.org", "Other", "http://net.example/confirm/carol\n")

    assert len(smtp_sink.wait(3, timeout=5)) == 3
    first, second, _ = smtp_sink.messages
    assert (first.sender, first.recipients) == ("noreply@net.example", ["bob@example.org"])
    assert (second.subject, second.links) == (
        "New",
        ["https://net.example/confirm/new", "https://net.example/help"],
    )
    assert [m.subject for m in smtp_sink.to("bob@example.org")] == ["Old", "New"]
    assert smtp_sink.last_link("bob@example.org", "/confirm/") == "/confirm/new"
    assert smtp_sink.last_link("bob@example.org", "/confirm/o") == "/confirm/old?x=1"
    assert smtp_sink.wait_for_link("bob@example.org", "/help") == "https://net.example/help"
    with pytest.raises(AssertionError, match="with a link to /reset/ within"):
        smtp_sink.wait_for_link("bob@example.org", "/reset/", timeout=0.2)
    with pytest.raises(AssertionError, match="with a link to /reset/"):
        smtp_sink.last_link("carol@example.org", "/reset/")
    with pytest.raises(AssertionError, match="3 of 4 messages arrived"):
        smtp_sink.wait(4, timeout=0.2)
    smtp_sink.clear()
    assert smtp_sink.messages == []
