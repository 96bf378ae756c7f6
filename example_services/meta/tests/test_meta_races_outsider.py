"""An outsider racing meta under gunicorn, on SQLite and PostgreSQL: the limits of an
account hold against requests sent at once, and so does the login throttle.

Each burst's requests wait at a barrier and are sent together, from threads of the test,
to meta served by gunicorn (several workers, or one with several threads where the
throttle's counts live in process memory). Counts are fixed, every request has a
timeout, and nothing is timed: a burst may or may not interleave badly on a given run,
so the limits are checked after several bursts, each of which can break them.
"""

from __future__ import annotations

import contextlib
import re
import threading
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from functools import partial
from typing import Any

import pytest
import requests
from meta_constants import PASSWORD
from sqlalchemy import func, insert, select

from srcore.config import env_name
from srcore.db import utcnow
from srcore.testing import free_port, require_or_skip, run_service, session_cookie

pytestmark = pytest.mark.slow

#: Requests in one burst, and bursts per test.
BURST = 12
ROUNDS = 3
#: Seconds any one request may take.
TIMEOUT = 60
REDIS_URL = "redis://127.0.0.1:6379/0"

_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def _redis_reachable() -> bool:
    import socket

    try:
        with socket.create_connection(("127.0.0.1", 6379), timeout=1):
            return True
    except OSError:
        return False


@pytest.fixture(params=["memory", "redis"])
def counts_in(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Where the served meta keeps its throttles: its process's memory, or Redis."""
    if request.param == "redis":
        require_or_skip(_redis_reachable(), "Redis on 127.0.0.1:6379")
        monkeypatch.setenv(env_name("global", "redis-url"), REDIS_URL)
    # Each request says it comes from an address of its own, as a botnet's do.
    monkeypatch.setenv(env_name("meta", "proxy-fix-trusted-hops"), "1")
    return str(request.param)


def _serve(app: Any, srcore_database: Any, *, workers: int, threads: int) -> Iterator[str]:
    del app  # its fixture migrated and empties the database the server uses
    with run_service(
        "meta",
        srcore_database.config_path,
        port=free_port(),
        workers=workers,
        threads=threads,
        timeout=60,
    ) as url:
        yield url


@pytest.fixture
def served(app: Any, srcore_database: Any) -> Iterator[str]:
    """meta under gunicorn, four workers, on the test's database; its URL."""
    yield from _serve(app, srcore_database, workers=4, threads=1)


@pytest.fixture
def served_threads(app: Any, srcore_database: Any, counts_in: str) -> Iterator[str]:
    """meta under gunicorn where its throttles count together: with Redis, two workers of
    four threads; in memory, one worker of eight threads (a process counts on its own)."""
    workers, threads = (2, 4) if counts_in == "redis" else (1, 8)
    yield from _serve(app, srcore_database, workers=workers, threads=threads)


def at_once(sends: list[Callable[[], requests.Response]]) -> list[requests.Response]:
    """Send each request from a thread of its own, all released together."""
    start = threading.Barrier(len(sends))

    def one(send: Callable[[], requests.Response]) -> requests.Response:
        start.wait(timeout=TIMEOUT)
        return send()

    with ThreadPoolExecutor(max_workers=len(sends)) as pool:
        return list(pool.map(one, sends))


def _browser(app: Any, user: Any, base: str, page: str) -> tuple[requests.Session, str]:
    """A session logged in as *user*, and the CSRF token of *page*."""
    browser = requests.Session()
    name, value = session_cookie(app, user)
    browser.cookies.set(name, value, domain="127.0.0.1", path="/")
    answer = browser.get(base + page, timeout=TIMEOUT)
    assert answer.status_code == 200, answer.text[:300]
    match = _CSRF.search(answer.text)
    assert match, page
    return browser, match.group(1)


def _count(app: Any, query: Any) -> int:
    with app.extensions["srcore"].db.transaction() as session:
        return int(session.scalar(query) or 0)


def _insert(app: Any, model: Any, rows: list[dict[str, Any]]) -> None:
    with app.extensions["srcore"].db.transaction() as session:
        session.execute(insert(model), rows)


# -- an account's limits ----------------------------------------------------------------------


def test_parallel_token_creates_stop_at_the_limit(app: Any, accounts: Any, served: str) -> None:
    """One below :data:`MAX_TOKENS` live tokens, a burst of creates on ``/security``: one
    token is made, the others are refused with the limit; never one past it."""
    from meta.oauth.models import PersonalAccessToken
    from meta.oauth.pats import MAX_TOKENS

    alice = accounts.make("alice")
    now = utcnow()
    _insert(
        app,
        PersonalAccessToken,
        [
            {
                "user_id": alice.id,
                "name": f"token {n}",
                "scope": "meta/profile:RO",
                "jti": uuid.uuid4().hex,
                "kid": "k",
                "expires_at": now + timedelta(days=30),
            }
            for n in range(MAX_TOKENS - 1)
        ],
    )
    browser, token = _browser(app, alice, served, "/security")
    live = PersonalAccessToken.user_id == alice.id, PersonalAccessToken.revoked_at.is_(None)
    limit = f"An account has at most {MAX_TOKENS} live tokens: revoke one first."

    def create() -> requests.Response:
        form = {"name": "burst", "scopes": "meta/profile:RO", "expires": "30", "csrf_token": token}
        return browser.post(served + "/security/tokens", data=form, timeout=TIMEOUT)

    for _ in range(ROUNDS):
        answers = at_once([create] * BURST)
        assert Counter(a.status_code for a in answers) == {200: 1, 400: BURST - 1}, [
            (a.status_code, a.text[:200]) for a in answers
        ]
        assert all(limit in a.text for a in answers if a.status_code == 400)
        assert _count(app, select(func.count()).where(*live)) == MAX_TOKENS
        with app.extensions["srcore"].db.transaction() as session:  # room for one again
            made = session.scalars(select(PersonalAccessToken).where(*live)).all()
            for row in made:
                if row.name == "burst":
                    session.delete(row)


def test_parallel_application_registrations_stop_at_the_limit(
    app: Any, accounts: Any, served: str
) -> None:
    """One below :data:`MAX_CLIENTS` applications, a burst of registrations on ``/clients``:
    one is registered, the others are refused with the limit; never one past it."""
    from meta.oauth.client_pages import MAX_CLIENTS
    from meta.oauth.models import OAuthClient

    alice = accounts.make("alice")
    _insert(
        app,
        OAuthClient,
        [
            {
                "client_id": "c" + uuid.uuid4().hex[:24],
                "owner_id": alice.id,
                "name": f"app {n}",
                "redirect_uris": "https://alice.example/cb",
                "confidential": False,
            }
            for n in range(MAX_CLIENTS - 1)
        ],
    )
    browser, token = _browser(app, alice, served, "/clients")
    mine = OAuthClient.owner_id == alice.id, OAuthClient.revoked_at.is_(None)
    limit = f"An account has at most {MAX_CLIENTS} applications: delete one first."

    def register() -> requests.Response:
        form = {
            "name": "burst",
            "redirect_uris": "https://alice.example/burst",
            "kind": "public",
            "csrf_token": token,
        }
        return browser.post(served + "/clients", data=form, timeout=TIMEOUT)

    for _ in range(ROUNDS):
        answers = at_once([register] * BURST)
        assert Counter(a.status_code for a in answers) == {200: 1, 400: BURST - 1}, [
            (a.status_code, a.text[:200]) for a in answers
        ]
        assert all(limit in a.text for a in answers if a.status_code == 400)
        assert _count(app, select(func.count()).where(*mine)) == MAX_CLIENTS
        with app.extensions["srcore"].db.transaction() as session:  # room for one again
            for row in session.scalars(select(OAuthClient).where(OAuthClient.name == "burst")):
                session.delete(row)


# -- the login throttle -----------------------------------------------------------------------


def _slow_hash() -> str:
    """PASSWORD hashed with argon2's defaults, as production hashes: each wrong guess takes
    the server a while to check, as it does for every real account."""
    from argon2 import PasswordHasher

    return PasswordHasher().hash(PASSWORD)


def _forget_counts(counts_in: str, user_id: int) -> None:
    """Clear what an earlier run counted for account *user_id* in Redis (ids are reused)."""
    if counts_in == "redis":
        import redis

        client = redis.Redis.from_url(REDIS_URL)
        try:
            for key in client.scan_iter(match=f"*meta:login:*:user:{user_id}:*", count=500):
                client.delete(key)
        finally:
            client.close()


def test_parallel_guesses_stop_at_the_lockout(
    app: Any, accounts: Any, counts_in: str, served_threads: str
) -> None:
    """Bursts of wrong passwords for one account, each from an address of its own: no more
    guesses are checked than ``login-max-failures`` allows before the lockout. Checked
    before the failures were counted, a burst's guesses all got through: as many guesses
    per lockout as the server takes requests at once."""
    from meta.settings import meta_settings

    most = meta_settings(app).login_max_failures
    alice = accounts.make("alice", password_hash=_slow_hash())
    _forget_counts(counts_in, alice.id)
    # Addresses no earlier run has counted: 2001:db8:<run>:<n>::1, a /64 each.
    run = uuid.uuid4().hex[:4]
    outsiders = []
    for n in range(BURST):
        outsider = requests.Session()
        outsider.headers["X-Forwarded-For"] = f"2001:db8:{run}:{n + 1:x}::1"
        page = outsider.get(served_threads + "/login", timeout=TIMEOUT)
        match = _CSRF.search(page.text)
        assert page.status_code == 200 and match
        outsiders.append((outsider, match.group(1)))

    def guess(outsider: requests.Session, token: str, n: int) -> Callable[[], requests.Response]:
        form = {"login": "alice", "password": f"guess {n}", "csrf_token": token}
        return lambda: outsider.post(served_threads + "/login", data=form, timeout=TIMEOUT)

    checked = 0
    for round_ in range(ROUNDS):
        answers = at_once([guess(o, t, round_ * BURST + n) for n, (o, t) in enumerate(outsiders)])
        assert {a.status_code for a in answers} <= {400, 429}, [
            (a.status_code, a.text[:200]) for a in answers
        ]
        checked += sum("Incorrect username or password." in a.text for a in answers)
        assert all("Retry-After" in a.headers for a in answers if a.status_code == 429)
    assert 1 <= checked <= most


def test_parallel_passkey_registrations_stop_at_the_limit(
    app: Any, accounts: Any, monkeypatch: pytest.MonkeyPatch, srcore_database: Any
) -> None:
    """One below :data:`MAX_PASSKEYS`, a burst of registrations from tabs of their own, each
    with its ceremony done: one key is added, the others are refused with the limit."""
    from meta.models import PasskeyCredential
    from meta.passkeys import RelyingParty
    from meta.passkeys_views import MAX_PASSKEYS
    from passkey_helpers import SoftKey

    monkeypatch.setenv(env_name("meta", "proxy-fix-trusted-hops"), "1")
    alice = accounts.make("alice")
    _insert(
        app,
        PasskeyCredential,
        [
            {
                "user_id": alice.id,
                "credential_id": uuid.uuid4().hex,
                "public_key": b"\x00" * 8,
                "sign_count": 0,
                "user_handle": "h" * 43,
                "name": f"key {n}",
                "transports": "internal",
                "backup_eligible": False,
            }
            for n in range(MAX_PASSKEYS - 1)
        ],
    )
    rp = RelyingParty.from_origin(str(app.extensions["srcore"].section["origin"]), "x")
    keys = PasskeyCredential.user_id == alice.id
    limit = f"at most {MAX_PASSKEYS} passkeys"
    tabs = 8
    run = uuid.uuid4().hex[:4]
    with contextlib.ExitStack() as stack:
        served = stack.enter_context(
            contextlib.contextmanager(_serve)(app, srcore_database, workers=4, threads=1)
        )
        for round_ in range(ROUNDS):
            sends = []
            for n in range(tabs):
                browser, token = _browser(app, alice, served, "/security")
                browser.headers["X-Forwarded-For"] = f"2001:db8:{run}:{round_ * tabs + n:x}::1"
                form = {"name": f"tab {n}", "current_password": PASSWORD, "csrf_token": token}
                options = browser.post(
                    served + "/security/passkeys/options",
                    data=form,
                    headers={"Accept": "application/json"},
                    timeout=TIMEOUT,
                )
                assert options.status_code == 200, options.text[:300]
                answer = SoftKey(rp_id=rp.id, origin=rp.origin).create(options.json())
                headers = {"Accept": "application/json", "X-CSRFToken": token}
                sends.append(
                    partial(
                        browser.post,
                        served + "/security/passkeys",
                        json=answer,
                        headers=headers,
                        timeout=TIMEOUT,
                    )
                )
            answers = at_once(sends)
            assert Counter(a.status_code for a in answers) == {200: 1, 400: tabs - 1}, [
                (a.status_code, a.text[:200]) for a in answers
            ]
            assert all(limit in a.text for a in answers if a.status_code == 400)
            assert _count(app, select(func.count()).where(keys)) == MAX_PASSKEYS
            with app.extensions["srcore"].db.transaction() as session:  # room for one again
                for row in session.scalars(
                    select(PasskeyCredential).where(keys, PasskeyCredential.name.like("tab %"))
                ):
                    session.delete(row)
