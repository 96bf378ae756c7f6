"""Mail to an address whose domain is beyond ASCII (``alice@bücher.example``), through a mail
server that does not offer SMTPUTF8: the message goes to the domain's ASCII form, which every
server takes, so a confirmation mail is not lost for the way its address is written."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest

from srcore.mail import Mailer, MailError, SMTPTransport
from srcore.testing import free_port


class Envelopes:
    """An aiosmtpd handler that keeps each message's envelope recipients and To header."""

    def __init__(self) -> None:
        self.received: list[tuple[list[str], str]] = []
        self.arrived = threading.Event()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        from email import message_from_bytes

        message = message_from_bytes(envelope.original_content or envelope.content)
        self.received.append((list(envelope.rcpt_tos), str(message["To"])))
        self.arrived.set()
        return "250 OK"


@pytest.fixture
def ascii_only_server() -> Iterator[tuple[int, Envelopes]]:
    """An SMTP server on 127.0.0.1 that does not offer SMTPUTF8, as many relays do not."""
    from aiosmtpd.controller import Controller

    handler, port = Envelopes(), free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port, enable_SMTPUTF8=False)
    controller.start()
    try:
        yield port, handler
    finally:
        controller.stop()


def test_a_domain_beyond_ascii_is_sent_in_its_ascii_form(
    ascii_only_server: tuple[int, Envelopes],
) -> None:
    port, server = ascii_only_server
    mailer = Mailer(SMTPTransport("127.0.0.1", port=port, tls="none"), sender="n@example.org")
    mailer.send("alice@bücher.example", "Confirm your address", "https://example.org/confirm")
    assert server.arrived.wait(10)
    assert server.received == [(["alice@xn--bcher-kva.example"], "alice@xn--bcher-kva.example")]


def test_the_sender_s_domain_too(ascii_only_server: tuple[int, Envelopes]) -> None:
    port, server = ascii_only_server
    sender = "Bücher <noreply@bücher.example>"
    mailer = Mailer(SMTPTransport("127.0.0.1", port=port, tls="none"), sender=sender)
    message = mailer.build("bob@example.org", "Hello", "Hi")
    assert "noreply@xn--bcher-kva.example" in str(message["From"])
    mailer.transport.send(message)
    assert server.arrived.wait(10)


def test_a_local_part_beyond_ascii_still_needs_smtputf8(
    ascii_only_server: tuple[int, Envelopes],
) -> None:
    """Nothing can write it in ASCII: the server's refusal is a clear MailError."""
    port, _server = ascii_only_server
    mailer = Mailer(SMTPTransport("127.0.0.1", port=port, tls="none"), sender="n@example.org")
    with pytest.raises(MailError, match="SMTPUTF8"):
        mailer.send("ålice@example.org", "Hello", "Hi")


@pytest.mark.parametrize(
    "address",
    ["alice@example.org", "Alice Example <alice@example.org>", "alice@xn--bcher-kva.example"],
)
def test_ascii_addresses_are_untouched(address: str) -> None:
    mailer = Mailer(SMTPTransport("127.0.0.1", port=1, tls="none"), sender="n@example.org")
    assert mailer.build(address, "Hello", "Hi")["To"] == address


def test_the_message_id_of_a_sender_beyond_ascii_is_ascii() -> None:
    """Its domain is the sender's: written as typed, no server could take the message."""
    mailer = Mailer(SMTPTransport("127.0.0.1", port=1, tls="none"), sender="n@bücher.example")
    message = mailer.build("bob@example.org", "Hello", "Hi")
    assert str(message["Message-ID"]).endswith("@xn--bcher-kva.example>")
    message.as_bytes()  # every header written as a server takes it


#: Domains whose IDNA 2003 form (Python's ``idna`` codec) is another domain: the letters
#: IDNA 2008 keeps (ß, final sigma) and what browsers and mail software send for them.
DEVIATIONS = [
    ("alice@straße.example", "alice@xn--strae-oqa.example", "alice@strasse.example"),
    ("alice@σοφίας.example", "alice@xn--kxae4bobt.example", "alice@σοφίασ.example"),
]


@pytest.mark.parametrize(("typed", "sent"), [(typed, sent) for typed, sent, _ in DEVIATIONS])
def test_a_domain_is_sent_to_itself_not_to_its_idna_2003_twin(
    ascii_only_server: tuple[int, Envelopes], typed: str, sent: str
) -> None:
    """``strasse.example`` may be someone else's: mail for ``straße.example`` never goes there."""
    port, server = ascii_only_server
    mailer = Mailer(SMTPTransport("127.0.0.1", port=port, tls="none"), sender="n@example.org")
    mailer.send(typed, "Confirm your address", "https://example.org/confirm")
    assert server.arrived.wait(10)
    assert server.received == [([sent], sent)]


@pytest.mark.parametrize(("typed", "stored", "twin"), DEVIATIONS)
def test_an_account_s_address_is_the_domain_typed(typed: str, stored: str, twin: str) -> None:
    """The canonical address is the mailbox mail goes to, and the one a browser's email field
    sends for what was typed: one account per mailbox, never one for the IDNA 2003 twin."""
    from srcore.identity.addresses import canonical_email

    assert canonical_email(typed) == stored
    assert canonical_email(stored) == stored
    assert canonical_email(twin) != stored
