"""A request that waits for meta holds no database connection meanwhile.

A token of a user the service has not seen yet makes the request ask meta for the user's
profile and copy it in a transaction of its own. Had the request's session kept the
connection its first look-up took, each such request would need two connections, one of
them idle for the whole HTTP call: with as many threads as the pool has connections, a
burst of new users would have each thread hold one connection while waiting for a
second, and every request would end in a 503 after the pool's timeout. So the pool here
is small (two connections, two seconds' wait), the burst larger than it, and meta answers
no one until every request of the burst is waiting for it: that only happens if none
holds a connection meanwhile. The login callback's calls to meta are held to the same.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import sqlalchemy as sa
from fake_meta import FakeMeta, build_service
from flask import abort, request

from srcore import testdb
from tests.conftest import require_postgres

#: The pool every test's service gets: fewer connections than the burst has requests.
POOL = {"pool_size": 2, "max_overflow": 0, "pool_timeout": 2.0}
BURST = 4
#: How long meta waits for the whole burst before answering whoever came.
GATHER = 5.0


@pytest.fixture
def postgres_url() -> Iterator[str]:
    require_postgres()
    url = testdb.create_test_database(prefix="srcore_first_sight")
    try:
        yield url
    finally:
        testdb.drop_test_database(url)


@pytest.fixture
def small_pool(monkeypatch: pytest.MonkeyPatch) -> None:
    """Give every PostgreSQL engine srcore creates :data:`POOL`."""
    import srcore.db

    real = srcore.db.create_engine

    def create_engine(url: Any, **options: Any) -> sa.Engine:
        if "pool_size" in options:
            options.update(POOL)
        return real(url, **options)

    monkeypatch.setattr(srcore.db, "create_engine", create_engine)


class Gates:
    """Calls to *fake* meta that it answers only once a number of them wait at once."""

    def __init__(self, fake: FakeMeta) -> None:
        self.gates: dict[str, threading.Barrier] = {}
        fake.app.before_request(self._wait)

    def hold(self, path: str, parties: int, pool: Callable[[], int]) -> list[int]:
        """Answer calls to *path* only once *parties* of them wait at once (or after
        :data:`GATHER`); the returned list gets the connections checked out of the
        service's pool at that moment, if they all came."""
        seen: list[int] = []
        self.gates[path] = threading.Barrier(parties, action=lambda: seen.append(pool()))
        return seen

    def _wait(self) -> None:
        for path, gate in self.gates.items():
            if request.path.startswith(path):
                try:
                    gate.wait(timeout=GATHER)
                except threading.BrokenBarrierError:
                    gate.reset()


@pytest.fixture
def fake() -> FakeMeta:
    return FakeMeta()


@pytest.fixture
def gates(fake: FakeMeta) -> Gates:
    return Gates(fake)


@pytest.fixture
def service(tmp_path: Path, fake: FakeMeta, postgres_url: str, small_pool: None) -> Iterator[Any]:
    app = build_service(tmp_path, fake, database_url=postgres_url)
    yield app
    app.extensions["srcore"].db.dispose()


def checked_out(app: Any) -> Callable[[], int]:
    pool = app.extensions["srcore"].db.engine.pool
    return lambda: int(pool.checkedout())


def test_a_burst_of_new_users_larger_than_the_pool_is_served(
    service: Any, fake: FakeMeta, gates: Gates
) -> None:
    users = range(500, 500 + BURST)
    for uid in users:
        fake.add_user(uid, f"u{uid}")
    # The keys and the service's own token are fetched before the burst.
    warm = fake.token(user_id=None, audience="sample", scope="sample/things:RO")
    assert service.test_client().get("/api/things", headers=bearer(warm)).status_code == 200
    seen = gates.hold("/api/users/", BURST, checked_out(service))

    def newcomer(uid: int) -> tuple[int, Any]:
        token = fake.token(user_id=uid, audience="sample", scope="sample/things:RO")
        answer = service.test_client().get("/api/whoami", headers=bearer(token))
        return answer.status_code, answer.get_json()

    with ThreadPoolExecutor(max_workers=BURST) as pool:
        answers = list(pool.map(newcomer, users))
    assert answers == [(200, {"user": f"u{uid}"}) for uid in users]
    # Every request waited for meta at once, and none held a connection meanwhile.
    assert seen == [0]


def test_a_request_lets_go_of_its_connection_unless_it_wrote(
    service: Any, fake: FakeMeta, gates: Gates
) -> None:
    """A GET's session cannot write, so it lets go whatever it read before. A POST's
    keeps one transaction for the whole request: one that read the token's user first
    has written nothing and is ended for the call to meta; one that wrote before keeps
    its connection, and its write stays its own (here undone, as the view refuses)."""
    import sample_service

    import srcore

    @service.get("/api/read-first")
    @srcore.oauth("sample/things:RO")
    def read_first() -> Any:
        things = srcore.db.session.scalars(sa.select(sample_service.Thing)).all()
        return {"user": srcore.current_user.username, "things": len(things)}

    @service.post("/api/first-sight")
    @srcore.oauth("sample/things:RW")
    def first_sight() -> Any:
        user = srcore.current_user
        srcore.db.session.add(sample_service.Thing(name=f"by {user.username}"))
        srcore.db.session.commit()
        return {"user": user.username}

    @service.post("/api/wrote-first")
    @srcore.oauth("sample/things:RW")
    def wrote_first() -> Any:
        srcore.db.session.add(sample_service.Thing(name="written before"))
        srcore.db.session.flush()
        abort(409, f"{srcore.current_user.username} may not write this.")

    fake.add_user(599, "reader")
    fake.add_user(600, "clean")
    fake.add_user(601, "dirty")
    seen = gates.hold("/api/users/", 1, checked_out(service))
    client = service.test_client()
    token = fake.token(user_id=599, audience="sample", scope="sample/things:RO")
    answer = client.get("/api/read-first", headers=bearer(token))
    assert (answer.status_code, answer.get_json()) == (200, {"user": "reader", "things": 0})
    token = fake.token(user_id=600, audience="sample", scope="sample/things:RW")
    answer = client.post("/api/first-sight", headers=bearer(token))
    assert (answer.status_code, answer.get_json()) == (200, {"user": "clean"})
    token = fake.token(user_id=601, audience="sample", scope="sample/things:RW")
    assert client.post("/api/wrote-first", headers=bearer(token)).status_code == 409
    assert seen == [0, 0, 1]
    with service.extensions["srcore"].db.transaction() as db:
        names = db.scalars(sa.select(sample_service.Thing.name)).all()
        known = db.scalars(sa.select(sample_service.User.username).order_by("id")).all()
    assert names == ["by clean"]
    assert known == ["reader", "clean", "dirty"]


def test_the_login_callback_holds_no_connection_while_it_asks_meta(
    service: Any, fake: FakeMeta, gates: Gates
) -> None:
    """Even when something read the database before the callback's view (a hook of the
    service's, here), the code exchange and the profile wait with no connection held."""
    import srcore

    @service.before_request
    def banner() -> None:
        srcore.db.session.execute(sa.select(1))

    fake.add_user(42, "alice")
    fake.logged_in = 42
    seen = gates.hold("/oauth/token", 1, checked_out(service))
    seen_profile = gates.hold("/api/profile", 1, checked_out(service))
    client = service.test_client()
    location = client.get("/private").headers["Location"]
    params = {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}
    answer = fake.app.test_client().get("/oauth/authorize", query_string=params)
    back = urlsplit(answer.headers["Location"])
    assert client.get(f"{back.path}?{back.query}").status_code == 302
    assert client.get("/private").get_data(as_text=True) == "hello alice"
    assert (seen, seen_profile) == ([0], [0])


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
