"""A network service written without srcore, from meta's README alone, against a real meta.

"stranger" is a service of the network (a section of the config file, with its OAuth
client id and secret) whose code imports nothing of srcore: a bare Flask app on 127.0.0.1
that serves its manifest, verifies access tokens with PyJWT from ``jwks_uri``, keeps the
revocations meta pushes to it (checked with ``hmac`` as the README spells the Standard
Webhooks signature and the derived secret) and pulls ``/oauth/revocations`` itself. The
OAuth calls are plain ``requests``: the authorization code flow with PKCE driven through
meta's login form, refresh, RFC 7009 revocation, RFC 7662 introspection with both client
authentication methods. meta runs under gunicorn with its webhook worker, on SQLite and
PostgreSQL.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import re
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import jwt
import pytest
import requests
from flask import Flask, jsonify, request
from meta_constants import PASSWORD
from werkzeug.serving import make_server

from srcore.testing import free_port, run_service, run_worker

pytestmark = pytest.mark.slow

SERVICE = "stranger"
SECRET = "stranger-client-secret-" + "s" * 24
TODO_SECRET = "todo-client-secret-" + "t" * 24
TIMEOUT = 10
#: The revocation kinds the README lists.
KINDS = {"token", "grant", "client", "user", "session", "suspend", "unsuspend", "delete"}
#: How long the test waits for a push; the README bounds a lost one by the pull interval.
PUSH_WAIT = 20.0


# -- the stranger's code: what the README says, and nothing of srcore ----------------------


def derived_push_secret(client_secret: str, service_id: str) -> bytes:
    """The HMAC key of meta's pushes: the ``whsec_`` secret's base64 part, decoded."""
    digest = hmac.new(
        client_secret.encode(), b"srcore-webhooks " + service_id.encode(), hashlib.sha256
    ).digest()
    whsec = "whsec_" + base64.b64encode(digest).decode()
    return base64.b64decode(whsec.removeprefix("whsec_"))


def push_is_genuine(key: bytes, headers: Any, body: bytes, *, now: float) -> bool:
    """Standard Webhooks: ``v1,base64(HMAC-SHA256(key, id.timestamp.body))``, 5 minutes."""
    message_id = headers.get("webhook-id", "")
    stamp = headers.get("webhook-timestamp", "")
    if not message_id or not stamp.isdigit() or abs(now - int(stamp)) > 300:
        return False
    signed = f"{message_id}.{stamp}.".encode() + body
    expected = "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    return any(
        hmac.compare_digest(sig, expected) for sig in headers.get("webhook-signature", "").split()
    )


class Stranger:
    """The service: its manifest, its API, its receiver and its own revocation list."""

    def __init__(self, meta_url: str) -> None:
        self.meta_url = meta_url
        self.events: dict[int, dict[str, Any]] = {}
        self.pushes: list[dict[str, Any]] = []
        #: Every push as it came: its headers (lower-case names) and body.
        self.raw: list[tuple[dict[str, str], bytes]] = []
        self.seen_ids: set[str] = set()
        self.refused_pushes = 0
        #: Pushes taken and dropped (a service that is not listening).
        self.deaf = False
        #: The last event the documented pull read, to check it is still there next time.
        self.last_pulled: dict[str, Any] | None = None
        self.rewinds = 0
        #: The events of meta's numbering before it went back: they still refuse.
        self.old_events: list[dict[str, Any]] = []
        #: Pushes still to be answered 410 Gone, and how many were.
        self.gone, self.answered_gone = 0, 0
        self.pushed = threading.Event()
        self.lock = threading.Lock()
        self.jwks: dict[str, Any] = {}
        self.jwks_fetches = 0
        self.key = derived_push_secret(SECRET, SERVICE)
        self.app = self._build()
        self.server = make_server("127.0.0.1", free_port(), self.app, threaded=True)
        self.origin = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Stranger:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(TIMEOUT)

    # keys ------------------------------------------------------------------------------

    def fetch_jwks(self) -> None:
        metadata = requests.get(
            self.meta_url + "/.well-known/oauth-authorization-server", timeout=TIMEOUT
        ).json()
        # On an unknown kid the keys are fetched again past any HTTP cache.
        answer = requests.get(
            metadata["jwks_uri"], headers={"Cache-Control": "no-cache"}, timeout=TIMEOUT
        )
        answer.raise_for_status()
        self.jwks = {key["kid"]: key for key in answer.json()["keys"]}
        self.jwks_fetches += 1

    def verify(self, token: str, *, audience: str = SERVICE) -> dict[str, Any]:
        """The README's checks; raises jwt.InvalidTokenError or PermissionError."""
        header = jwt.get_unverified_header(token)
        if header.get("typ") != "at+jwt" or header.get("alg") != "EdDSA":
            raise jwt.InvalidTokenError(f"not an access token: {header}")
        kid = header.get("kid")
        if kid not in self.jwks:
            self.fetch_jwks()
        if kid not in self.jwks:
            raise jwt.InvalidTokenError("unknown key")
        key = jwt.PyJWK(self.jwks[kid])
        claims: dict[str, Any] = jwt.decode(
            token,
            key,
            algorithms=["EdDSA"],
            audience=audience,
            issuer=self.meta_url,
            leeway=30,
            options={"require": ["exp", "iat", "jti", "sub", "client_id", "scope"]},
        )
        with self.lock:
            if self.revoked(claims):
                raise PermissionError("revoked")
        return claims

    # revocations ------------------------------------------------------------------------

    def apply(self, events: list[dict[str, Any]]) -> None:
        if any(event["kind"] not in KINDS for event in events):
            raise ValueError("an event of a kind this service does not know")
        with self.lock:
            for event in events:
                self.events[event["seq"]] = event

    def revoked(self, claims: dict[str, Any]) -> bool:
        old, new = self.old_events, list(self.events.values())
        if any(self._refuses(event, claims) for event in old + new):
            return True
        # A suspension: the latest by seq decides, in the numbering that has one.
        for events in (new, old):
            states = [
                (e["seq"], e["kind"])
                for e in events
                if e["kind"] in ("suspend", "unsuspend", "delete") and e["subject"] == claims["sub"]
            ]
            if states:
                return max(states)[1] == "suspend"
        return False

    @staticmethod
    def _refuses(event: dict[str, Any], claims: dict[str, Any]) -> bool:
        kind, subject = event["kind"], event["subject"]
        alive = event["expires_at"] is None or event["expires_at"] + 30 >= time.time()
        if kind == "token":
            return subject == claims["jti"] and alive
        if kind == "grant":
            return subject == claims.get("grant") and alive
        if kind == "client":
            return subject == claims["client_id"] and claims["iat"] < event["not_before"]
        if kind == "user":
            return subject == claims["sub"] and claims["iat"] < event["not_before"]
        return kind == "delete" and subject == claims["sub"]

    def pull(self, since: int = 0) -> int:
        """Read meta's list after *since*, page by page; the seq the next pull starts at."""
        while True:
            answer = requests.get(
                self.meta_url + "/oauth/revocations",
                params={"since": since},
                auth=(SERVICE, SECRET),
                timeout=TIMEOUT,
            )
            answer.raise_for_status()
            page = answer.json()
            self.apply(page["events"])
            if not page["events"] or page["last"] <= since:
                return since
            since = page["last"]

    def page(self, since: int) -> dict[str, Any]:
        answer = requests.get(
            self.meta_url + "/oauth/revocations",
            params={"since": since},
            auth=(SERVICE, SECRET),
            timeout=TIMEOUT,
        )
        answer.raise_for_status()
        page: dict[str, Any] = answer.json()
        return page

    def pull_checked(self) -> None:
        """The README's pull: from just below the last event pulled, checking it is still
        there as it was; read everything again from 0 when it is not (a restored meta)."""
        since = 0
        mine = self.last_pulled
        if mine is not None:
            since = mine["seq"] - 1
            theirs = [e for e in self.page(since)["events"] if e["seq"] == mine["seq"]]
            if theirs != [mine]:
                self.rewinds += 1
                with self.lock:
                    self.old_events += self.events.values()
                    self.events = {}
                since = 0
        while True:
            page = self.page(since)
            self.apply(page["events"])
            if page["events"]:
                self.last_pulled = page["events"][-1]
            if not page["events"] or page["last"] <= since:
                return
            since = page["last"]

    # the web app -------------------------------------------------------------------------

    def _build(self) -> Flask:
        app = Flask("stranger")
        outer = self

        @app.get("/.well-known/srcore-service")
        def manifest() -> Any:
            return jsonify(
                id=SERVICE,
                name="Stranger",
                description="A service written without srcore.",
                scopes=[{"name": "things", "description": "Your things"}],
                events=[],
            )

        @app.post("/_srcore/events")
        def events() -> Any:
            body = request.get_data()
            outer.raw.append(({k.lower(): v for k, v in request.headers.items()}, body))
            if outer.gone > 0:
                outer.gone -= 1
                outer.answered_gone += 1
                return jsonify(error="down for maintenance"), 410
            if not push_is_genuine(outer.key, request.headers, body, now=time.time()):
                outer.refused_pushes += 1
                return jsonify(error="bad signature"), 401
            if outer.deaf:
                return "", 204
            message_id = request.headers["webhook-id"]
            message = json.loads(body)
            if message_id not in outer.seen_ids:
                outer.seen_ids.add(message_id)
                outer.pushes.append(message)
                if message["type"] == "revocation:issued":
                    outer.apply(message["data"]["events"])
                    outer.pushed.set()
            return "", 204

        @app.get("/api/things")
        def things() -> Any:
            scheme, _, token = request.headers.get("Authorization", "").partition(" ")
            if scheme.lower() != "bearer":
                return jsonify(error="invalid_request"), 401
            try:
                claims = outer.verify(token)
            except (jwt.InvalidTokenError, PermissionError) as exc:
                return jsonify(error=str(exc)), 401
            if not {"stranger/things:RO", "stranger/things:RW"} & set(claims["scope"].split()):
                return jsonify(error="insufficient_scope"), 403
            return jsonify(user=claims["sub"])

        return app

    def api(self, token: str) -> int:
        return requests.get(
            self.origin + "/api/things",
            headers={"Authorization": f"Bearer {token}"},
            timeout=TIMEOUT,
        ).status_code


# -- meta, and a browser-less login ---------------------------------------------------------


def _config(base: str, meta_origin: str, stranger_origin: str, todo_origin: str) -> str:
    base = re.sub(r"(?m)^origin = .*$", f"origin = {meta_origin}", base, count=1)
    sections = ""
    for service, origin, secret in (
        ("todo", todo_origin, TODO_SECRET),
        (SERVICE, stranger_origin, SECRET),
    ):
        sections += (
            f"\n[{service}]\norigin = {origin}\n"
            f"database-url = sqlite:////nonexistent/{service}.db\n"
            f"secret-key = {secrets.token_urlsafe(40)}\n"
            f"oauth-client-id = {service}\noauth-client-secret = {secret}\n"
        )
    return base + sections


class Network:
    """meta (under gunicorn, with its worker), the stranger, and alice's browser."""

    def __init__(self, url: str, port: int, stranger: Stranger, config: Any, todo: str) -> None:
        self.url = url
        self.port = port
        self.todo = todo
        self.stranger = stranger
        self.config = config
        self.browser = requests.Session()
        self.metadata: dict[str, Any] = {}
        self._running: contextlib.ExitStack | None = None

    def start(self) -> None:
        stack = contextlib.ExitStack()
        served = stack.enter_context(run_service("meta", self.config, port=self.port))
        assert served == self.url
        stack.enter_context(run_worker("meta", self.config))
        self._running = stack
        self.metadata = requests.get(
            self.url + "/.well-known/oauth-authorization-server", timeout=TIMEOUT
        ).json()

    def stop(self) -> None:
        if self._running is not None:
            self._running.close()
            self._running = None


@pytest.fixture
def network(app: Any, accounts: Any, srcore_database: Any, tmp_path: Any) -> Iterator[Network]:
    accounts.make("alice")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with Stranger(url) as stranger:
        path = tmp_path / "network.ini"
        todo = f"http://127.0.0.1:{free_port()}"
        text = _config(srcore_database.config_path.read_text(), url, stranger.origin, todo)
        path.write_text(text, encoding="utf-8")
        net = Network(url, port, stranger, path, todo)
        net.start()
        try:
            yield net
        finally:
            net.stop()


def _pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
    return verifier, challenge.rstrip(b"=").decode()


def _log_in(net: Network) -> None:
    page = net.browser.get(net.url + "/login", timeout=TIMEOUT)
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert csrf, page.text[:300]
    done = net.browser.post(
        net.url + "/login",
        data={"login": "alice", "password": PASSWORD, "csrf_token": csrf.group(1)},
        allow_redirects=False,
        timeout=TIMEOUT,
    )
    assert done.status_code in (302, 303), done.text[:300]


def authorize(
    net: Network, client_id: str, redirect_uri: str, scope: str, *, approve: bool = False
) -> tuple[str, str]:
    """The README's step 3 without a browser: a code and its verifier."""
    verifier, challenge = _pkce()
    state = secrets.token_urlsafe(16)
    query = {
        "response_type": "code",
        "client_id": client_id,
        "redirect_uri": redirect_uri,
        "scope": scope,
        "state": state,
        "code_challenge": challenge,
        "code_challenge_method": "S256",
    }
    target = net.metadata["authorization_endpoint"] + "?" + urlencode(query)
    answer = net.browser.get(target, allow_redirects=False, timeout=TIMEOUT)
    if approve and answer.status_code == 200:
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', answer.text)
        assert csrf, answer.text[:300]
        answer = net.browser.post(
            target,
            data={"csrf_token": csrf.group(1), "decision": "approve"},
            allow_redirects=False,
            timeout=TIMEOUT,
        )
    assert answer.status_code == 302, answer.text[:500]
    location = answer.headers["Location"]
    assert location.startswith(redirect_uri), location
    params = parse_qs(urlsplit(location).query)
    assert params["state"] == [state] and params["iss"] == [net.metadata["issuer"]]
    return params["code"][0], verifier


def token_request(net: Network, auth: tuple[str, str] | None, **form: str) -> requests.Response:
    return requests.post(net.metadata["token_endpoint"], data=form, auth=auth, timeout=TIMEOUT)


def log_in_tokens(net: Network, scope: str = "stranger/things:RW") -> dict[str, Any]:
    redirect = net.stranger.origin + "/oauth/callback"
    code, verifier = authorize(net, SERVICE, redirect, scope)
    answer = token_request(
        net,
        (SERVICE, SECRET),
        grant_type="authorization_code",
        code=code,
        redirect_uri=redirect,
        code_verifier=verifier,
    )
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


def wait_for(condition: Callable[[], bool], limit: float = PUSH_WAIT) -> bool:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


# -- the tests -------------------------------------------------------------------------------


def test_login_refresh_verify_and_audience(network: Network) -> None:
    net, stranger = network, network.stranger
    # meta's manifest names the events it sends, and no other: a service waiting for
    # one meta never sends (a suspension comes as revocation events) waits for ever.
    manifest = requests.get(net.url + "/.well-known/srcore-service", timeout=TIMEOUT).json()
    assert {event["name"] for event in manifest["events"]} == {
        "profile:updated",
        "revocation:issued",
        "audit:recorded",
    }
    _log_in(net)
    tokens = log_in_tokens(net)
    assert tokens["token_type"] == "Bearer" and tokens["refresh_token"]
    claims = stranger.verify(tokens["access_token"])
    assert claims["scope"] == "stranger/things:RW" and claims["client_id"] == SERVICE
    assert stranger.api(tokens["access_token"]) == 200

    refreshed = token_request(
        net, (SERVICE, SECRET), grant_type="refresh_token", refresh_token=tokens["refresh_token"]
    )
    assert refreshed.status_code == 200, refreshed.text
    assert stranger.api(refreshed.json()["access_token"]) == 200

    # A token todo got for alice is todo's: it does not pass for one of the stranger's.
    todo_callback = net.todo + "/oauth/callback"
    code, verifier = authorize(net, "todo", todo_callback, "todo/tickets:RW")
    answer = token_request(
        net,
        ("todo", TODO_SECRET),
        grant_type="authorization_code",
        code=code,
        redirect_uri=todo_callback,
        code_verifier=verifier,
    )
    assert answer.status_code == 200, answer.text
    todo_token = answer.json()["access_token"]
    with pytest.raises(jwt.InvalidAudienceError):
        stranger.verify(todo_token)
    assert stranger.api(todo_token) == 401


def _register_third_party(net: Network, redirect: str) -> tuple[str, str]:
    """``/clients``, as the README's guide says: a confidential application."""
    page = net.browser.get(net.url + "/clients", timeout=TIMEOUT)
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert csrf, page.text[:300]
    made = net.browser.post(
        net.url + "/clients",
        data={
            "name": "Gadget",
            "redirect_uris": redirect,
            "kind": "confidential",
            "csrf_token": csrf.group(1),
        },
        timeout=TIMEOUT,
    )
    client_id = re.search(r'id="client-id">([^<]+)<', made.text)
    secret = re.search(r'id="client-secret">([^<]+)<', made.text)
    assert client_id and secret, made.text[:800]
    return client_id.group(1), secret.group(1)


def _introspect(net: Network, token: str, auth: tuple[str, str], *, post: bool) -> Any:
    endpoint = net.metadata["introspection_endpoint"]
    if post:
        form = {"token": token, "client_id": auth[0], "client_secret": auth[1]}
        answer = requests.post(endpoint, data=form, timeout=TIMEOUT)
    else:
        answer = requests.post(endpoint, data={"token": token}, auth=auth, timeout=TIMEOUT)
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_revocation_introspection_and_the_push_reach_the_stranger(network: Network) -> None:
    net, stranger = network, network.stranger
    assert set(net.metadata["introspection_endpoint_auth_methods_supported"]) >= {
        "client_secret_basic",
        "client_secret_post",
    }
    _log_in(net)
    tokens = log_in_tokens(net)
    access = tokens["access_token"]
    claims = stranger.verify(access)
    for post in (False, True):
        seen = _introspect(net, access, (SERVICE, SECRET), post=post)
        assert seen["active"] is True and seen["jti"] == claims["jti"], seen
        assert seen["scope"] == "stranger/things:RW" and seen["sub"] == claims["sub"]
        # RFC 7662 2.2: the type of RFC 6749 7.1, as the token response named it.
        assert seen["token_type"] == tokens["token_type"] == "Bearer", seen
        refresh = _introspect(net, tokens["refresh_token"], (SERVICE, SECRET), post=post)
        assert refresh["active"] is True and refresh["client_id"] == SERVICE, refresh
        assert "token_type" not in refresh, refresh
    assert _introspect(net, "not-a-token", (SERVICE, SECRET), post=False) == {"active": False}

    # A third-party application asks about a token that is not its own.
    redirect = "https://gadget.example/cb"
    gadget = _register_third_party(net, redirect)
    foreign = _introspect(net, access, gadget, post=False)
    assert foreign == {"active": False}, foreign
    # Nor can it revoke one (RFC 7009 2.1): the token still works.
    requests.post(
        net.metadata["revocation_endpoint"],
        data={"token": access},
        auth=gadget,
        timeout=TIMEOUT,
    )
    assert _introspect(net, access, (SERVICE, SECRET), post=True)["active"] is True

    # RFC 7009, client_secret_post: the refresh token ends its grant, at meta and, by the
    # push, at the stranger.
    revoked = requests.post(
        net.metadata["revocation_endpoint"],
        data={
            "token": tokens["refresh_token"],
            "token_type_hint": "refresh_token",
            "client_id": SERVICE,
            "client_secret": SECRET,
        },
        timeout=TIMEOUT,
    )
    assert revoked.status_code == 200, revoked.text
    for post in (False, True):
        assert _introspect(net, access, (SERVICE, SECRET), post=post) == {"active": False}
    assert wait_for(lambda: stranger.api(access) == 401)
    assert stranger.pushed.is_set() and stranger.refused_pushes == 0
    grant_events = [e for e in stranger.events.values() if e["kind"] == "grant"]
    assert [e["subject"] for e in grant_events] == [claims["grant"]]

    # RFC 7009, client_secret_basic, an access token: that token alone.
    second = log_in_tokens(net)
    assert stranger.api(second["access_token"]) == 200
    answer = requests.post(
        net.metadata["revocation_endpoint"],
        data={"token": second["access_token"], "token_type_hint": "access_token"},
        auth=(SERVICE, SECRET),
        timeout=TIMEOUT,
    )
    assert answer.status_code == 200, answer.text
    assert wait_for(lambda: stranger.api(second["access_token"]) == 401)


def _revoke(net: Network, token: str) -> None:
    answer = requests.post(
        net.metadata["revocation_endpoint"],
        data={"token": token},
        auth=(SERVICE, SECRET),
        timeout=TIMEOUT,
    )
    assert answer.status_code == 200, answer.text


def test_pushes_go_on_after_the_service_answered_gone(network: Network) -> None:
    """meta's pushes are what makes a revocation reach a service at once (the pull is
    the catch-up): a service that once answered 410 Gone, or was down for days, still
    gets the next ones."""
    net, stranger = network, network.stranger
    _log_in(net)
    first, second = (log_in_tokens(net)["access_token"] for _ in range(2))
    stranger.gone = 1
    _revoke(net, first)
    assert wait_for(lambda: stranger.answered_gone == 1)
    _revoke(net, second)
    assert wait_for(lambda: stranger.api(second) == 401)
    assert wait_for(lambda: stranger.api(first) == 401)  # its push again, retried


def test_a_password_change_ends_the_tokens_at_the_stranger(network: Network) -> None:
    """A new password ends every token of the account, also one issued in the same
    second as the change, by the rule the README gives (the ``user`` cut-off is strict,
    the ``grant`` events are not)."""
    net, stranger = network, network.stranger
    _log_in(net)
    tokens = [log_in_tokens(net)["access_token"] for _ in range(2)]
    assert [stranger.api(token) for token in tokens] == [200, 200]
    page = net.browser.get(net.url + "/password", timeout=TIMEOUT)
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert csrf, page.text[:300]
    changed = net.browser.post(
        net.url + "/password",
        data={
            "current_password": PASSWORD,
            "password": PASSWORD + " anew",
            "csrf_token": csrf.group(1),
        },
        allow_redirects=False,
        timeout=TIMEOUT,
    )
    assert changed.status_code in (302, 303), changed.text[:500]
    assert wait_for(lambda: [stranger.api(token) for token in tokens] == [401, 401])
    # One change's events may come in several messages: the cut-off arrives too.
    assert wait_for(lambda: {"user", "grant"} <= {e["kind"] for e in stranger.events.values()})
    assert stranger.refused_pushes == 0


def test_an_expired_token_is_inactive_and_refused(network: Network, app: Any) -> None:
    """A token meta signed that has expired: introspection and the stranger agree."""
    from meta.oauth.models import SigningKey
    from sqlalchemy import select

    net, stranger = network, network.stranger
    _log_in(net)
    claims = stranger.verify(log_in_tokens(net)["access_token"])
    with app.extensions["srcore"].db.transaction() as session:
        row = session.scalars(
            select(SigningKey).where(SigningKey.alg == "EdDSA", SigningKey.retired_at.is_(None))
        ).one()
        private = json.loads(row.private_jwk)
    now = int(time.time())
    expired = jwt.encode(
        {**claims, "jti": secrets.token_hex(16), "iat": now - 7200, "exp": now - 3600},
        jwt.PyJWK(private).key,
        algorithm="EdDSA",
        headers={"typ": "at+jwt", "kid": private["kid"]},
    )
    for post in (False, True):
        assert _introspect(net, expired, (SERVICE, SECRET), post=post) == {"active": False}
    with pytest.raises(jwt.ExpiredSignatureError):
        stranger.verify(expired)
    # The same claims, fresh, pass: the refusal is the expiry's.
    fresh = jwt.encode(
        {**claims, "jti": secrets.token_hex(16), "iat": now, "exp": now + 600},
        jwt.PyJWK(private).key,
        algorithm="EdDSA",
        headers={"typ": "at+jwt", "kid": private["kid"]},
    )
    assert _introspect(net, fresh, (SERVICE, SECRET), post=True)["active"] is True
    assert stranger.api(fresh) == 200


def test_the_pull_pages_and_matches_the_pushes(network: Network) -> None:
    net, stranger = network, network.stranger
    _log_in(net)
    jtis = []
    for _ in range(3):
        access = log_in_tokens(net)["access_token"]
        jtis.append(stranger.verify(access)["jti"])
        answer = requests.post(
            net.metadata["revocation_endpoint"],
            data={"token": access},
            auth=(SERVICE, SECRET),
            timeout=TIMEOUT,
        )
        assert answer.status_code == 200
    assert wait_for(lambda: {"token"} <= {e["kind"] for e in stranger.events.values()})
    pushed = dict(stranger.events)

    # A pull from nothing reads the same events, with the same seqs.
    stranger.events.clear()
    last = stranger.pull(0)
    assert {seq: stranger.events[seq] for seq in pushed} == pushed
    assert last == max(stranger.events)
    assert [
        e["subject"]
        for e in sorted(stranger.events.values(), key=lambda e: e["seq"])
        if e["kind"] == "token"
    ] == jtis
    # Paging: each page's "last" is where the next starts; past the end, an empty page
    # that says where it stands.
    first = max(stranger.events) - 1
    page = requests.get(
        net.url + "/oauth/revocations",
        params={"since": first},
        auth=(SERVICE, SECRET),
        timeout=TIMEOUT,
    ).json()
    assert [e["seq"] for e in page["events"]] == [first + 1] and page["last"] == first + 1
    empty = requests.get(
        net.url + "/oauth/revocations",
        params={"since": last},
        auth=(SERVICE, SECRET),
        timeout=TIMEOUT,
    ).json()
    assert empty == {"events": [], "last": last}
    # Every event has the fields the README lists.
    for event in stranger.events.values():
        assert set(event) == {"seq", "kind", "subject", "not_before", "expires_at"}, event
    # Without the service's credentials: a 401, as for any client.
    refused = requests.get(net.url + "/oauth/revocations", params={"since": 0}, timeout=TIMEOUT)
    assert refused.status_code == 401 and refused.json()["error"] == "invalid_client"


def test_key_rotation_as_documented(network: Network) -> None:
    net, stranger = network, network.stranger
    _log_in(net)
    before = log_in_tokens(net)["access_token"]
    assert stranger.api(before) == 200
    fetches = stranger.jwks_fetches
    old_kid = jwt.get_unverified_header(before)["kid"]

    def rotate(*options: str) -> None:
        net.stop()
        rotated = subprocess.run(
            [
                sys.executable,
                "-m",
                "meta.oauth.keys",
                "rotate",
                "--config",
                str(net.config),
                *options,
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert rotated.returncode == 0, rotated.stderr
        net.start()

    # A rotation publishes the new keys and goes on signing with the current ones for
    # longer than the JWKS may be cached: the stranger's keys still do.
    rotate()
    meanwhile = log_in_tokens(net)["access_token"]
    assert jwt.get_unverified_header(meanwhile)["kid"] == old_kid
    assert stranger.api(meanwhile) == 200
    assert stranger.jwks_fetches == fetches

    # An emergency rotation signs with its new key at once.
    rotate("--at-once")
    after = log_in_tokens(net)["access_token"]
    assert jwt.get_unverified_header(after)["kid"] != old_kid
    # The stranger meets an unknown kid, fetches the keys once more, and takes it.
    assert stranger.api(after) == 200
    assert stranger.jwks_fetches == fetches + 1
    # The retired key is still published: the token it signed still passes.
    stranger.jwks = {}
    assert stranger.api(before) == 200
    assert old_kid in stranger.jwks


def test_a_client_id_spelled_as_an_account_id_is_refused(tmp_path: Any) -> None:
    """A client-credentials token's ``sub`` is its client id, beside users' ids: a
    service whose client id is digits would have its tokens read as that account's (and
    the account's tokens through it as the service's own), so the config refuses it."""
    from srcore.config import ConfigError, load_config

    path = tmp_path / "network.ini"
    meta_section = (
        "[global]\nenvironment = development\n\n[meta]\norigin = http://127.0.0.1:5990\n"
        f"database-url = sqlite:///{tmp_path / 'meta.db'}\n"
        f"secret-key = {secrets.token_urlsafe(40)}\n"
    )
    stranger_section = (
        "\n[stranger]\norigin = http://127.0.0.1:5993\n"
        f"database-url = sqlite:///{tmp_path / 'stranger.db'}\n"
        f"secret-key = {secrets.token_urlsafe(40)}\n"
        "oauth-client-id = {}\n"
        f"oauth-client-secret = {SECRET}\n"
    )
    for client_id in ("7", "0042"):
        path.write_text(meta_section + stranger_section.format(client_id), encoding="utf-8")
        with pytest.raises(ConfigError) as refused:
            load_config(path)
        assert "[stranger] oauth-client-id: must not be digits only" in str(refused.value)
    path.write_text(meta_section + stranger_section.format("stranger7"), encoding="utf-8")
    assert load_config(path).section("stranger")["oauth-client-id"] == "stranger7"


def test_client_credentials_for_the_network_services_api(network: Network, accounts: Any) -> None:
    """Service-to-service: a token of the service itself (``sub`` its client id, no
    grant), for meta's ``/api/users/<id>``; its audience is meta and the service, as the
    README says of every token a network service gets."""
    net, stranger = network, network.stranger
    answer = token_request(
        net, (SERVICE, SECRET), grant_type="client_credentials", scope="meta/profile:RO"
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert "refresh_token" not in body
    token = body["access_token"]
    claims = stranger.verify(token, audience="meta")
    assert claims["sub"] == claims["client_id"] == SERVICE and "grant" not in claims
    assert sorted(claims["aud"]) == ["meta", SERVICE]
    bob = accounts.make("bob")
    found = requests.get(
        f"{net.url}/api/users/{bob.id}",
        headers={"Authorization": f"Bearer {token}"},
        timeout=TIMEOUT,
    )
    assert found.status_code == 200 and found.json()["username"] == "bob", found.text


def test_a_new_client_secret_signs_beside_the_old_one(network: Network) -> None:
    """operators.md: change the client secret, restart meta and the service. Meanwhile
    the pushes carry a signature with each secret, so the service checks them with
    whichever it runs with."""
    net, stranger = network, network.stranger
    _log_in(net)
    token = log_in_tokens(net)["access_token"]
    new_secret = SECRET + "-renewed"
    net.stop()
    text = net.config.read_text(encoding="utf-8")
    net.config.write_text(text.replace(SECRET, new_secret), encoding="utf-8")
    net.start()
    old_key, new_key = stranger.key, derived_push_secret(new_secret, SERVICE)
    answer = requests.post(
        net.metadata["revocation_endpoint"],
        data={"token": token},
        auth=(SERVICE, new_secret),
        timeout=TIMEOUT,
    )
    assert answer.status_code == 200, answer.text
    # The stranger, still on the old secret, takes the push.
    assert wait_for(lambda: stranger.api(token) == 401)
    assert stranger.refused_pushes == 0
    headers, body = stranger.raw[-1]
    assert len(headers["webhook-signature"].split()) == 2, headers
    for key in (old_key, new_key):
        assert push_is_genuine(key, headers, body, now=time.time())


def test_suspension_and_unsuspension_by_the_latest_seq(network: Network, accounts: Any) -> None:
    """The README's rule for suspensions: the account's latest ``suspend``/``unsuspend``
    (by seq) decides. Suspended, alice's token is refused at the stranger; unsuspended,
    a new login's token passes there (the old one's grant ended with the suspension)."""
    from srcore.db import UserType

    net, stranger = network, network.stranger
    _log_in(net)
    old = log_in_tokens(net)["access_token"]
    alice = stranger.verify(old)["sub"]
    accounts.make("root", user_type=UserType.admin)
    admin = requests.Session()
    page = admin.get(net.url + "/login", timeout=TIMEOUT)
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert csrf
    admin.post(
        net.url + "/login",
        data={"login": "root", "password": PASSWORD, "csrf_token": csrf.group(1)},
        timeout=TIMEOUT,
    )

    def act(what: str, **form: str) -> None:
        page = admin.get(f"{net.url}/admin/users/{alice}", timeout=TIMEOUT)
        token = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
        assert token, page.text[:300]
        done = admin.post(
            f"{net.url}/admin/users/{alice}/{what}",
            data={"csrf_token": token.group(1), **form},
            allow_redirects=False,
            timeout=TIMEOUT,
        )
        assert done.status_code in (302, 303), done.text[:500]

    act("suspend", notice="Spam.")
    assert wait_for(lambda: stranger.api(old) == 401)
    act("unsuspend")
    kinds = ("suspend", "unsuspend")
    assert wait_for(
        lambda: (
            [e["kind"] for _, e in sorted(stranger.events.items()) if e["kind"] in kinds]
            == ["suspend", "unsuspend"]
        )
    )
    net.browser = requests.Session()
    _log_in(net)
    new = log_in_tokens(net)["access_token"]
    assert stranger.api(new) == 200
    assert stranger.api(old) == 401


def test_a_restored_meta_is_noticed_by_the_documented_pull(network: Network, app: Any) -> None:
    """meta restored from a dump numbers its new events from the dump's last one again:
    a pull from the last seq read would never see them. The README's check (is the last
    event pulled still there, the same?) notices, and reading again from 0 finds them."""
    from sqlalchemy import text

    net, stranger = network, network.stranger
    stranger.deaf = True  # the pull alone
    _log_in(net)
    kept, lost, later = (log_in_tokens(net)["access_token"] for _ in range(3))
    _revoke(net, kept)
    stranger.pull_checked()
    dump = max(stranger.events)
    _revoke(net, lost)
    stranger.pull_checked()
    assert stranger.api(lost) == 401 and max(stranger.events) == dump + 1

    # The restore: meta forgets the events after the dump and numbers from there again.
    db = app.extensions["srcore"].db
    with db.transaction() as session:
        session.execute(text("DELETE FROM revocation_event WHERE seq > :seq"), {"seq": dump})
        if session.get_bind().dialect.name == "postgresql":
            session.execute(
                text("SELECT setval(pg_get_serial_sequence('revocation_event', 'seq'), :seq)"),
                {"seq": dump},
            )
        else:
            session.execute(
                text("UPDATE sqlite_sequence SET seq = :seq WHERE name = 'revocation_event'"),
                {"seq": dump},
            )
    _revoke(net, later)
    # The new event has the seq the lost one had: nothing after it is new.
    assert stranger.page(dump + 1) == {"events": [], "last": dump + 1}
    assert stranger.api(later) == 200
    stranger.pull_checked()
    assert stranger.rewinds == 1
    assert stranger.api(later) == 401
    # What the restored meta forgot still stands here: it only refuses more.
    assert stranger.api(lost) == 401 and stranger.api(kept) == 401
