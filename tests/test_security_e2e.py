"""End to end, from outside: meta, todo and paste under gunicorn on 127.0.0.1, attacked
with plain ``requests`` and raw sockets the way a stranger's client would.

Each test tries one way in that the security model (docs/security.md) says is closed:
state changed by a safe method, another user's events reaching a subscriber, a token
growing wider or longer-lived than the one that made it, a session or link outliving a
logout or an address change, strangers locking a real OAuth client out or guessing its
secret at endpoints other than the token endpoint, hostile bytes causing a 5xx or a
half-written row, and an answer without the security headers. Users register through
meta's pages, each from its own loopback address (meta throttles registrations per
address); webhook receivers listen on 127.0.0.1 (``allow-private-webhook-targets``).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import html
import json
import re
import secrets
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from itertools import count
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from requests.adapters import HTTPAdapter

from srcore.testing import (
    SMTPSink,
    free_port,
    run_service,
    run_worker,
    serve_smtp_sink,
    write_network_config,
)

pytestmark = [pytest.mark.slow]

PASSWORD = "correct horse battery staple"
_CSRF = re.compile(r'name="csrf_token"[^>]*value="([^"]+)"')
_NEW_TOKEN = re.compile(r'id="new-token">([^<]+)<')
#: How long an event or a revocation may take to travel between the services.
REACH = 15.0
SECURITY_HEADERS = (
    "content-security-policy",
    "x-frame-options",
    "x-content-type-options",
    "referrer-policy",
)
#: Each new browser gets its own source address, 127.0.0.<n>.
_ADDRESSES = count(10)


# -- the network ----------------------------------------------------------------------------


class Receiver:
    """A webhook receiver on 127.0.0.1 that keeps every body it is sent."""

    def __init__(self) -> None:
        got: list[dict[str, Any]] = []
        self.got = got

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                got.append(json.loads(self.rfile.read(length) or b"null"))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@dataclass
class Network:
    config: Path
    dir: Path
    meta: str
    todo: str
    paste: str
    sink: SMTPSink
    secrets: dict[str, str]
    receivers: list[Receiver] = field(default_factory=list)

    def receiver(self) -> Receiver:
        made = Receiver()
        self.receivers.append(made)
        return made

    def rows(self, service: str, query: str) -> list[Any]:
        with contextlib.closing(sqlite3.connect(self.dir / f"{service}.db", timeout=5)) as db:
            return db.execute(query).fetchall()


@pytest.fixture(scope="module")
def mail_sink() -> Iterator[SMTPSink]:
    """The services' mail, kept as long as the network runs."""
    with serve_smtp_sink() as sink:
        yield sink


@pytest.fixture(scope="module")
def network(tmp_path_factory: pytest.TempPathFactory, mail_sink: SMTPSink) -> Iterator[Network]:
    from srcore.app import migration_target
    from srcore.migrate import upgrade_all

    tmp = tmp_path_factory.mktemp("security-e2e")
    ports = {"meta": free_port(), "todo": free_port(), "paste": free_port()}
    config = write_network_config(
        tmp / "config.ini",
        ports,
        global_keys={
            **mail_sink.config_keys(),
            "revocation-pull-interval": "1s",
            "allow-private-webhook-targets": "127.0.0.0/8",
        },
    )
    keys: dict[str, str] = {}
    section = ""
    for line in config.read_text(encoding="utf-8").splitlines():
        if line.startswith("["):
            section = line.strip("[]")
        elif line.startswith("oauth-client-secret = "):
            keys[section] = line.split(" = ", 1)[1]
    for service in ports:
        upgrade_all(migration_target(service, config))
    with contextlib.ExitStack() as stack:
        urls = {}
        for service, port in ports.items():
            urls[service] = stack.enter_context(run_service(service, config, port=port, timeout=60))
            stack.enter_context(run_worker(service, config, timeout=60))
        net = Network(config, tmp, urls["meta"], urls["todo"], urls["paste"], mail_sink, keys)
        try:
            yield net
        finally:
            for receiver in net.receivers:
                receiver.close()


# -- what a browser or a client does --------------------------------------------------------


class _SourceAddress(HTTPAdapter):
    """Connect from *address* (any 127.0.0.0/8 address is this machine)."""

    def __init__(self, address: str) -> None:
        self.address = address
        super().__init__()

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        kwargs["source_address"] = (self.address, 0)
        super().init_poolmanager(*args, **kwargs)


def browser(address: str | None = None) -> requests.Session:
    """A fresh browser on its own loopback address."""
    session = requests.Session()
    session.mount("http://", _SourceAddress(address or f"127.0.0.{next(_ADDRESSES)}"))
    return session


def csrf(page: requests.Response) -> str:
    found = _CSRF.search(page.text)
    assert found, f"no CSRF token on {page.url} ({page.status_code})"
    return found.group(1)


def register(net: Network, username: str, *, confirm: bool = True) -> requests.Session:
    """Register *username* at meta (confirming the address); their browser, logged in."""
    b = browser()
    page = b.get(f"{net.meta}/register", timeout=10)
    form = {
        "csrf_token": csrf(page),
        "username": username,
        "email": f"{username}@example.org",
        "password": PASSWORD,
    }
    done = b.post(f"{net.meta}/register", data=form, timeout=10)
    assert done.status_code == 200, done.text[:2000]
    if confirm:
        link = net.sink.wait_for_link(f"{username}@example.org", "/confirm/")
        assert b.get(link, timeout=10).status_code == 200
    return b


def open_page(net: Network, b: requests.Session, base: str, path: str) -> requests.Response:
    """GET *path* of *base*, logging in at meta's form if the service sends the browser there."""
    page = b.get(base + path, timeout=10)
    if page.url.startswith(f"{net.meta}/login"):
        username = re.sub(r"@.*", "", _email_of(b, net))
        form = {"csrf_token": csrf(page), "login": username, "password": PASSWORD}
        page = b.post(page.url, data=form, timeout=10)
    assert page.status_code == 200, (page.status_code, page.url)
    return page


def _email_of(b: requests.Session, net: Network) -> str:
    profile = b.get(f"{net.meta}/profile", timeout=10)
    found = re.search(r"([a-z0-9]+)@example\.org", profile.text)
    assert found, profile.text[:2000]
    return found.group(0)


def personal_token(net: Network, b: requests.Session, scopes: list[str], days: str = "365") -> str:
    page = b.get(f"{net.meta}/security", timeout=10)
    form = {"csrf_token": csrf(page), "name": "e2e", "scopes": scopes, "expires": days}
    made = b.post(f"{net.meta}/security/tokens", data=form, timeout=10)
    found = _NEW_TOKEN.search(made.text)
    assert found, made.text[:2000]
    return found.group(1).strip()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def claims(token: str) -> dict[str, Any]:
    """A JWT's payload, read and not verified (the services verify)."""
    payload = token.split(".")[1]
    data: dict[str, Any] = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return data


def wait_for(check: Callable[[], bool], timeout: float = REACH) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s")
        time.sleep(0.05)


def raw_request(base: str, data: bytes, *, timeout: float = 10) -> bytes:
    """Send *data* as it is over a new connection to *base* and read the whole answer."""
    parts = urlsplit(base)
    assert parts.hostname is not None and parts.port is not None
    with socket.create_connection((parts.hostname, parts.port), timeout=timeout) as sock:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


def header_names(answer: bytes) -> set[str]:
    head = answer.split(b"\r\n\r\n", 1)[0].decode("latin-1")
    return {line.split(":", 1)[0].strip().lower() for line in head.split("\r\n")[1:]}


# -- safe methods ---------------------------------------------------------------------------


def test_head_and_options_with_form_fields_in_the_query_change_nothing(network: Network) -> None:
    net = network
    stranger = browser()
    for method in ("HEAD", "OPTIONS"):
        for path, fields in [
            (
                "/register",
                {"username": "ghost", "email": "ghost@example.org", "password": PASSWORD},
            ),
            ("/forgot", {"email": "ghost@example.org"}),
            ("/login", {"login": "ghost", "password": PASSWORD}),
        ]:
            page = stranger.get(f"{net.meta}{path}", timeout=10)
            query = {**fields, "csrf_token": csrf(page)}
            answer = stranger.request(method, f"{net.meta}{path}", params=query, timeout=10)
            assert answer.status_code < 500, (method, path, answer.status_code)

    owner = register(net, "quentin")
    mails = len(net.sink.messages)
    page = open_page(net, owner, net.todo, "/create")
    made = owner.post(
        f"{net.todo}/create",
        data={"csrf_token": csrf(page), "name": "kept", "visibility": "public"},
        timeout=10,
    )
    assert made.status_code == 200, made.text[:2000]
    todo_token = csrf(owner.get(f"{net.todo}/~quentin/kept/settings", timeout=10))
    paste_token = csrf(open_page(net, owner, net.paste, "/new"))
    meta_token = csrf(owner.get(f"{net.meta}/profile", timeout=10))
    forms = [
        (net.todo, "/create", {"csrf_token": todo_token, "name": "made", "visibility": "public"}),
        (
            net.todo,
            "/~quentin/kept/settings",
            {"csrf_token": todo_token, "name": "renamed", "visibility": "private"},
        ),
        (net.todo, "/~quentin/kept/delete", {"csrf_token": todo_token, "confirm": "kept"}),
        (net.todo, "/~quentin/kept/new", {"csrf_token": todo_token, "title": "a ticket"}),
        (net.todo, "/webhooks/new", {"csrf_token": todo_token, "url": "http://127.0.0.1:9/"}),
        (net.paste, "/new", {"csrf_token": paste_token, "text": "made", "title": "made"}),
        (net.paste, "/webhooks/new", {"csrf_token": paste_token, "url": "http://127.0.0.1:9/"}),
        (net.meta, "/profile", {"csrf_token": meta_token, "location": "Elsewhere"}),
        (net.meta, "/email", {"csrf_token": meta_token, "email": "q2@example.org"}),
        (net.meta, "/password", {"csrf_token": meta_token, "password": "x" * 20}),
        (net.meta, "/clients", {"csrf_token": meta_token, "name": "app", "kind": "public"}),
        (net.meta, "/delete", {"csrf_token": meta_token, "password": PASSWORD}),
        (net.meta, "/security/tokens", {"csrf_token": meta_token, "scopes": "meta/profile:RO"}),
        (net.meta, "/logout", {"csrf_token": meta_token}),
    ]
    for method in ("HEAD", "OPTIONS"):
        for base, path, fields in forms:
            answer = owner.request(
                method, base + path, params=fields, allow_redirects=False, timeout=10
            )
            assert answer.status_code < 500, (method, path, answer.status_code)
    time.sleep(0.5)  # a mail sent after the answer would have arrived
    assert len(net.sink.messages) == mails, "a safe method sent mail"
    assert net.rows("meta", "SELECT username FROM user WHERE username = 'ghost'") == []
    assert net.rows("todo", "SELECT name, visibility FROM tracker") == [("kept", "public")]
    assert net.rows("todo", "SELECT COUNT(*) FROM ticket") == [(0,)]
    assert net.rows("todo", "SELECT COUNT(*) FROM srcore_webhook_subscription") == [(0,)]
    assert net.rows("paste", "SELECT COUNT(*) FROM paste") == [(0,)]
    assert net.rows("meta", "SELECT location FROM user WHERE username = 'quentin'") == [(None,)]
    assert net.rows("meta", "SELECT COUNT(*) FROM oauth_client") == [(0,)]
    assert owner.get(f"{net.meta}/profile", timeout=10).url == f"{net.meta}/profile"


def test_head_does_not_spend_a_link_that_writes_on_get(network: Network) -> None:
    """A link checker or a preview sends HEAD: the confirmation link (which writes when a
    person opens it) must still be there, unused, for the person."""
    net = network
    register(net, "hugo", confirm=False)
    link = net.sink.wait_for_link("hugo@example.org", "/confirm/")
    probe = browser()
    for method in ("HEAD", "OPTIONS"):
        answer = probe.request(method, link, allow_redirects=False, timeout=10)
        assert answer.status_code < 500, (method, answer.status_code)
    assert net.rows("meta", "SELECT user_type FROM user WHERE username = 'hugo'") == [
        ("unconfirmed",)
    ]
    assert probe.get(link, timeout=10).status_code == 200
    assert net.rows("meta", "SELECT user_type FROM user WHERE username = 'hugo'") == [("active",)]


# -- webhooks -------------------------------------------------------------------------------

_TODO_EVENTS = [
    "tracker:created",
    "tracker:updated",
    "tracker:deleted",
    "ticket:created",
    "ticket:updated",
    "comment:created",
]


def test_another_users_webhooks_receive_nothing_private(network: Network) -> None:
    net = network
    anna, bert = register(net, "anna"), register(net, "bert")
    by_api, by_page = net.receiver(), net.receiver()
    token = personal_token(
        net, bert, ["todo/trackers:RW", "todo/tickets:RW", "paste/pastes:RW", "meta/profile:RW"]
    )
    wanted = {net.todo: _TODO_EVENTS, net.paste: ["paste:created"], net.meta: ["profile:updated"]}
    for base, events in wanted.items():
        made = requests.post(
            f"{base}/api/webhooks",
            headers=bearer(token),
            json={"url": by_api.url, "events": events},
            timeout=10,
        )
        assert made.status_code == 201, made.text
        page = open_page(net, bert, base, "/webhooks/new")
        made = bert.post(
            f"{base}/webhooks/new",
            data={"csrf_token": csrf(page), "url": by_page.url, "events": events},
            timeout=10,
        )
        assert made.status_code in (200, 201), made.text[:2000]
    # meta's network-internal events cannot be subscribed to at all.
    internal = requests.post(
        f"{net.meta}/api/webhooks",
        headers=bearer(token),
        json={"url": by_api.url, "events": ["revocation:issued", "user:suspended"]},
        timeout=10,
    )
    assert internal.status_code == 400, internal.text

    page = open_page(net, anna, net.todo, "/create")
    for name, visibility in (("hidden", "private"), ("quiet", "unlisted")):
        made = anna.post(
            f"{net.todo}/create",
            data={"csrf_token": csrf(page), "name": name, "visibility": visibility},
            timeout=10,
        )
        assert made.url == f"{net.todo}/~anna/{name}", made.url
        form = anna.get(f"{net.todo}/~anna/{name}/new", timeout=10)
        ticket = anna.post(
            f"{net.todo}/~anna/{name}/new",
            data={"csrf_token": csrf(form), "title": "secret ticket", "description": "x"},
            timeout=10,
        )
        assert ticket.status_code == 200, ticket.text[:2000]
        shown = anna.get(ticket.url, timeout=10)
        anna.post(
            f"{ticket.url}/comment",
            data={"csrf_token": csrf(shown), "text": "secret comment"},
            timeout=10,
        )
        anna.post(
            f"{ticket.url}/status",
            data={"csrf_token": csrf(shown), "status": "resolved"},
            timeout=10,
        )
    page = open_page(net, anna, net.paste, "/new")
    made = anna.post(
        f"{net.paste}/new",
        data={"csrf_token": csrf(page), "text": "secret text", "visibility": "unlisted"},
        timeout=10,
    )
    assert made.status_code == 200, made.text[:2000]
    profile = anna.get(f"{net.meta}/profile", timeout=10)
    saved = anna.post(
        f"{net.meta}/profile",
        data={"csrf_token": csrf(profile), "location": "Secretville", "url": "", "bio": ""},
        timeout=10,
    )
    assert saved.status_code == 200
    front = anna.get(f"{net.meta}/security", timeout=10)
    anna.post(f"{net.meta}/logout/everywhere", data={"csrf_token": csrf(front)}, timeout=10)
    # Then something bert may see: a public paste of anna's, the positive control.
    anna = browser()
    page = open_page_as(net, anna, "anna", net.paste, "/new")
    anna.post(
        f"{net.paste}/new",
        data={"csrf_token": csrf(page), "text": "public text", "visibility": "public"},
        timeout=10,
    )
    wait_for(lambda: len(by_api.got) >= 1 and len(by_page.got) >= 1)
    time.sleep(1)  # anything earlier was queued before the public paste
    for got in (by_api.got, by_page.got):
        assert [(m["type"], m["data"]["visibility"]) for m in got] == [
            ("paste:created", "public")
        ], got
        assert "Secretville" not in json.dumps(got)


def open_page_as(
    net: Network, b: requests.Session, username: str, base: str, path: str
) -> requests.Response:
    page = b.get(base + path, timeout=10)
    if page.url.startswith(f"{net.meta}/login"):
        form = {"csrf_token": csrf(page), "login": username, "password": PASSWORD}
        page = b.post(page.url, data=form, timeout=10)
    assert page.status_code == 200, (page.status_code, page.url)
    return page


def test_a_read_only_token_cannot_manage_subscriptions(network: Network) -> None:
    net = network
    carl = register(net, "carl")
    receiver = net.receiver()
    rw = personal_token(net, carl, ["todo/trackers:RW", "todo/tickets:RW"])
    ro = personal_token(net, carl, ["todo/trackers:RO", "todo/tickets:RO"])
    made = requests.post(
        f"{net.todo}/api/webhooks",
        headers=bearer(rw),
        json={"url": receiver.url, "events": ["tracker:created"]},
        timeout=10,
    )
    assert made.status_code == 201, made.text
    sid = made.json()["id"]
    subscriptions = net.rows("todo", "SELECT COUNT(*) FROM srcore_webhook_subscription")
    before = requests.get(f"{net.todo}/api/webhooks/{sid}", headers=bearer(rw), timeout=10).json()
    for method, path, body in [
        ("POST", "/api/webhooks", {"url": receiver.url, "events": ["tracker:created"]}),
        ("PATCH", f"/api/webhooks/{sid}", {"url": "http://127.0.0.1:9/elsewhere"}),
        ("PATCH", f"/api/webhooks/{sid}", {"enabled": False}),
        ("POST", f"/api/webhooks/{sid}/rotate", {}),
        ("POST", f"/api/webhooks/{sid}/deliveries/1/redeliver", None),
        ("DELETE", f"/api/webhooks/{sid}", None),
    ]:
        answer = requests.request(
            method, net.todo + path, headers=bearer(ro), json=body, timeout=10
        )
        assert answer.status_code == 403, (method, path, answer.status_code, answer.text)
    form = requests.post(
        f"{net.todo}/api/webhooks",
        headers=bearer(ro),
        data={"url": receiver.url, "events": "tracker:created"},
        timeout=10,
    )
    assert form.status_code == 403
    after = requests.get(f"{net.todo}/api/webhooks/{sid}", headers=bearer(ro), timeout=10)
    assert after.status_code == 200
    assert after.json() == before
    assert net.rows("todo", "SELECT COUNT(*) FROM srcore_webhook_subscription") == subscriptions


def test_another_users_subscriptions_and_private_trackers_are_not_found(
    network: Network,
) -> None:
    net = network
    olga, pete = register(net, "olga"), register(net, "pete")
    receiver = net.receiver()
    scopes = ["todo/trackers:RW", "todo/tickets:RW"]
    olga_token, pete_token = personal_token(net, olga, scopes), personal_token(net, pete, scopes)
    made = requests.post(
        f"{net.todo}/api/trackers",
        headers=bearer(olga_token),
        json={"name": "diary", "visibility": "private"},
        timeout=10,
    )
    assert made.status_code == 201, made.text
    tracker_id = made.json()["id"]
    sub = requests.post(
        f"{net.todo}/api/webhooks",
        headers=bearer(olga_token),
        json={"url": receiver.url, "events": ["ticket:created"]},
        timeout=10,
    ).json()
    before = requests.get(
        f"{net.todo}/api/webhooks/{sub['id']}", headers=bearer(olga_token), timeout=10
    ).json()
    for method, path, body in [
        ("GET", f"/api/webhooks/{sub['id']}", None),
        ("PATCH", f"/api/webhooks/{sub['id']}", {"url": "http://127.0.0.1:9/mine"}),
        ("POST", f"/api/webhooks/{sub['id']}/rotate", {}),
        ("GET", f"/api/webhooks/{sub['id']}/deliveries", None),
        ("DELETE", f"/api/webhooks/{sub['id']}", None),
        ("GET", "/api/trackers/diary", None),
        ("POST", "/api/trackers/diary/tickets", {"title": "hello"}),
    ]:
        answer = requests.request(
            method, net.todo + path, headers=bearer(pete_token), json=body, timeout=10
        )
        assert answer.status_code == 404, (method, path, answer.status_code)
    # A subscription filtered on her tracker is refused: pete cannot see it.
    filtered = requests.post(
        f"{net.todo}/api/webhooks",
        headers=bearer(pete_token),
        json={
            "url": receiver.url,
            "events": ["ticket:created"],
            "resource": f"tracker:{tracker_id}",
        },
        timeout=10,
    )
    assert filtered.status_code == 400, filtered.text
    token = csrf(open_page(net, pete, net.todo, "/webhooks/new"))
    for path in (f"/webhooks/{sub['id']}", f"/webhooks/{sub['id']}/edit", "/~olga/diary"):
        assert pete.get(net.todo + path, timeout=10).status_code == 404, path
    for path in ("edit", "rotate", "disable", "delete"):
        answer = pete.post(
            f"{net.todo}/webhooks/{sub['id']}/{path}",
            data={
                "csrf_token": token,
                "url": "http://127.0.0.1:9/mine",
                "events": "ticket:created",
            },
            allow_redirects=False,
            timeout=10,
        )
        assert answer.status_code == 404, (path, answer.status_code)
    after = requests.get(
        f"{net.todo}/api/webhooks/{sub['id']}", headers=bearer(olga_token), timeout=10
    )
    assert after.json() == before
    # Logging in never sends the browser off the network, whatever "next" says.
    for target in (
        "https://evil.invalid/",
        "//evil.invalid/",
        "/\\evil.invalid/",
        "http:evil.invalid",
    ):
        b = browser()
        page = b.get(f"{net.meta}/login", params={"next": target}, timeout=10)
        done = b.post(
            f"{net.meta}/login",
            params={"next": target},
            data={"csrf_token": csrf(page), "login": "pete", "password": PASSWORD},
            allow_redirects=False,
            timeout=10,
        )
        assert done.status_code == 302, done.text[:2000]
        assert "evil.invalid" not in done.headers["Location"], (target, done.headers)
        for base in (net.todo, net.paste):
            answer = b.get(f"{base}/login", params={"next": target}, timeout=10)
            assert answer.url.startswith(base + "/"), (target, answer.url)


# -- tokens ---------------------------------------------------------------------------------


def test_a_token_makes_no_token_wider_or_longer_lived_than_itself(network: Network) -> None:
    net = network
    dora = register(net, "dora")
    parent = personal_token(net, dora, ["meta/tokens:RW", "todo/trackers:RO"], days="30")
    parent_exp = claims(parent)["exp"]

    def mint(token: str, **body: Any) -> requests.Response:
        return requests.post(
            f"{net.meta}/api/tokens", headers=bearer(token), json={"name": "c", **body}, timeout=10
        )

    for scopes in (
        ["todo/trackers:RW"],
        ["meta/profile:RO"],
        ["meta/tokens:RW", "paste/pastes:RO"],
    ):
        refused = mint(parent, scopes=scopes)
        assert refused.status_code == 400, (scopes, refused.text)
    # Repeated form fields are all read, not just the first one.
    form = requests.post(
        f"{net.meta}/api/tokens",
        headers=bearer(parent),
        data={"name": "c", "scopes": ["meta/tokens:RW", "meta/profile:RW"]},
        timeout=10,
    )
    assert form.status_code == 400, form.text
    # No child outlives its parent: never-expiring, or a year, ends when the parent does.
    for asked in (None, 365):
        child = mint(parent, scopes=["todo/trackers:RO"], expires_in_days=asked)
        assert child.status_code == 201, child.text
        assert claims(child.json()["token"])["exp"] <= parent_exp, asked
    # ...nor a grandchild.
    child = mint(parent, scopes=["meta/tokens:RW", "todo/trackers:RO"], expires_in_days=7)
    assert child.status_code == 201, child.text
    grandchild = mint(child.json()["token"], scopes=["todo/trackers:RO"], expires_in_days=None)
    assert grandchild.status_code == 201, grandchild.text
    token = grandchild.json()["token"]
    assert claims(token)["exp"] <= claims(child.json()["token"])["exp"]
    assert requests.get(f"{net.todo}/api/trackers", headers=bearer(token), timeout=10).ok

    # Revoking the parent ends every descendant, at meta and at todo.
    listing = requests.get(f"{net.meta}/api/tokens", headers=bearer(parent), timeout=10)
    own = [t["id"] for t in listing.json()["results"] if t["name"] == "e2e"]
    gone = requests.delete(f"{net.meta}/api/tokens/{own[0]}", headers=bearer(parent), timeout=10)
    assert gone.status_code == 204
    for t in (parent, child.json()["token"], token):
        wait_for(
            lambda t=t: (
                requests.get(f"{net.todo}/api/trackers", headers=bearer(t), timeout=10).status_code
                == 401
            )
        )
        assert (
            requests.get(f"{net.meta}/api/tokens", headers=bearer(t), timeout=10).status_code == 401
        )


def test_unconfirmed_accounts_get_no_tokens_and_no_sign_in(network: Network) -> None:
    net = network
    eve = register(net, "eve", confirm=False)
    page = eve.get(f"{net.meta}/security", timeout=10)
    refused = eve.post(
        f"{net.meta}/security/tokens",
        data={
            "csrf_token": csrf(page),
            "name": "x",
            "scopes": ["todo/trackers:RO"],
            "expires": "30",
        },
        timeout=10,
    )
    assert refused.status_code == 403
    assert not _NEW_TOKEN.search(refused.text)
    signed_in = eve.get(f"{net.todo}/create", timeout=10)
    assert signed_in.status_code == 403, signed_in.url
    assert net.rows(
        "meta",
        "SELECT COUNT(*) FROM personal_access_token pat JOIN user u "
        "ON u.id = pat.user_id WHERE u.username = 'eve'",
    ) == [(0,)]


def test_a_token_made_right_after_a_password_change_works(network: Network) -> None:
    net = network
    fay = register(net, "fay")
    old = personal_token(net, fay, ["meta/profile:RO", "todo/trackers:RO"])
    page = fay.get(f"{net.meta}/password", timeout=10)
    changed = fay.post(
        f"{net.meta}/password",
        data={"csrf_token": csrf(page), "current_password": PASSWORD, "password": PASSWORD + "!"},
        timeout=10,
    )
    assert changed.status_code == 200, changed.text[:2000]
    new = personal_token(net, fay, ["meta/profile:RO", "todo/trackers:RO"])
    wait_for(
        lambda: (
            requests.get(f"{net.todo}/api/trackers", headers=bearer(old), timeout=10).status_code
            == 401
        )
    )
    time.sleep(1.5)  # past the revocation's second and the next pull
    assert (
        requests.get(f"{net.meta}/api/profile", headers=bearer(new), timeout=10).status_code == 200
    )
    assert (
        requests.get(f"{net.todo}/api/trackers", headers=bearer(new), timeout=10).status_code == 200
    )
    assert (
        requests.get(f"{net.meta}/api/profile", headers=bearer(old), timeout=10).status_code == 401
    )


# -- sessions and links ---------------------------------------------------------------------


def test_a_copied_meta_cookie_dies_with_the_logout(network: Network) -> None:
    net = network
    gil = register(net, "gil")
    open_page(net, gil, net.todo, "/create")
    copy = browser()
    for cookie in gil.cookies:
        copy.cookies.set(cookie.name, cookie.value)
    assert copy.get(f"{net.meta}/profile", allow_redirects=False, timeout=10).status_code == 200
    page = gil.get(f"{net.meta}/profile", timeout=10)
    gil.post(f"{net.meta}/logout", data={"csrf_token": csrf(page)}, timeout=10)
    assert copy.get(f"{net.meta}/profile", allow_redirects=False, timeout=10).status_code == 302
    # The copied todo session ends too (meta's event), and single sign-on asks for a login.
    wait_for(
        lambda: copy.get(f"{net.todo}/create", allow_redirects=False, timeout=10).status_code == 302
    )
    sso = copy.get(f"{net.paste}/new", timeout=10)
    assert sso.url.startswith(f"{net.meta}/login"), sso.url


def test_a_reset_link_to_the_old_address_dies_with_the_change(network: Network) -> None:
    net = network
    ivy = register(net, "ivy")
    stranger = browser()
    # Asked with a forged Host: the mailed link still names meta's configured origin.
    forged = {"Host": "evil.invalid", "X-Forwarded-Host": "evil.invalid"}
    form = stranger.get(f"{net.meta}/forgot", headers=forged, timeout=10)
    asked = stranger.post(
        f"{net.meta}/forgot",
        data={"csrf_token": csrf(form), "email": "ivy@example.org"},
        headers=forged,
        timeout=10,
    )
    assert asked.status_code == 200, asked.text[:2000]
    reset = net.sink.wait_for_link("ivy@example.org", "/reset/")
    assert reset.startswith(f"{net.meta}/reset/"), reset
    assert all("evil.invalid" not in m.get_content() for m in net.sink.to("ivy@example.org"))
    page = ivy.get(f"{net.meta}/email", timeout=10)
    asked = ivy.post(
        f"{net.meta}/email",
        data={
            "csrf_token": csrf(page),
            "email": "ivy.new@example.org",
            "current_password": PASSWORD,
        },
        timeout=10,
    )
    assert asked.status_code == 200, asked.text[:2000]
    assert ivy.get(net.sink.wait_for_link("ivy.new@example.org", "/confirm"), timeout=10).ok
    assert net.rows("meta", "SELECT email FROM user WHERE username = 'ivy'") == [
        ("ivy.new@example.org",)
    ]
    dead = stranger.get(reset, timeout=10)
    assert dead.status_code == 404
    token = reset.rsplit("/", 1)[1]
    posted = stranger.post(
        f"{net.meta}/reset/{token}",
        data={"csrf_token": csrf(form), "password": "a brand new password"},
        timeout=10,
    )
    assert posted.status_code in (400, 404)
    login = browser()
    page = login.get(f"{net.meta}/login", timeout=10)
    done = login.post(
        f"{net.meta}/login",
        data={"csrf_token": csrf(page), "login": "ivy", "password": PASSWORD},
        timeout=10,
    )
    assert not done.url.startswith(f"{net.meta}/login"), done.url
    assert login.get(f"{net.meta}/profile", timeout=10).url == f"{net.meta}/profile"


# -- the OAuth endpoints --------------------------------------------------------------------


def _register_client(net: Network, b: requests.Session, name: str) -> tuple[str, str]:
    page = b.get(f"{net.meta}/clients", timeout=10)
    made = b.post(
        f"{net.meta}/clients",
        data={
            "csrf_token": csrf(page),
            "name": name,
            "redirect_uris": "http://127.0.0.1:9/cb",
            "kind": "confidential",
        },
        timeout=10,
    )
    client_id = re.search(r'id="client-id">([^<]+)<', made.text)
    secret = re.search(r'id="client-secret">([^<]+)<', made.text)
    assert client_id and secret, made.text[:2000]
    return client_id.group(1), html.unescape(secret.group(1))


def _code_flow(net: Network, b: requests.Session, client: tuple[str, str], scope: str) -> Any:
    verifier = secrets.token_urlsafe(40)
    challenge = (
        base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    )
    query = {
        "response_type": "code",
        "client_id": client[0],
        "redirect_uri": "http://127.0.0.1:9/cb",
        "scope": scope,
        "state": "s",
        "code_challenge": challenge,
        "code_challenge_method": "S256",
    }
    consent = b.get(f"{net.meta}/oauth/authorize", params=query, timeout=10)
    assert consent.status_code == 200, consent.text[:2000]
    assert consent.headers["X-Frame-Options"] == "DENY"
    assert "frame-ancestors 'none'" in consent.headers["Content-Security-Policy"]
    approved = b.post(
        consent.url,
        data={"csrf_token": csrf(consent), "decision": "approve"},
        allow_redirects=False,
        timeout=10,
    )
    code = parse_qs(urlsplit(approved.headers["Location"]).query)["code"][0]
    answer = requests.post(
        f"{net.meta}/oauth/token",
        data={
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": "http://127.0.0.1:9/cb",
            "code_verifier": verifier,
        },
        auth=client,
        timeout=10,
    )
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_token_endpoint_refusals_spend_nothing(network: Network) -> None:
    net = network
    jon = register(net, "jon")
    app, other = _register_client(net, jon, "app"), _register_client(net, jon, "other")
    tokens = _code_flow(net, jon, app, "todo/trackers:RO meta/profile:RO")
    refresh = tokens["refresh_token"]
    for data, auth, status in [
        ({"refresh_token": refresh}, other, 400),  # another client's refresh token
        ({"refresh_token": refresh, "scope": "todo/trackers:RW"}, app, 400),  # wider
        ({"refresh_token": refresh, "scope": "nonsense"}, app, 400),
        ({"refresh_token": refresh}, (app[0], "wrong"), 401),
        ({"refresh_token": refresh, "client_id": app[0]}, None, 401),
    ]:
        answer = requests.post(
            f"{net.meta}/oauth/token",
            data={"grant_type": "refresh_token", **data},
            auth=auth,
            timeout=10,
        )
        assert answer.status_code == status, (data, answer.text)
        assert answer.headers["Cache-Control"] == "no-store"
    fresh = requests.post(
        f"{net.meta}/oauth/token",
        data={"grant_type": "refresh_token", "refresh_token": refresh, "scope": "meta/profile:RO"},
        auth=app,
        timeout=10,
    )
    assert fresh.status_code == 200, fresh.text
    assert fresh.json()["scope"] == "meta/profile:RO"
    access = fresh.json()["access_token"]
    # Hints only order the search; an unknown one is refused; another client learns nothing.
    for hint, status in (("refresh_token", 200), ("access_token", 200), ("", 200), ("bogus", 400)):
        answer = requests.post(
            f"{net.meta}/oauth/introspect",
            data={"token": access, "token_type_hint": hint},
            auth=app,
            timeout=10,
        )
        assert answer.status_code == status, (hint, answer.text)
        if status == 200:
            assert answer.json()["active"] is True
    peek = requests.post(
        f"{net.meta}/oauth/introspect", data={"token": access}, auth=other, timeout=10
    )
    assert peek.json() == {"active": False}
    requests.post(f"{net.meta}/oauth/revoke", data={"token": access}, auth=other, timeout=10)
    assert requests.get(f"{net.meta}/api/profile", headers=bearer(access), timeout=10).ok
    # Malformed requests: repeated parameters, two ways of authenticating, a secret in the URL.
    for data, auth, params, status in [
        ([("grant_type", "client_credentials")] * 2, app, None, 400),
        (
            {"grant_type": "client_credentials", "client_id": app[0], "client_secret": app[1]},
            app,
            None,
            400,
        ),
        ({"grant_type": "client_credentials", "client_id": other[0]}, app, None, 400),
        (
            {"grant_type": "client_credentials"},
            None,
            {"client_id": app[0], "client_secret": app[1]},
            401,
        ),
    ]:
        answer = requests.post(
            f"{net.meta}/oauth/token", data=data, auth=auth, params=params, timeout=10
        )
        assert answer.status_code in (status, 401 if status == 400 else status), answer.text
        assert answer.status_code != 200
    # A browser app on another origin may call the endpoints, never with cookies.
    preflight = requests.options(
        f"{net.meta}/oauth/token",
        headers={"Origin": "https://app.invalid", "Access-Control-Request-Method": "POST"},
        timeout=10,
    )
    assert preflight.status_code in (200, 204)
    assert preflight.headers["Access-Control-Allow-Origin"] == "*"
    assert "Access-Control-Allow-Credentials" not in preflight.headers


def test_strangers_cannot_lock_out_or_guess_a_client(network: Network) -> None:
    """Failed client authentication is throttled per address wherever a client
    authenticates (token, introspection, revocation, the services' pull), and a stranger's
    failures never lock out the real client on another address."""
    net = network
    for address, (path, data) in enumerate(
        (
            ("/oauth/token", {"grant_type": "client_credentials"}),
            ("/oauth/introspect", {"token": "x"}),
            ("/oauth/revoke", {"token": "x"}),
        ),
        start=2,
    ):
        # Each endpoint from its own address: the limits are shared between them.
        stranger = browser(f"127.0.0.{address}")
        statuses = [
            stranger.post(
                f"{net.meta}{path}", data=data, auth=("paste", f"guess{i}"), timeout=10
            ).status_code
            for i in range(25)
        ]
        assert statuses[0] == 401, (path, statuses)
        assert statuses[-1] == 429, (path, statuses)
    stranger = browser("127.0.0.5")
    guessed = [
        stranger.get(
            f"{net.meta}/oauth/revocations", auth=("todo", f"guess{i}"), timeout=10
        ).status_code
        for i in range(25)
    ]
    assert guessed[-1] == 429, guessed
    # The real clients, from their own address, are not locked out.
    for client in ("paste", "todo"):
        real = requests.post(
            f"{net.meta}/oauth/token",
            data={"grant_type": "client_credentials"},
            auth=(client, net.secrets[client]),
            timeout=10,
        )
        assert real.status_code == 200, real.text
    pulled = requests.get(
        f"{net.meta}/oauth/revocations", auth=("todo", net.secrets["todo"]), timeout=10
    )
    assert pulled.status_code == 200


# -- hostile bytes --------------------------------------------------------------------------


def test_hostile_bytes_get_a_4xx_and_write_nothing(network: Network) -> None:
    net = network
    kim = register(net, "kim")
    token = personal_token(net, kim, ["todo/trackers:RW", "paste/pastes:RW", "meta/profile:RW"])
    auth = f"Authorization: Bearer {token}\r\n".encode()
    for base in (net.meta, net.todo, net.paste):
        host = urlsplit(base).netloc.encode()
        heads = [
            b"GET /%00 HTTP/1.1\r\nHost: " + host,
            b"GET /\x00 HTTP/1.1\r\nHost: " + host,
            b"GET /%ED%A0%80 HTTP/1.1\r\nHost: " + host,
            b"GET /~\xff\xfe HTTP/1.1\r\nHost: " + host,
            b"GET /?page=%ff%fe HTTP/1.1\r\nHost: " + host,
            b"GET /api/webhooks HTTP/1.1\r\nHost: "
            + host
            + b"\r\nAuthorization: Basic "
            + base64.b64encode(b"\xff\xfe:\xff"),
            b"GET /api/webhooks HTTP/1.1\r\nHost: " + host + b"\r\nAuthorization: Bearer \xff\xfe",
            b"GET / HTTP/1.1\r\nHost: evil.invalid:99999",
            b"GET / HTTP/1.1\r\nHost: a@evil.invalid",
            b"GET / HTTP/1.1\r\nHost: evil\x00.invalid",
            b"GET / HTTP/1.1",
            b"GET / HTTP/1.1\r\nHost: evil.invalid\r\nHost: " + host,
            b"GET /api/webhooks/99999999999999999999999 HTTP/1.1\r\nHost: "
            + host
            + b"\r\n"
            + auth.strip(),
            b"GET /api/webhooks/-1 HTTP/1.1\r\nHost: " + host + b"\r\n" + auth.strip(),
            b"GET http://evil.invalid/ HTTP/1.1\r\nHost: " + host,
        ]
        for head in heads:
            answer = raw_request(base, head + b"\r\nConnection: close\r\n\r\n")
            assert 200 <= status_of(answer) < 500, (base, head, answer[:300])
            assert b"evil.invalid" not in answer, (head, answer[:2000])
            assert b"Traceback" not in answer
    host = urlsplit(net.todo).netloc.encode()
    start = b"POST /api/trackers HTTP/1.1\r\nHost: " + host + b"\r\n" + auth
    body = b'{"name": "half", "visibility": "public"}'
    size = hex(len(body))[2:].encode()
    for rest in [
        b"Content-Type: application/json\r\nContent-Length: 200\r\n\r\n" + body,
        b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\nff\r\n" + body,
        b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"
        + body
        + b"\r\n0\r\n\r\n",
        b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
        + size
        + b"\r\n"
        + body
        + b"\r\n",
        b"Content-Type: application/json\r\nContent-Length: 5\r\nTransfer-Encoding: chunked"
        b"\r\n\r\n" + size + b"\r\n" + body + b"\r\n0\r\n\r\n",
        b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\n"
        b"name=half&visibility=public",
        # Which copy of a repeated field counts is ambiguous: neither does.
        b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 38\r\n\r\n"
        b"name=half&name=h2alf&visibility=public",
        b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 43\r\n\r\n"
        b"name=half&visibility=public&visibility=xalf",
        b"Content-Type: application/json\r\nContent-Length: 44\r\n\r\n"
        + b'{"name": "h\\u0000alf", "visibility": "public"}'[:44],
        b"Content-Type: application/json\r\nContent-Length: 38\r\n\r\n"
        + b'{"name": "half", "description": "\\ud800"}'[:38],
        b"Content-Type: application/json\r\nContent-Length: 40\r\n\r\n"
        + b'{"name": "h\xffalf", "visibility": "public"}'[:40],
    ]:
        answer = raw_request(net.todo, start + b"Connection: close\r\n" + rest)
        assert answer, rest
        assert 400 <= status_of(answer) < 500, (rest, answer[:500])
        assert b"Traceback" not in answer
        assert answer.split(b"\r\n\r\n", 1)[1].startswith(b'{"errors"'), answer[:500]
    assert net.rows("todo", "SELECT name FROM tracker WHERE name LIKE '%alf'") == []


# -- headers --------------------------------------------------------------------------------


def test_every_answer_carries_the_security_headers(network: Network) -> None:
    net = network
    for base in (net.meta, net.todo, net.paste):
        for path in ("/", "/nope", "/login", "/healthz", "/.well-known/security.txt", "/api/nope"):
            for method in ("GET", "HEAD", "OPTIONS", "POST", "DELETE"):
                answer = requests.request(method, base + path, allow_redirects=False, timeout=10)
                names = {name.lower() for name in answer.headers}
                missing = [h for h in SECURITY_HEADERS if h not in names]
                assert not missing, (method, base + path, answer.status_code, missing)
        # Cross-origin: the API answers any origin without credentials, pages never.
        cross = {"Origin": "https://app.invalid", "Access-Control-Request-Method": "POST"}
        api = requests.options(f"{base}/api/webhooks", headers=cross, timeout=10)
        assert api.headers.get("Access-Control-Allow-Origin") == "*"
        assert "Access-Control-Allow-Credentials" not in api.headers
        for path in ("/", "/login", "/webhooks"):
            for method in ("GET", "OPTIONS"):
                page = requests.request(
                    method, base + path, headers=cross, allow_redirects=False, timeout=10
                )
                assert "Access-Control-Allow-Origin" not in page.headers, (base, path, method)
        # Requests gunicorn itself refuses, before any app sees them.
        host = urlsplit(base).netloc.encode()
        for raw in [
            b"GET /\x00 HTTP/1.1\r\nHost: " + host + b"\r\n\r\n",
            b"GET /api/\x00 HTTP/1.1\r\nHost: " + host + b"\r\n\r\n",
            b"G\x01T / HTTP/1.1\r\nHost: " + host + b"\r\n\r\n",
            b"GET / HTTP/9.9\r\nHost: " + host + b"\r\n\r\n",
            b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: " + host + b"\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: " + host + b"\r\nX-A: " + b"a" * 20000 + b"\r\n\r\n",
        ]:
            answer = raw_request(base, raw)
            assert 400 <= status_of(answer) < 500, answer[:300]
            missing = [h for h in SECURITY_HEADERS if h not in header_names(answer)]
            assert not missing, (raw[:40], answer[:500], missing)


# -- suspension -----------------------------------------------------------------------------


def test_a_suspended_user_receives_no_events(network: Network) -> None:
    net = network
    sam, pia = register(net, "sam"), register(net, "pia")
    receiver = net.receiver()
    token = personal_token(net, sam, ["paste/pastes:RW"])
    made = requests.post(
        f"{net.paste}/api/webhooks",
        headers=bearer(token),
        json={"url": receiver.url, "events": ["paste:created"]},
        timeout=10,
    )
    assert made.status_code == 201, made.text

    def public_paste(text: str) -> None:
        page = open_page_as(net, pia, "pia", net.paste, "/new")
        done = pia.post(
            f"{net.paste}/new",
            data={"csrf_token": csrf(page), "text": text, "visibility": "public"},
            timeout=10,
        )
        assert done.status_code == 200, done.text[:2000]

    public_paste("before")
    wait_for(lambda: [m["data"]["text"] for m in receiver.got] == ["before"])

    admin = register(net, "boss")
    done = subprocess.run(
        [sys.executable, "-m", "meta.admin", "make-admin", "boss", "--config", str(net.config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    sam_id = claims(token)["sub"]
    page = admin.get(f"{net.meta}/admin/users/{sam_id}", timeout=10)
    suspended = admin.post(
        f"{net.meta}/admin/users/{sam_id}/suspend",
        data={"csrf_token": csrf(page), "notice": "Spam."},
        timeout=10,
    )
    assert suspended.status_code == 200, suspended.text[:2000]
    # paste learns of it (meta's event, or the pull behind it) and refuses the token.
    wait_for(
        lambda: (
            requests.get(f"{net.paste}/api/webhooks", headers=bearer(token), timeout=10).status_code
            == 401
        )
    )
    public_paste("after")
    time.sleep(2)  # the worker polls every 0.2 s
    assert [m["data"]["text"] for m in receiver.got] == ["before"]


def test_an_application_sees_only_its_webhooks_and_they_end_with_its_access(
    network: Network,
) -> None:
    """An application a user authorised manages only the webhooks it set up, not those of the
    user's other applications and tokens; when the user revokes its access at meta, its
    webhooks are disabled (the owner mailed) and it receives nothing more."""
    net = network
    wes, zoe = register(net, "wes"), register(net, "zoe")
    app_receiver, own_receiver = net.receiver(), net.receiver()
    client = _register_client(net, wes, "Hook app")
    app_token = _code_flow(net, wes, client, "paste/pastes:RW")["access_token"]
    own_token = personal_token(net, wes, ["paste/pastes:RW"])

    def create(token: str, url: str) -> int:
        made = requests.post(
            f"{net.paste}/api/webhooks",
            headers=bearer(token),
            json={"url": url, "events": ["paste:created"]},
            timeout=10,
        )
        assert made.status_code == 201, made.text
        return int(made.json()["id"])

    apps, owns = create(app_token, app_receiver.url), create(own_token, own_receiver.url)
    for token, mine, other in ((app_token, apps, owns), (own_token, owns, apps)):
        listing = requests.get(f"{net.paste}/api/webhooks", headers=bearer(token), timeout=10)
        assert [hook["id"] for hook in listing.json()["results"]] == [mine], listing.text
        hook = f"{net.paste}/api/webhooks/{other}"
        assert requests.get(hook, headers=bearer(token), timeout=10).status_code == 404
        moved = requests.patch(
            hook, headers=bearer(token), json={"url": app_receiver.url}, timeout=10
        )
        assert moved.status_code == 404, moved.text
        gone = requests.delete(hook, headers=bearer(token), timeout=10)
        assert gone.status_code == 404, gone.text
    page = open_page_as(net, wes, "wes", net.paste, "/webhooks")
    assert app_receiver.url in page.text and own_receiver.url in page.text  # the user sees both

    def public_paste(text: str) -> None:
        form = open_page_as(net, zoe, "zoe", net.paste, "/new")
        done = zoe.post(
            f"{net.paste}/new",
            data={"csrf_token": csrf(form), "text": text, "visibility": "public"},
            timeout=10,
        )
        assert done.status_code == 200, done.text[:2000]

    public_paste("before")
    wait_for(lambda: len(app_receiver.got) == 1 and len(own_receiver.got) == 1)

    security = wes.get(f"{net.meta}/security", timeout=10)
    revoked = wes.post(
        f"{net.meta}/security/applications/{client[0]}/revoke",
        data={"csrf_token": csrf(security)},
        timeout=10,
    )
    assert revoked.status_code == 200, revoked.text[:2000]
    query = f"SELECT enabled, disabled_reason FROM srcore_webhook_subscription WHERE id = {apps}"
    wait_for(lambda: net.rows("paste", query)[0][0] == 0)
    assert "revoked" in net.rows("paste", query)[0][1]
    wait_for(
        lambda: any(
            "webhook disabled" in m.subject and app_receiver.url in m.subject
            for m in net.sink.to("wes@example.org")
        )
    )
    public_paste("after")
    wait_for(lambda: len(own_receiver.got) == 2)
    time.sleep(1)  # the worker polls every 0.2 s: the app's receiver had its chance
    assert [m["data"]["text"] for m in app_receiver.got] == ["before"]
    assert [m["data"]["text"] for m in own_receiver.got] == ["before", "after"]
