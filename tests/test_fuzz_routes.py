"""Acceptance: every route of meta, todo and paste, driven with hostile requests, never
answers a 5xx.

The routes come from each app's ``url_map`` (srcore's own included), every method of each
(HEAD and OPTIONS too). Hypothesis picks, per request: path parts (real values or NUL,
lone surrogates, huge numbers, ...), a raw query string, a body (none, form, JSON or raw
bytes, with or without the session's CSRF token), an odd ``Host``, a broken
``Authorization`` (non-UTF-8 Basic, garbage Bearer, or a valid token) and whether the
visitor is anonymous or logged in. ``TESTING`` is on, so an unhandled exception fails the
test as well as any 5xx. Runs on SQLite and PostgreSQL; examples are derandomized and
bounded, so the run is repeatable and takes seconds per service and backend.
"""

from __future__ import annotations

import base64
import importlib
import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote_from_bytes

import pytest
from fake_meta import META, FakeMeta
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from srcore.testing import ServiceDatabase, create_user, log_in_client

SERVICES = ["meta", "todo", "paste"]

EXAMPLES = settings(
    max_examples=5,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)

HOSTILE = [
    "\x00", "a\x00b", "\ud800", "x\udfff", "\x01", "\x7f", "\u202e", "\ufeff", "\U0001f600",
    "0", "-1", "2147483648", "9223372036854775808", "1" * 40, "1e3", "0x10", " ", "",
    "../..", "a" * 300, "~", "%", "%00", "%ED%A0%80", "null", "true", "[]", "{}",
]  # fmt: skip
FIELDS = [
    "name", "title", "text", "description", "visibility", "status", "resolution", "confirm",
    "username", "email", "password", "login", "current_password", "new_password", "next",
    "scope", "scopes", "days", "url", "events", "notice", "decision", "token", "client_id",
    "redirect_uri", "response_type", "grant_type", "code", "cursor", "limit", "page",
    "language", "filename", "bio", "location",
]  # fmt: skip
HOSTS = ["", "evil.invalid", "127.0.0.1:99999", "[::1", "a b", "x" * 300, "\x7f.invalid"]

hostile = st.sampled_from(HOSTILE)
texts = st.one_of(hostile, hostile, st.text(max_size=20))
keys = st.one_of(st.sampled_from(FIELDS), st.text(max_size=8))


def _encode(text: str) -> str:
    """Percent-encode *text* as UTF-8, lone surrogates included (as a raw client would)."""
    return quote_from_bytes(text.encode("utf-8", "surrogatepass"), safe="")


def _raw_query(pairs: list[tuple[str, str]]) -> str:
    return "&".join(f"{_encode(k)}={_encode(v)}" for k, v in pairs)


def _flood(value: str) -> list[tuple[str, str]]:
    """Every known field set to one hostile value: whichever a view reads gets it."""
    return [(field, value) for field in FIELDS]


pairs = st.one_of(hostile.map(_flood), st.lists(st.tuples(keys, texts), max_size=4))
queries = st.one_of(st.just(""), pairs.map(_raw_query))
json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    texts,
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)
json_bodies = st.one_of(
    st.one_of(hostile, json_scalars).map(lambda v: json.dumps(dict.fromkeys(FIELDS, v)).encode()),
    st.dictionaries(keys, json_values, max_size=6).map(lambda o: json.dumps(o).encode()),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.binary(max_size=32),
)
bodies = st.one_of(
    st.just(("none", None)),
    st.tuples(st.just("form"), pairs),
    st.tuples(st.just("json"), json_bodies),
    st.tuples(st.sampled_from(["text/plain", "multipart/form-data", ""]), st.binary(max_size=32)),
)
authorizations = st.sampled_from(["none", "valid", "basic-latin1", "basic-junk", "bearer-junk"])
#: (logged in, with the session's CSRF token): mostly a visitor whose forms go through.
visitors = st.sampled_from(
    [(True, True), (True, True), (False, True), (True, False), (False, False)]
)


@pytest.fixture(scope="module", params=SERVICES)
def srcore_service(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture
def fuzz_app(
    srcore_service: str, srcore_database: ServiceDatabase, srcore_signing_key: Any, tmp_path: Any
) -> Iterator[Any]:
    """The service's app; services other than meta reach a fake meta, in process."""
    from joserfc.jwk import KeySet

    from srcore.auth.tokens import StaticKeySource, TokenVerifier
    from srcore.testing import TEST_ISSUER, _clean

    text = srcore_database.config_path.read_text(encoding="utf-8")
    if srcore_service != "meta":
        text += (
            "oauth-client-id = fuzz\noauth-client-secret = fuzz-secret\n"
            f"\n[meta]\norigin = {META}\n"
            f"database-url = sqlite:///{tmp_path / 'meta.db'}\nsecret-key = {'k' * 40}\n"
        )
    config = tmp_path / "config.ini"
    config.write_text(text, encoding="utf-8")
    verifier = TokenVerifier(
        keys=StaticKeySource(KeySet([srcore_signing_key])),
        issuer=TEST_ISSUER,
        audience=srcore_service,
    )
    options: dict[str, Any] = {"token_verifier": verifier}
    if srcore_service != "meta":
        from srcore.auth.oauth_client import build_meta_link
        from srcore.config import load_config
        from srcore.manifest import load_manifest

        specs = dict(load_manifest(srcore_service).config)
        fake = FakeMeta(client_id="fuzz", client_secret="fuzz-secret")
        options["identity"] = build_meta_link(
            load_config(config, specs=specs), srcore_service, http=fake.session()
        )
    app = importlib.import_module(srcore_service).create_app(config=config, **options)
    app.config["TESTING"] = True
    if srcore_service == "meta":
        from argon2 import PasswordHasher
        from meta.logic import Passwords

        app.extensions["meta"].passwords = Passwords(
            PasswordHasher(time_cost=1, memory_cost=64, parallelism=1)
        )
    try:
        yield app
    finally:
        identity = app.extensions["srcore"].identity
        if identity is not None and identity.puller is not None:
            identity.puller.stop()
        _clean(app)
        app.extensions["srcore"].db.dispose()


def _rows(app: Any, service: str, make_token: Any) -> tuple[Any, dict[str, str], str]:
    """Alice, real values for the routes' URL parts, and a token the app accepts."""
    st_ = app.extensions["srcore"]
    values = {
        "version_tag": st_.static_version,
        "filename": "srcore.css",
        "username": "alice",
        "subscription_id": "1",
        "delivery_id": "1",
        "token": "x" * 20,
    }
    if service == "meta":
        from meta.oauth.pats import create_token

        from srcore.db import session

        alice = create_user(app, "alice", password_hash="x")
        with app.app_context():
            row, token = create_token(
                session.merge(alice), name="fuzz", scope="meta/tokens:RW meta/profile:RO", days=1
            )
            session.commit()
            values.update(token_id=str(row.id), user_id=str(alice.id), client_id="fuzz")
        return alice, values, token
    alice = create_user(app, "alice")
    if service == "todo":
        from todo import logic
        from todo.models import Tracker

        with st_.db.transaction() as session:
            tracker = Tracker(owner_id=alice.id, name="bugs")
            session.add(tracker)
            session.flush()
            logic.create_ticket(session, tracker, session.merge(alice), {"title": "crash"})
        values.update(name="bugs", number="1")
        scopes = "todo/trackers:RW todo/tickets:RW"
    else:
        from paste.models import Paste

        with st_.db.transaction() as session:
            paste = Paste(owner_id=alice.id, text="hello", short_id="fuzzpaste1")
            session.add(paste)
        values.update(short_id="fuzzpaste1")
        scopes = "paste/pastes:RW"
    return alice, values, make_token(scopes, user=alice)


def _csrf(app: Any, client: Any) -> str:
    """A CSRF token valid for *client*'s session, as a form page would give it."""
    from flask import session
    from flask_wtf.csrf import generate_csrf

    with app.test_request_context():
        token = generate_csrf()
        raw = session["csrf_token"]
    with client.session_transaction() as sess:
        sess["csrf_token"] = raw
    return str(token)


def _routes(app: Any) -> list[tuple[str, str, list[str]]]:
    """(rule, method, argument names) for every method of every route; deletions last."""
    found = []
    for rule in app.url_map.iter_rules():
        for method in sorted(rule.methods or ()):
            found.append((rule.rule, method, sorted(rule.arguments)))
    return sorted(found, key=lambda r: ("delete" in r[0] or r[1] == "DELETE", r[0], r[1]))


def _path(rule: str, parts: dict[str, str]) -> str:
    import re

    def fill(match: re.Match[str]) -> str:
        return _encode(parts[match.group(1)])

    return re.sub(r"<(?:[^:<>]+:)?([A-Za-z_]+)>", fill, rule)


def _authorization(kind: str, token: str) -> dict[str, str]:
    values = {
        "valid": f"Bearer {token}",
        "basic-latin1": "Basic " + base64.b64encode(b"\xff\xfe\x00:\xc3\x28").decode(),
        "basic-junk": "Basic ***",
        "bearer-junk": "Bearer \x01" + "A" * 40,
    }
    return {"Authorization": values[kind]} if kind in values else {}


def _form(pairs: list[tuple[str, str]], csrf: str | None) -> bytes:
    if csrf is not None:
        pairs = [*pairs, ("csrf_token", csrf)]
    return _raw_query(pairs).encode("ascii")


def _probes(method: str, arguments: list[str], real: dict[str, str]) -> list[dict[str, Any]]:
    """Requests every route gets whatever hypothesis draws: each hostile kind of value
    where this route reads input, from a visitor whose forms go through (CSRF token sent),
    logged in and not."""
    plain = {a: real.get(a, "1") for a in arguments}
    shapes: list[dict[str, Any]] = [{"query": _raw_query(_flood("\ud800\x00"))}]
    if method in {"POST", "PUT", "PATCH", "DELETE"}:
        for value in ["\ud800", "a\x00b", 2**70, ["\x00"]]:
            body = json.dumps(dict.fromkeys(FIELDS, value)).encode()
            shapes.append({"body": ("json", body)})
        for text in ["a\x00b", "2147483648", "-9223372036854775809"]:
            shapes.append({"body": ("form", _flood(text))})
    for value in ["\x00", "9223372036854775808", "\ud800"] if arguments else []:
        shapes.append({"parts": dict.fromkeys(arguments, value)})
    base = {
        "parts": plain,
        "query": "",
        "body": ("none", None),
        "auth": "none",
        "host": None,
        "accept": "text/html",
    }
    return [
        {**base, **shape, "visitor": visitor}
        for shape in shapes
        for visitor in [(True, True), (False, True)]
    ]


def test_no_route_answers_5xx(fuzz_app: Any, srcore_service: str, make_token: Any) -> None:
    app = fuzz_app
    alice, real, token = _rows(app, srcore_service, make_token)
    routes = _routes(app)
    assert len(routes) > 10
    for rule, method, arguments in routes:
        anonymous = app.test_client()
        logged_in = log_in_client(app.test_client(), alice)
        tokens = {id(c): _csrf(app, c) for c in (anonymous, logged_in)}
        part = st.fixed_dictionaries(
            {a: st.one_of(st.just(real.get(a, "1")), hostile) for a in arguments}
        )

        def run(
            parts: dict[str, str],
            query: str,
            body: tuple[str, Any],
            auth: str,
            host: str | None,
            visitor: tuple[bool, bool],
            accept: str,
        ) -> None:
            logged, with_csrf = visitor
            client = logged_in if logged else anonymous
            csrf = tokens[id(client)] if with_csrf else None
            headers = {"Accept": accept, **_authorization(auth, token)}
            if csrf is not None:
                headers["X-CSRFToken"] = csrf
            if host is not None:
                headers["Host"] = host
            kind, payload = body
            options: dict[str, Any] = {}
            if kind == "form":
                options = {
                    "data": _form(payload, csrf),
                    "content_type": "application/x-www-form-urlencoded",
                }
            elif kind == "json":
                options = {"data": payload, "content_type": "application/json"}
            elif kind != "none":
                options = {"data": payload, "content_type": kind}
            path = _path(rule, parts)
            response = client.open(
                path, method=method, query_string=query, headers=headers, **options
            )
            try:
                assert response.status_code < 500, (
                    method,
                    path,
                    query,
                    response.status_code,
                    response.get_data()[:500],
                )
            finally:
                response.close()

        fuzz = given(
            parts=part,
            query=queries,
            body=bodies,
            auth=authorizations,
            host=st.one_of(st.none(), st.sampled_from(HOSTS)),
            visitor=visitors,
            accept=st.sampled_from(["text/html", "application/json", "*/*"]),
        )(run)
        for probe in _probes(method, arguments, real):
            fuzz = example(**probe)(fuzz)
        EXAMPLES(fuzz)()
