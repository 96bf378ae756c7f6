"""The plugin itself: its hook and the fixtures ``pytest_plugins = ["srcore.testing"]``
gives a suite (see :mod:`srcore.testing`)."""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from srcore.testing.databases import ServiceDatabase, _clean, _DatabasePool
from srcore.testing.skipping import require_or_skip
from srcore.testing.smtp import SMTPSink, serve_smtp_sink
from srcore.testing.users import (
    TEST_ISSUER,
    _signing_key,
    create_user,
    log_in_client,
    mint_token,
)

__all__ = [
    "app",
    "app_url",
    "client",
    "db",
    "make_token",
    "pytest_configure",
    "smtp_sink",
    "srcore_backend",
    "srcore_database",
    "srcore_service",
    "srcore_signing_key",
    "user",
    "user_client",
]


def pytest_configure(config: pytest.Config) -> None:
    """Register the markers srcore's helpers and every service's tests use.

    Also turn off hypothesis's per-example deadline (unless a profile is chosen through
    HYPOTHESIS_PROFILE): it is a wall-clock assertion, and on a loaded CI machine it fails
    examples that are merely slow.
    """
    config.addinivalue_line("markers", "browser: drives a real headless Chromium")
    config.addinivalue_line("markers", "slow: takes more than a few seconds")
    if not os.environ.get("HYPOTHESIS_PROFILE"):
        try:
            from hypothesis import settings
        except ImportError:  # a service's suite need not use hypothesis
            return
        settings.register_profile("srcore", deadline=None)
        settings.load_profile("srcore")


@pytest.fixture(scope="session")
def srcore_service() -> str:
    """The package name of the service under test. Override it in the service's conftest."""
    raise pytest.UsageError(
        "define a session-scoped 'srcore_service' fixture returning your service's package name"
    )


@pytest.fixture(scope="session", params=["sqlite", "postgresql"])
def srcore_backend(request: pytest.FixtureRequest) -> str:
    """The database backend of this run of a test: ``sqlite`` or ``postgresql``."""
    backend: str = request.param
    if backend == "postgresql":
        from srcore.extras import installed
        from srcore.testdb import postgres_available

        # Said apart: installing the extra fixes this one, starting a server the other.
        driver = "PostgreSQL's driver (psycopg: pip install 'srcore[postgres]')"
        require_or_skip(installed("postgres"), driver)
        require_or_skip(postgres_available(), "PostgreSQL")
    return backend


@pytest.fixture(scope="session")
def srcore_signing_key() -> Any:
    """The Ed25519 key the test apps trust as meta's token-signing key."""
    return _signing_key()


@pytest.fixture(scope="session")
def _srcore_database_pool(tmp_path_factory: pytest.TempPathFactory) -> Iterator[_DatabasePool]:
    pool = _DatabasePool(tmp_path_factory)
    try:
        yield pool
    finally:
        pool.close()


@pytest.fixture
def srcore_database(
    srcore_service: str, srcore_backend: str, _srcore_database_pool: _DatabasePool
) -> ServiceDatabase:
    """A database for the service, migrated to head once per session and backend."""
    return _srcore_database_pool.get(srcore_service, srcore_backend)


@pytest.fixture
def app(
    srcore_service: str, srcore_database: ServiceDatabase, srcore_signing_key: Any
) -> Iterator[Any]:
    """The service's app on a clean, migrated database; tokens from :func:`mint_token` work."""
    from joserfc.jwk import KeySet

    from srcore.auth.tokens import StaticKeySource, TokenVerifier
    from srcore.manifest import load_manifest
    from srcore.outbound.targets import set_resolver

    manifest = load_manifest(srcore_service)
    verifier = TokenVerifier(
        keys=StaticKeySource(KeySet([srcore_signing_key])),
        issuer=TEST_ISSUER,
        audience=manifest.id,
    )
    module = importlib.import_module(srcore_service)
    application = module.create_app(config=srcore_database.config_path, token_verifier=verifier)
    application.config["TESTING"] = True
    # No test asks DNS: the host of a submitted URL (a webhook, a logout endpoint) is looked up
    # by nobody (a test that needs answers sets its own); literals and localhost are judged.
    set_resolver(application, lambda host, port, timeout: None)
    try:
        yield application
    finally:
        _clean(application)
        application.extensions["srcore"].db.dispose()


@pytest.fixture
def client(app: Any) -> Any:
    """A test client of :func:`app`, not logged in."""
    return app.test_client()


@pytest.fixture
def app_url(app: Any) -> Iterator[str]:
    """:func:`app` served in this process by a threaded server on a free 127.0.0.1 port:
    its base URL. For what the test client does not show: a client library speaking HTTP
    over a socket (raw header bytes, requests at once on threads), or a browser."""
    from werkzeug.serving import make_server

    from srcore.testing.receivers import serving

    server = make_server("127.0.0.1", 0, app, threaded=True)
    with serving(server):
        yield f"http://127.0.0.1:{server.server_port}"


@pytest.fixture
def db(app: Any) -> Iterator[Any]:
    """A database session on :func:`app`'s database, rolled back and closed after the test."""
    session = app.extensions["srcore"].db.session()
    try:
        yield session
    finally:
        session.rollback()
        session.close()


@pytest.fixture
def user(app: Any) -> Any:
    """An active user, ``alice``."""
    return create_user(app, "alice")


@pytest.fixture
def user_client(app: Any, user: Any) -> Any:
    """A test client with :func:`user` logged in."""
    return log_in_client(app.test_client(), user)


@pytest.fixture
def make_token(app: Any, srcore_signing_key: Any) -> Callable[..., str]:
    """Mint access tokens for :func:`app`: ``make_token("todo/tickets:RW", user=alice)``."""
    audience = app.extensions["srcore"].service_id

    def make(scopes: str, *, user: Any = None, **options: Any) -> str:
        user_id = user.id if user is not None else None
        return mint_token(
            srcore_signing_key, audience=audience, scopes=scopes, user_id=user_id, **options
        )

    return make


@pytest.fixture(scope="session")
def _srcore_smtp_sink() -> Iterator[SMTPSink]:
    with serve_smtp_sink() as sink:
        yield sink


@pytest.fixture
def smtp_sink(_srcore_smtp_sink: SMTPSink) -> SMTPSink:
    """An SMTP server on 127.0.0.1 (:mod:`srcore.testing.smtp`), empty at the start of the
    test: point ``[global] smtp-host`` and ``smtp-port`` at its ``host`` and ``port``, with
    ``smtp-tls = none``. One server serves the whole session."""
    _srcore_smtp_sink.clear()
    return _srcore_smtp_sink
