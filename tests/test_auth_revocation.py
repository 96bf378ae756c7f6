"""Revocations: the store's semantics, meta's events and the pull.

The fan-out between processes over Redis: test_auth_revocation_fanout.py.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from fake_meta import META, FakeMeta, build_service
from joserfc.jwk import KeySet

from srcore.auth import jose
from srcore.auth.revocation import (
    MemoryRevocationStore,
    RevocationEvent,
    RevocationPuller,
    RevocationStore,
    RevocationUnavailable,
    make_store,
    parse_events,
    state_of,
)
from srcore.auth.tokens import AccessToken

NOW = int(time.time())


@pytest.fixture(autouse=True)
def _now() -> None:
    """Each test's NOW is when it starts: a slow, parallel run may start minutes after import."""
    global NOW
    NOW = int(time.time())


def token(
    *,
    user: int | None = 7,
    client: str = "app",
    iat: int | None = None,
    grant: str | None = None,
    jti: str = "j1",
) -> AccessToken:
    claims: dict[str, Any] = {"grant": grant} if grant else {}
    return AccessToken(
        subject=user,
        client_id=client,
        scopes=frozenset(),
        expires_at=NOW + 3600,
        issued_at=NOW - 10 if iat is None else iat,
        jti=jti,
        hash="h",
        claims=claims,
    )


def ev(seq: int, kind: str, subject: str, nb: int | None = None, exp: int | None = None) -> Any:
    return RevocationEvent(seq, kind, subject, nb, exp)


@pytest.fixture
def store() -> RevocationStore:
    return make_store()


def test_nothing_revoked_at_first(store: RevocationStore) -> None:
    assert not store.is_revoked(token())
    assert store.session_valid(7, time.time())
    assert store.last_seq == 0
    assert store.user_not_before(7) is None


def test_token_event_revokes_that_jti_only(store: RevocationStore) -> None:
    store.apply([ev(1, "token", "j1", exp=NOW + 100)])
    assert store.is_revoked(token(jti="j1"))
    assert not store.is_revoked(token(jti="j2"))
    assert store.last_seq == 1


def test_expired_token_event_is_not_kept(store: RevocationStore) -> None:
    store.apply([ev(1, "token", "j1", exp=NOW - 100)])
    assert not store.is_revoked(token(jti="j1"))
    assert store.last_seq == 1


def test_grant_event_revokes_every_token_of_the_grant(store: RevocationStore) -> None:
    store.apply([ev(3, "grant", "g1", exp=NOW + 100)])
    assert store.is_revoked(token(grant="g1", jti="a"))
    assert store.is_revoked(token(grant="g1", jti="b", user=None))
    assert not store.is_revoked(token(grant="g2"))
    assert not store.is_revoked(token())


def test_client_event_revokes_tokens_issued_before(store: RevocationStore) -> None:
    store.apply([ev(1, "client", "app", nb=NOW)])
    assert store.is_revoked(token(client="app", iat=NOW - 1))
    # same second: kept, as at meta (iat < not_before); it may come after the cut-off
    assert not store.is_revoked(token(client="app", iat=NOW))
    assert not store.is_revoked(token(client="app", iat=NOW + 1))
    assert not store.is_revoked(token(client="other", iat=NOW - 1))


def test_user_event_revokes_tokens_and_sessions_before(store: RevocationStore) -> None:
    store.apply([ev(1, "user", "7", nb=NOW)])
    assert store.is_revoked(token(user=7, iat=NOW - 5))
    assert not store.is_revoked(token(user=7, iat=NOW + 1))
    assert not store.is_revoked(token(user=8, iat=NOW - 5))
    assert not store.is_revoked(token(user=None, iat=NOW - 5))
    assert not store.session_valid(7, NOW - 5.5)
    assert not store.session_valid(7, NOW + 0.9)
    assert not store.session_valid(7, None)  # a session from before login times
    assert store.session_valid(7, NOW + 1.0)
    assert store.session_valid(8, NOW - 5)
    assert store.user_not_before(7) == NOW


def test_session_event_leaves_tokens_alone(store: RevocationStore) -> None:
    store.apply([ev(1, "session", "7", nb=NOW)])
    assert not store.is_revoked(token(user=7, iat=NOW - 5))
    assert not store.session_valid(7, NOW - 5)
    assert store.user_not_before(7) == NOW


def test_not_before_only_moves_forward(store: RevocationStore) -> None:
    store.apply([ev(2, "user", "7", nb=NOW)])
    store.apply([ev(1, "user", "7", nb=NOW - 100)])
    assert store.is_revoked(token(user=7, iat=NOW - 50))
    assert store.last_seq == 2


def test_suspension_follows_the_latest_seq(store: RevocationStore) -> None:
    store.apply([ev(1, "suspend", "7")])
    assert store.is_revoked(token(user=7, iat=NOW + 100))
    assert not store.session_valid(7, NOW + 100)
    store.apply([ev(2, "unsuspend", "7")])
    assert not store.is_revoked(token(user=7, iat=NOW + 100))
    assert store.session_valid(7, NOW + 100)
    # A late copy of the suspension (a push racing a pull) changes nothing.
    store.apply([ev(1, "suspend", "7")])
    assert store.session_valid(7, NOW + 100)
    store.apply([ev(5, "suspend", "7"), ev(4, "unsuspend", "7")])
    assert not store.session_valid(7, NOW + 100)


def test_applying_twice_is_harmless(store: RevocationStore) -> None:
    events = [ev(1, "token", "j1", exp=NOW + 60), ev(2, "user", "7", nb=NOW)]
    store.apply(events)
    store.apply(events)
    assert store.last_seq == 2
    assert store.is_revoked(token(jti="j1", user=None))


def test_make_store_is_in_process() -> None:
    """Every process checks its own store; Redis only carries pushes (the fan-out)."""
    assert isinstance(make_store(), MemoryRevocationStore)
    assert make_store() is not make_store()


@pytest.mark.parametrize(
    "bad",
    [
        {"seq": -1, "kind": "token", "subject": "x"},
        {"seq": True, "kind": "token", "subject": "x"},
        {"seq": 1, "kind": "nuke", "subject": "x"},
        {"seq": 1, "kind": "token", "subject": ""},
        {"seq": 1, "kind": "token", "subject": 5},
        {"seq": 1, "kind": "user", "subject": "7"},
        {"seq": 1, "kind": "token", "subject": "x", "expires_at": "soon"},
        "event",
    ],
)
def test_bad_events_are_refused(bad: Any) -> None:
    with pytest.raises(ValueError, match="event"):
        parse_events([bad])


def test_events_must_be_a_list() -> None:
    with pytest.raises(ValueError, match="list"):
        parse_events({"seq": 1})


# -- the pull ---------------------------------------------------------------------------


class FakeFeed:
    def __init__(self, count: int, page: int = 3) -> None:
        self.events = [ev(n, "token", f"j{n}", exp=NOW + 60) for n in range(1, count + 1)]
        self.page = page
        self.asked: list[int] = []

    def __call__(self, since: int) -> tuple[list[RevocationEvent], int]:
        self.asked.append(since)
        batch = [e for e in self.events if e.seq > since][: self.page]
        return batch, batch[-1].seq if batch else since


def test_pull_catches_up_page_by_page() -> None:
    store, feed = MemoryRevocationStore(), FakeFeed(7)
    puller = RevocationPuller(store, feed, interval=30)
    assert puller.pull_once() == 7
    assert feed.asked == [0, 3, 6, 7]
    assert store.last_seq == 7
    assert puller.pull_once() == 0
    feed.events.append(ev(8, "user", "7", nb=NOW))
    assert puller.pull_once() == 1
    assert not store.session_valid(7, NOW - 1)


def test_pull_thread_starts_lazily_once_per_process() -> None:
    store, feed = MemoryRevocationStore(), FakeFeed(2)
    puller = RevocationPuller(store, feed, interval=0.05)
    assert puller._thread is None
    puller.ensure_started()
    first = puller._thread
    puller.ensure_started()
    assert puller._thread is first
    deadline = time.monotonic() + 5
    while store.last_seq < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    feed.events.append(ev(3, "token", "late", exp=NOW + 60))
    while store.last_seq < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    puller.stop()
    assert store.last_seq == 3


def test_pull_thread_survives_meta_errors() -> None:
    store = MemoryRevocationStore()
    calls: list[int] = []

    def flaky(since: int) -> tuple[list[RevocationEvent], int]:
        calls.append(since)
        if len(calls) < 3:
            raise ConnectionError("meta down")
        return [ev(1, "token", "x", exp=NOW + 60)], 1

    puller = RevocationPuller(store, flaky, interval=0.01)
    puller.ensure_started()
    deadline = time.monotonic() + 5
    while store.last_seq < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    puller.stop()
    assert store.last_seq == 1


def test_pull_from_meta_with_client_auth() -> None:
    from srcore.auth.oauth_client import MetaClient, MetaRefused

    fake = FakeMeta()
    fake.add_event("token", "j1", expires_at=NOW + 60)
    fake.add_event("user", "7", not_before=NOW)
    client = MetaClient(META, client_id="sample", client_secret="s3cret", http=fake.session())
    events, last = client.revocations(0)
    assert [e.kind for e in events] == ["token", "user"] and last == 2
    assert client.revocations(2) == ([], 2)
    wrong = MetaClient(META, client_id="sample", client_secret="nope", http=fake.session())
    with pytest.raises(MetaRefused):
        wrong.revocations(0)


# -- meta's events (webhooks) ----------------------------------------------------------


def test_derived_secret_is_pairwise_and_stable() -> None:
    from srcore.signatures import decode_secret
    from srcore.webhooks import derive_secret

    secret = derive_secret("s3cret", "sample")
    assert secret.startswith("whsec_") and len(decode_secret(secret)) == 32
    assert secret == derive_secret("s3cret", "sample")
    assert secret != derive_secret("s3cret", "todo")
    assert secret != derive_secret("other", "sample")
    with pytest.raises(ValueError, match="client secret"):
        derive_secret("", "sample")


@pytest.fixture
def fake() -> FakeMeta:
    return FakeMeta()


@pytest.fixture
def service(tmp_path: Any, fake: FakeMeta) -> Iterator[Any]:
    app = build_service(tmp_path, fake)
    yield app
    app.extensions["srcore"].db.dispose()


def _post(client: Any, message: tuple[dict[str, str], bytes] | str | bytes) -> Any:
    if isinstance(message, tuple):
        headers, body = message
        return client.post("/_srcore/events", data=body, headers=headers)
    return client.post("/_srcore/events", data=message, content_type="application/json")


def test_push_receiver_applies_events(service: Any, fake: FakeMeta) -> None:
    client = service.test_client()
    tok = fake.token(user_id=None, audience="sample", scope="sample/things:RO")
    ok = client.get("/api/things", headers={"Authorization": f"Bearer {tok}"})
    assert ok.status_code == 200
    jti = jose.decode(tok, KeySet([fake.key])).claims["jti"]
    response = _post(
        client,
        fake.push(
            [
                {
                    "seq": 4,
                    "kind": "token",
                    "subject": jti,
                    "not_before": None,
                    "expires_at": NOW + 3600,
                }
            ]
        ),
    )
    assert response.status_code == 204
    refused = client.get("/api/things", headers={"Authorization": f"Bearer {tok}"})
    assert refused.status_code == 401
    assert "revoked" in refused.get_json()["errors"][0]["reason"]
    assert service.extensions["srcore"].identity.store.last_seq == 4


@pytest.mark.parametrize(
    ("case", "status"),
    [
        ("wrong secret", 401),
        ("another service's secret", 401),
        ("too old", 401),
        ("unsigned", 401),
        ("a 400-digit timestamp", 401),
        ("a timestamp in other digits", 401),
        ("not json", 400),
        ("bad events", 400),
        ("no events", 400),
        ("no data", 400),
    ],
)
def test_event_receiver_refuses_with_the_error_body(
    service: Any, fake: FakeMeta, case: str, status: int
) -> None:
    from srcore.webhooks import derive_secret

    good = [{"seq": 1, "kind": "token", "subject": "j"}]
    message = {
        "wrong secret": lambda: fake.push(good, secret=derive_secret("guess", "sample")),
        "another service's secret": lambda: fake.push(good, service_id="todo"),
        "too old": lambda: fake.push(good, timestamp=int(time.time()) - 3600),
        "unsigned": lambda: b'{"type": "revocation:issued", "data": {"events": []}}',
        "a 400-digit timestamp": lambda: _timestamped(fake.push(good), "9" * 400),
        "a timestamp in other digits": lambda: _timestamped(fake.push(good), "\uff11" * 10),
        "not json": lambda: _signed(fake, b"\x00\xff garbage"),
        "bad events": lambda: fake.push([{"seq": "x", "kind": "token", "subject": "j"}]),
        "no events": lambda: fake.webhook("revocation:issued", {}),
        "no data": lambda: fake.webhook("revocation:issued", None),
    }[case]()
    response = _post(service.test_client(), message)
    assert response.status_code == status
    assert response.get_json()["errors"][0]["reason"]
    assert service.extensions["srcore"].identity.store.last_seq == 0


def _timestamped(
    message: tuple[dict[str, str], bytes], timestamp: str
) -> tuple[dict[str, str], bytes]:
    headers, body = message
    return {**headers, "webhook-timestamp": timestamp}, body


def _signed(fake: FakeMeta, body: bytes) -> tuple[dict[str, str], bytes]:
    from srcore.signatures import derive_secret, sign

    headers, _ = fake.push([])
    when = int(headers["webhook-timestamp"])
    key = derive_secret(fake.client_secret, "sample")
    headers["webhook-signature"] = sign(key, headers["webhook-id"], when, body)
    return headers, body


def test_events_need_no_csrf_token_but_forms_still_do(service: Any, fake: FakeMeta) -> None:
    service.config["WTF_CSRF_ENABLED"] = True
    client = service.test_client()
    assert _post(client, fake.push([])).status_code == 204
    assert client.post("/form", data={"x": "1"}).status_code == 400


def test_unknown_event_types_are_accepted_and_ignored(service: Any, fake: FakeMeta) -> None:
    assert _post(service.test_client(), fake.webhook("user:suspended", {})).status_code == 204


def test_old_push_routes_are_gone(service: Any) -> None:
    client = service.test_client()
    for path in ("/_srcore/revocations", "/_srcore/profile"):
        assert client.post(path, data="x", content_type="application/jwt").status_code == 404


def test_profile_event_updates_known_users_only(service: Any, fake: FakeMeta) -> None:
    from srcore.testing import create_user

    create_user(service, "alice", id=41)
    client = service.test_client()
    profile = fake.add_user(41, "alice2", bio="hi", email="new@example.org")
    stranger = fake.add_user(42, "bob")
    assert _post(client, fake.webhook("profile:updated", profile)).status_code == 204
    assert _post(client, fake.webhook("profile:updated", stranger)).status_code == 204
    st = service.extensions["srcore"]
    with st.db.transaction() as db:
        row = db.get(st.user_model, 41)
        assert (row.username, row.email, row.bio) == ("alice2", "new@example.org", "hi")
        assert db.get(st.user_model, 42) is None
    bad = _post(client, fake.webhook("profile:updated", {"id": "x"}))
    assert bad.status_code == 400
    assert _post(client, "nope").status_code == 401


def test_user_event_logs_web_sessions_out(service: Any, fake: FakeMeta) -> None:
    from srcore.testing import create_user

    create_user(service, "carol", id=51)
    client = service.test_client()
    with service.test_request_context():
        pass
    with client.session_transaction() as session:
        session["_uid"] = 51
        session["_at"] = time.time() - 10
    assert client.get("/private").status_code == 200
    now = int(time.time())
    pushed = fake.push([{"seq": 1, "kind": "user", "subject": "51", "not_before": now}])
    assert _post(client, pushed).status_code == 204
    response = client.get("/private")
    assert response.status_code == 302  # logged out: sent to log in again
    assert response.headers["Location"].startswith(f"{META}/oauth/authorize?")


def test_suspension_event_ends_sessions_and_tokens(service: Any, fake: FakeMeta) -> None:
    from srcore.testing import create_user

    create_user(service, "dave", id=61)
    client = service.test_client()
    with client.session_transaction() as session:
        session["_uid"] = 61
        session["_at"] = time.time() + 5
    tok = fake.token(user_id=61, audience="sample", scope="sample/things:RO")
    auth = {"Authorization": f"Bearer {tok}"}
    assert client.get("/api/whoami", headers=auth).get_json() == {"user": "dave"}
    assert (
        _post(client, fake.push([{"seq": 1, "kind": "suspend", "subject": "61"}])).status_code
        == 204
    )
    assert client.get("/api/whoami", headers=auth).status_code == 401
    assert client.get("/private").status_code == 302


def test_tokens_of_an_unconfirmed_account_are_refused(service: Any, fake: FakeMeta) -> None:
    """An unconfirmed account may hold someone else's address: its tokens do nothing."""
    from srcore.testing import create_user

    create_user(service, "erin", id=71)
    client = service.test_client()
    tok = fake.token(user_id=71, audience="sample", scope="sample/things:RO")
    auth = {"Authorization": f"Bearer {tok}"}
    assert client.get("/api/whoami", headers=auth).get_json() == {"user": "erin"}
    profile = fake.add_user(71, "erin", user_type="unconfirmed")
    assert _post(client, fake.webhook("profile:updated", profile)).status_code == 204
    refused = client.get("/api/whoami", headers=auth)
    assert refused.status_code == 403
    assert "confirm" in refused.get_data(as_text=True)


def test_a_new_process_checks_after_its_first_pull() -> None:
    """A restarted worker knows no revocation until it has pulled: its first check waits
    for that pull rather than let a revoked token through."""
    store, feed = MemoryRevocationStore(), FakeFeed(0)
    feed.events.append(ev(1, "token", "revoked", exp=NOW + 60))
    release = threading.Event()

    def slow_meta(since: int) -> tuple[list[RevocationEvent], int]:
        release.wait(5)
        return feed(since)

    puller = RevocationPuller(store, slow_meta, interval=3600)
    store.first_check = puller.first_pull
    threading.Timer(0.2, release.set).start()
    try:
        assert store.is_revoked(token(jti="revoked"))
        assert store.first_check is None  # later checks wait for nothing
    finally:
        puller.stop()


def test_checks_refuse_until_a_first_pull_has_read_the_list() -> None:
    """meta down when a worker starts: the worker knows no revocation, so its checks are
    unavailable (503) rather than let a revoked token through; once meta answers a pull
    they check again."""
    store = MemoryRevocationStore()
    up = threading.Event()
    feed = FakeFeed(0)
    feed.events.append(ev(1, "token", "revoked", exp=NOW + 60))

    def meta(since: int) -> tuple[list[RevocationEvent], int]:
        if not up.is_set():
            raise ConnectionError("meta down")
        return feed(since)

    puller = RevocationPuller(store, meta, interval=3600)
    store.first_check = puller.first_pull
    try:
        with pytest.raises(RevocationUnavailable):
            store.is_revoked(token(jti="revoked"))
        with pytest.raises(RevocationUnavailable):
            store.session_valid(7, NOW)
        up.set()
        puller.wake()
        deadline = threading.Event()
        for _ in range(100):  # bounded: the woken thread pulls at once
            if puller.pulls:
                break
            deadline.wait(0.05)
        assert store.is_revoked(token(jti="revoked"))
        assert store.first_check is None
    finally:
        puller.stop()


def test_without_rounds_a_process_still_pulls_when_it_starts() -> None:
    """0s: no rounds, but a process (a restarted worker, a new host) reads meta's list
    before its first check, or it would take a token revoked before it started for a
    good one."""
    store, feed = MemoryRevocationStore(), FakeFeed(1)
    puller = RevocationPuller(store, feed, interval=0)
    store.first_check = puller.first_pull
    try:
        assert store.is_revoked(token(jti="j1"))
        assert feed.asked == [0, 1]  # the event, then nothing after it
        # No round follows; a wake (a Redis subscription starting again) pulls once more.
        puller.wake()
        deadline = threading.Event()
        for _ in range(100):
            if len(feed.asked) > 2:
                break
            deadline.wait(0.05)
        assert len(feed.asked) > 2
    finally:
        puller.stop()


def test_a_service_that_pulls_refuses_a_revoked_token_on_its_first_request(
    tmp_path: Any, fake: FakeMeta
) -> None:
    app = build_service(tmp_path, fake, global_extra="revocation-pull-interval = 1h\n")
    try:
        tok = fake.token(user_id=None, audience="sample", scope="sample/things:RO")
        jti = jose.decode(tok, KeySet([fake.key])).claims["jti"]
        fake.add_event("token", jti, expires_at=NOW + 600)  # revoked before this process
        puller = state_of(app).link.puller
        fetch = puller.fetch

        def slow_meta(since: int) -> tuple[list[RevocationEvent], int]:
            time.sleep(0.3)  # the request comes first
            return fetch(since)

        puller.fetch = slow_meta
        answer = app.test_client().get("/api/things", headers={"Authorization": f"Bearer {tok}"})
        assert answer.status_code == 401
    finally:
        state_of(app).stop()
        app.extensions["srcore"].db.dispose()


# -- The pull's own place: pushes ahead of it, events committed out of order ------------------


class MetaList:
    """meta's list of revocations as its pull endpoint pages through it (3 to a page)."""

    def __init__(self) -> None:
        self.events: list[RevocationEvent] = []
        self.asked: list[int] = []

    def __call__(self, since: int) -> tuple[list[RevocationEvent], int]:
        self.asked.append(since)
        found = sorted((e for e in self.events if e.seq > since), key=lambda e: e.seq)[:3]
        return found, max((e.seq for e in self.events), default=0)


def test_a_push_newer_than_a_missed_one_does_not_hide_it() -> None:
    """Without Redis meta's push reaches one process of a service. Token *lost* was
    revoked at seq 2, pushed to another process; seq 3 was pushed here. The pull still
    reads seq 2: the token is refused here too."""
    store, meta = MemoryRevocationStore(), MetaList()
    puller = RevocationPuller(store, meta, interval=30)
    meta.events.append(ev(1, "token", "old", exp=NOW + 600))
    puller.pull_once()
    meta.events += [ev(2, "token", "lost", exp=NOW + 600), ev(3, "token", "here", exp=NOW + 600)]
    store.apply([meta.events[2]])  # the push that reached this process
    puller.pull_once()
    assert store.is_revoked(token(jti="lost"))


def test_an_event_committed_after_a_later_one_is_read_when_it_shows_up() -> None:
    """meta numbers a revocation when its transaction writes it: seq 2 may commit after
    seq 3 was already pulled. The gap is read again until it fills."""
    store, meta = MemoryRevocationStore(), MetaList()
    puller = RevocationPuller(store, meta, interval=30)
    meta.events += [ev(1, "token", "a", exp=NOW + 600), ev(3, "token", "c", exp=NOW + 600)]
    puller.pull_once()
    assert not store.is_revoked(token(jti="late"))
    meta.events.append(ev(2, "token", "late", exp=NOW + 600))  # its transaction commits now
    assert puller.pull_once() == 1
    assert store.is_revoked(token(jti="late"))
    assert puller.pull_once() == 0  # filled: read from the last one on again


def test_a_number_that_never_shows_up_is_given_up(monkeypatch: pytest.MonkeyPatch) -> None:
    """A transaction that rolled back used its number up for good: after ``hole_wait`` the
    pull reads from its own place again, not from below the gap forever."""
    clock = [1000.0]
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])
    store, meta = MemoryRevocationStore(), MetaList()
    puller = RevocationPuller(store, meta, interval=30)
    meta.events += [ev(1, "token", "a", exp=NOW + 600), ev(3, "token", "c", exp=NOW + 600)]
    puller.pull_once()
    meta.asked.clear()
    puller.pull_once()
    assert meta.asked[0] == 1  # below the gap at 2
    clock[0] += puller.hole_wait
    meta.asked.clear()
    puller.pull_once()
    assert meta.asked[0] == 2  # from the last event pulled (checked there), past the gap


def test_a_jump_in_numbering_is_not_a_thousand_gaps() -> None:
    store, meta = MemoryRevocationStore(), MetaList()
    puller = RevocationPuller(store, meta, interval=30)
    meta.events += [ev(1, "token", "a", exp=NOW + 600), ev(5000, "token", "b", exp=NOW + 600)]
    puller.pull_once()
    meta.asked.clear()
    puller.pull_once()
    assert meta.asked == [4999]


def test_a_gap_further_back_than_a_page_is_no_restore(caplog: pytest.LogCaptureFixture) -> None:
    """meta's ``last`` is where its page ends, not its newest seq. With a gap still open more
    than a page below the last event pulled, the page read from the gap does not reach it:
    that is no sign of a restore. The pull used to take it for one every round, reading
    meta's whole list again (and finding the gap again, so for good)."""
    store, feed = MemoryRevocationStore(), FakeFeed(10)
    feed.events.pop(1)  # seq 2: a transaction that rolled back, or one not committed yet
    puller = RevocationPuller(store, feed, interval=30)
    rewound: list[bool] = []
    puller.rewind_listeners.append(lambda: rewound.append(True))
    assert puller.pull_once() == 9
    with caplog.at_level("WARNING", logger="srcore.auth"):
        assert puller.pull_once() == 0
        assert puller.pull_once() == 0
    assert rewound == []
    assert "restored" not in caplog.text
    feed.events.insert(1, ev(2, "token", "late", exp=NOW + 600))  # seq 2 commits after all
    assert puller.pull_once() == 1
    assert store.is_revoked(token(jti="late"))


def test_a_page_from_a_gap_ending_at_the_last_event_pulled_is_read_past() -> None:
    """A round reading from an open gap whose page (full) ends exactly at the last event
    pulled goes on to the newer events: it used to stop there, and each round read the same
    page until the gap was given up, 5 minutes in which no new revocation was pulled."""
    store, feed = MemoryRevocationStore(), FakeFeed(5)
    feed.events.pop(1)  # seq 2 never shows up (its transaction rolled back)
    puller = RevocationPuller(store, feed, interval=30)
    assert puller.pull_once() == 4
    feed.events.append(ev(6, "token", "new", exp=NOW + 600))
    assert puller.pull_once() == 1
    assert store.is_revoked(token(jti="new"))
