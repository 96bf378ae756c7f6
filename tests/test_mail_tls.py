"""Mail over TLS as operators configure it (``smtp-tls = starttls``, the default, and
``tls``), against a real SMTP server speaking TLS (aiosmtpd) with a certificate from a
test authority the machine trusts through ``SSL_CERT_FILE``: the message goes through
encrypted, credentials only after the handshake, and a certificate for another name or
from an authority nobody trusts stops the mail with a :class:`MailError`."""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from srcore.mail import Mailer, MailError
from srcore.testing import free_port

HOST = "127.0.0.1"


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _certificate(
    subject: str, key: Any, issuer: str, issuer_key: Any, *, ca: bool, san: x509.GeneralName | None
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        usage = x509.KeyUsage(
            digital_signature=True,
            content_commitment=False,
            key_encipherment=False,
            data_encipherment=False,
            key_agreement=False,
            key_cert_sign=True,
            crl_sign=True,
            encipher_only=False,
            decipher_only=False,
        )
        builder = builder.add_extension(usage, critical=True)
    if san is not None:
        builder = builder.add_extension(x509.SubjectAlternativeName([san]), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


@dataclass
class Authority:
    """A certificate authority of the test's own, and the files of what it signed."""

    directory: Path
    key: Any = field(default_factory=lambda: ec.generate_private_key(ec.SECP256R1()))

    def __post_init__(self) -> None:
        self.cert = _certificate(
            "srcore test CA",
            self.key,
            "srcore test CA",
            self.key,
            ca=True,
            san=None,
        )
        self.bundle = self.directory / "ca.pem"
        self.bundle.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))

    def server_context(self, san: x509.GeneralName) -> ssl.SSLContext:
        """A server's TLS context with a certificate for *san*, signed by this authority."""
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _certificate("mail server", key, "srcore test CA", self.key, ca=False, san=san)
        stem = self.directory / f"server-{id(key)}"
        cert_file, key_file = stem.with_suffix(".crt"), stem.with_suffix(".key")
        cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_file.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert_file, key_file)
        return context


class Inbox:
    """The server's handler: what arrived, and whether it came over TLS, and as whom."""

    def __init__(self) -> None:
        self.arrived: list[tuple[bytes, bool, Any]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        # STARTTLS sets the session's; a connection that is TLS throughout has it on its socket.
        tls = session.ssl is not None or server.transport.get_extra_info("ssl_object") is not None
        self.arrived.append((envelope.content, tls, session.auth_data))
        return "250 OK"


@dataclass
class Server:
    inbox: Inbox
    port: int


@pytest.fixture
def authority(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Authority:
    """A test authority the machine trusts, as an operator's would be (``SSL_CERT_FILE``)."""
    found = Authority(tmp_path)
    monkeypatch.setenv("SSL_CERT_FILE", str(found.bundle))
    return found


@pytest.fixture
def serve() -> Iterator[Any]:
    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import AuthResult

    controllers: list[Any] = []

    def start(context: ssl.SSLContext, *, implicit: bool) -> Server:
        inbox, port = Inbox(), free_port()

        def check(server: Any, session: Any, envelope: Any, mechanism: str, auth: Any) -> Any:
            ok = (auth.login, auth.password) == (b"mailer", b"s3cret")
            return AuthResult(success=ok, auth_data=auth.login if ok else None)

        options: dict[str, Any] = {"authenticator": check, "auth_require_tls": True}
        if implicit:
            # The whole connection is TLS (this server only checks a STARTTLS one).
            options["auth_require_tls"] = False
            controller = Controller(inbox, hostname=HOST, port=port, ssl_context=context, **options)
        else:
            options.update(tls_context=context, require_starttls=True)
            controller = Controller(inbox, hostname=HOST, port=port, **options)
        controller.start()
        controllers.append(controller)
        return Server(inbox, port)

    yield start
    for controller in controllers:
        controller.stop()


def _mailer(port: int, tls: str, **more: str) -> Mailer:
    keys = {"smtp-host": HOST, "smtp-port": port, "smtp-tls": tls, "smtp-from": "n@example.org"}
    return Mailer.from_config({**keys, **more})


IP_SAN = x509.IPAddress(ipaddress.ip_address(HOST))


@pytest.mark.parametrize("tls", ["starttls", "tls"])
def test_mail_goes_through_tls_with_credentials_after_the_handshake(
    authority: Authority, serve: Any, tls: str
) -> None:
    server = serve(authority.server_context(IP_SAN), implicit=tls == "tls")
    mailer = _mailer(server.port, tls, **{"smtp-user": "mailer", "smtp-password": "s3cret"})
    mailer.send("alice@example.org", "Over TLS", "A body.\n")
    [(content, encrypted, login)] = server.inbox.arrived
    assert encrypted and login == b"mailer"
    assert b"Subject: Over TLS" in content


@pytest.mark.parametrize("tls", ["starttls", "tls"])
def test_a_certificate_for_another_name_stops_the_mail(
    authority: Authority, serve: Any, tls: str
) -> None:
    other = x509.DNSName("mail.other.invalid")
    server = serve(authority.server_context(other), implicit=tls == "tls")
    with pytest.raises(MailError, match="certificate"):
        _mailer(server.port, tls).send("alice@example.org", "Not sent", "A body.\n")
    assert server.inbox.arrived == []


@pytest.mark.parametrize("tls", ["starttls", "tls"])
def test_a_certificate_from_an_authority_nobody_trusts_stops_the_mail(
    tmp_path: Path, serve: Any, tls: str
) -> None:
    untrusted = Authority(tmp_path)  # not in SSL_CERT_FILE: the system's bundle is used
    server = serve(untrusted.server_context(IP_SAN), implicit=tls == "tls")
    with pytest.raises(MailError, match="certificate"):
        _mailer(server.port, tls).send("alice@example.org", "Not sent", "A body.\n")
    assert server.inbox.arrived == []
