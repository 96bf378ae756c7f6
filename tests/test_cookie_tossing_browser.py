"""Cookie tossing in headless Chromium: the sample service at
https://sample.example.test, the fake meta's login pages at https://meta.example.test and
a hostile sibling at https://evil.example.test, all on 127.0.0.1 (Chromium maps every name
of ``example.test`` there, and resolves no other), over TLS with a certificate made for
the test.

The sibling sets every cookie a host of the site may set for another: the service's
cookie name with ``Domain=example.test`` and longer paths (``/private``, the login
callback), the same with the ``__Host-`` prefix, in other letter cases, and as a nameless
cookie whose value spells the prefixed name. Holding mallory's valid session, it must
neither log alice's browser in as mallory (before or after alice logs in herself) nor
stop her logging in. The in-process account of the same, and of why, is
test_cookie_tossing.py.
"""

from __future__ import annotations

import contextlib
import datetime
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fake_meta import FakeMeta
from flask import Flask, Response
from test_cookie_tossing import build

from srcore.testing import create_user, free_port, session_cookie
from srcore.testing.browser import CHROMIUM_ARGS, chromium_path
from srcore.testing.skipping import require_or_skip

pytestmark = [pytest.mark.browser, pytest.mark.slow]

#: Milliseconds Playwright waits for a navigation.
STEP_MS = 15_000
#: Every name under example.test is this machine; any other name does not resolve.
RESOLVER = "--host-resolver-rules=MAP *.example.test 127.0.0.1, MAP * ~NOTFOUND"


def make_certificate(directory: Path) -> ssl.SSLContext:
    """A server TLS context with a self-signed certificate for ``*.example.test``."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "example.test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("example.test"), x509.DNSName("*.example.test")]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_path, key_path)
    return context


@contextlib.contextmanager
def serving(app: Any, port: int, context: ssl.SSLContext) -> Iterator[None]:
    """*app* over https on 127.0.0.1:*port* in a thread, for the duration."""
    from werkzeug.serving import make_server

    server = make_server("127.0.0.1", port, app, threaded=True, ssl_context=context)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield
    finally:
        server.shutdown()
        thread.join(timeout=10)


@dataclass
class Site:
    sample: str
    evil: str
    app: Any
    fake: FakeMeta
    #: The Set-Cookie headers evil.example.test/toss answers with.
    tosses: list[str]
    #: mallory's own valid session cookie value (as if she logged in and copied it).
    mallorys: str


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    tmp = tmp_path_factory.mktemp("cookie-tossing")
    fake = FakeMeta()
    fake.add_user(42, "alice")
    fake.logged_in = 42
    ports = free_port(), free_port(), free_port()
    sample = f"https://sample.example.test:{ports[0]}"
    evil = f"https://evil.example.test:{ports[1]}"
    meta = f"https://meta.example.test:{ports[2]}"
    app = build(tmp, fake, sample)
    # The fake meta's own pages are served beside the sample: browsers go there to log in.
    app.extensions["srcore.auth"].identity.meta.authorization_endpoint = lambda: (
        f"{meta}/oauth/authorize"
    )
    tosses: list[str] = []
    hostile = Flask("evil")

    @hostile.get("/toss")
    def toss() -> Response:
        answer = Response("tossed", content_type="text/plain")
        for header in tosses:
            answer.headers.add("Set-Cookie", header)
        return answer

    context = make_certificate(tmp)
    with (
        serving(app, ports[0], context),
        serving(hostile, ports[1], context),
        serving(fake.app, ports[2], context),
    ):
        _, mallorys = session_cookie(app, create_user(app, "mallory"))
        yield Site(sample, evil, app, fake, tosses, mallorys)
    app.extensions["srcore"].db.dispose()


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    path = chromium_path()
    require_or_skip(path is not None, "Chromium (/usr/bin/chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=path, args=[*CHROMIUM_ARGS, RESOLVER])
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def page(chromium: Any, site: Site) -> Iterator[Any]:
    """A fresh profile's tab."""
    context = chromium.new_context(ignore_https_errors=True)
    try:
        tab = context.new_page()
        tab.set_default_navigation_timeout(STEP_MS)
        yield tab
    finally:
        context.close()


def toss_mallorys_session(site: Site, page: Any) -> None:
    """Visit the sibling, which sets every cookie it can to put mallory's session first."""
    session = site.mallorys
    plain = site.app.config["SESSION_COOKIE_NAME"]
    attrs = "Secure; SameSite=Lax"
    site.tosses[:] = [
        f"{plain}={session}; Domain=example.test; Path=/; {attrs}",
        f"{plain}={session}; Domain=example.test; Path=/private; {attrs}",
        f"{plain}=x; Domain=example.test; Path=/oauth/callback; {attrs}",
        f"__Host-{plain}={session}; Domain=example.test; Path=/private; {attrs}",
        f"__Host-{plain}={session}; Domain=example.test; Path=/; {attrs}",
        f"__HOST-{plain}={session}; Domain=example.test; Path=/private; {attrs}",
        f"__host-{plain}={session}; Domain=example.test; Path=/private; {attrs}",
        f"=__Host-{plain}={session}; Domain=example.test; Path=/private; {attrs}",
        f"=__Host-{plain}={session}; Domain=example.test; Path=/; {attrs}",
    ]
    assert page.goto(f"{site.evil}/toss").status == 200
    stored = {c["name"] for c in page.context.cookies() if c["domain"] == ".example.test"}
    # What Chromium kept: the plain name (and the mis-cased prefixes, which a browser
    # may drop too); never the prefixed name nor a nameless cookie spelling it.
    assert plain in stored
    assert f"__Host-{plain}" not in stored and "" not in stored, stored


def private(site: Site, page: Any) -> str:
    answer = page.goto(f"{site.sample}/private")
    assert answer.status == 200, (answer.status, page.url)
    assert page.url == f"{site.sample}/private", page.url
    text: str = page.inner_text("body")
    return text.strip()


def test_a_tossed_session_does_not_replace_the_victims(site: Site, page: Any) -> None:
    # alice logs in through meta; the service sets its own cookie.
    assert private(site, page) == "hello alice"
    toss_mallorys_session(site, page)
    assert private(site, page) == "hello alice"
    own = [c for c in page.context.cookies() if c["domain"] == "sample.example.test"]
    assert [c["name"] for c in own] == [site.app.session_interface.get_cookie_name(site.app)]


def test_a_tossed_session_neither_logs_in_nor_locks_out(site: Site, page: Any) -> None:
    toss_mallorys_session(site, page)
    # No session of her own: she is asked to log in (not made mallory), and the login
    # finishes although garbage was tossed onto the callback's path.
    assert private(site, page) == "hello alice"
    assert private(site, page) == "hello alice"
