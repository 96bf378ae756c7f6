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

__all__ = [
    "FAULTS",
    "FaultySMTP",
    "ReceivedMail",
    "SMTPSink",
    "serve_faulty_smtp",
    "serve_smtp_sink",
]

_LINK = re.compile(r"https?://\S+")
_T = TypeVar("_T")


def _config_keys(host: str, port: int, sender: str) -> dict[str, str | int]:
    return {"smtp-host": host, "smtp-port": port, "smtp-tls": "none", "smtp-from": sender}


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
        return _config_keys(self.host, self.port, sender)

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


#: What :class:`FaultySMTP` can do wrong, each as a stranger's mail server might.
FAULTS = (
    "silent",  # accepts the connection and never says a word
    "drip",  # a greeting of endless continuation lines, one byte at a time
    "drip-handshake",  # a TLS handshake (implicit or after STARTTLS) one byte at a time
    "close-after-greeting",  # greets, then hangs up
    "421-on-connect",  # "421 busy" instead of a greeting, then hangs up
    "451-recipient",  # refuses the recipient for now
    "550-recipient",  # refuses the recipient for good
    "552-size",  # takes the message, then refuses it as too large
    "reset-in-data",  # resets the connection halfway through the message
    "hang-after-data",  # takes the message and never says whether it accepted it
    "hang-after-accepting",  # accepts the message (250), then never answers QUIT
)


class FaultySMTP:
    """An SMTP server on 127.0.0.1 that misbehaves as *fault* (one of :data:`FAULTS`) says;
    see :func:`serve_faulty_smtp`.

    ``accepted`` counts the messages it answered 250 to (``hang-after-accepting`` only);
    ``stalled`` is set whenever a conversation starts waiting on nothing, and
    ``on_stall`` (when set) is called then, on the server's thread: a test looks at what
    the client holds while it waits.
    """

    def __init__(self, fault: str, *, drip_interval: float = 0.5) -> None:
        if fault not in FAULTS:
            raise ValueError(f"unknown fault {fault!r}: one of {', '.join(FAULTS)}")
        self.fault = fault
        self.drip_interval = drip_interval
        self.host = "127.0.0.1"
        self.port = 0
        self.connections = 0
        self.accepted = 0
        self.stalled = threading.Event()
        self.on_stall: Callable[[], None] | None = None
        self.stopping = threading.Event()

    def config_keys(self, sender: str = "meta@example.org") -> dict[str, str | int]:
        """The ``[global]`` keys that send a network's mail here, from *sender*."""
        return _config_keys(self.host, self.port, sender)

    def _stall(self) -> None:
        self.stalled.set()
        if self.on_stall is not None:
            self.on_stall()
        self.stopping.wait()

    def _drip(self, sock: Any, start: bytes, then: bytes) -> None:
        """Send *start*, then *then* over and over, a byte every ``drip_interval``."""
        self.stalled.set()
        if self.on_stall is not None:
            self.on_stall()
        data = start
        while not self.stopping.is_set():
            for byte in data:
                if self.stopping.wait(self.drip_interval):
                    return
                sock.sendall(bytes([byte]))
            data = then or start

    def converse(self, sock: Any) -> None:
        """Hold one conversation on the accepted socket *sock*."""
        import socket

        self.connections += 1
        fault = self.fault
        reader = sock.makefile("rb")

        def say(line: str) -> None:
            sock.sendall(line.encode("ascii") + b"\r\n")

        if fault == "silent":
            return self._stall()
        if fault == "421-on-connect":
            return say("421 4.3.2 faulty.test busy, try again later")
        if fault == "drip":
            return self._drip(sock, b"220-faulty.test is in no hurry\r\n", b"")
        # The start of a TLS record of 16 KiB, then its body: a handshake that never ends.
        handshake = (b"\x16\x03\x03\x3f\xff", b"\0")
        if fault == "drip-handshake":
            sock.settimeout(0.3)
            try:
                first = sock.recv(1, socket.MSG_PEEK)
            except TimeoutError:
                first = b""
            sock.settimeout(None)
            if first == b"\x16":  # a ClientHello: TLS from the start
                return self._drip(sock, *handshake)
        say("220 faulty.test ESMTP")
        if fault == "close-after-greeting":
            return None
        while line := reader.readline(4096):
            verb = line[:4].upper()
            if verb == b"EHLO":
                say("250-faulty.test")
                if fault == "drip-handshake":
                    say("250-STARTTLS")
                say("250 SIZE 1000")
            elif verb == b"STAR" and fault == "drip-handshake":
                say("220 2.0.0 go ahead")
                return self._drip(sock, *handshake)
            elif verb == b"HELO":
                say("250 faulty.test")
            elif verb == b"RCPT" and fault == "451-recipient":
                say("451 4.3.0 Temporary failure, try again later")
            elif verb == b"RCPT" and fault == "550-recipient":
                say("550 5.1.1 No such mailbox here")
            elif verb == b"DATA":
                say("354 go on")
                if fault == "reset-in-data":
                    reader.readline(65536)
                    # A reset, not a polite close: linger on, for no time.
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0")
                    return None
                while reader.readline(65536) not in (b".\r\n", b""):
                    pass
                if fault == "hang-after-data":
                    return self._stall()
                if fault == "552-size":
                    say("552 5.3.4 Message too big for this system")
                    continue
                self.accepted += 1
                say("250 2.0.0 accepted")
            elif verb == b"QUIT":
                if fault == "hang-after-accepting":
                    return self._stall()
                say("221 bye")
                return None
            elif verb == b"RSET" or verb in (b"MAIL", b"RCPT", b"NOOP"):
                say("250 ok")
            else:
                say("502 5.5.2 not implemented")
        return None


@contextlib.contextmanager
def serve_faulty_smtp(fault: str, *, drip_interval: float = 0.5) -> Iterator[FaultySMTP]:
    """Serve a new :class:`FaultySMTP` on a free 127.0.0.1 port until the block ends;
    conversations stalled then are let go, and their connections closed."""
    import socketserver

    server = FaultySMTP(fault, drip_interval=drip_interval)

    class Handler(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            with contextlib.suppress(OSError):  # the client went away
                server.converse(self.request)

    tcp = socketserver.ThreadingTCPServer((server.host, 0), Handler)
    tcp.daemon_threads = True
    server.port = tcp.server_address[1]
    thread = threading.Thread(target=tcp.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.stopping.set()
        tcp.shutdown()
        tcp.server_close()
        thread.join(timeout=5)
