"""An SMTP server on 127.0.0.1 that keeps every message it accepts.

Tests point ``[global] smtp-host`` at it, so the mail code holds a real SMTP conversation
as in production, and then read what arrived: the messages, who they went to, and the
links in them (a confirmation or a reset link is how a person goes on). Services that run
in processes of their own send mail when they get to it, so the sink can wait, within a
bound, for mail to arrive.

The server is aiosmtpd's, a tool of the test suites and not a dependency of srcore: it is
imported only when a sink is served.
"""

from __future__ import annotations

import contextlib
import email.policy
import re
import threading
from collections.abc import Callable, Iterator
from email.message import EmailMessage
from email.parser import BytesParser
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

from srcore.testing.processes import free_port

__all__ = ["ReceivedMail", "SMTPSink", "serve_smtp_sink"]

_LINK = re.compile(r"https?://\S+")
_T = TypeVar("_T")


class ReceivedMail(EmailMessage):
    """A message the sink accepted, and what its SMTP envelope said.

    It is the parsed message itself, so a test reads its headers and content as usual
    (``mail["To"]``, ``mail.get_content()``).
    """

    def __init__(self, policy: Any = None) -> None:
        super().__init__(policy)
        #: The envelope's sender (``MAIL FROM``).
        self.sender = ""
        #: The envelope's recipients (``RCPT TO``), in the order they were given.
        self.recipients: list[str] = []

    @property
    def subject(self) -> str:
        """The decoded ``Subject`` header; empty when there is none."""
        return str(self["Subject"] or "")

    @property
    def body(self) -> str:
        """The plain-text body (of a multipart message, its ``text/plain`` part)."""
        part = self.get_body(("plain",))
        return "" if part is None else str(part.get_content())

    @property
    def links(self) -> list[str]:
        """The http and https URLs in the body, in the order they appear."""
        return _LINK.findall(self.body)


class SMTPSink:
    """The handler of an SMTP server (see :func:`serve_smtp_sink`), and what it accepted.

    ``messages`` is the accepted mail in the order it arrived, a plain list a test may
    read, count or empty. A link in a mail is "to" a path when its own path (with its
    query) starts with that path.
    """

    def __init__(self) -> None:
        #: Where the server listens, once it is served.
        self.host = "127.0.0.1"
        self.port = 0
        self.messages: list[ReceivedMail] = []
        self._arrived = threading.Condition()
        self._parser = BytesParser(ReceivedMail, policy=email.policy.default)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        """Keep the message (aiosmtpd calls this, on the server's thread)."""
        mail = self._parser.parsebytes(envelope.content)
        assert isinstance(mail, ReceivedMail)
        mail.sender = envelope.mail_from
        mail.recipients = list(envelope.rcpt_tos)
        with self._arrived:
            self.messages.append(mail)
            self._arrived.notify_all()
        return "250 OK"

    def config_keys(self, sender: str = "meta@example.org") -> dict[str, str | int]:
        """The ``[global]`` keys that send a network's mail here, from *sender*."""
        return {
            "smtp-host": self.host,
            "smtp-port": self.port,
            "smtp-tls": "none",
            "smtp-from": sender,
        }

    def clear(self) -> None:
        """Forget the mail accepted so far."""
        with self._arrived:
            self.messages.clear()

    def wait(self, count: int = 1, *, timeout: float = 10.0) -> list[ReceivedMail]:
        """The mail accepted so far, once there are at least *count* messages.

        :raise AssertionError: fewer arrived within *timeout* seconds.
        """
        if not self._until(lambda: len(self.messages) >= count, timeout):
            raise AssertionError(
                f"{len(self.messages)} of {count} messages arrived within {timeout} s"
            )
        return list(self.messages)

    def to(self, address: str) -> list[ReceivedMail]:
        """The mail accepted so far whose ``To`` header is *address*."""
        return [m for m in list(self.messages) if m["To"] == address]

    def last_link(self, address: str, path: str) -> str:
        """The path (with its query) of the newest link to *path* mailed to *address*:
        what a test client opens. The app under test mails before it answers, so this
        does not wait.

        :raise AssertionError: no mail to *address* has such a link.
        """
        found = self._newest_link(address, path)
        if found is None:
            raise AssertionError(f"no mail to {address} with a link to {path}")
        return _local(found)

    def wait_for_link(self, address: str, path: str, *, timeout: float = 10.0) -> str:
        """The whole URL of the newest link to *path* mailed to *address*, once one
        arrived: what a browser opens against a service in a process of its own.

        :raise AssertionError: no such mail arrived within *timeout* seconds.
        """
        found = self._until(lambda: self._newest_link(address, path), timeout)
        if found is None:
            raise AssertionError(f"no mail to {address} with a link to {path} within {timeout} s")
        return found

    def _newest_link(self, address: str, path: str) -> str | None:
        for mail in reversed(self.to(address)):
            for url in mail.links:
                if _local(url).startswith(path):
                    return url
        return None

    def _until(self, check: Callable[[], _T], timeout: float) -> _T:
        """What *check* returns once it is true, or after *timeout* seconds; it is tried
        again whenever a message arrives."""
        with self._arrived:
            return self._arrived.wait_for(check, timeout)


def _local(url: str) -> str:
    """*url* without its scheme and host: its path, query and fragment."""
    parts = urlsplit(url)
    return urlunsplit(("", "", parts.path or "/", parts.query, parts.fragment))


@contextlib.contextmanager
def serve_smtp_sink() -> Iterator[SMTPSink]:
    """Serve a new :class:`SMTPSink` on a free 127.0.0.1 port until the block ends.

    It speaks plain SMTP (``smtp-tls = none``) and accepts every message.
    """
    from aiosmtpd.controller import Controller

    sink = SMTPSink()
    sink.port = free_port()
    controller = Controller(sink, hostname=sink.host, port=sink.port)
    controller.start()
    try:
        yield sink
    finally:
        controller.stop()
