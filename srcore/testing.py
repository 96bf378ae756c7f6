"""A pytest plugin that gives every service's tests an app, a client, a database and users.

It is registered through the ``pytest11`` entry point, so a service's test suite only has
to name its package in a ``srcore_service`` fixture::

    @pytest.fixture(scope="session")
    def srcore_service() -> str:
        return "todo"

Every test that uses the database runs twice: on SQLite and on PostgreSQL. PostgreSQL gets
a throw-away database per test session (dropped afterwards); when it is unreachable those
runs are skipped, except under ``CI=true``, where they fail.

The service's app factory must accept ``config`` and pass other keyword arguments on to
:func:`srcore.create_app` (the generated services do).
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import importlib.resources
import itertools
import os
import secrets
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from srcore.supervisor import Program, Supervisor, http_ok

__all__ = [
    "TEST_ISSUER",
    "ServiceDatabase",
    "chromium_path",
    "create_user",
    "deliver_pending",
    "free_port",
    "launch_chromium",
    "log_in_client",
    "mint_token",
    "require_or_skip",
    "run_service",
    "run_worker",
    "session_cookie",
    "write_config",
    "write_network_config",
]

#: The issuer of the tokens minted by :func:`mint_token`.
TEST_ISSUER = "http://meta.srcore.test"
_user_ids = itertools.count(1000)


def require_or_skip(available: bool, what: str) -> None:
    """Skip when *what* is unavailable, but fail under CI, where it must be there."""
    if available:
        return
    if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
        pytest.fail(f"{what} is required under CI=true but is not reachable")
    pytest.skip(f"{what} is not reachable")


def write_config(
    path: Path,
    *,
    service_id: str,
    database_url: str,
    origin: str = "http://127.0.0.1:5999",
    extra: str = "",
) -> Path:
    """Write a minimal development config for one service and return its path."""
    path.write_text(
        "[global]\n"
        "site-name = srcore test network\n"
        "environment = development\n\n"
        f"[{service_id}]\n"
        f"origin = {origin}\n"
        f"database-url = {database_url}\n"
        f"secret-key = {secrets.token_urlsafe(48)}\n"
        f"{extra}",
        encoding="utf-8",
    )
    return path


def write_network_config(
    path: Path, ports: Mapping[str, int], *, global_keys: Mapping[str, object] | None = None
) -> Path:
    """Write a development config for a network on 127.0.0.1 and return its path.

    Each service of *ports* (``{"meta": 5000, "todo": 5001}``) gets its origin, an SQLite
    database beside *path* and a fresh secret key; every service but meta also gets OAuth
    client credentials, which meta reads from the same file. *global_keys* go into
    ``[global]`` (SMTP settings, a broker, intervals). End-to-end tests start the services
    on it with :func:`run_service` after migrating each one.
    """
    lines = ["[global]", "environment = development"]
    lines += [f"{key} = {value}" for key, value in (global_keys or {}).items()]
    for name, port in ports.items():
        lines += [
            "",
            f"[{name}]",
            f"origin = http://127.0.0.1:{port}",
            f"database-url = sqlite:///{path.parent / (name + '.db')}",
            f"secret-key = {secrets.token_urlsafe(40)}",
        ]
        if name != "meta":
            lines += [
                f"oauth-client-id = {name}",
                f"oauth-client-secret = {secrets.token_urlsafe(40)}",
            ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@dataclass
class ServiceDatabase:
    """A migrated database for one service under test, on one backend."""

    backend: str
    url: str
    config_path: Path


def _signing_key() -> Any:
    from srcore.auth import jose

    return jose.generate_key("srcore-test")


def mint_token(
    key: Any,
    *,
    audience: str,
    scopes: str,
    user_id: int | None = None,
    client_id: str = "srcore-test-client",
    expires_in: int = 3600,
    issuer: str = TEST_ISSUER,
    **claims: Any,
) -> str:
    """Sign an access token exactly as meta does (RFC 9068, EdDSA over Ed25519)."""
    from srcore.auth import jose

    now = int(time.time())
    payload: dict[str, Any] = {
        "iss": issuer,
        "sub": str(user_id) if user_id is not None else client_id,
        "aud": audience,
        "client_id": client_id,
        "scope": scopes,
        "iat": now,
        "exp": now + expires_in,
        "jti": uuid.uuid4().hex,
    }
    payload.update(claims)
    return jose.sign(payload, key, typ="at+jwt")


def create_user(app: Any, username: str = "alice", **fields: Any) -> Any:
    """Insert a user row into *app*'s database and return it (detached, loaded)."""
    from srcore.db import UserType

    model = app.extensions["srcore"].user_model
    if model is None:
        raise RuntimeError("the service passes no user_model to srcore.create_app")
    values: dict[str, Any] = {
        "id": next(_user_ids),
        "username": username,
        "email": f"{username}@example.org",
        "user_type": UserType.active,
    }
    values.update(fields)
    with app.extensions["srcore"].db.transaction() as session:
        user = model(**values)
        session.add(user)
    return user


def _session_values(app: Any, user: Any) -> dict[str, Any]:
    """What the app's login backend adds to a new session of *user* (a server-side
    session id, for one), if it keeps sessions of its own."""
    backend = app.extensions["srcore"].login
    start = getattr(backend, "session_values", None)
    if start is None:
        return {}
    with app.test_request_context(method="POST"):
        values: dict[str, Any] = start(user.id)
    return values


def log_in_client(client: Any, user: Any) -> Any:
    """Log *user* in on a Flask test *client*, through the service's real session cookie."""
    values = _session_values(client.application, user)
    with client.session_transaction() as session:
        session.clear()
        session["_uid"] = user.id
        session.update(values)
        session.permanent = True
    return client


def session_cookie(app: Any, user: Any) -> tuple[str, str]:
    """The name and value of *app*'s session cookie with *user* logged in.

    Lets a browser test start logged in, signed with the service's real secret key,
    without any login route in the running app.
    """
    from flask.sessions import SecureCookieSessionInterface

    serializer = SecureCookieSessionInterface().get_signing_serializer(app)
    if serializer is None:
        raise RuntimeError("the app has no secret key")
    value = serializer.dumps({"_uid": user.id, **_session_values(app, user), "_permanent": True})
    return app.config["SESSION_COOKIE_NAME"], str(value)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def run_service(
    package: str, config_path: Path, *, port: int, workers: int = 1, timeout: float = 30
) -> Iterator[str]:
    """Run *package* under gunicorn on 127.0.0.1:*port* until the block ends; yield its URL.

    Run by :mod:`srcore.supervisor`: in a process group of its own, stopped with its
    workers (SIGTERM, then SIGKILL after 10 s). Its log goes to a temporary file; the
    error raised when it exits or does not answer ``/healthz`` quotes its last lines.
    """
    from srcore.serving import gunicorn_options

    argv = (
        sys.executable,
        "-m",
        "gunicorn",
        "--bind",
        f"127.0.0.1:{port}",
        "--no-control-socket",
        *gunicorn_options(),
        "--workers",
        str(workers),
        "--graceful-timeout",
        "2",
        f"{package}:create_app()",
    )
    url = f"http://127.0.0.1:{port}"
    with _supervised(config_path) as (supervisor, env):
        child = supervisor.start(Program(package, argv, env))
        supervisor.wait_until(functools.partial(http_ok, url + "/healthz"), child, timeout=timeout)
        yield url


@contextlib.contextmanager
def _supervised(config_path: Path) -> Iterator[tuple[Supervisor, dict[str, str]]]:
    """A supervisor logging to a temporary file (nobody reads a pipe while a test runs),
    and the environment of its children."""
    import tempfile

    env = dict(os.environ, SRCORE_CONFIG=str(config_path), PYTHONUNBUFFERED="1")
    with (
        tempfile.TemporaryFile("w+", encoding="utf-8") as log,
        Supervisor(log, name="srcore.testing", stop_timeout=10) as supervisor,
    ):
        yield supervisor, env


def deliver_pending(app: Any) -> dict[int, list[str]]:
    """Run the local webhook worker in process over every pending event and return, per
    subscription id, the events it was delivered, in delivery order.

    Every receiver "answers" 204 without a request leaving the process, so a test can ask
    *who* receives an event (fan-out, audiences, filters) without running an HTTP server.
    """
    from sqlalchemy import select

    from srcore.webhooks.models import Delivery, OutboxRow
    from srcore.webhooks.sender import Exchange
    from srcore.webhooks.worker import Worker

    class Accept:
        def post(self, url: str, headers: Any, body: bytes, *, deadline: float) -> Exchange:
            return Exchange(status=204, headers={})

        def close(self) -> None:
            pass

    http = Accept()
    worker = Worker(app, http=http, trusted_http=http, poll_interval=0.01)
    try:
        worker.drain()
    finally:
        worker.close()
    got: dict[int, list[str]] = {}
    with app.extensions["srcore"].db.transaction() as session:
        for sub_id, event in session.execute(
            select(Delivery.subscription_id, OutboxRow.event)
            .join(OutboxRow, Delivery.outbox_id == OutboxRow.id)
            .order_by(Delivery.id)
        ):
            got.setdefault(sub_id, []).append(event)
    return got


@contextlib.contextmanager
def run_worker(
    service: str, config_path: Path, *, poll_interval: float | None = 0.2, timeout: float = 30
) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``srcore worker SERVICE`` (its webhook worker) until the block ends.

    Yields the process once the worker has said it started; *poll_interval* is passed
    as ``--poll-interval`` (meta's worker carries revocations, so tests poll fast). Run
    and stopped by :mod:`srcore.supervisor`, as :func:`run_service` is.
    """
    argv: tuple[str, ...] = (
        sys.executable,
        "-c",
        "from srcore.cli import main; main()",
        "worker",
        service,
    )
    if poll_interval is not None:
        argv += ("--poll-interval", str(poll_interval))
    with _supervised(config_path) as (supervisor, env):
        child = supervisor.start(Program(f"{service} worker", argv, env))
        supervisor.wait_for_line(child, "srcore worker:", timeout=timeout)
        yield child.process


def chromium_path() -> str | None:
    """Debian's Chromium, which browser tests drive (Playwright cannot download one here)."""
    import shutil

    for candidate in (
        "/usr/bin/chromium",
        shutil.which("chromium"),
        shutil.which("chromium-browser"),
    ):
        if candidate and os.path.exists(candidate):
            return candidate
    return None


#: Flags for headless Chromium on a machine with no network and no GPU, running as root.
CHROMIUM_ARGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
)


@contextlib.contextmanager
def launch_chromium() -> Iterator[Any]:
    """A Playwright browser on Debian's Chromium; skips (fails under CI) when unavailable."""
    path = chromium_path()
    require_or_skip(path is not None, "Chromium (/usr/bin/chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=path, args=list(CHROMIUM_ARGS))
        try:
            yield browser
        finally:
            browser.close()


def _clean(app: Any) -> None:
    """Empty the service's tables and the core's (webhooks), leaving the schema."""
    from srcore.db import core_metadata

    metadata = app.extensions["srcore"].metadata
    service_tables = list(reversed(metadata.sorted_tables)) if metadata is not None else []
    names = {table.name for table in service_tables}
    core_tables = [t for t in reversed(core_metadata().sorted_tables) if t.name not in names]
    with app.extensions["srcore"].db.transaction() as session:
        for table in core_tables + service_tables:
            session.execute(table.delete())


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


# -- fixtures ---------------------------------------------------------------------------


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
        from srcore.testdb import postgres_available

        require_or_skip(postgres_available(), "PostgreSQL")
    return backend


@pytest.fixture(scope="session")
def srcore_signing_key() -> Any:
    """The Ed25519 key the test apps trust as meta's token-signing key."""
    return _signing_key()


class _DatabasePool:
    """Migrated databases by (service, backend), made once per test session.

    A session-scoped fixture would be cached across conftests that name different
    services, so the databases are kept here, keyed by what they are for.
    """

    def __init__(self, tmp_path_factory: pytest.TempPathFactory) -> None:
        self._tmp = tmp_path_factory
        self._made: dict[tuple[str, str], ServiceDatabase] = {}
        self._drops: list[Callable[[], None]] = []

    def get(self, service: str, backend: str) -> ServiceDatabase:
        key = (service, backend)
        if key not in self._made:
            self._made[key] = self._make(service, backend)
        return self._made[key]

    def _make(self, service: str, backend: str) -> ServiceDatabase:
        from srcore import migrate
        from srcore.manifest import load_manifest

        manifest = load_manifest(service)
        tmp = self._tmp.mktemp(f"{manifest.id}-{backend}")
        if backend == "sqlite":
            url = f"sqlite:///{tmp / 'test.db'}"
        else:
            from srcore.testdb import create_test_database, drop_test_database

            url = create_test_database()
            self._drops.append(lambda: drop_test_database(url))
        config_path = write_config(tmp / "config.ini", service_id=manifest.id, database_url=url)
        module = importlib.import_module(service)
        app = module.create_app(config=config_path)
        versions = Path(str(importlib.resources.files(service))) / "migrations" / "versions"
        target = migrate.MigrationTarget(
            service_id=manifest.id,
            database_url=url,
            metadata=app.extensions["srcore"].metadata,
            versions_dir=versions,
        )
        migrate.upgrade_all(target)
        app.extensions["srcore"].db.dispose()
        return ServiceDatabase(backend, url, config_path)

    def close(self) -> None:
        for drop in self._drops:
            drop()


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

    manifest = load_manifest(srcore_service)
    verifier = TokenVerifier(
        keys=StaticKeySource(KeySet([srcore_signing_key])),
        issuer=TEST_ISSUER,
        audience=manifest.id,
    )
    module = importlib.import_module(srcore_service)
    application = module.create_app(config=srcore_database.config_path, token_verifier=verifier)
    application.config["TESTING"] = True
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


def new_secret() -> str:
    """A fresh secret value, as ``srcore keygen`` prints."""
    return secrets.token_urlsafe(48)
