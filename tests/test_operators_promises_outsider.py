"""docs/operators.md read as an operator would, promise by promise, for the promises no
other test pinned: each test here quotes the sentence it holds the code to.

Most of the guide is held elsewhere (test_operators_promises*, test_restarts_outsider,
test_config_*, test_migrate*, test_metrics_*, test_storage_faults*, test_webhooks_*, ...);
what is here was found untested by reading the guide end to end: the health check's answer
over HTTP (at meta too, with a browser's cookie), which request ids from a proxy are kept,
what the token-signing key commands print, the systemd unit's MAINPID, reload and stop,
the guide's own production config, commands against a PostgreSQL that never answers and
their application_name, requests served while the log cannot be written, what one Redis
server keeps apart, and the numbers the guide gives an operator to plan with (pool sizes,
the JWKS refetch floor, what one webhook worker holds, a logout token's life).
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests

from srcore.testing import RunningNetwork, run_network, write_config, write_network_config

# -- Health checks: one network of meta and todo under gunicorn, shared ------------------


@pytest.fixture(scope="module")
def network(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningNetwork]:
    with run_network(tmp_path_factory.mktemp("operators"), ("meta", "todo")) as running:
        yield running


@pytest.mark.parametrize(
    "headers",
    [
        {},
        # A browser's stale cookie or a token no one issued: the check needs no login and
        # answers the same, changing nothing (no cookie set or cleared).
        {"Authorization": "Bearer not-a-token"},
        {"Cookie": "meta_session=garbage; todo_session=garbage; __Host-todo_session=x"},
    ],
    ids=["plain", "bearer", "cookies"],
)
def test_healthz_answers_ok_with_the_service_never_cached_and_needs_no_login(
    network: RunningNetwork, headers: dict[str, str]
) -> None:
    """operators.md, Health checks: "GET /healthz answers 200 {"status": "ok", "service":
    "todo"} ... It needs no login, touches nothing else, and is never cached
    (Cache-Control: no-store)"."""
    for service, url in network.urls.items():
        for method in ("GET", "HEAD"):
            answer = requests.request(method, url + "/healthz", headers=headers, timeout=10)
            assert answer.status_code == 200, (service, method, answer.text)
            assert answer.headers["Cache-Control"] == "no-store", (service, answer.headers)
            assert "Set-Cookie" not in answer.headers, (service, answer.headers)
            if method == "GET":
                assert answer.json() == {"status": "ok", "service": service}


@pytest.mark.parametrize(
    ("sent", "kept"),
    [
        ("a.b_c-d1", True),  # every character the guide names
        ("0123456789abcdef0123456789abcdef", True),  # nginx's $request_id
        ("Z" * 8, True),
        ("Z" * 64, True),
        ("Z" * 7, False),
        ("Z" * 65, False),
        ("abcd/efgh", False),
        ("abcd efgh", False),
        ("abcd+efgh", False),
        ("abcd:efgh", False),
    ],
)
def test_a_proxys_request_id_is_echoed_when_8_to_64_letters_digits_dots_underscores_dashes(
    network: RunningNetwork, sent: str, kept: bool
) -> None:
    """operators.md, Reverse proxy: "A service answers a request id from the proxy's
    X-Request-Id when it is 8-64 letters, digits, ., _ or - (else it makes one), returns
    it in the response's X-Request-Id" -- through gunicorn, as a proxy reaches it."""
    for service, url in network.urls.items():
        answer = requests.get(url + "/healthz", headers={"X-Request-Id": sent}, timeout=10)
        rid = answer.headers["X-Request-Id"]
        assert (rid == sent) is kept, (service, sent, rid)
        assert re.fullmatch(r"[A-Za-z0-9._-]{8,64}", rid), (service, rid)


# -- Rotating keys: what `python -m meta.oauth.keys` prints ------------------------------

_LISTED = re.compile(r"^(\S+)  (EdDSA|RS256)  created (\S+)  (.+)$")


def _keys(capsys: pytest.CaptureFixture[str], config: Path, *args: str) -> str:
    from meta.oauth.keys import main

    capsys.readouterr()
    assert main([*args, "--config", str(config)]) == 0
    out: str = capsys.readouterr().out
    return out


def _listed(text: str) -> list[tuple[str, str, datetime, str]]:
    rows = []
    for line in text.splitlines():
        match = _LISTED.match(line)
        assert match is not None, line
        kid, alg, created, state = match.groups()
        rows.append((kid, alg, datetime.fromisoformat(created), state))
    return rows


def test_rotate_says_when_the_new_keys_sign_and_list_shows_each_keys_state(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """operators.md, Rotating keys: "rotate makes a new key of each kind and publishes it
    ... the current keys go on signing for 6 minutes more, then the new ones take over
    (rotate prints when, and list shows each key's state) ... The very first keys, on a
    new database, sign at once ... rotate --at-once retires the current keys now and signs
    with the new ones from the next token on"."""
    from srcore.app import migration_target
    from srcore.migrate import upgrade_all

    config = write_network_config(tmp_path / "config.ini", {"meta": 5000})
    upgrade_all(migration_target("meta", config))

    # A new database has no keys yet: list says so rather than print nothing at all.
    empty = _keys(capsys, config, "list")
    assert empty.strip(), "list printed nothing on a database without keys"
    assert "no signing keys yet" in empty

    first = _keys(capsys, config, "rotate")
    made = re.findall(
        r"^new signing key (\S+) \((EdDSA|RS256)\): published now, signs now$", first, re.M
    )
    assert sorted(alg for _, alg in made) == ["EdDSA", "RS256"], first
    first_kids = {kid for kid, _ in made}
    assert {
        kid: state for kid, _, _, state in _listed(_keys(capsys, config, "list"))
    } == dict.fromkeys(first_kids, "current")

    second = _keys(capsys, config, "rotate")
    later = re.findall(
        r"^new signing key (\S+) \((EdDSA|RS256)\): published now, signs from (\S+)$", second, re.M
    )
    assert sorted(alg for _, alg, _ in later) == ["EdDSA", "RS256"], second
    assert "the current keys sign until then" in second
    takeover = {datetime.fromisoformat(when) for _, _, when in later}
    assert len(takeover) == 1, second
    (at,) = takeover
    rows = _listed(_keys(capsys, config, "list"))
    for kid, _alg, created, state in rows:
        if kid in first_kids:
            assert state == f"current, signs until {at.isoformat()}", state
        else:
            assert state == f"published, signs from {at.isoformat()}", state
            # Six minutes after the key was made (both times are meta's, in the output).
            assert at - created == timedelta(minutes=6), (created, at)

    third = _keys(capsys, config, "rotate", "--at-once")
    assert len(re.findall(r": published now, signs now$", third, re.M)) == 2, third
    assert "up to 300 s" in third
    states = {kid: state for kid, _, _, state in _listed(_keys(capsys, config, "list"))}
    assert all(states[kid].startswith("retired ") for kid in first_kids), states
    assert list(states.values()).count("current") == 2, states


# -- The numbers an operator plans with ----------------------------------------------------


def test_each_process_pool_keeps_5_idle_holds_at_most_15_and_waits_30_s(tmp_path: Path) -> None:
    """operators.md, How many connections: "A pool ... keeps up to 5 idle ones between
    requests, and never holds more than 15 (5 plus 10 under load); past that a request
    waits in the pool, 30 s at most" -- the pool of a service's app, as configured (no
    connection is made)."""
    import todo

    config = write_config(
        tmp_path / "config.ini",
        service_id="todo",
        database_url="postgresql+psycopg://srcore@127.0.0.1:5432/todo",
    )
    app = todo.create_app(config=config)
    pool: Any = app.extensions["srcore"].db.engine.pool
    assert (pool.size(), pool._max_overflow, pool._timeout) == (5, 10, 30.0)


def test_a_service_fetches_the_jwks_again_for_an_unknown_key_at_most_every_30_s(
    tmp_path: Path,
) -> None:
    """operators.md, Rotating keys: "srcore's services fetch it again as soon as they meet
    an unknown key id (at most every 30 s)" -- the floor of the link a service builds."""
    from srcore.auth.link import build_meta_link
    from srcore.config import load_config

    path = write_network_config(tmp_path / "config.ini", {"meta": 5000, "todo": 5001})
    link = build_meta_link(load_config(path, specs={}, environ={}), "todo")
    assert link is not None
    assert link.keys.min_refresh_interval == 30.0


def test_one_webhook_worker_holds_2048_deliveries_128_of_a_subscription_by_default(
    tmp_path: Path,
) -> None:
    """operators.md, Webhook workers: "It keeps up to webhook-concurrency (16) requests in
    flight, at most 4 to one receiver ... at most half of them (8) for one subscriber" and
    "one worker holds up to 2,048 deliveries (by default; at most 128 of one
    subscription)"."""
    import todo

    from srcore.webhooks import delivery, worker

    config = write_config(
        tmp_path / "config.ini", service_id="todo", database_url=f"sqlite:///{tmp_path / 'todo.db'}"
    )
    running = worker.Worker(todo.create_app(config=config))
    settings = running.settings
    assert (settings.concurrency, settings.per_host, settings.concurrency // 2) == (16, 4, 8)
    assert worker.HOLD_BATCHES * running.batch == 2048
    assert delivery.LANE == 128


def test_a_logout_token_for_an_openid_client_lives_120_s() -> None:
    """operators.md, Clocks: "Logout tokens for OpenID clients live 120 s"."""
    from meta.oauth.backchannel import logout_claims

    claims = logout_claims(issuer="https://meta.example.org", client_id="rp", sub="1", sid=None)
    assert claims["exp"] - claims["iat"] == 120


# -- PostgreSQL: commands, as an operator sees them from the server ------------------------


class _Activity:
    """Every application_name seen connected to one database while the block runs."""

    def __init__(self, url: str) -> None:
        import sqlalchemy as sa

        self._sa = sa
        self.database = sa.make_url(url).database
        admin = sa.make_url(url).set(database="postgres")
        self.engine = sa.create_engine(admin, poolclass=sa.pool.NullPool)
        self.names: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def _watch(self) -> None:
        query = self._sa.text(
            "SELECT application_name FROM pg_stat_activity"
            " WHERE datname = :name AND pid <> pg_backend_pid()"
        )
        with self.engine.connect() as connection:
            while not self._stop.wait(0.005):
                self.names.update(connection.scalars(query, {"name": self.database}))
                connection.rollback()

    def __enter__(self) -> _Activity:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self.engine.dispose()


def _srcore(config: Path, *args: str, env: dict[str, str] | None = None) -> str:
    """Run the installed ``srcore`` command; its output (stdout and stderr). Bounded: a
    command that hangs fails the test."""
    command = [str(Path(sys.executable).with_name("srcore")), "--config", str(config), *args]
    environ = {k: v for k, v in os.environ.items() if k not in ("PGAPPNAME", "SRCORE_CONFIG")}
    done = subprocess.run(
        command, env={**environ, **(env or {})}, capture_output=True, text=True, timeout=60
    )
    return f"exit {done.returncode}\n{done.stdout}{done.stderr}"


def test_a_command_names_itself_in_pg_stat_activity_unless_the_url_or_pgappname_does(
    tmp_path: Path, postgres_module_url: str
) -> None:
    """operators.md, How many connections: "Each connection says whose it is in
    pg_stat_activity's application_name: ... srcore migrate (or the command's name) for
    commands, unless the URL sets application_name or the environment PGAPPNAME"."""
    import sqlalchemy as sa

    def names(url: str, *args: str, env: dict[str, str] | None = None) -> set[str]:
        config = write_config(tmp_path / "config.ini", service_id="todo", database_url=url)
        with _Activity(postgres_module_url) as activity:
            output = _srcore(config, *args, env=env)
        assert output.startswith("exit 0\n"), output
        return activity.names - {""}

    plain = postgres_module_url
    assert names(plain, "migrate", "todo", "upgrade") == {"srcore migrate"}
    assert names(plain, "migrate", "todo", "current", env={"PGAPPNAME": "ops console"}) == {
        "ops console"
    }
    named = sa.make_url(plain).update_query_dict({"application_name": "from the url"})
    rendered = named.render_as_string(hide_password=False)
    assert names(rendered, "migrate", "--all", "current") == {"from the url"}


@pytest.mark.parametrize(
    "command", [("migrate", "todo", "current"), ("migrate", "--all", "upgrade")]
)
def test_a_command_gives_up_on_a_server_that_never_answers(
    tmp_path: Path, command: tuple[str, ...]
) -> None:
    """operators.md, Migrations: "Every connection to PostgreSQL over TCP, from the web
    apps, the workers and the commands, gives up connecting after 5 seconds
    (connect_timeout)" -- a server that takes the connection and says nothing (a firewall
    dropping packets, a host stuck) is one line naming the database, not a hang."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        port = silent.getsockname()[1]
        url = f"postgresql+psycopg://srcore:hunter2@127.0.0.1:{port}/todo"
        config = write_config(tmp_path / "config.ini", service_id="todo", database_url=url)
        output = _srcore(config, *command)
    assert output.startswith("exit 1\n"), output
    assert (
        f"cannot open the database of todo (postgresql+psycopg://srcore:***@127.0.0.1:{port}/todo)"
        in output
    )
    assert "timeout" in output and "nothing was changed" in output, output
    assert "hunter2" not in output and "Traceback" not in output


# -- meta's health check with a browser's cookie ---------------------------------------------


@pytest.mark.parametrize("path", ["/healthz", "/favicon.ico"])
def test_meta_answers_its_health_check_without_looking_at_a_browsers_login(
    tmp_path: Path, path: str
) -> None:
    """operators.md, Health checks: /healthz "needs no login, touches nothing else". At
    meta, a check that every request's login still stands ran before it: a browser's
    cookie whose login had ended was logged out by the health check (a Set-Cookie on
    its answer), and each check of a cookie holding a login asked the database about it
    first (as did each request for the icon). What serves no page leaves the login alone."""
    import meta

    from srcore.app import migration_target
    from srcore.migrate import upgrade_all

    config = write_config(
        tmp_path / "config.ini", service_id="meta", database_url=f"sqlite:///{tmp_path / 'm.db'}"
    )
    upgrade_all(migration_target("meta", config))
    app = meta.create_app(config=config)
    client = app.test_client()
    with client.session_transaction() as session:
        session["_uid"] = 1  # a login whose server-side session is gone (logged out elsewhere)
    answer = client.get(path)
    assert answer.status_code == 200, answer.get_data(as_text=True)[:300]
    assert "Set-Cookie" not in answer.headers, answer.headers
    # The cookie still holds what it held: the next page is where the login is looked at.
    with client.session_transaction() as session:
        assert session.get("_uid") == 1
    page = client.get("/login")
    assert "Set-Cookie" in page.headers


# -- systemd: the unit's MAINPID, its reload and its stop -------------------------------------


def _children(pid: int) -> set[int]:
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text(encoding="ascii")
    return {int(child) for child in text.split()}


def _wait(check: Any, process: subprocess.Popen[bytes], log: Path, what: str) -> None:
    """Poll *check* until it holds, for 60 s at most, failing with the server's log."""
    deadline = time.monotonic() + 60
    while not check():
        tail = log.read_text(encoding="utf-8", errors="replace")[-3000:]
        assert process.poll() is None, f"srcore serve exited {process.returncode}:\n{tail}"
        assert time.monotonic() < deadline, f"not {what} within 60 s:\n{tail}"
        time.sleep(0.1)


def _healthy(url: str) -> bool:
    try:
        return requests.get(url + "/healthz", timeout=5).status_code == 200
    except requests.RequestException:
        return False


def test_srcore_serve_is_the_units_mainpid_it_reloads_on_sighup_and_stops_on_sigterm(
    tmp_path: Path,
) -> None:
    """operators.md, systemd: the unit runs ``srcore serve %i --bind ${BIND} --workers 4``
    with ``SRCORE_CONFIG`` in its environment, reloads with ``kill -HUP $MAINPID`` and
    stops with SIGTERM: "srcore serve execs gunicorn, so $MAINPID is gunicorn's master";
    a reload "starts fresh workers ... and retires the old ones"."""
    from srcore.app import migration_target
    from srcore.migrate import upgrade_all
    from srcore.testing import free_port

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    config = write_config(
        tmp_path / "config.ini",
        service_id="todo",
        database_url=f"sqlite:///{tmp_path / 'todo.db'}",
        origin=url,
    )
    upgrade_all(migration_target("todo", config))
    environ = {k: v for k, v in os.environ.items() if not k.startswith("SRCORE")}
    log = tmp_path / "serve.log"
    command = [str(Path(sys.executable).with_name("srcore")), "serve", "todo"]
    command += ["--bind", f"127.0.0.1:{port}", "--workers", "2"]
    with open(log, "wb") as out:
        process = subprocess.Popen(
            command, env={**environ, "SRCORE_CONFIG": str(config)}, stdout=out, stderr=out
        )
    try:
        _wait(lambda: _healthy(url) and len(_children(process.pid)) == 2, process, log, "up")
        argv = Path(f"/proc/{process.pid}/cmdline").read_bytes().split(b"\0")
        assert b"gunicorn" in argv, argv  # the pid systemd started is gunicorn's master

        before = _children(process.pid)
        process.send_signal(signal.SIGHUP)
        _wait(
            lambda: not (_children(process.pid) & before) and len(_children(process.pid)) == 2,
            process,
            log,
            "reloaded with fresh workers",
        )
        assert _healthy(url)

        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0, log.read_text(encoding="utf-8")[-3000:]
        assert not _healthy(url)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=30)


# -- The guide's own config file ---------------------------------------------------------------


def test_the_guides_production_config_passes_config_check_as_written(tmp_path: Path) -> None:
    """operators.md, Write the config: the file it shows for production (edited from
    ``srcore init``'s), then "Then check the file ... srcore config check": with its secret
    files in place, the check finds nothing to refuse (its PostgreSQL URLs' driver is
    loaded, not connected to)."""
    import secrets as random_secrets

    from tests.conftest import run_config_check

    guide = (Path(__file__).resolve().parent.parent / "docs" / "operators.md").read_text("utf-8")
    blocks = re.findall(r"^```ini\n(.*?)^```", guide, re.M | re.S)
    (shown,) = [b for b in blocks if b.startswith("[global]") and "\n[todo]" in b]
    text = shown.replace("/etc/srcore/", f"{tmp_path}/")
    (tmp_path / "secrets").mkdir()
    files = re.findall(r"^[a-z-]+-file = (\S+)$", text, re.M)
    assert len(files) == 4, files  # SMTP's password, two secret keys, todo's client secret
    for name in files:
        Path(name).write_text(random_secrets.token_urlsafe(40) + "\n", encoding="utf-8")
        Path(name).chmod(0o600)
    config = tmp_path / "config.ini"
    config.write_text(text, encoding="utf-8")
    config.chmod(0o600)
    status, output = run_config_check(config)
    assert status == 0, output
    assert output.startswith("OK: 2 services (meta, todo) in "), output


# -- Logs that cannot be written ---------------------------------------------------------------


@pytest.mark.parametrize("where", ["a full disk", "a reader gone", "closed"])
def test_requests_are_served_when_the_log_cannot_be_written(tmp_path: Path, where: str) -> None:
    """operators.md, When the disk fills: "Logs. With stderr closed, or on a full disk,
    requests are still served; the lines are lost." gunicorn and the service write their
    lines (the access log's among them, one a request) to ``/dev/full``, to a pipe nobody
    reads any more, or to no stdout and stderr at all; pages, errors and the API answer as
    ever, and the database (whose file could take the place of a closed descriptor) stays
    whole."""
    import sqlite3

    from srcore.app import migration_target
    from srcore.migrate import upgrade_all
    from srcore.testing import free_port, gunicorn_argv

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    database = tmp_path / "todo.db"
    config = write_config(
        tmp_path / "config.ini", service_id="todo", database_url=f"sqlite:///{database}", origin=url
    )
    upgrade_all(migration_target("todo", config))
    argv = list(gunicorn_argv("todo:create_app()", port=port, workers=1))
    env = {**os.environ, "SRCORE_CONFIG": str(config)}
    if where == "a full disk":
        with open("/dev/full", "wb") as full:
            process = subprocess.Popen(argv, env=env, stdout=full, stderr=full)
    elif where == "a reader gone":
        reader, writer = os.pipe()
        process = subprocess.Popen(argv, env=env, stdout=writer, stderr=writer)
        os.close(writer)
        os.close(reader)
    else:
        process = subprocess.Popen(["sh", "-c", 'exec "$@" 1>&- 2>&-', "sh", *argv], env=env)
    try:
        deadline = time.monotonic() + 60
        while not _healthy(url):
            assert process.poll() is None, f"gunicorn exited {process.returncode}"
            assert time.monotonic() < deadline, "not serving within 60 s"
            time.sleep(0.1)
        for _ in range(3):
            assert requests.get(url + "/", timeout=10).status_code == 200
            assert requests.get(url + "/no/such/page", timeout=10).status_code == 404
            assert requests.get(url + "/api/trackers", timeout=10).status_code == 401
            assert requests.post(url + "/api/trackers", data=b"{", timeout=10).status_code in (
                400,
                401,
            )
        assert process.poll() is None
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=30)
    with contextlib.closing(sqlite3.connect(database)) as connection:
        assert connection.execute("PRAGMA integrity_check").fetchone() == ("ok",)


# -- Redis: what is named by service, and what a database number keeps apart --------------------


def test_one_redis_server_keeps_networks_apart_by_database_number_and_services_by_name(
    app: Any,
    srcore_signing_key: Any,
    make_token: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
) -> None:
    """operators.md, Redis: "Keys and channels are named by service, not by network: two
    networks (production and staging, say) sharing one Redis server each need a database
    number of their own (/0, /1), or they count each other's failed logins and hear each
    other's revocations." On a redis-server of this test's own: two networks' sample
    services on /0 share one write count, a third on /1 counts apart; the counts are kept
    under the service's name; revocations travel on a channel named by service and number
    (pub/sub ignores the number)."""
    import redis
    from test_ratelimit import SCOPE, bearer, build, create

    from srcore.auth.revocation.fanout import make_fanout
    from srcore.auth.revocation.store import MemoryRevocationStore
    from srcore.testing import create_user, require_or_skip

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
    import reliability

    require_or_skip(reliability.redis_available(), "redis-server")
    now = [time.time()]
    monkeypatch.setattr(time, "time", lambda: now[0])
    with reliability.RedisServer(tmp_path / "redis") as server:
        zero, one = server.url, server.url.removesuffix("/0") + "/1"

        def network(url: str) -> Any:
            return build(
                app,
                srcore_signing_key,
                tmp_path,
                global_lines=f"redis-url = {url}\nwrite-rate-limit = 2/minute\n",
            )

        production, staging, own_number = network(zero), network(zero), network(one)
        for built in (production, staging, own_number):
            request.addfinalizer(built.extensions["srcore"].db.dispose)
        alice = create_user(production, "alice")
        heads = bearer(make_token(SCOPE, user=alice))
        assert [create(production.test_client(), heads).status_code for _ in range(2)] == [201] * 2
        # The same user id on another network sharing /0 has spent production's count...
        assert create(staging.test_client(), heads).status_code == 429
        # ...and none of it on a database number of its own.
        assert create(own_number.test_client(), heads).status_code == 201

        client = redis.Redis.from_url(zero)
        try:
            keys = [key.decode() for key in client.keys("*")]
        finally:
            client.close()
        assert keys and all("srcore-writes/sample" in key for key in keys), keys

    channels = {
        url: make_fanout(url, "sample", MemoryRevocationStore()).channel  # type: ignore[union-attr]
        for url in (zero, one)
    }
    assert channels[zero] != channels[one]
    assert all("sample" in channel for channel in channels.values()), channels
    other = make_fanout(zero, "todo", MemoryRevocationStore())
    assert other is not None and other.channel != channels[zero]


# -- srcore worker on a database that is not its release's, or not its service's ---------------


def test_the_webhook_worker_names_a_newer_releases_database_and_refuses_another_services(
    tmp_path: Path,
) -> None:
    """operators.md, Migrations: a database a newer release migrated is named as such,
    and "srcore serve and srcore worker say so and run anyway"; one that holds another
    service's lineage "is refused by every srcore migrate command, srcore serve and srcore
    worker, since each service has its own database" (serve and migrate are held in
    test_migrations_outsider; here the worker)."""
    import sqlite3

    from srcore.app import migration_target
    from srcore.migrate import upgrade_all

    config = write_network_config(tmp_path / "config.ini", {"meta": 5000, "todo": 5001})
    for service in ("meta", "todo"):
        upgrade_all(migration_target(service, config))
    with contextlib.closing(sqlite3.connect(tmp_path / "todo.db")) as connection:
        connection.execute("UPDATE alembic_version_todo SET version_num = 'todo_9999'")
        connection.commit()

    newer = _srcore(config, "worker", "todo", "--once")
    assert newer.startswith("exit 0\n"), newer
    (said,) = [line for line in newer.splitlines() if "todo_9999" in line]
    assert "a newer release of todo migrated it" in said, said
    assert "ready" in newer and "Traceback" not in newer

    text = config.read_text(encoding="utf-8")
    mine = f"database-url = sqlite:///{tmp_path / 'todo.db'}\n"
    config.write_text(text.replace(mine, f"database-url = sqlite:///{tmp_path / 'meta.db'}\n"))
    other = _srcore(config, "worker", "todo", "--once")
    assert other.startswith("exit 1\n"), other
    assert "holds the migrations of meta" in other and "[todo] database-url" in other, other
    assert "ready" not in other and "Traceback" not in other


# -- One config file everywhere: another host's [meta] secret-key --------------------------------


def test_a_service_runs_the_same_with_a_meta_secret_key_of_its_hosts_own(tmp_path: Path) -> None:
    """operators.md, One config file everywhere: "a service only uses its own secret-key
    ... on a host that does not run meta, [meta] secret-key may be a fresh value of its
    own (srcore keygen)". todo on such a host takes the session cookies todo signed on a
    host with the real file: its users notice nothing."""
    import todo

    from srcore.app import migration_target
    from srcore.migrate import upgrade_all
    from srcore.testing import create_user, new_secret, session_cookie

    config = write_network_config(
        tmp_path / "config.ini", {"meta": 5000, "todo": 5001}, global_keys={}
    )
    text = config.read_text(encoding="utf-8")
    text = text.replace("[global]\n", "[global]\nrevocation-pull-interval = 0s\n", 1)
    config.write_text(text, encoding="utf-8")
    upgrade_all(migration_target("todo", config))
    (meta_key,) = re.findall(r"\[meta\]\n(?:.*\n)*?secret-key = (\S+)\n", text)
    elsewhere = tmp_path / "elsewhere.ini"
    elsewhere.write_text(text.replace(meta_key, new_secret(), 1), encoding="utf-8")
    assert elsewhere.read_text(encoding="utf-8") != text

    here, there = todo.create_app(config=config), todo.create_app(config=elsewhere)
    try:
        alice = create_user(here, "alice")
        name, value = session_cookie(here, alice)
        client = there.test_client()
        client.set_cookie(name, value)
        page = client.get("/create")
        assert page.status_code == 200, page.get_data(as_text=True)[:300]
        assert "alice" in page.get_data(as_text=True)
    finally:
        for app in (here, there):
            app.extensions["srcore"].db.dispose()


# -- The migrations the guide names -------------------------------------------------------------


def test_the_migrations_the_guide_names_exist_and_it_names_every_id_rebuild() -> None:
    """operators.md names migrations (meta's ``0007_unique_email``, ``srcore_0007``) and
    says "Ids are never reused, on SQLite too (srcore_0006, todo_0002 and todo_0003 rebuild
    the tables with AUTOINCREMENT)": each name is a script of this repository, and every
    script that rebuilds tables so that ids are never reused is among those named (the
    guide named todo_0002 only, while todo_0003 does the same for tickets and comments)."""
    root = Path(__file__).resolve().parent.parent
    scripts = {
        path.stem: path.read_text(encoding="utf-8")
        for versions in (root / "migrations_base", *root.glob("example_services/*/*/migrations"))
        for path in (versions / "versions").glob("*.py")
    }
    revisions = {re.sub(r"^((?:[a-z]+_)?\d{4})_.*$", r"\1", stem) for stem in scripts}
    guide = (root / "docs" / "operators.md").read_text(encoding="utf-8")
    named = set(re.findall(r"`((?:srcore|todo|meta)_\d{4}|\d{4}_[a-z_]+)`", guide))
    assert named, "the guide names no migration"
    for name in named:
        assert name in revisions or name in scripts, f"operators.md names {name}: no such script"
    (paragraph,) = [p for p in guide.split("\n\n") if p.startswith("Ids are never reused")]
    rebuilds = {
        re.sub(r"^((?:[a-z]+_)?\d{4})_.*$", r"\1", stem)
        for stem, text in scripts.items()
        if "never reused" in text.split('"""')[1]
    }
    assert rebuilds, "no script says ids are never reused"
    for revision in rebuilds:
        assert f"`{revision}`" in paragraph, f"{revision} rebuilds tables the guide does not name"
