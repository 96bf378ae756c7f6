"""Outgoing mail: plain-text messages through SMTP, or into the log in development.

A :class:`Mailer` builds the message and hands it to a :class:`Transport`:
:class:`SMTPTransport` (``[global] smtp-host`` set) or :class:`LogTransport` (empty
``smtp-host``: the whole message goes to the ``srcore.mail`` logger, so a developer can
follow a confirmation link without a mail server). Tests pass their own transport or point
the SMTP one at a local sink. :func:`mailer` builds the app's mailer on first use and keeps
it in ``app.extensions["srcore_mail"]``; ``email`` and ``smtplib`` are imported only then.
:class:`MailExtension` is the feature's extension object: it builds nothing at
``init_app`` unless it is given a mailer to use instead.
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Literal, Protocol
from urllib.parse import urlsplit

from srcore.identity.addresses import ascii_domain
from srcore.service import state

if TYPE_CHECKING:
    import smtplib
    import socket
    import ssl
    from email.message import EmailMessage

    from flask import Flask

__all__ = [
    "CONNECT_TIMEOUT",
    "EXTENSION_KEY",
    "QUIT_WAIT",
    "LogTransport",
    "MailError",
    "MailExtension",
    "MailHeaderError",
    "Mailer",
    "SMTPTransport",
    "Transport",
    "mailer",
]

log = logging.getLogger("srcore.mail")

#: Where an app keeps its :class:`Mailer`, once built.
EXTENSION_KEY = "srcore_mail"

#: Seconds one message may take from connecting to the server's acceptance of it: connecting,
#: TLS, every answer and the message itself (``[global] smtp-timeout``). A page that mails
#: waits at most that long for each message it sends.
CONNECT_TIMEOUT = 10.0
#: Seconds to wait for the answer to QUIT once the message is accepted: it is sent then.
QUIT_WAIT = 1.0

TLSMode = Literal["none", "starttls", "tls"]
_DEFAULT_PORTS: dict[str, int] = {"tls": 465, "starttls": 587, "none": 25}


class MailError(Exception):
    """A message could not be handed to the mail server."""


class MailHeaderError(MailError, ValueError):
    """A recipient, subject or other header value holds a line break or control character.

    Such a value could end the header and start another (a ``Bcc:`` of someone else's
    choosing), so the message is not built. Besides CR and LF that means every character
    Python's mail package reads as a line break (U+0085, U+2028, vertical tab, ...) and
    the other control characters, NUL included. It is a :class:`MailError`, so a caller
    that reports a failed send reports this one too, and a :class:`ValueError`.
    """


#: What may not appear in a header value: C0 controls but tab, DEL, C1 controls, U+2028/9.
_HEADER_UNSAFE = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029]")
#: A header name (RFC 5322 2.2): printable ASCII but the colon.
_HEADER_NAME = re.compile("[!-9;-~]+")


class Transport(Protocol):
    """Where built messages go."""

    def send(self, message: EmailMessage) -> None:
        """Deliver *message* (its ``To`` header says to whom); raise :class:`MailError`."""


class LogTransport:
    """Writes every message, in full, to the ``srcore.mail`` log (development)."""

    def __init__(self, logger: logging.Logger | None = None) -> None:
        self.logger = logger or log

    def send(self, message: EmailMessage) -> None:
        # Headers and body decoded, not as sent: quoted-printable would cut long links.
        headers = "".join(
            f"{name}: {value}\n"
            for name, value in message.items()
            if name.lower() not in ("content-transfer-encoding", "mime-version")
        )
        try:
            body = message.get_content()
        except (KeyError, LookupError, TypeError):
            body = message.get_payload()
        self.logger.warning(
            "mail not sent (smtp-host is empty); it would have been:\n%s\n%s", headers, body
        )


class SMTPTransport:
    """Sends through an SMTP server, with TLS as configured and a timeout on every step."""

    def __init__(
        self,
        host: str,
        *,
        port: int | None = None,
        tls: TLSMode = "starttls",
        user: str | None = None,
        password: str | None = None,
        timeout: float = CONNECT_TIMEOUT,
        ssl_context: ssl.SSLContext | None = None,
        connect: Callable[..., smtplib.SMTP] | None = None,
    ) -> None:
        if tls not in _DEFAULT_PORTS:
            raise ValueError(f"smtp-tls must be none, starttls or tls, not {tls!r}")
        self.host = host
        self.port = port or _DEFAULT_PORTS[tls]
        self.tls = tls
        self.user = user or None
        self.password = password or ""
        self.timeout = timeout
        self.ssl_context = ssl_context
        self._connect = connect

    def __repr__(self) -> str:
        return f"<SMTPTransport {self.host}:{self.port} tls={self.tls}>"

    def _open(self, watchdog: _Watchdog) -> smtplib.SMTP:
        if self._connect is not None:
            smtp = self._connect(self.host, self.port, timeout=self.timeout)
            sock = getattr(smtp, "sock", None)
            if sock is not None:
                watchdog.watch(sock)
            return smtp
        import smtplib
        import ssl

        context = None
        if self.tls == "tls":
            context = self.ssl_context or ssl.create_default_context()
        smtp = _bounded_smtp(watchdog, context, timeout=self.timeout)
        try:
            code, reply = smtp.connect(self.host, self.port)
            if code != 220:  # as smtplib.SMTP(host) does: a 421 instead of a greeting
                raise smtplib.SMTPConnectError(code, reply)
        except BaseException:
            smtp.close()
            raise
        return smtp

    def send(self, message: EmailMessage) -> None:
        """Hand *message* to the server within :attr:`timeout` seconds, all told.

        Each step waits at most that long, and a watchdog shuts the connection when the
        whole exchange has taken it: a server answering one byte at a time, each just
        before a step's timeout, would otherwise hold the sender for as long as it likes.
        Once the server accepted the message it is sent, whatever QUIT gets.
        """
        import smtplib
        import ssl

        watchdog = _Watchdog(self.timeout)
        smtp: smtplib.SMTP | None = None
        try:
            smtp = self._open(watchdog)
            if self.tls == "starttls":
                smtp.starttls(context=self.ssl_context or ssl.create_default_context())
            if self.user:
                smtp.login(self.user, self.password)
            smtp.send_message(message)
        except (OSError, smtplib.SMTPException, UnicodeError, ValueError) as exc:
            # UnicodeError: a header the message cannot carry to this server as it is.
            # ValueError: a socket the watchdog shut while TLS was reading it.
            raise MailError(f"cannot send mail through {self}: {self._why(exc, watchdog)}") from exc
        finally:
            try:
                if smtp is not None:
                    _quit(smtp)
            finally:
                watchdog.stop()

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"

    def _why(self, exc: BaseException, watchdog: _Watchdog) -> str:
        timed_out = isinstance(exc, TimeoutError) or "timed out" in str(exc)
        if watchdog.fired or timed_out:
            return f"no complete answer within {self.timeout:g} s (smtp-timeout)"
        return str(exc) or type(exc).__name__


class _Watchdog:
    """Shuts the connection it watches once *seconds* have passed since it was made.

    It shuts a duplicate of the socket's descriptor (the connection, not a number the
    process may have given to another socket since), so it still reaches the connection
    once TLS has wrapped the socket, and during the handshake.
    """

    def __init__(self, seconds: float) -> None:
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._stopped = False
        self.fired = False
        self._timer = threading.Timer(seconds, self._fire)
        self._timer.daemon = True
        self._timer.start()

    def watch(self, sock: socket.socket) -> None:
        with self._lock:
            duplicate = sock.dup()
            if self._stopped or self.fired:
                _shut(duplicate)
                duplicate.close()
                return
            self._sockets.append(duplicate)

    def _fire(self) -> None:
        with self._lock:
            if self._stopped:
                return
            self.fired = True
            for sock in self._sockets:
                _shut(sock)

    def stop(self) -> None:
        self._timer.cancel()
        with self._lock:
            self._stopped = True
            for sock in self._sockets:
                sock.close()
            self._sockets.clear()


def _shut(sock: socket.socket) -> None:
    import socket

    with contextlib.suppress(OSError):  # closed already
        sock.shutdown(socket.SHUT_RDWR)


def _quit(smtp: smtplib.SMTP) -> None:
    """Say goodbye to *smtp* (briefly: what it says no longer matters) and close it."""
    import smtplib

    sock = getattr(smtp, "sock", None)
    try:
        if sock is not None:
            sock.settimeout(QUIT_WAIT)
        smtp.__exit__(None, None, None)  # QUIT, then close
    except (OSError, smtplib.SMTPException, ValueError):
        close = getattr(smtp, "close", None)
        if close is not None:
            close()


def _bounded_smtp(
    watchdog: _Watchdog, context: ssl.SSLContext | None, *, timeout: float
) -> smtplib.SMTP:
    """An unconnected :class:`smtplib.SMTP` whose connection *watchdog* watches from its
    first byte, over TLS from the start when *context* is given."""
    import smtplib
    import socket

    class BoundedSMTP(smtplib.SMTP):
        def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:
            # What smtplib.SMTP does, and the watchdog told before the greeting.
            sock = socket.create_connection((host, port), timeout, self.source_address)
            watchdog.watch(sock)
            self._host = host  # the name STARTTLS checks the certificate for
            if context is None:
                return sock
            return context.wrap_socket(sock, server_hostname=host)

    return BoundedSMTP(timeout=timeout)


def _domain(address: str) -> str:
    return address.rpartition("@")[2].strip(" >") or "localhost"


def _ascii_domain(address: str) -> str:
    """*address* with its domain in its ASCII form (IDNA): every mail server takes
    ``alice@xn--bcher-kva.example``, only one offering SMTPUTF8 ``alice@bücher.example``,
    and a confirmation mail refused for that is one its reader never gets. A local part
    beyond ASCII still needs SMTPUTF8; a domain IDNA cannot encode is left as it is."""
    from email.headerregistry import Address
    from email.utils import parseaddr

    name, addr = parseaddr(address)
    local, at, domain = addr.rpartition("@")
    if not at or domain.isascii():
        return address
    try:
        return str(Address(name, local, ascii_domain(domain)))
    except ValueError:
        return address


class Mailer:
    """Builds plain-text messages from *sender* and gives them to *transport*."""

    def __init__(self, transport: Transport, *, sender: str) -> None:
        self.transport = transport
        self.sender = sender

    def __repr__(self) -> str:
        return f"<Mailer from {self.sender!r} via {self.transport!r}>"

    @classmethod
    def from_config(
        cls, settings: Mapping[str, Any], *, default_sender: str = "noreply@localhost"
    ) -> Mailer:
        """Build a mailer from the ``smtp-*`` keys of ``[global]``."""
        host = str(settings.get("smtp-host") or "")
        sender = str(settings.get("smtp-from") or default_sender)
        if not host:
            return cls(LogTransport(), sender=sender)
        port = settings.get("smtp-port")
        tls = str(settings.get("smtp-tls") or "starttls")
        timeout = settings.get("smtp-timeout")
        transport = SMTPTransport(
            host,
            port=port if isinstance(port, int) else None,
            tls=tls,  # type: ignore[arg-type]  # checked by the config and the transport
            user=str(settings.get("smtp-user") or "") or None,
            password=str(settings.get("smtp-password") or ""),
            timeout=(
                timeout.total_seconds() if isinstance(timeout, timedelta) else CONNECT_TIMEOUT
            ),
        )
        return cls(transport, sender=sender)

    def build(
        self, to: str, subject: str, text: str, *, headers: Mapping[str, str] | None = None
    ) -> EmailMessage:
        """The message :meth:`send` would send."""
        from datetime import UTC, datetime
        from email.message import EmailMessage
        from email.policy import SMTP
        from email.utils import format_datetime, make_msgid

        extra = dict(headers or {})
        for name, value in (("To", to), ("Subject", subject), *extra.items()):
            if not _HEADER_NAME.fullmatch(name):
                raise MailHeaderError(f"{name!r} is not a mail header name")
            if _HEADER_UNSAFE.search(value):
                raise MailHeaderError(
                    f"line breaks and control characters are not allowed in a mail's {name}"
                )
        message = EmailMessage(policy=SMTP)
        sender = _ascii_domain(self.sender)
        message["From"] = sender
        message["To"] = _ascii_domain(to)
        message["Subject"] = subject
        # "+0000", UTC: "-0000" (formatdate's) says the zone is unknown, and parsers take
        # it as a naive time, which a reader's clock then calls local.
        message["Date"] = format_datetime(datetime.now(UTC).replace(microsecond=0))
        message["Message-ID"] = make_msgid(domain=_domain(sender))
        message["Auto-Submitted"] = "auto-generated"
        for name, value in extra.items():
            message[name] = value
        message.set_content(text)
        return message

    def send(
        self, to: str, subject: str, text: str, *, headers: Mapping[str, str] | None = None
    ) -> None:
        """Send a plain-text message to *to*; raises :class:`MailError` if that fails."""
        self.transport.send(self.build(to, subject, text, headers=headers))


def mailer(app: Flask | None = None) -> Mailer:
    """The mailer of *app* (default: the current app), built from its config on first use."""
    if app is None:
        from flask import current_app

        app = current_app._get_current_object()  # type: ignore[attr-defined]
    existing = app.extensions.get(EXTENSION_KEY)
    if isinstance(existing, Mailer):
        return existing
    st = state(app)
    origin = str(st.section.get("origin") or "")
    host = urlsplit(origin).hostname or "localhost"
    built = Mailer.from_config(st.config.global_, default_sender=f"noreply@{host}")
    app.extensions[EXTENSION_KEY] = built
    return built


class MailExtension:
    """The mail feature of an app: its :class:`Mailer`, built from the config on first use.

    Given *mailer* (a test's, or one with a transport of the host's), the app uses it
    instead of building one.
    """

    def __init__(self, mailer: Mailer | None = None) -> None:
        self.mailer = mailer

    def init_app(self, app: Flask) -> None:
        if self.mailer is not None:
            app.extensions[EXTENSION_KEY] = self.mailer
