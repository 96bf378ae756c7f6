"""Write rate limits (srcore.ratelimit): every POST, PUT, PATCH and DELETE counted per
user, client or address, a 429 with Retry-After past the limit, and nothing written.

``limits`` stamps its entries with :func:`time.time`, so the tests stop and move that
clock; the limits are tiny so that no test makes more than a handful of requests.
"""

from __future__ import annotations

import contextlib
import logging
import math
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from srcore.config import ConfigError
from srcore.ratelimit import exempt, parse_limits, write_limit, write_limits
from srcore.testing import TEST_ISSUER, create_user, log_in_client, require_or_skip

REDIS_URL = "redis://127.0.0.1:6379/0"
SCOPE = "sample/things:RW"


_built: list[Any] = []


@pytest.fixture(autouse=True)
def _dispose_built() -> Any:
    """Close the database pools of the apps a test built."""
    yield
    while _built:
        _built.pop().extensions["srcore"].db.dispose()


def build(
    app: Any,
    signing_key: Any,
    tmp_path: Path,
    *,
    global_lines: str = "",
    service_lines: str = "",
) -> Any:
    """The sample service again, on *app*'s migrated database, with *global_lines* added
    to ``[global]`` (after the test config's ``write-rate-limit = off``, so they win) and
    *service_lines* to ``[sample]``."""
    import sample_service
    from joserfc.jwk import KeySet

    from srcore.auth.tokens import StaticKeySource, TokenVerifier

    st = app.extensions["srcore"]
    text = Path(st.config.path).read_text(encoding="utf-8")
    text = text.replace("write-rate-limit = off\n", "", 1)
    text = text.replace("[global]\n", "[global]\n" + global_lines, 1)
    text = text.replace("[sample]\n", "[sample]\n" + service_lines, 1)
    path = tmp_path / f"config-{uuid.uuid4().hex[:8]}.ini"
    path.write_text(text, encoding="utf-8")
    verifier = TokenVerifier(
        keys=StaticKeySource(KeySet([signing_key])), issuer=TEST_ISSUER, audience="sample"
    )
    built = sample_service.create_app(config=path, token_verifier=verifier)
    built.config.update(TESTING=True, WTF_CSRF_ENABLED=False)
    _built.append(built)
    return built


def _redis_up() -> bool:
    import redis

    try:
        return bool(redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1).ping())
    except redis.RedisError:
        return False


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The clock ``limits`` reads, stopped; a test moves it by adding to ``clock[0]``."""
    now = [time.time()]
    monkeypatch.setattr(time, "time", lambda: now[0])
    return now


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def things(app: Any) -> int:
    import sample_service

    with app.extensions["srcore"].db.transaction() as session:
        return int(session.scalar(select(func.count()).select_from(sample_service.Thing)))


def create(client: Any, headers: dict[str, str], name: str = "t") -> Any:
    return client.post("/api/things", json={"name": name}, headers=headers)


def test_a_user_over_the_limit_gets_429_and_nothing_is_written(
    app: Any, srcore_signing_key: Any, make_token: Any, tmp_path: Path, clock: list[float]
) -> None:
    limited = build(
        app, srcore_signing_key, tmp_path, service_lines="write-rate-limit = 2/minute\n"
    )
    alice, bob = create_user(limited, "alice"), create_user(limited, "bob")
    client = limited.test_client()
    as_alice = bearer(make_token(SCOPE, user=alice))
    assert [create(client, as_alice).status_code for _ in range(2)] == [201, 201]
    clock[0] += 20
    refused = create(client, as_alice, "one too many")
    assert refused.status_code == 429
    # The oldest write leaves the window once 40 seconds have passed.
    assert refused.headers["Retry-After"] == "41"
    message = refused.get_json()["errors"][0]["reason"]
    assert "at most 2" in message and "per minute" in message and "one account" in message
    assert things(limited) == 2
    # Another user is not slowed by alice.
    assert create(client, bearer(make_token(SCOPE, user=bob))).status_code == 201
    # Once the window has passed, alice writes again.
    clock[0] += 39
    assert create(client, as_alice).status_code == 429
    clock[0] += 2
    assert create(client, as_alice).status_code == 201
    assert things(limited) == 4


def test_every_token_and_the_session_of_a_user_share_one_count(
    app: Any, srcore_signing_key: Any, make_token: Any, tmp_path: Path, clock: list[float]
) -> None:
    limited = build(app, srcore_signing_key, tmp_path, service_lines="write-rate-limit = 3/hour\n")
    alice = create_user(limited, "alice")
    api = limited.test_client()
    assert create(api, bearer(make_token(SCOPE, user=alice))).status_code == 201
    assert create(api, bearer(make_token(SCOPE, user=alice))).status_code == 201
    browser = log_in_client(limited.test_client(), alice)
    form = {"url": "https://hooks.example.org/a", "events": "thing:created"}
    assert browser.post("/webhooks/new", data=form).status_code == 201
    page = browser.post("/webhooks/new", data={**form, "url": "https://hooks.example.org/b"})
    assert page.status_code == 429
    assert page.mimetype == "text/html" and int(page.headers["Retry-After"]) == 3601
    assert "Too many changes" in page.get_data(as_text=True)
    assert create(api, bearer(make_token(SCOPE, user=alice))).status_code == 429
    assert things(limited) == 2
    listed = browser.get("/webhooks").get_data(as_text=True)
    assert "hooks.example.org/a" in listed and "hooks.example.org/b" not in listed


def test_a_copy_of_a_logged_out_cookie_spends_nothing_of_the_users_count(
    app: Any, srcore_signing_key: Any, tmp_path: Path, clock: list[float]
) -> None:
    """Writes sent with a cookie logged out since (a copy kept by someone else) are
    counted by address: replaying it must not use up the user's allowance."""
    limited = build(app, srcore_signing_key, tmp_path, service_lines="write-rate-limit = 2/hour\n")
    alice = create_user(limited, "alice")
    browser = log_in_client(limited.test_client(), alice)
    name = limited.session_interface.get_cookie_name(limited)
    copied = browser.get_cookie(name).value
    assert browser.post("/logout").status_code == 302
    copy = limited.test_client()
    form = {"url": "https://hooks.example.org/a", "events": "thing:created"}
    for _ in range(3):
        copy.set_cookie(name, copied)
        answer = copy.post("/webhooks/new", data=form, environ_base={"REMOTE_ADDR": "192.0.2.7"})
        assert answer.status_code != 201
    log_in_client(browser, alice)
    made = [browser.post("/webhooks/new", data=form).status_code for _ in range(3)]
    assert made == [201, 201, 429]


def test_a_client_acting_for_no_user_is_counted_as_itself(
    app: Any, srcore_signing_key: Any, make_token: Any, tmp_path: Path, clock: list[float]
) -> None:
    limited = build(
        app, srcore_signing_key, tmp_path, service_lines="write-rate-limit = 1/minute\n"
    )
    alice = create_user(limited, "alice")
    client = limited.test_client()
    service = bearer(make_token(SCOPE))  # client credentials: no user
    assert create(client, service).status_code == 201
    refused = create(client, service)
    assert refused.status_code == 429 and "one application" in refused.get_data(as_text=True)
    assert create(client, bearer(make_token(SCOPE, user=alice))).status_code == 201


def test_anonymous_writes_are_counted_by_address(
    app: Any, srcore_signing_key: Any, tmp_path: Path, clock: list[float]
) -> None:
    limited = build(
        app, srcore_signing_key, tmp_path, service_lines="write-rate-limit = 2/minute\n"
    )
    client = limited.test_client()

    def post(address: str) -> int:
        return int(client.post("/form", environ_base={"REMOTE_ADDR": address}).status_code)

    assert [post("192.0.2.1") for _ in range(3)] == [200, 200, 429]
    assert post("192.0.2.2") == 200
    # One IPv6 subscriber usually holds a whole /64: its addresses count together.
    assert [post("2001:db8:1:2::1"), post("2001:db8:1:2::ffff")] == [200, 200]
    assert [post("2001:db8:1:2:abcd::9"), post("2001:db8:1:3::1")] == [429, 200]
    # A junk token is no identity: it is counted by address (and its view answers 401).
    junk = {"Authorization": "Bearer junk"}
    answers = [
        client.post("/api/things", json={}, headers=junk, environ_base={"REMOTE_ADDR": "192.0.2.9"})
        for _ in range(3)
    ]
    assert [a.status_code for a in answers] == [401, 401, 429]


def test_reads_are_never_counted(
    app: Any, srcore_signing_key: Any, make_token: Any, tmp_path: Path, clock: list[float]
) -> None:
    limited = build(app, srcore_signing_key, tmp_path, service_lines="write-rate-limit = 1/hour\n")
    alice = create_user(limited, "alice")
    client = limited.test_client()
    heads = bearer(make_token(SCOPE, user=alice))
    for method in ("GET", "HEAD", "OPTIONS") * 5:
        assert client.open("/api/things", method=method, headers=heads).status_code < 400
        assert client.open("/form", method=method).status_code < 400
    assert create(client, heads).status_code == 201
    assert client.post("/form").status_code == 200
    assert client.get("/api/things", headers=heads).status_code == 200
    assert create(client, heads).status_code == 429


def test_exempt_and_tighter_routes(
    app: Any, srcore_signing_key: Any, make_token: Any, tmp_path: Path, clock: list[float]
) -> None:
    limited = build(
        app, srcore_signing_key, tmp_path, service_lines="write-rate-limit = 2/minute\n"
    )

    @exempt
    def receiver() -> str:
        return "ok"

    @write_limit("1/hour")
    def expensive() -> str:
        return "ok"

    limited.add_url_rule("/hook", "hook", receiver, methods=["POST"])
    limited.add_url_rule("/expensive", "expensive", expensive, methods=["POST"])
    client = limited.test_client()
    assert {client.post("/hook").status_code for _ in range(5)} == {200}
    assert client.post("/expensive").status_code == 200
    tighter = client.post("/expensive")
    assert tighter.status_code == 429 and tighter.headers["Retry-After"] == "3601"
    # The tighter route counted toward the service-wide limit too.
    assert [client.post("/form").status_code for _ in range(2)] == [200, 429]
    # Logging out and meta's pushes are never refused.
    assert client.post("/logout").status_code < 400
    assert "srcore_meta_events" in write_limits(limited).exempt
    with pytest.raises(ValueError, match="not a rate limit"):
        write_limit("often")


def test_the_limit_is_the_operators(
    app: Any, srcore_signing_key: Any, make_token: Any, tmp_path: Path, clock: list[float]
) -> None:
    default = build(app, srcore_signing_key, tmp_path)
    assert [str(rule) for rule in write_limits(default).rules] == [
        str(rule) for rule in parse_limits(["60/minute", "500/hour"])
    ]
    off = build(app, srcore_signing_key, tmp_path, global_lines="write-rate-limit = off\n")
    assert not write_limits(off).enabled
    alice = create_user(off, "alice")
    heads = bearer(make_token(SCOPE, user=alice))
    assert {create(off.test_client(), heads).status_code for _ in range(5)} == {201}
    # A service's own value wins over [global]'s, either way.
    own = build(
        app,
        srcore_signing_key,
        tmp_path,
        global_lines="write-rate-limit = off\n",
        service_lines="write-rate-limit = 1/minute\n",
    )
    assert [create(own.test_client(), heads).status_code for _ in range(2)] == [201, 429]
    freed = build(
        app,
        srcore_signing_key,
        tmp_path,
        global_lines="write-rate-limit = 1/minute\n",
        service_lines="write-rate-limit = off\n",
    )
    assert not write_limits(freed).enabled


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("often", "not a rate limit: 'often'"),
        ("0/minute", "allows nothing at all"),
        ("10/minute, off", "not a rate limit: 'off'"),
    ],
)
def test_a_bad_limit_is_named_in_the_config(
    app: Any, srcore_signing_key: Any, tmp_path: Path, value: str, problem: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        build(app, srcore_signing_key, tmp_path, global_lines=f"write-rate-limit = {value}\n")
    assert "[global] write-rate-limit" in str(raised.value) and problem in str(raised.value)


def test_redis_counts_for_every_process(
    app: Any, srcore_signing_key: Any, make_token: Any, tmp_path: Path, clock: list[float]
) -> None:
    """Two apps on one Redis (two gunicorn workers, two hosts) share each user's count."""
    import redis

    require_or_skip(_redis_up(), "Redis")
    lines = f"redis-url = {REDIS_URL}\nwrite-rate-limit = 3/minute\n"
    first = build(app, srcore_signing_key, tmp_path, global_lines=lines)
    second = build(app, srcore_signing_key, tmp_path, global_lines=lines)
    prefix = f"srcore-writes-test/{uuid.uuid4().hex}"
    for built in (first, second):
        write_limits(built).prefix = prefix
    alice, bob = create_user(first, "alice"), create_user(first, "bob")
    heads = bearer(make_token(SCOPE, user=alice))
    answers = [create(c.test_client(), heads).status_code for c in (first, second, first, second)]
    assert answers == [201, 201, 201, 429]
    assert create(second.test_client(), bearer(make_token(SCOPE, user=bob))).status_code == 201
    try:
        assert things(first) == 4
    finally:
        connection = redis.Redis.from_url(REDIS_URL)
        for key in connection.scan_iter(f"*{prefix}*"):
            connection.delete(key)
        connection.close()


def test_an_unreachable_redis_fails_open_with_a_log_line(
    app: Any,
    srcore_signing_key: Any,
    make_token: Any,
    tmp_path: Path,
    clock: list[float],
    caplog: pytest.LogCaptureFixture,
) -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    lines = f"redis-url = redis://127.0.0.1:{port}/0\nwrite-rate-limit = 2/minute\n"
    limited = build(app, srcore_signing_key, tmp_path, global_lines=lines)
    alice = create_user(limited, "alice")
    heads = bearer(make_token(SCOPE, user=alice))
    with caplog.at_level(logging.WARNING):
        made = create(limited.test_client(), heads)
    assert made.status_code == 201, made.get_data(as_text=True)
    assert things(limited) == 1
    assert any("unreachable" in record.getMessage() for record in caplog.records)
    # Meanwhile the process counts on its own, as it does without Redis.
    assert [create(limited.test_client(), heads).status_code for _ in range(2)] == [201, 429]


def test_the_api_description_names_the_refusal_of_a_write(
    app: Any, srcore_signing_key: Any, make_token: Any, tmp_path: Path, clock: list[float]
) -> None:
    """Every write's description lists the 429 a client past its limit gets, and the answer
    it gets is the one described (Retry-After, srcore's error body)."""
    import warnings

    from openapi_core import OpenAPI
    from openapi_core.contrib.werkzeug import WerkzeugOpenAPIRequest, WerkzeugOpenAPIResponse
    from werkzeug.test import EnvironBuilder

    limited = build(
        app, srcore_signing_key, tmp_path, service_lines="write-rate-limit = 1/minute\n"
    )
    client = limited.test_client()
    document = client.get("/api/openapi.json").get_json()
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            if method in ("post", "put", "patch", "delete"):
                assert "429" in operation["responses"], (method, path)
    headers = bearer(make_token(SCOPE, user=create_user(limited, "alice")))
    assert create(client, headers).status_code == 201

    def request() -> Any:  # a documented write, refused before its view runs
        return EnvironBuilder(
            "/api/webhooks",
            base_url=document["servers"][0]["url"],
            method="POST",
            headers=headers,
            json={"url": "https://hooks.example.invalid/a", "events": ["thing:created"]},
        )

    refused = client.open(request())
    assert refused.status_code == 429
    spec = OpenAPI.from_dict(document)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Unsupported scheme type", UserWarning)
        spec.validate_response(
            WerkzeugOpenAPIRequest(request().get_request()), WerkzeugOpenAPIResponse(refused)
        )


@contextlib.contextmanager
def redis_commands_of(client_name: str) -> Iterator[list[str]]:
    """The commands Redis received from the connections named *client_name* during the
    block (its MONITOR feed; each is a round trip), listed once the block ends. The
    scripts' own commands are not listed: they run inside Redis."""
    import redis

    lines: list[str] = []
    marker = f"end-of-{client_name}"
    feed = b""
    with socket.create_connection(("127.0.0.1", 6379), timeout=5) as monitor:
        monitor.sendall(b"MONITOR\r\n")
        while b"+OK\r\n" not in feed:
            feed += monitor.recv(4096)
        feed = feed.split(b"+OK\r\n", 1)[1]
        yield lines
        control = redis.Redis.from_url(REDIS_URL)
        try:
            control.echo(marker)  # the feed is in order: past this, nothing of ours is left
            named = [c["addr"] for c in control.client_list() if c["name"] == client_name]
        finally:
            control.close()
        while marker.encode() not in feed and len(feed) < 20_000_000:
            chunk = monitor.recv(65536)
            if not chunk:
                break
            feed += chunk
    assert named, f"no connection named {client_name}"
    for line in feed.decode("utf-8", "replace").splitlines():
        _db, _, rest = line.partition(" [")[2].partition(" ")
        address = rest.partition("]")[0]
        if address in named:
            lines.append(line)


def test_a_write_costs_one_redis_round_trip_whatever_its_limits(
    app: Any, srcore_signing_key: Any, make_token: Any, tmp_path: Path, clock: list[float]
) -> None:
    """One write asks Redis once for all of its limits (the burst, the hourly cap, a
    route's own), allowed or refused: each limit cost a round trip of its own, and a
    refusal one more to read the window it waits on. The counts stay what they were."""
    require_or_skip(_redis_up(), "Redis")
    name = f"srcore-writes-{uuid.uuid4().hex[:12]}"
    lines = f"redis-url = {REDIS_URL}\nwrite-rate-limit = 2/minute, 3/hour\n"
    limited = build(app, srcore_signing_key, tmp_path, global_lines=lines)
    limits = write_limits(limited)
    limits.prefix = f"srcore-writes-test/{name}"
    limits.redis_url = f"{REDIS_URL}?client_name={name}"  # to pick its commands out
    alice = create_user(limited, "alice")
    heads = bearer(make_token(SCOPE, user=alice))
    client = limited.test_client()
    assert create(client, heads).status_code == 201  # Redis learns the script here
    try:
        with redis_commands_of(name) as sent:
            clock[0] += 20
            allowed = create(client, heads)
            refused = create(client, heads)
        assert (allowed.status_code, refused.status_code) == (201, 429)
        # The wait is the one limits' own reading of the window gives (Redis keeps the
        # times to 14 digits, so the first write leaves in 40 s, or a hair less).
        rule = limits.rules[0]
        storage = limits.store().primary  # type: ignore[attr-defined]
        key = rule.key_for(limits.prefix, f"user:{alice.id}")
        oldest, count = storage.get_moving_window(key, 2, 60)
        assert count == 2
        assert refused.headers["Retry-After"] == str(math.floor(oldest + 60 - clock[0]) + 1)
        assert len(sent) == 2, sent
        assert all('"evalsha"' in line.lower() for line in sent), sent
        # The refusal took nothing from the hourly count: its third write goes through
        # once the burst window has passed, and then the hour is full.
        clock[0] += 41
        assert create(client, heads).status_code == 201
        clock[0] += 60
        full = create(client, heads)
        assert full.status_code == 429 and "per hour" in full.get_data(as_text=True)
        assert things(limited) == 3
    finally:
        import redis

        connection = redis.Redis.from_url(REDIS_URL)
        for key in connection.scan_iter(f"*{limits.prefix}*"):
            connection.delete(key)
        connection.close()
