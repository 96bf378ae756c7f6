"""meta, todo and paste under gunicorn on 127.0.0.1 (on SQLite, then on PostgreSQL), judged
as a shared cache between their users would judge them (RFC 9111).

alice and bob register at meta and each log in to todo and paste, keep a public and a
private tracker, a public paste and a webhook subscription at each service, and a personal
token. Every GET route of each app's ``url_map`` is then asked for by alice, by bob and by
nobody, with alice's resources in the path. An answer whose content depends on who asks
(the cookie or the ``Authorization``) must be one a shared cache does not store (``private``
or ``no-store``, or a request with ``Authorization`` and no ``public``), or name the header
in ``Vary``. A shared cache made of CacheControl (which is a private cache: told here to
keep no ``private`` answer and none to a request with ``Authorization``, as RFC 9111 asks
of a shared one) stands between the three users: each must get what the service gives
them directly, never another's answer, and a revalidation must not bring bob a 304 for
alice's representation. Conditional GETs of every kind never give a 5xx; a 304 carries the
``Cache-Control``, ``ETag`` and ``Vary`` its 200 carries.
"""

from __future__ import annotations

import contextlib
import http.cookiejar
import re
import weakref
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import requests
from cachecontrol import CacheControlAdapter
from cachecontrol.cache import DictCache
from cachecontrol.controller import CacheController
from cachecontrol.heuristics import LastModified

from srcore import testdb
from srcore.testing import free_port, run_service, run_worker, write_network_config
from tests.conftest import require_postgres
from tests.test_security_e2e import (
    Network,
    bearer,
    csrf,
    mail_sink,
    open_page_as,
    personal_token,
    register,
)

__all__ = ["mail_sink"]  # a fixture used by this module

pytestmark = [pytest.mark.slow]

SERVICES = ("meta", "todo", "paste")
VIEWERS = ("alice", "bob", "nobody")
SCOPES = [
    "todo/trackers:RW",
    "todo/tickets:RW",
    "paste/pastes:RW",
    "meta/profile:RW",
    "meta/tokens:RO",
]
EVENTS = {"meta": ["profile:updated"], "todo": ["tracker:created"], "paste": ["paste:created"]}
#: Statuses a cache may store without explicit freshness (RFC 9110, section 15.1).
HEURISTIC = frozenset({200, 203, 204, 206, 300, 301, 308, 404, 405, 410, 414, 501})
_VARIABLE = re.compile(r"<(?:([^:<>]+)(?:\([^)]*\))?:)?([^<>]+)>")
#: What changes from one answer to the next of the same page to the same person.
_VOLATILE = re.compile(
    rb'(name="csrf_token"[^>]*value=")[^"]*|(<meta name="csrf-token" content=")[^"]*'
    rb'|("request_id": ?")[^"]*|(data-request-id=")[^"]*|(Request id:? <code>)[^<]*'
    rb"|(nonce=\")[^\"]*"
)


@dataclass
class Person:
    """A registered user: their browser (its cookies), token and resources."""

    name: str
    browser: requests.Session
    token: str = ""
    ids: dict[str, Any] = field(default_factory=dict)


@dataclass
class World:
    net: Network
    urls: dict[str, str]
    apps: dict[str, Any]
    people: dict[str, Person]
    receiver: str

    def base(self, service: str) -> str:
        return str(getattr(self.net, service))

    def headers(self, viewer: str, path: str) -> dict[str, str]:
        """What *viewer*'s client sends: their cookies on a page, their token on the API."""
        person = self.people.get(viewer)
        if person is None:
            return {}
        if path.startswith("/api/"):
            return bearer(person.token)
        jar = person.browser.cookies
        return {"Cookie": "; ".join(f"{c.name}={c.value}" for c in jar)}

    def get(self, viewer: str, service: str, path: str, **headers: str) -> requests.Response:
        return requests.get(
            self.base(service) + path,
            headers={**self.headers(viewer, path), **headers},
            allow_redirects=False,
            timeout=15,
        )


def _form(b: requests.Session, url: str, **fields: Any) -> requests.Response:
    page = b.get(url, timeout=10)
    answer = b.post(url, data={"csrf_token": csrf(page), **fields}, timeout=10)
    assert answer.status_code == 200, (url, answer.status_code, answer.text[:1000])
    return answer


def _populate(net: Network, person: Person, receiver: str) -> None:
    b, name = person.browser, person.name
    open_page_as(net, b, name, net.todo, "/create")
    for tracker, visibility in (("pub", "public"), ("priv", "private")):
        _form(b, f"{net.todo}/create", name=tracker, visibility=visibility)
        _form(b, f"{net.todo}/~{name}/{tracker}/new", title=f"{name}'s ticket", description="x")
    open_page_as(net, b, name, net.paste, "/new")
    made = _form(b, f"{net.paste}/new", title=f"{name}'s paste", text=f"{name} wrote this")
    person.ids["short_id"] = made.url.rsplit("/", 1)[1]
    person.token = personal_token(net, b, SCOPES)
    profile = requests.get(f"{net.meta}/api/profile", headers=bearer(person.token), timeout=10)
    assert profile.status_code == 200, profile.text
    person.ids["user_id"] = profile.json()["id"]
    for service in SERVICES:
        made = requests.post(
            f"{getattr(net, service)}/api/webhooks",
            headers=bearer(person.token),
            json={"url": receiver, "events": EVENTS[service]},
            timeout=10,
        )
        assert made.status_code == 201, made.text
        person.ids[f"{service}:subscription_id"] = made.json()["id"]


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def world(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, mail_sink: Any
) -> Iterator[World]:
    import importlib

    from srcore.app import migration_target
    from srcore.migrate import upgrade_all

    tmp = tmp_path_factory.mktemp(f"http-caching-{request.param}")
    ports = {service: free_port() for service in SERVICES}
    config = write_network_config(
        tmp / "config.ini",
        ports,
        global_keys={**mail_sink.config_keys(), "allow-private-webhook-targets": "127.0.0.0/8"},
    )
    urls = {name: f"sqlite:///{tmp / (name + '.db')}" for name in ports}
    made: list[str] = []
    if request.param == "postgresql":
        require_postgres()
        text = config.read_text(encoding="utf-8")
        for name in ports:
            url = testdb.create_test_database(prefix=f"srcore_caching_{name}")
            made.append(url)
            text = text.replace(urls[name], url)
            urls[name] = url
        config.write_text(text, encoding="utf-8")
    apps: dict[str, Any] = {}
    try:
        for service in SERVICES:
            upgrade_all(migration_target(service, config))
            apps[service] = importlib.import_module(service).create_app(config=config)
        with contextlib.ExitStack() as stack:
            found = {
                service: stack.enter_context(run_service(service, config, port=port, timeout=60))
                for service, port in ports.items()
            }
            stack.enter_context(run_worker("meta", config, timeout=60))
            net = Network(config, tmp, found["meta"], found["todo"], found["paste"], mail_sink, {})
            receiver = net.receiver()
            stack.callback(receiver.close)
            people = {}
            for name in ("alice", "bob"):
                people[name] = Person(name, register(net, name))
                _populate(net, people[name], receiver.url)
            yield World(net, urls, apps, people, receiver.url)
    finally:
        for app in apps.values():
            app.extensions["srcore"].db.dispose()
        for url in made:
            testdb.drop_test_database(url)


# -- the routes -----------------------------------------------------------------------------


def _value(world: World, service: str, endpoint: str, name: str) -> list[str]:
    """The values put in the route variable *name*: alice's resource, and for todo her
    private tracker as well as her public one."""
    alice = world.people["alice"]
    st = world.apps[service].extensions["srcore"]
    values: dict[str, list[str]] = {
        "username": ["alice"],
        "name": ["pub", "priv"],
        "number": ["1"],
        "short_id": [alice.ids["short_id"]],
        "user_id": [str(alice.ids["user_id"])],
        "subscription_id": [str(alice.ids[f"{service}:subscription_id"])],
        "token_id": ["1"],
        "token": ["not-a-token"],
        "client_id": ["todo"],
        "key_id": ["1"],
        "delivery_id": ["1"],
        "version_tag": [st.static_version],
        "filename": ["srcore.css"],
    }
    if endpoint == "static":
        return []  # a service's own static folder, empty in these services
    return values[name]


def get_paths(world: World, service: str) -> list[str]:
    """A path of every GET route of *service*, alice's resources in its variables."""
    paths: set[str] = set()
    for rule in world.apps[service].url_map.iter_rules():
        if "GET" not in (rule.methods or ()):
            continue
        options = [""]
        for literal, variable in zip(
            _VARIABLE.split(rule.rule)[::3], [*_VARIABLE.findall(rule.rule), None], strict=True
        ):
            options = [o + literal for o in options]
            if variable is not None:
                choices = _value(world, service, rule.endpoint, variable[1])
                options = [o + v for o in options for v in choices]
        paths.update(options)
    return sorted(paths)


# -- how a shared cache reads an answer -----------------------------------------------------


def cache_control(response: requests.Response) -> dict[str, str]:
    directives = {}
    for part in response.headers.get("Cache-Control", "").split(","):
        name, _, value = part.strip().partition("=")
        if name:
            directives[name.lower()] = value.strip('"')
    return directives


def varies_on(response: requests.Response) -> set[str]:
    return {v.strip().lower() for v in response.headers.get("Vary", "").split(",") if v.strip()}


def shared_storable(response: requests.Response, request_headers: dict[str, str]) -> bool:
    """Whether a shared cache may store *response* (RFC 9111, section 3)."""
    cc = cache_control(response)
    if "no-store" in cc or "private" in cc or response.status_code < 200:
        return False
    if "authorization" in {h.lower() for h in request_headers} and not (
        {"public", "must-revalidate", "s-maxage"} & cc.keys()
    ):
        return False  # section 3.5
    explicit = {"public", "max-age", "s-maxage"} & cc.keys() or "Expires" in response.headers
    return bool(explicit) or response.status_code in HEURISTIC


def masked(response: requests.Response) -> tuple[int, bytes]:
    """An answer's status and body, less what changes from one request to the next."""
    return response.status_code, _VOLATILE.sub(
        lambda m: next(g for g in m.groups() if g is not None), response.content
    )


class SharedController(CacheController):
    """CacheControl's controller (a private cache's) made a shared cache: it keeps no
    ``private`` answer, and none to a request with ``Authorization`` unless the answer
    allows it (RFC 9111, sections 3 and 3.5)."""

    def cache_response(self, request: Any, response: Any, *args: Any, **kwargs: Any) -> None:
        answer = response() if isinstance(response, weakref.ReferenceType) else response
        if answer is None:
            return
        cc = self.parse_cache_control(answer.headers)
        if "private" in cc:
            return
        sent = {name.lower() for name in request.headers}
        if "authorization" in sent and not ({"public", "must-revalidate", "s-maxage"} & cc.keys()):
            return
        super().cache_response(request, response, *args, **kwargs)


def test_a_shared_cache_between_the_users_hands_nobody_anothers_answer(world: World) -> None:
    problems = []
    served = 0
    for service in SERVICES:
        for path in get_paths(world, service):
            shared = requests.Session()
            # A cache keeps no cookie: each request carries its user's own.
            shared.cookies.set_policy(http.cookiejar.DefaultCookiePolicy(allowed_domains=[]))
            shared.mount(
                "http://",
                CacheControlAdapter(
                    cache=DictCache(), controller_class=SharedController, heuristic=LastModified()
                ),
            )
            url = world.base(service) + path
            for viewer in (*VIEWERS, *VIEWERS):  # the second round finds the first's answers
                direct = world.get(viewer, service, path)
                through = shared.get(
                    url, headers=world.headers(viewer, path), allow_redirects=False, timeout=15
                )
                if not getattr(through, "from_cache", False):
                    continue  # the service's own answer, passed on
                served += 1
                if masked(through) != masked(direct):
                    problems.append(
                        (service, path, viewer, through.status_code, direct.status_code)
                    )
    assert problems == [], "\n".join(repr(p)[:600] for p in problems)


def _credential_header(path: str) -> str:
    return "authorization" if path.startswith("/api/") else "cookie"


def test_what_depends_on_who_asks_is_kept_from_shared_caches(world: World) -> None:
    problems = []
    count = 0
    for service in SERVICES:
        paths = get_paths(world, service)
        assert 30 <= len(paths) < 200 or service != "meta", paths
        for path in paths:
            answers = {viewer: world.get(viewer, service, path) for viewer in VIEWERS}
            views = {viewer: masked(answer) for viewer, answer in answers.items()}
            count += 1
            for viewer, answer in answers.items():
                others = [o for o in VIEWERS if o != viewer and views[o] != views[viewer]]
                if not others:
                    continue  # everyone sees the same: a shared cache may keep it
                sent = world.headers(viewer, path)
                credential = _credential_header(path)
                if shared_storable(answer, sent) and not ({credential, "*"} & varies_on(answer)):
                    problems.append(
                        (service, path, viewer, answer.status_code, dict(answer.headers), others)
                    )
    assert count > 60
    assert problems == [], "\n".join(repr(p)[:600] for p in problems)


# -- conditional requests -------------------------------------------------------------------

#: If-None-Match values beside the answer's own tag: every kind a client or a cache sends,
#: and garbage.
NONE_MATCH = [
    "*",
    "* ",
    '"nothing-like-it"',
    'W/"nothing-like-it"',
    '"a", "b", W/"c"',
    "garbage",
    '"unterminated',
    "W/",
    '""',
    ",,,",
    '"a" "b"',
    '*, "a"',
    "\\",
    '"' + "x" * 5000 + '"',
]
MODIFIED_SINCE = [
    "Thu, 01 Jan 1970 00:00:00 GMT",
    "Fri, 31 Dec 9999 23:59:59 GMT",
    "Sun, 06 Nov 1994 08:49:37 GMT",
    "Sunday, 06-Nov-94 08:49:37 GMT",
    "Sun Nov  6 08:49:37 1994",
    "yesterday",
    "0",
    "-1",
    "Mon, 99 Foo 2024 99:99:99 GMT",
    "x" * 5000,
]
#: Ranges that are not one range of bytes: ignored, the whole answer sent (RFC 9110, 14.2).
IGNORED_RANGES = ["garbage", "bytes=", "bytes=5-1", "items=0-1", "bytes=0-0,5-9"]
THROTTLED = 429
#: What a 304 must carry when its 200 does (RFC 9110, section 15.4.5).
KEPT_BY_304 = ("Cache-Control", "ETag", "Vary", "Expires", "Content-Location")


def test_conditional_requests_never_fail_and_304_keeps_the_200s_headers(world: World) -> None:
    problems = []
    for service in SERVICES:
        for path in get_paths(world, service):
            for viewer in VIEWERS:
                full = world.get(viewer, service, path)
                tag, modified = full.headers.get("ETag"), full.headers.get("Last-Modified")
                tries = [{"If-None-Match": value} for value in NONE_MATCH]
                tries += [{"If-Modified-Since": value} for value in MODIFIED_SINCE]
                tries += [{"If-Match": "*"}, {"If-Match": "*", "If-None-Match": "*"}]
                tries += [{"If-Match": value} for value in NONE_MATCH[2:]]
                tries += [{"Range": value} for value in IGNORED_RANGES]
                if tag:
                    weak = tag if tag.startswith("W/") else f"W/{tag}"
                    tries += [
                        {"If-None-Match": tag},
                        {"If-None-Match": weak},
                        {"If-None-Match": f'"a", {tag}'},
                        {"If-None-Match": f"{tag}, garbage"},
                        {"If-None-Match": '"other"', "If-Modified-Since": modified or "0"},
                        {"If-Match": '"other"'},
                        {"If-Match": tag, "If-None-Match": tag},
                        {"If-Match": tag},
                        {"If-Match": f'"a", {tag}'},
                    ]
                if modified:
                    tries += [{"If-Modified-Since": modified}]
                for sent in tries:
                    answer = world.get(viewer, service, path, **sent)
                    if answer.status_code >= 500:
                        problems.append((service, path, viewer, sent, answer.status_code))
                    if answer.status_code == 412:
                        # A refusal: never the representation, nor one a cache keeps.
                        if full.content and full.content == answer.content:
                            problems.append((service, path, viewer, sent, "412 with the body"))
                        if shared_storable(answer, sent) or "max-age" in cache_control(answer):
                            problems.append((service, path, viewer, sent, "412 kept by caches"))
                    matches = sent.get("If-Match") in ("*", tag)
                    if full.status_code == 200 and matches and answer.status_code == 412:
                        problems.append((service, path, viewer, sent, "412 though it matches"))
                    if answer.status_code == THROTTLED or full.status_code == THROTTLED:
                        continue  # an endpoint that slows down callers failing its check
                    if "Range" in sent and answer.status_code != full.status_code:
                        problems.append((service, path, viewer, sent, answer.status_code))
                    if answer.status_code != 304:
                        continue
                    if full.status_code != 200 or (
                        "If-None-Match" in sent and tag is None and "*" not in sent["If-None-Match"]
                    ):
                        problems.append((service, path, viewer, sent, "304 without a 200"))
                    for name in KEPT_BY_304:
                        if name == "Expires":  # a time from now: only whether it is there
                            if (name in answer.headers) != (name in full.headers):
                                problems.append((service, path, viewer, sent, name))
                        elif answer.headers.get(name) != full.headers.get(name):
                            problems.append(
                                (service, path, viewer, sent, name, answer.headers.get(name),
                                 full.headers.get(name))
                            )  # fmt: skip
                    if answer.content:
                        problems.append((service, path, viewer, sent, "a 304 with a body"))
    assert problems == [], "\n".join(repr(p)[:600] for p in problems)


def test_bob_never_gets_a_304_for_alices_representation(world: World) -> None:
    problems = []
    for service in SERVICES:
        for path in get_paths(world, service):
            alices = world.get("alice", service, path)
            for viewer in ("bob", "nobody"):
                own = world.get(viewer, service, path)
                if masked(own) == masked(alices):
                    continue  # the same representation: a 304 would be right
                if own.status_code == 200 and alices.headers.get("ETag") is not None:
                    assert own.headers.get("ETag") != alices.headers["ETag"], (service, path)
                sent: dict[str, str] = {}
                if "ETag" in alices.headers:
                    sent["If-None-Match"] = alices.headers["ETag"]
                if "Last-Modified" in alices.headers:
                    sent["If-Modified-Since"] = alices.headers["Last-Modified"]
                if not sent:
                    continue
                answer = world.get(viewer, service, path, **sent)
                if answer.status_code == 304:
                    problems.append((service, path, viewer, sent))
    assert problems == [], "\n".join(repr(p)[:600] for p in problems)
