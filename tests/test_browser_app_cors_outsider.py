"""A browser app on another origin, and a hostile page on another, in headless Chromium.

meta, todo and paste run under gunicorn on 127.0.0.1. A small static server plays the other
sites, on one port of its own under three names (Chromium maps ``*.example.test`` to this
machine and resolves no other name):

- ``http://localhost:P``, a single-page app: a public OAuth client (PKCE, no secret) whose
  JavaScript exchanges its code at meta's token endpoint, refreshes and revokes there, and
  calls todo's API with the bearer token. Every call is a ``fetch`` run in the page, so
  the browser enforces CORS: a header the API does not expose reads as absent, and a
  refused preflight fails the call with a ``TypeError`` that hides the answer's status
  and body. Another site than the services' (``localhost`` is not ``127.0.0.1``), yet a
  secure context, so ``crypto.subtle`` makes the PKCE challenge.
- ``http://evil.example.test:P``, a hostile page on another site, and
  ``http://127.0.0.1:P``, one on the services' own site but another origin (a page
  served from another port of the host), to which the browser sends the ``SameSite=Lax``
  session cookies of meta and todo. With alice logged in to both in the same browser,
  neither may read a cookie-authenticated answer, change anything with a form, a
  ``fetch`` or a navigation, get its own OAuth client approved without alice's yes, or
  get a code or a token sent to it.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest

from srcore import cors
from srcore.testing import free_port, run_network
from srcore.testing.browser import CHROMIUM_ARGS, chromium_path
from srcore.testing.skipping import require_or_skip

pytestmark = [pytest.mark.browser, pytest.mark.slow]

PASSWORD = "correct horse battery staple"
#: Milliseconds Playwright waits for a navigation, an element or a page's script.
STEP_MS = 15_000
#: Every name under example.test is this machine; localhost and 127.0.0.1 are themselves.
RESOLVER = (
    "--host-resolver-rules=MAP *.example.test 127.0.0.1, MAP * ~NOTFOUND, "
    "EXCLUDE localhost, EXCLUDE 127.0.0.1"
)
SPA_SCOPE = "todo/trackers:RW todo/tickets:RW"
#: A PKCE challenge (S256 of a verifier the hostile page keeps).
CHALLENGE = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
_CSRF = re.compile(r'name="csrf_token"[^>]*value="([^"]+)"')

#: Runs fetch(url, init) in the page: the status, the headers the page may read and the
#: body, or the error a refused CORS check (or a network failure) raises instead.
FETCH = """async ([url, init]) => {
  try {
    const r = await fetch(url, init);
    return {status: r.status, headers: Object.fromEntries(r.headers), body: await r.text()};
  } catch (e) {
    return {error: String(e)};
  }
}"""

#: The app's login: a PKCE verifier and state kept in sessionStorage, then off to meta.
START_LOGIN = """async ([authorize, clientId, redirectUri, scope]) => {
  const b64 = (buf) => btoa(String.fromCharCode(...new Uint8Array(buf)))
    .replace(/\\+/g, "-").replace(/\\//g, "_").replace(/=+$/, "");
  const verifier = b64(crypto.getRandomValues(new Uint8Array(32)));
  const challenge = b64(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(verifier)));
  const state = b64(crypto.getRandomValues(new Uint8Array(16)));
  sessionStorage.setItem("login", JSON.stringify({verifier, state}));
  const query = new URLSearchParams({
    response_type: "code", client_id: clientId, redirect_uri: redirectUri, scope, state,
    code_challenge: challenge, code_challenge_method: "S256",
  });
  setTimeout(() => location.assign(authorize + "?" + query), 0);
}"""

#: The app's callback: the code for tokens, at meta's token endpoint, from JavaScript.
FINISH_LOGIN = """async ([token, clientId, redirectUri]) => {
  const {verifier, state} = JSON.parse(sessionStorage.getItem("login"));
  const query = new URLSearchParams(location.search);
  if (query.get("state") !== state) return {error: "state " + query.get("state")};
  const r = await fetch(token, {method: "POST", body: new URLSearchParams({
    grant_type: "authorization_code", code: query.get("code"), code_verifier: verifier,
    client_id: clientId, redirect_uri: redirectUri,
  })});
  return {status: r.status, body: await r.json()};
}"""


class _Pages(BaseHTTPRequestHandler):
    """Any path is an empty page; every request target is recorded."""

    seen: list[str]

    def _answer(self) -> None:
        self.seen.append(self.path)
        body = b"<!doctype html><html lang=en><title>elsewhere</title><p>elsewhere</p></html>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _answer

    def log_message(self, format: str, *args: Any) -> None:
        pass


@dataclass
class Sites:
    meta: str
    todo: str
    paste: str
    config: str
    #: The single-page app, another site than the services'.
    spa: str
    #: A hostile page on another site.
    evil: str
    #: A hostile page on the services' own site (127.0.0.1), another port.
    near: str
    #: Every request target the other sites were sent (codes, tokens, errors).
    seen: list[str] = field(default_factory=list)


@pytest.fixture(scope="module")
def sites(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sites]:
    from meta.admin.cli import create_user

    tmp = tmp_path_factory.mktemp("browser-app-cors")
    seen: list[str] = []
    handler = type("Pages", (_Pages,), {"seen": seen})
    port = free_port()
    server = ThreadingHTTPServer(("127.0.0.1", port), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    keys = {"revocation-pull-interval": "1h"}
    try:
        with run_network(tmp, ("meta", "todo", "paste"), global_keys=keys) as net:
            for name in ("alice", "bob", "dev"):
                create_user(str(net.config), name, f"{name}@example.org", PASSWORD)
            yield Sites(
                meta=net.urls["meta"],
                todo=net.urls["todo"],
                paste=net.urls["paste"],
                config=str(net.config),
                spa=f"http://localhost:{port}",
                evil=f"http://evil.example.test:{port}",
                near=f"http://127.0.0.1:{port}",
                seen=seen,
            )
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    path = chromium_path()
    require_or_skip(path is not None, "Chromium (/usr/bin/chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=path, args=[*CHROMIUM_ARGS, RESOLVER])
        try:
            yield browser
        finally:
            browser.close()


def new_tab(context: Any) -> Any:
    page = context.new_page()
    page.set_default_timeout(STEP_MS)
    return page


def log_in_at_meta(sites: Sites, page: Any, username: str) -> None:
    page.goto(f"{sites.meta}/login")
    page.fill("input[name=login]", username)
    page.fill("input[name=password]", PASSWORD)
    with page.expect_navigation():
        page.click("button[type=submit]")
    assert not page.url.startswith(f"{sites.meta}/login"), page.url


@dataclass
class Clients:
    #: The app's public client (redirect URI on the app's origin).
    spa: str
    #: The hostile site's own public and confidential clients (redirect URI on its origin).
    evil_public: str
    evil_confidential: str


@pytest.fixture(scope="module")
def clients(sites: Sites, chromium: Any) -> Iterator[Clients]:
    """Registered by dev on meta's /clients page, as any developer would."""
    context = chromium.new_context()
    try:
        page = new_tab(context)
        log_in_at_meta(sites, page, "dev")

        def register(name: str, redirect_uri: str, kind: str) -> str:
            page.goto(f"{sites.meta}/clients")
            token = _CSRF.search(page.content())
            assert token, page.url
            form = {
                "name": name,
                "redirect_uris": redirect_uri,
                "kind": kind,
                "csrf_token": token.group(1),
            }
            answer = page.request.post(f"{sites.meta}/clients", form=form)
            found = re.search(r'id="client-id">([^<]+)<', answer.text())
            assert answer.status == 200 and found, (answer.status, answer.text()[:500])
            return found.group(1)

        yield Clients(
            spa=register("Board", f"{sites.spa}/cb", "public"),
            evil_public=register("Free prizes", f"{sites.near}/cb", "public"),
            evil_confidential=register("Free prizes 2", f"{sites.near}/cb", "confidential"),
        )
    finally:
        context.close()


def call(page: Any, url: str, **init: Any) -> dict[str, Any]:
    """``fetch(url, init)`` run by *page*: what its script can read of the answer."""
    result: dict[str, Any] = page.evaluate(FETCH, [url, init])
    return result


def read(answer: dict[str, Any], status: int) -> dict[str, Any]:
    """The JSON body of *answer*, which must have been readable and of *status*."""
    assert "error" not in answer, answer
    assert answer["status"] == status, answer
    assert answer["headers"].get("x-request-id"), answer["headers"]
    body: dict[str, Any] = json.loads(answer["body"]) if answer["body"] else {}
    return body


@dataclass
class App:
    """The single-page app, logged in as alice: its tab and its tokens."""

    page: Any
    access: str
    refresh: str

    def auth(self, **more: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.access}", **more}

    def json(self, **more: str) -> dict[str, str]:
        return self.auth(**{"Content-Type": "application/json", **more})


def spa_login(sites: Sites, clients: Clients, page: Any) -> dict[str, Any]:
    """The app's whole login in *page* (whose browser is logged in at meta): its script
    starts it, alice approves on meta's consent page, its script finishes it."""
    page.goto(f"{sites.spa}/")
    with page.expect_navigation(url=re.compile(re.escape(f"{sites.meta}/oauth/authorize"))):
        page.evaluate(
            START_LOGIN,
            [f"{sites.meta}/oauth/authorize", clients.spa, f"{sites.spa}/cb", SPA_SCOPE],
        )
    # A public client whose redirect URI is not https is asked about every time.
    with page.expect_navigation(url=re.compile(re.escape(f"{sites.spa}/cb?"))):
        page.click("button[value=approve]")
    finished: dict[str, Any] = page.evaluate(
        FINISH_LOGIN, [f"{sites.meta}/oauth/token", clients.spa, f"{sites.spa}/cb"]
    )
    return finished


@pytest.fixture(scope="module")
def app(sites: Sites, clients: Clients, chromium: Any) -> Iterator[App]:
    context = chromium.new_context()
    try:
        page = new_tab(context)
        log_in_at_meta(sites, page, "alice")
        finished = spa_login(sites, clients, page)
        assert finished.get("status") == 200, finished
        tokens = finished["body"]
        assert tokens["token_type"] == "Bearer" and tokens["scope"] == SPA_SCOPE, tokens
        yield App(page, tokens["access_token"], tokens["refresh_token"])
    finally:
        context.close()


# -- the single-page app -------------------------------------------------------------------


def test_the_app_refreshes_and_revokes_from_its_own_origin(
    sites: Sites, clients: Clients, chromium: Any
) -> None:
    """Its own login (not the shared app's, whose tokens the other tests use)."""
    context = chromium.new_context()
    try:
        page = new_tab(context)
        log_in_at_meta(sites, page, "alice")
        finished = spa_login(sites, clients, page)
        assert finished.get("status") == 200, finished
        first = finished["body"]
        token = f"{sites.meta}/oauth/token"
        form = {"Content-Type": "application/x-www-form-urlencoded"}

        def post(url: str, **fields: str) -> dict[str, Any]:
            return call(page, url, method="POST", headers=form, body=urlencode(fields))

        renewed = read(
            post(
                token,
                grant_type="refresh_token",
                refresh_token=first["refresh_token"],
                client_id=clients.spa,
            ),
            200,
        )
        assert renewed["refresh_token"] != first["refresh_token"], renewed
        assert renewed["access_token"] and renewed["scope"] == SPA_SCOPE, renewed
        # The token endpoint's errors are read as OAuth errors, not as a failed fetch.
        wrong = post(
            token,
            grant_type="authorization_code",
            code="no-such-code",
            code_verifier="x" * 43,
            client_id=clients.spa,
            redirect_uri=f"{sites.spa}/cb",
        )
        assert read(wrong, 400)["error"] == "invalid_grant", wrong
        unknown = post(token, grant_type="refresh_token", refresh_token="x", client_id="nobody")
        assert read(unknown, 400)["error"] == "invalid_client", unknown
        # The metadata and keys a client library fetches first.
        metadata = read(call(page, f"{sites.meta}/.well-known/oauth-authorization-server"), 200)
        assert "none" in metadata["token_endpoint_auth_methods_supported"], metadata
        assert read(call(page, metadata["jwks_uri"]), 200)["keys"]
        # Logging out of the app: its refresh token revoked, from its own origin.
        revoked = post(
            f"{sites.meta}/oauth/revoke", token=renewed["refresh_token"], client_id=clients.spa
        )
        read(revoked, 200)
        again = post(
            token,
            grant_type="refresh_token",
            refresh_token=renewed["refresh_token"],
            client_id=clients.spa,
        )
        assert read(again, 400)["error"] == "invalid_grant", again
    finally:
        context.close()


def test_the_app_reads_the_location_and_etag_and_sends_them_back(sites: Sites, app: App) -> None:
    """A tracker and a ticket made, read, changed and deleted with the conditional headers
    the API documents: each needs the header exposed, or sendable, across origins."""
    page, api = app.page, f"{sites.todo}/api"
    made = call(page, f"{api}/trackers", method="POST", headers=app.json(), body='{"name":"board"}')
    assert read(made, 201)["name"] == "board"
    location = made["headers"].get("location")
    assert location is not None and location.endswith("/api/trackers/board"), made["headers"]
    tracker = call(page, f"{sites.todo}{urlsplit(location).path}", headers=app.auth())
    read(tracker, 200)
    etag = tracker["headers"].get("etag")
    assert etag is not None and etag.startswith('"'), tracker["headers"]
    # The app's cache: not changed since, so no body.
    unchanged = call(page, f"{api}/trackers/board", headers=app.auth(**{"If-None-Match": etag}))
    assert unchanged.get("status") == 304, unchanged
    assert unchanged["headers"].get("etag") == etag, unchanged
    # A change made from a stale copy is refused, and the app reads why.
    stale = call(
        page,
        f"{api}/trackers/board",
        method="PATCH",
        headers=app.json(**{"If-Match": '"0000"'}),
        body='{"description":"mine"}',
    )
    assert read(stale, 412)["errors"], stale
    changed = call(
        page,
        f"{api}/trackers/board",
        method="PATCH",
        headers=app.json(**{"If-Match": etag}),
        body='{"description":"mine"}',
    )
    assert read(changed, 200)["description"] == "mine"
    assert changed["headers"].get("etag") not in (None, etag), changed["headers"]
    ticket = call(
        page,
        f"{api}/trackers/board/tickets",
        method="POST",
        headers=app.json(),
        body='{"title":"First"}',
    )
    number = read(ticket, 201)["number"]
    assert ticket["headers"].get("location", "").endswith(f"/tickets/{number}"), ticket
    shown = call(page, f"{api}/trackers/board/tickets/{number}", headers=app.auth())
    read(shown, 200)
    closed = call(
        page,
        f"{api}/trackers/board/tickets/{number}",
        method="PATCH",
        headers=app.json(**{"If-Match": shown["headers"].get("etag", "")}),
        body='{"status":"resolved","resolution":"fixed"}',
    )
    assert read(closed, 200)["status"] == "resolved", closed
    # The ticket's change touched its tracker: the tag read before is stale, the new one not.
    stale = call(
        page,
        f"{api}/trackers/board",
        method="DELETE",
        headers=app.auth(**{"If-Match": changed["headers"]["etag"]}),
    )
    read(stale, 412)
    current = call(page, f"{api}/trackers/board", headers=app.auth())["headers"]["etag"]
    gone = call(
        page, f"{api}/trackers/board", method="DELETE", headers=app.auth(**{"If-Match": current})
    )
    read(gone, 204)


def test_the_app_reads_every_error_the_api_answers(sites: Sites, app: App) -> None:
    """Status, body and the headers that explain it: a CORS failure would hide them all."""
    from meta.admin.cli import create_token_for

    page, api = app.page, f"{sites.todo}/api"
    made = call(page, f"{api}/trackers", method="POST", headers=app.json(), body='{"name":"errs"}')
    read(made, 201)
    bad = call(page, f"{api}/trackers", method="POST", headers=app.json(), body="{")
    assert "JSON" in read(bad, 400)["errors"][0]["reason"], bad
    unknown_field = call(
        page, f"{api}/trackers", method="POST", headers=app.json(), body='{"titel":"x"}'
    )
    assert read(unknown_field, 400)["errors"], unknown_field
    for headers in ({}, {"Authorization": "Bearer not-a-token"}):
        anonymous = call(page, f"{api}/trackers", headers=headers)
        assert read(anonymous, 401)["errors"], anonymous
        challenge = anonymous["headers"].get("www-authenticate", "")
        assert challenge.startswith('Bearer realm="todo"'), anonymous["headers"]
    read_only, _ = create_token_for(
        sites.config, "bob", ("todo/trackers:RO",), name="read only", days=1
    )
    narrow = call(
        page,
        f"{api}/trackers",
        method="POST",
        headers={"Authorization": f"Bearer {read_only}", "Content-Type": "application/json"},
        body='{"name":"nope"}',
    )
    assert read(narrow, 403)["errors"], narrow
    assert 'error="insufficient_scope"' in narrow["headers"].get("www-authenticate", ""), narrow
    missing = call(page, f"{api}/trackers/no-such-tracker", headers=app.auth())
    assert read(missing, 404)["errors"], missing
    # A path no route of this version takes, and a method its route does not take: the
    # preflight passes, and the API's own answer is read.
    for url in (f"{api}/no-such-kind/1", f"{api}/trackers/errs/archive"):
        nowhere = call(page, url, method="POST", headers=app.json(), body="{}")
        assert read(nowhere, 404)["errors"], (url, nowhere)
    put = call(page, f"{api}/trackers/errs", method="PUT", headers=app.json(), body="{}")
    assert read(put, 405)["errors"], put
    taken = call(page, f"{api}/trackers", method="POST", headers=app.json(), body='{"name":"errs"}')
    assert read(taken, 409)["errors"][0]["field"] == "name", taken


def test_the_app_manages_its_webhooks(sites: Sites, app: App) -> None:
    page, api = app.page, f"{sites.todo}/api/webhooks"
    catalog = call(page, f"{api}/events")  # public documentation: no token
    assert any(e["name"] == "tracker:created" for e in read(catalog, 200)["results"]), catalog
    body = json.dumps({"url": "https://hooks.example.invalid/in", "events": ["tracker:created"]})
    made = call(page, api, method="POST", headers=app.json(), body=body)
    hook = read(made, 201)
    assert hook["secret"].startswith("whsec_"), hook
    location = made["headers"].get("location", "")
    assert location.endswith(f"/api/webhooks/{hook['id']}"), made["headers"]
    url = f"{api}/{hook['id']}"
    shown = call(page, url, headers=app.auth())
    read(shown, 200)
    etag = shown["headers"].get("etag")
    assert etag, shown["headers"]
    stale = call(
        page,
        url,
        method="PATCH",
        headers=app.json(**{"If-Match": '"0000"'}),
        body='{"events":["ticket:created"]}',
    )
    assert read(stale, 412)["errors"], stale
    changed = call(
        page,
        url,
        method="PATCH",
        headers=app.json(**{"If-Match": etag}),
        body='{"events":["ticket:created"]}',
    )
    assert read(changed, 200)["events"] == ["ticket:created"]
    assert read(call(page, api, headers=app.auth()), 200)["results"], "listed"
    read(call(page, f"{url}/ping", method="POST", headers=app.auth()), 202)
    again = call(page, f"{url}/ping", method="POST", headers=app.auth())
    assert read(again, 429)["errors"], again
    assert int(again["headers"].get("retry-after", "0")) > 0, again["headers"]
    gone = call(
        page, url, method="DELETE", headers=app.auth(**{"If-Match": changed["headers"]["etag"]})
    )
    read(gone, 204)


def test_each_services_documented_headers_cross_origins(sites: Sites, app: App) -> None:
    """What each service's OpenAPI document tells a client to send can be sent from another
    origin, what it says an answer carries can be read there, and a path or method no
    route takes is the API's own answer there too."""
    page = app.page
    allowed = {h.strip().lower() for h in cors.ALLOWED_HEADERS.split(",")}
    exposed = {h.strip().lower() for h in cors.EXPOSED_HEADERS.split(",")}
    for base in (sites.meta, sites.todo, sites.paste):
        document = read(call(page, f"{base}/api/openapi.json"), 200)
        sent: set[str] = set()
        answered: set[str] = set()
        for path in document["paths"].values():
            for operation in path.values():
                for parameter in operation.get("parameters", []):
                    if "$ref" in parameter:
                        name = parameter["$ref"].rsplit("/", 1)[-1]
                        parameter = document["components"]["parameters"][name]
                    if parameter.get("in") == "header":
                        sent.add(parameter["name"])
                for answer in operation.get("responses", {}).values():
                    if "$ref" in answer:
                        name = answer["$ref"].rsplit("/", 1)[-1]
                        answer = document["components"]["responses"][name]
                    answered.update(answer.get("headers", {}))
        # Every service's webhook API is conditional, and every one challenges and limits.
        assert {"If-Match", "If-None-Match"} <= sent, (base, sent)
        assert {"ETag", "Retry-After", "WWW-Authenticate"} <= answered, (base, answered)
        assert {h.lower() for h in sent} <= allowed, (base, sent)
        assert {h.lower() for h in answered} <= exposed, (base, answered)
        # And in the browser: each documented request header sent across.
        for name in sorted(sent):
            answer = call(page, f"{base}/api/webhooks/events", headers={name: '"x"'})
            assert answer.get("status") == 200, (base, name, answer)
        for method in ("GET", "PUT", "DELETE"):
            nowhere = call(page, f"{base}/api/no-such-kind/1", method=method, headers=app.auth())
            assert read(nowhere, 404)["errors"], (base, method, nowhere)
        put = call(page, f"{base}/api/webhooks/events", method="PUT", headers=app.json(), body="{}")
        assert read(put, 405)["errors"], (base, put)


# -- a hostile page ------------------------------------------------------------------------


@pytest.fixture
def victim(sites: Sites, chromium: Any) -> Iterator[Any]:
    """A browser where alice is logged in to meta and todo, with a tracker of her own."""
    context = chromium.new_context()
    try:
        page = new_tab(context)
        log_in_at_meta(sites, page, "alice")
        page.goto(f"{sites.todo}/create")  # todo's login goes through meta, unasked
        assert page.url == f"{sites.todo}/create", page.url
        if page.goto(f"{sites.todo}/~alice/mine").status == 404:
            page.goto(f"{sites.todo}/create")
            page.fill("input[name=name]", "mine")
            with page.expect_navigation():
                page.press("input[name=name]", "Enter")
        assert page.goto(f"{sites.todo}/~alice/mine").status == 200, page.url
        names = {cookie["name"] for cookie in context.cookies()}
        assert {"meta_session", "todo_session"} <= names, names
        yield context
    finally:
        context.close()


def follow(page: Any, url: str) -> None:
    """The page's script sends the browser to *url* (a link followed, top level)."""
    with page.expect_navigation():
        page.evaluate("(url) => { setTimeout(() => location.assign(url), 0); }", url)
    page.wait_for_load_state()


def still_logged_in(sites: Sites, context: Any) -> None:
    """alice's sessions at meta and todo still stand, and todo holds nothing new."""
    page = new_tab(context)
    try:
        assert page.goto(f"{sites.meta}/profile").url == f"{sites.meta}/profile", page.url
        # Still alice: not logged out, nor logged in as the stranger's own account.
        assert "alice@example.org" in page.content(), "meta's session is someone else's"
        assert page.goto(f"{sites.todo}/create").url == f"{sites.todo}/create", page.url
        for path in ("/", "/~alice/mine"):
            assert page.goto(f"{sites.todo}{path}").status == 200, page.url
            assert "planted" not in page.content(), f"a hostile page wrote on {path}"
    finally:
        page.close()


@pytest.mark.parametrize("origin", ["evil", "near"])
def test_a_hostile_page_reads_nothing_with_the_users_cookies(
    sites: Sites, clients: Clients, victim: Any, origin: str
) -> None:
    page = new_tab(victim)
    page.goto(f"{getattr(sites, origin)}/")
    authorize = f"{sites.meta}/oauth/authorize?" + urlencode(
        {
            "response_type": "code",
            "client_id": clients.evil_confidential,
            "redirect_uri": f"{sites.near}/cb",
            "scope": SPA_SCOPE,
            "state": "s",
        }
    )
    readable = []  # what the page could read: with her cookies, or of her data without
    for url in (
        f"{sites.meta}/profile",
        f"{sites.meta}/security",
        f"{sites.meta}/clients",
        f"{sites.meta}/api/profile",
        f"{sites.meta}/userinfo",
        f"{sites.meta}/.well-known/oauth-authorization-server",
        authorize,
        f"{sites.todo}/",
        f"{sites.todo}/~alice/mine",
        f"{sites.todo}/webhooks",
        f"{sites.todo}/api/trackers",
        f"{sites.todo}/api/trackers/mine",
    ):
        # The browser refuses a credentialed answer to any page but the service's own.
        if "error" not in call(page, url, credentials="include"):
            readable.append((url, "include"))
        # Without cookies the API answers anyone, but knows nobody.
        answer = call(page, url, credentials="omit")
        if "error" not in answer and "alice" in answer["body"]:
            readable.append((url, "omit"))
    assert not readable, readable


@pytest.mark.parametrize("origin", ["evil", "near"])
def test_a_hostile_page_changes_nothing(sites: Sites, victim: Any, origin: str) -> None:
    """Forms it submits, fetches it sends without CORS and navigations it starts, all
    carrying the user's cookies where the browser sends them."""
    page = new_tab(victim)
    page.goto(f"{getattr(sites, origin)}/")
    no_cors = {"method": "POST", "mode": "no-cors", "credentials": "include"}
    urlencoded = {"Content-Type": "application/x-www-form-urlencoded"}
    for url, body, headers in (
        (f"{sites.todo}/create", "name=planted", urlencoded),
        (f"{sites.todo}/api/trackers", '{"name":"planted"}', {"Content-Type": "text/plain"}),
        (f"{sites.todo}/~alice/mine/delete", "", urlencoded),
        (f"{sites.todo}/~alice/mine/new", "title=planted", urlencoded),
        (f"{sites.todo}/logout", "", urlencoded),
        (f"{sites.meta}/logout", "", urlencoded),
        (f"{sites.meta}/login", urlencode({"login": "dev", "password": PASSWORD}), urlencoded),
    ):
        sent = call(page, url, **no_cors, body=body, headers=headers)
        assert sent.get("status") == 0, (url, sent)  # opaque: nothing to read
    # A real form, submitted at the top level: the browser goes to the service's answer.
    for url, fields in (
        (f"{sites.todo}/create", {"name": "planted"}),
        (f"{sites.todo}/~alice/mine/delete", {}),
        (f"{sites.todo}/logout", {}),
        (f"{sites.meta}/login", {"login": "dev", "password": PASSWORD}),
    ):
        page.goto(f"{getattr(sites, origin)}/")
        with page.expect_navigation():
            page.evaluate(
                """([url, fields]) => {
                  const form = document.createElement("form");
                  form.method = "POST";
                  form.action = url;
                  for (const [name, value] of Object.entries(fields)) {
                    const input = document.createElement("input");
                    input.name = name;
                    input.value = value;
                    form.append(input);
                  }
                  document.body.append(form);
                  form.submit();
                }""",
                [url, fields],
            )
        assert page.url.startswith(url.split("/~")[0]), page.url
    # Links it follows (top-level GETs, which SameSite=Lax sends cookies with).
    for url in (f"{sites.todo}/logout", f"{sites.meta}/logout", f"{sites.todo}/~alice/mine/delete"):
        page.goto(f"{getattr(sites, origin)}/")
        follow(page, url)
    still_logged_in(sites, victim)
    assert victim.new_page().goto(f"{sites.todo}/~alice/mine").status == 200


def _codes_or_tokens(seen: list[str]) -> list[str]:
    found = []
    for target in seen:
        query = parse_qs(urlsplit(target).query)
        if {"code", "access_token", "id_token", "refresh_token"} & query.keys():
            found.append(target)
    return found


def test_a_hostile_client_gets_no_silent_approval_nor_any_code(
    sites: Sites, clients: Clients, victim: Any
) -> None:
    """The hostile site's own clients, and the app's client aimed at the hostile site,
    sent through alice's browser to meta's authorization endpoint: alice is asked (or
    meta refuses), and no code or token reaches the hostile site."""
    page = new_tab(victim)
    before = len(sites.seen)

    def authorize(**params: str) -> str:
        query = {
            "response_type": "code",
            "scope": SPA_SCOPE,
            "state": "s",
            "code_challenge": CHALLENGE,
            "code_challenge_method": "S256",
            **params,
        }
        page.goto(f"{sites.evil}/")
        follow(page, f"{sites.meta}/oauth/authorize?" + urlencode(query))
        url: str = page.url
        return url

    own = {"redirect_uri": f"{sites.near}/cb"}
    for client in (clients.evil_public, clients.evil_confidential):
        for extra in ({}, {"prompt": "none"}, {"scope": "openid", "prompt": "none"}):
            landed = authorize(client_id=client, **own, **extra)
            if extra.get("scope") == "openid":  # prompt=none: an error, never a code
                assert landed.startswith(f"{sites.near}/cb?error="), landed
            else:  # alice is asked (prompt is OpenID's: without openid, it is ignored)
                assert landed.startswith(f"{sites.meta}/oauth/authorize"), landed
                assert page.locator("button[value=approve]").count() == 1, landed
        # An implicit grant's token in the redirect is not on offer.
        landed = authorize(client_id=client, **own, response_type="token")
        assert "access_token" not in landed, landed
    # The app's client sent to the hostile site, or near its own redirect URI.
    for redirect_uri in (
        f"{sites.near}/cb",
        f"{sites.spa}/cb/../evil",
        f"{sites.spa}/cb?next={sites.evil}",
        f"{sites.spa}/cb/",
        f"{sites.evil}/cb",
        # Another program on the machine: only a loopback IP's port may vary (RFC 8252).
        f"http://localhost:{free_port()}/cb",
    ):
        landed = authorize(client_id=clients.spa, redirect_uri=redirect_uri)
        assert landed.startswith(sites.meta), (redirect_uri, landed)
        assert page.locator("button[value=approve]").count() == 0, (redirect_uri, landed)
    # The consent form itself, sent by the hostile page with alice's cookies.
    page.goto(f"{sites.evil}/")
    fields = {
        "response_type": "code",
        "client_id": clients.evil_confidential,
        "redirect_uri": f"{sites.near}/cb",
        "scope": SPA_SCOPE,
        "state": "s",
        "decision": "approve",
    }
    sent = call(
        page,
        f"{sites.meta}/oauth/authorize",
        method="POST",
        mode="no-cors",
        credentials="include",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        body=urlencode(fields),
    )
    assert sent.get("status") == 0, sent
    assert not _codes_or_tokens(sites.seen[before:]), sites.seen[before:]
    # Nothing was remembered: meta still asks alice about the hostile client.
    landed = authorize(client_id=clients.evil_confidential, **own)
    assert landed.startswith(f"{sites.meta}/oauth/authorize"), landed
    assert page.locator("button[value=approve]").count() == 1, landed
    assert not _codes_or_tokens(sites.seen[before:]), sites.seen[before:]
