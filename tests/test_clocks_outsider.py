"""Clocks as an operator sets them: meta and todo under gunicorn in a process time zone far
from UTC (``TZ=Pacific/Kiritimati``, UTC+14, a calendar day ahead), on SQLite and on a
PostgreSQL database whose own ``timezone`` is another one (``America/St_Johns``, UTC-3:30).

What an outsider reads must not move with those settings: token claims (read with PyJWT,
which srcore does not use to verify), the times of the API and of the pages, the
``webhook-timestamp`` of a delivery, its log and its retry schedule, a cursor holding a
time, a file's ``Last-Modified``, a mail's ``Date``, a TOTP code computed at the true time,
and srcore's own log lines. Times written for machines are UTC with their offset whatever
zone they came in, and a webhook receiver's naive "now" is refused, not read as local.
"""

from __future__ import annotations

import base64
import contextlib
import email.utils
import hashlib
import hmac
import html
import json
import os
import re
import signal
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt
import pytest
import requests

from srcore import signatures, testdb
from srcore.resources import resource_dir
from srcore.supervisor import http_ok
from srcore.testing import (
    free_port,
    gunicorn_argv,
    require_or_skip,
    run_service,
    run_worker,
    write_config,
    write_network_config,
)
from tests.conftest import require_postgres
from tests.test_security_e2e import (
    PASSWORD,
    Network,
    bearer,
    csrf,
    mail_sink,
    open_page_as,
    personal_token,
    register,
    wait_for,
)

__all__ = ["mail_sink"]  # a fixture used by this module

pytestmark = [pytest.mark.slow]

#: The services' process time zone: UTC+14, so its date is a day ahead of UTC's most hours.
PROCESS_ZONE = "Pacific/Kiritimati"
#: The PostgreSQL databases' own ``timezone``: UTC-3:30.
DATABASE_ZONE = "America/St_Johns"
#: How far a time the services stamp may be from this machine's clock (the request's round
#: trip, a busy machine), in seconds; the zones above are hours off.
NEAR = 120


class Hook:
    """A webhook receiver on 127.0.0.1 that keeps each request's headers and body, and the
    true time it arrived."""

    def __init__(self, status: int = 204) -> None:
        got: list[tuple[float, dict[str, str], dict[str, Any]]] = []
        self.got = got

        class Handler(BaseHTTPRequestHandler):
            timeout = 10  # seconds a request may take to arrive

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"null")
                got.append((time.time(), {k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(status)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def network(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, mail_sink: Any
) -> Iterator[Network]:
    from srcore.app import migration_target
    from srcore.migrate import upgrade_all

    tmp = tmp_path_factory.mktemp(f"clocks-{request.param}")
    ports = {"meta": free_port(), "todo": free_port()}
    config = write_network_config(
        tmp / "config.ini",
        ports,
        global_keys={
            **mail_sink.config_keys(),
            "revocation-pull-interval": "1s",
            "allow-private-webhook-targets": "127.0.0.0/8",
        },
    )
    # todo's own trackers one per page: its index pages through them by (updated, id).
    text = config.read_text(encoding="utf-8").replace("[todo]\n", "[todo]\ntrackers-per-page = 1\n")
    config.write_text(text, encoding="utf-8")
    made: list[str] = []
    try:
        if request.param == "postgresql":
            require_postgres()
            text = config.read_text(encoding="utf-8")
            for name in ports:
                url = testdb.create_test_database(prefix=f"srcore_clocks_{name}")
                made.append(url)
                _set_database_zone(url)
                text = text.replace(f"sqlite:///{tmp / (name + '.db')}", url)
            config.write_text(text, encoding="utf-8")
        for service in ports:
            upgrade_all(migration_target(service, config))
        with pytest.MonkeyPatch.context() as patch, contextlib.ExitStack() as stack:
            patch.setenv("TZ", PROCESS_ZONE)
            urls = {}
            for service, port in ports.items():
                urls[service] = stack.enter_context(
                    run_service(service, config, port=port, timeout=60)
                )
                stack.enter_context(run_worker(service, config, timeout=60))
            net = Network(config, tmp, urls["meta"], urls["todo"], "", mail_sink, {})
            yield net
    finally:
        for url in made:
            testdb.drop_test_database(url)


def _set_database_zone(url: str) -> None:
    import sqlalchemy as sa

    engine = sa.create_engine(url, poolclass=sa.NullPool, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as connection:
            name = connection.execute(sa.text("SELECT current_database()")).scalar_one()
            connection.execute(
                sa.text(f"ALTER DATABASE \"{name}\" SET timezone = '{DATABASE_ZONE}'")
            )
    finally:
        engine.dispose()


def _near_now(moment: datetime, what: str) -> None:
    assert moment.tzinfo is not None and moment.utcoffset() is not None, (what, moment)
    off = abs(moment.timestamp() - time.time())
    assert off < NEAR, f"{what} is {off:.0f} s from now: {moment.isoformat()}"


def _iso(value: str, what: str, *, near: bool = True) -> datetime:
    assert isinstance(value, str), (what, value)
    moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    assert moment.utcoffset() is not None, (what, value)
    if near:
        _near_now(moment, what)
    return moment


#: HTML's "valid global date and time string": at most three digits of a second's fraction.
_HTML_DATETIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d(:\d\d(\.\d{1,3})?)?(Z|[+-]\d\d:?\d\d)")


def _time_attribute(stamp: str, what: str) -> datetime:
    """The moment a ``<time datetime=...>`` names: valid HTML, UTC, near now."""
    assert _HTML_DATETIME.fullmatch(stamp), (what, stamp)
    moment = _iso(stamp, what)
    assert moment.utcoffset() == timedelta(0), (what, stamp)
    return moment


def _totp(secret: str, at: float) -> str:
    """RFC 6238's code (SHA-1, 6 digits, 30 s steps) at the true time *at*, as an
    authenticator app computes it."""
    key = base64.b32decode(secret + "=" * (-len(secret) % 8), casefold=True)
    mac = hmac.new(key, struct.pack(">Q", int(at // 30)), hashlib.sha1).digest()
    number = struct.unpack(">I", mac[(mac[-1] & 0x0F) :][:4])[0] & 0x7FFFFFFF
    return str(number % 10**6).zfill(6)


def test_times_an_outsider_reads_are_true_utc_whatever_the_zones(network: Network) -> None:
    net = network
    alice = register(net, "alice")

    # The confirmation mail's Date is now, in UTC ("+0000").
    mail = net.sink.to("alice@example.org")[-1]
    assert str(mail["Date"]).endswith(" +0000"), mail["Date"]
    _near_now(email.utils.parsedate_to_datetime(str(mail["Date"])), "the mail's Date")

    # A 30-day token, read with PyJWT against meta's published keys.
    token = personal_token(net, alice, ["todo/trackers:RW", "todo/tickets:RW"], days="30")
    keys = jwt.PyJWKSet.from_dict(requests.get(f"{net.meta}/oauth/jwks.json", timeout=10).json())
    kid = jwt.get_unverified_header(token)["kid"]
    key = next(k for k in keys.keys if k.key_id == kid)
    claims = jwt.decode(
        token, key.key, algorithms=["EdDSA"], audience="todo", options={"require": ["exp", "iat"]}
    )
    _near_now(datetime.fromtimestamp(claims["iat"], UTC), "the token's iat")
    assert claims["exp"] - claims["iat"] == 30 * 86400
    assert claims.get("nbf", claims["iat"]) <= claims["iat"]
    # meta's page gives its expiry as the UTC date, and the token's creation in its log.
    page = alice.get(f"{net.meta}/security", timeout=10).text
    shown = re.findall(r'data-label="Expires">([^<]*)<', page)
    assert shown == [datetime.fromtimestamp(claims["exp"], UTC).strftime("%Y-%m-%d")], shown
    stamps = re.findall(r'<time datetime="([^"]*)"[^>]*>([^<]*)<', page)
    assert stamps, page[:2000]
    for stamp, text in stamps:
        moment = _time_attribute(stamp, "a time on meta's security page")
        assert text in (moment.strftime("%Y-%m-%d %H:%M UTC"), moment.strftime("%Y-%m-%d"))

    # todo's API, its webhook deliveries and their log.
    hook = Hook()
    try:
        made = requests.post(
            f"{net.todo}/api/trackers", headers=bearer(token), json={"name": "t"}, timeout=10
        )
        assert made.status_code == 201, made.text
        for name in ("created", "updated"):
            assert _iso(made.json()[name], f"a tracker's {name}").utcoffset() == timedelta(0)
        sub = requests.post(
            f"{net.todo}/api/webhooks",
            headers=bearer(token),
            json={"url": hook.url, "events": ["ticket:created"]},
            timeout=10,
        )
        assert sub.status_code == 201, sub.text
        _iso(sub.json()["created"], "a webhook's created")
        for n in range(3):
            made = requests.post(
                f"{net.todo}/api/trackers/t/tickets",
                headers=bearer(token),
                json={"title": f"ticket {n}"},
                timeout=10,
            )
            assert made.status_code == 201, made.text
        wait_for(lambda: len(hook.got) >= 3)
        for arrived, headers, body in hook.got:
            # Standard Webhooks: the timestamp is epoch seconds of the sending.
            assert abs(int(headers["webhook-timestamp"]) - arrived) < NEAR, headers
            _iso(body["timestamp"], "an event's timestamp")
            _iso(body["data"]["created"], "a ticket's created")
        log = requests.get(
            f"{net.todo}/api/webhooks/{sub.json()['id']}/deliveries",
            headers=bearer(token),
            timeout=10,
        )
        assert log.status_code == 200, log.text
        for delivery in log.json()["results"]:
            _iso(delivery["created"], "a delivery's created")
            _iso(delivery["delivered_at"], "a delivery's delivered_at")
            for attempt in delivery["attempts"]:
                _iso(attempt["created"], "an attempt's created")
    finally:
        hook.close()

    # Retries of a failing receiver follow the schedule (5 s after the first attempt, then
    # 5 min after the second, each within the 10 % jitter), by the delivery log's times.
    failing = Hook(status=503)
    try:
        sub = requests.post(
            f"{net.todo}/api/webhooks",
            headers=bearer(token),
            json={"url": failing.url, "events": ["tracker:created"]},
            timeout=10,
        )
        assert sub.status_code == 201, sub.text
        made = requests.post(
            f"{net.todo}/api/trackers", headers=bearer(token), json={"name": "u"}, timeout=10
        )
        assert made.status_code == 201, made.text
        wait_for(lambda: len(failing.got) >= 2)

        def attempts() -> list[dict[str, Any]]:
            log = requests.get(
                f"{net.todo}/api/webhooks/{sub.json()['id']}/deliveries",
                headers=bearer(token),
                timeout=10,
            )
            delivery: dict[str, Any] = log.json()["results"][0]
            return [delivery] if delivery["attempt_count"] >= 2 else []

        wait_for(lambda: bool(attempts()))
        delivery = attempts()[0]
        first, second = sorted(delivery["attempts"], key=lambda a: a["id"])
        gap = (
            _iso(second["created"], f"{delivery}") - _iso(first["created"], f"{delivery}")
        ).total_seconds()
        assert 4.5 <= gap < 4.5 + NEAR, delivery
        wait = _iso(delivery["next_attempt_at"], f"next of {delivery}", near=False) - _iso(
            second["created"], "2nd"
        )
        assert 270 <= wait.total_seconds() <= 331, delivery
    finally:
        failing.close()

    # todo's index pages through alice's trackers, newest change first, one per page: a
    # cursor holding an (updated, id) pair brings each once.
    made = requests.post(
        f"{net.todo}/api/trackers", headers=bearer(token), json={"name": "v"}, timeout=10
    )
    assert made.status_code == 201, made.text
    open_page_as(net, alice, "alice", net.todo, "/create")  # logs her in at todo
    page = alice.get(f"{net.todo}/", timeout=10)
    seen: list[str] = []
    for _ in range(5):
        mine = page.text.split('id="your-trackers"', 1)[1].split("</section>", 1)[0]
        seen += re.findall(r'class="item-title"[^>]*>~alice/([a-z]+)<', mine)
        for stamp in re.findall(r'<time datetime="([^"]*)"', mine):
            _time_attribute(stamp, "a tracker's updated on todo's index")
        older = re.search(r'href="([^"]*)" rel="next"', mine)
        if older is None:
            break
        page = alice.get(net.todo + html.unescape(older.group(1)), timeout=10)
        assert page.status_code == 200, page.url
    assert seen == ["v", "u", "t"], seen

    # A file's Last-Modified is its modification time (HTTP dates are GMT), and a
    # browser's If-Modified-Since with it is a 304.
    icon = requests.get(f"{net.meta}/favicon.ico", timeout=10)
    assert icon.status_code == 200, icon.status_code
    modified = email.utils.parsedate_to_datetime(icon.headers["Last-Modified"])
    mtime = (resource_dir("static") / "favicon.svg").stat().st_mtime
    assert modified.timestamp() == int(mtime), (icon.headers["Last-Modified"], mtime)
    again = {"If-Modified-Since": icon.headers["Last-Modified"]}
    assert requests.get(f"{net.meta}/favicon.ico", headers=again, timeout=10).status_code == 304

    # Turning TOTP on with the code an authenticator app shows at the true time.
    page = alice.get(f"{net.meta}/security/two-factor", timeout=10)
    found = re.search(r'id="totp-secret">([A-Z2-7 ]+)<', page.text)
    assert found, page.text[:2000]
    secret = found.group(1).replace(" ", "")
    on = alice.post(
        f"{net.meta}/security/two-factor",
        data={
            "csrf_token": csrf(page),
            "code": _totp(secret, time.time()),
            "current_password": PASSWORD,
        },
        timeout=10,
    )
    assert on.status_code == 200 and "recovery-codes" in on.text, on.text[:2000]


#: srcore's own log line: ``2026-12-05 21:17:47,036 +1400 INFO srcore.access: ...``.
_LOG_LINE = re.compile(
    r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}) ([+-]\d{4}) "
    r"INFO srcore\.access: todo \"GET /nowhere\" 404"
)


def test_log_lines_say_their_offset_from_utc(tmp_path: Path) -> None:
    """todo under gunicorn, ``TZ=Pacific/Kiritimati``: its access log line carries the
    offset, as gunicorn's lines beside it do, and names the true moment."""
    from srcore.app import migration_target
    from srcore.migrate import upgrade_all

    port = free_port()
    config = write_config(
        tmp_path / "config.ini",
        service_id="todo",
        database_url=f"sqlite:///{tmp_path / 'todo.db'}",
        origin=f"http://127.0.0.1:{port}",
    )
    upgrade_all(migration_target("todo", config))
    environ = dict(os.environ, SRCORE_CONFIG=str(config), TZ=PROCESS_ZONE, PYTHONUNBUFFERED="1")
    log = tmp_path / "stderr.log"
    with log.open("wb") as err:
        server = subprocess.Popen(
            gunicorn_argv("todo:create_app()", port=port),
            env=environ,
            stdout=subprocess.DEVNULL,
            stderr=err,
            start_new_session=True,
        )
    try:
        wait_for(lambda: http_ok(f"http://127.0.0.1:{port}/healthz"), timeout=60)
        before = time.time()
        answer = requests.get(f"http://127.0.0.1:{port}/nowhere", timeout=10)
        assert answer.status_code == 404
        wait_for(lambda: "GET /nowhere" in log.read_text("utf-8", "replace"))
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=10)
    text = log.read_text("utf-8", "replace")
    found = [m for line in text.splitlines() if (m := _LOG_LINE.match(line))]
    assert found, text[-3000:]
    wall, millis, offset = found[0].groups()
    moment = datetime.strptime(f"{wall}.{millis}000 {offset}", "%Y-%m-%d %H:%M:%S.%f %z")
    assert moment.utcoffset() == timedelta(hours=14)
    assert abs(moment.timestamp() - before) < NEAR, (moment, text[-2000:])
    # gunicorn's own lines in the same stream say the same offset.
    assert " +1400] [" in text, text[-2000:]


def test_a_webhook_receiver_given_a_naive_now_is_told_not_misled(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``verify(now=datetime.utcnow())`` on a host whose zone is not UTC read that time as
    local: every fresh message was "outside the tolerance" (and old ones inside it).
    A naive *now* is refused wherever it runs."""
    from standardwebhooks import Webhook

    secret = signatures.generate_secret()
    sent = datetime.now(UTC).replace(microsecond=0)
    headers = {
        "webhook-id": "msg_1",
        "webhook-timestamp": str(int(sent.timestamp())),
        "webhook-signature": Webhook(secret).sign("msg_1", sent, '{"a":1}'),
    }
    assert signatures.verify(secret, headers, '{"a":1}', now=sent) == {"a": 1}
    naive = sent.replace(tzinfo=None)  # what datetime.utcnow() gives
    for zone in (PROCESS_ZONE, "America/St_Johns", "UTC"):
        with _process_zone(monkeypatch, zone):
            with pytest.raises(TypeError, match="naive"):
                signatures.verify(secret, headers, '{"a":1}', now=naive)
            assert signatures.verify(secret, headers, '{"a":1}', now=sent) == {"a": 1}


@contextlib.contextmanager
def _process_zone(monkeypatch: pytest.MonkeyPatch, zone: str) -> Iterator[None]:
    """This process's local time zone is *zone* within the block."""
    with monkeypatch.context() as patch:
        patch.setenv("TZ", zone)
        time.tzset()
        try:
            yield
        finally:
            patch.undo()
            time.tzset()


def test_times_written_for_machines_are_utc_with_their_offset(app: Any) -> None:
    """What the API answers and a webhook carries: RFC 3339 ``date-time`` (the OpenAPI
    documents' format) in UTC, whether the time came naive (a UTC wall time, as SQLite
    holds it) or in another zone (as PostgreSQL hands a ``timestamptz`` over in its
    session's ``timezone``). Before, a naive one went out without any offset, and each
    zone's with its own."""
    from zoneinfo import ZoneInfo

    from srcore.webhooks.outbox import dump_payload

    moment = datetime(2026, 12, 5, 7, 15, 30, 250000, tzinfo=UTC)
    given = [
        moment,
        moment.replace(tzinfo=None),
        moment.astimezone(ZoneInfo(PROCESS_ZONE)),
        moment.astimezone(ZoneInfo(DATABASE_ZONE)),
    ]
    expected = "2026-12-05T07:15:30.250000+00:00"
    answered = json.loads(app.json.dumps({"times": given, "day": moment.date()}))
    assert answered == {"times": [expected] * 4, "day": "2026-12-05"}
    carried = json.loads(dump_payload({"times": given, "day": moment.date()}))
    assert carried == {"times": [expected] * 4, "day": "2026-12-05"}


def test_a_webhook_receiver_allows_its_clock_five_minutes_either_way() -> None:
    """The tutorial's promise: a delivery is taken within 5 minutes of the receiver's
    clock, either way, and refused past that."""
    from standardwebhooks import Webhook

    secret = signatures.generate_secret()
    sent = datetime.now(UTC).replace(microsecond=0)
    headers = {
        "webhook-id": "msg_1",
        "webhook-timestamp": str(int(sent.timestamp())),
        "webhook-signature": Webhook(secret).sign("msg_1", sent, "{}"),
    }
    for off in (-300, -299, 0, 299, 300):
        assert signatures.verify(secret, headers, "{}", now=sent + timedelta(seconds=off)) == {}
    for off in (-301, 301):
        with pytest.raises(signatures.WebhookVerificationError, match="tolerance"):
            signatures.verify(secret, headers, "{}", now=sent + timedelta(seconds=off))


def test_a_celery_workers_lines_say_their_offset_from_utc(tmp_path: Path) -> None:
    """``celery -A srcore.webhooks.celery worker`` on a ``TZ=Pacific/Kiritimati`` host:
    Celery's own lines carry the offset too, as srcore's and gunicorn's do."""
    import redis

    broker = "redis://127.0.0.1:6379/12"  # a database of its own: no other test's queue
    try:
        up = bool(redis.Redis.from_url(broker, socket_connect_timeout=1).ping())
    except redis.RedisError:
        up = False
    require_or_skip(up, "Redis")
    config = write_config(
        tmp_path / "config.ini",
        service_id="todo",
        database_url=f"sqlite:///{tmp_path / 'todo.db'}",
    )
    text = config.read_text(encoding="utf-8")
    config.write_text(text.replace("[global]\n", f"[global]\nwebhooks-broker = {broker}\n", 1))
    environ = dict(
        os.environ,
        SRCORE_SERVICE="todo",
        SRCORE_CONFIG=str(config),
        TZ=PROCESS_ZONE,
        PYTHONUNBUFFERED="1",
    )
    command = ["timeout", "-s", "KILL", "90", sys.executable, "-m", "celery"]
    command += ["-A", "srcore.webhooks.celery", "worker", "--loglevel", "info", "-c", "1"]
    command += ["--pool", "solo", "--without-gossip", "--without-mingle", "--without-heartbeat"]
    log = tmp_path / "celery.log"
    with log.open("wb") as out:
        worker = subprocess.Popen(command, env=environ, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: " ready." in log.read_text("utf-8", "replace"), timeout=60)
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(timeout=20)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait(timeout=10)
    text = log.read_text("utf-8", "replace")
    stamps = re.findall(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})( [+-]\d{4})?: ", text, re.M)
    assert stamps, text[-3000:]
    assert all(offset == " +1400" for _, offset in stamps), text[-3000:]
