"""A person clicking every link of meta, todo and paste in headless Chromium, as nobody,
as alice (a tracker with tickets and comments, a paste, a webhook) and as bob (nothing of
his own, alice's things in view).

From each service's front page the walk follows every link to one of the three services
(never a log-out or delete link, no form sent but a GET one such as a search, at most
:data:`LIMIT` pages a person). A link the pages show must lead somewhere: a 4xx or 5xx for
its viewer means the page should not have shown it. Every HTML page loads with no console
error, no content security policy violation and no failed or foreign resource; it has a
title, one ``<h1>``, a label for each field, a working "Skip to content" link, its
tables in a ``.table-wrap``, none scrolling nor wider than the screen (a phone stacks a
table's rows, each cell under its ``data-label``), and it does not scroll sideways, at
phone and desktop widths.
Then the pages of the long words by name (a 2,000-character word in a ticket, a very long
line in a paste, a webhook's long URL) at both widths, error pages, and the skip link and
the main todo flow with JavaScript off. Last, with lists long enough to have pages (made
by the forms' posts and in meta's database, not by clicks), an admin walks meta's admin
pages (accounts with the longest names, suspended and deleted ones, an audit log of
several pages), and each list is paged to its end and back, alice's public ones also by
nobody and bob, who walk every link of them too. alice's webhook pages are walked with many
webhooks (long URLs, long reasons) and a long delivery log (many attempts, long errors),
both lists paged, every attempt opened.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urldefrag, urlsplit

import pytest
import test_sessions_cross_service_browser
from test_sessions_cross_service_browser import PASSWORD, Network, open_page

from srcore.testing import launch_chromium

pytestmark = [pytest.mark.browser, pytest.mark.slow]

#: meta, todo and paste under gunicorn, with alice and bob registered at meta.
network = test_sessions_cross_service_browser.network

#: Pages one person's walk visits at most.
LIMIT = 300
STEP_MS = 15_000
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 375, "height": 780}
LONG_WORD = "a" * 2000
#: Path parts of links the walk never follows: they end a session or start a deletion.
NOT_FOLLOWED = ("/logout", "/delete")

#: Collects the page's content security policy violations, whatever the policy allows.
_LISTEN = """
document.addEventListener("securitypolicyviolation", (e) => {
  (window.__violations = window.__violations || []).push(
    `${e.effectiveDirective} blocked ${e.blockedURI || "inline"}`);
});
"""

#: What a page must have: a title, one h1, labelled fields, a skip link to something,
#: no sideways scrolling. Swagger UI's widget on /api/docs is not ours to label.
_CHECK = """() => {
  const problems = [];
  if (!document.title.trim()) problems.push("no <title>");
  const h1 = document.querySelectorAll("h1").length;
  if (h1 !== 1) problems.push(`${h1} <h1> elements`);
  const skipped = ["hidden", "submit", "button", "reset", "image"];
  for (const el of document.querySelectorAll("input, select, textarea")) {
    if (skipped.includes(el.type) || el.closest("#api-docs")) continue;
    const named = el.getAttribute("aria-label") || el.getAttribute("aria-labelledby");
    if (!el.labels.length && !named) {
      problems.push(`a field without a label: <${el.tagName.toLowerCase()} name="${el.name}">`);
    }
  }
  const skip = document.querySelector("a.skip-link");
  if (!skip) problems.push("no skip link");
  else if (!skip.hash || !document.getElementById(skip.hash.slice(1))) {
    problems.push(`the skip link leads nowhere: ${skip.getAttribute("href")}`);
  }
  for (const table of document.querySelectorAll("table.table")) {
    if (!table.parentElement.classList.contains("table-wrap")) {
      problems.push("a table outside a .table-wrap, which would widen a phone's page");
    }
  }
  // No table scrolls, nor is wider than the screen: a desktop shows the whole of it, a
  // long unbroken value (an address, a URL) wrapping in its cell, and a phone stacks its
  // rows, each cell under its column's name (data-label).
  const screen = document.documentElement.clientWidth;
  for (const wrap of document.querySelectorAll(".table-wrap")) {
    const where = `#${wrap.closest("[id]")?.id}`;
    if (wrap.scrollWidth > wrap.clientWidth) {
      problems.push(`a table scrolls in ${where}: ${wrap.scrollWidth} px in ${wrap.clientWidth}`);
    }
  }
  for (const table of document.querySelectorAll("table.table")) {
    const where = `#${table.closest("[id]")?.id}`;
    const box = table.getBoundingClientRect();
    if (box.right > screen + 0.5 || table.scrollWidth > screen) {
      const wide = Math.round(box.width);
      problems.push(`a table wider than the screen in ${where}: ${wide} px in ${screen}`);
    }
    if (!table.tHead) continue;
    for (const cell of table.querySelectorAll(":scope > tbody > tr > td:not([data-label])")) {
      const text = cell.textContent.trim().slice(0, 40);
      problems.push(`a cell without data-label in ${where}: ${text}`);
    }
  }
  for (const link of document.querySelectorAll("nav.pagination a[href]")) {
    const empty = [...new URL(link.href).searchParams].filter(([, value]) => !value);
    if (empty.length) problems.push(`a page link with an empty ${empty[0][0]}=: ${link.href}`);
  }
  for (const wrap of document.querySelectorAll(".card > .table-wrap")) {
    if (getComputedStyle(wrap).borderTopStyle !== "none") {
      problems.push("a second border inside a card: .table-wrap");
    }
  }
  const root = document.documentElement;
  if (root.scrollWidth > root.clientWidth) {
    problems.push(`scrolls sideways: ${root.scrollWidth} px in ${root.clientWidth}`);
  }
  return {problems, violations: window.__violations || []};
}"""

#: The page's links, and the URLs its GET forms lead to, with *word* in empty text fields.
_LINKS = """(word) => {
  const links = Array.from(document.querySelectorAll("a[href]"), (a) => a.href);
  for (const form of document.querySelectorAll("form")) {
    if (form.method !== "get" || form.closest("#api-docs")) continue;
    const data = new FormData(form);
    const texts = "input[type=search], input[type=text], input:not([type])";
    for (const el of form.querySelectorAll(texts)) {
      if (el.name && !el.value) data.set(el.name, word);
    }
    const url = new URL(form.action);
    url.search = new URLSearchParams(data).toString();
    links.push(url.href);
  }
  return links;
}"""


@dataclass
class Seeded:
    """What alice made, and the browser states of each person."""

    net: Network
    states: dict[str, Any]
    tracker: str
    long_ticket: str
    long_paste: str


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    with launch_chromium() as browser:
        yield browser


def _fill_and_send(page: Any, fields: dict[str, str], button: str) -> None:
    for label, value in fields.items():
        page.get_by_label(label).first.fill(value)
    with page.expect_navigation():
        page.get_by_role("button", name=button, exact=True).click()
    page.wait_for_load_state()


def _logged_in_state(chromium: Any, net: Network, username: str) -> tuple[Any, Any]:
    """A context logged in as *username* at every service, and its page."""
    context = chromium.new_context(viewport=DESKTOP)
    context.set_default_timeout(STEP_MS)
    context.set_default_navigation_timeout(STEP_MS)
    page = context.new_page()
    open_page(net, page, f"{net.meta}/profile", username)
    open_page(net, page, f"{net.todo}/create", username)
    open_page(net, page, f"{net.paste}/new", username)
    return context, page


@pytest.fixture(scope="module")
def seeded(network: Network, chromium: Any) -> Seeded:
    """alice, in the browser, makes a tracker with tickets and comments, a paste with a
    very long line, a webhook, a token and an OAuth client (some with long unbroken words);
    her two-factor sign-in stays off. bob only logs in: his lists are empty."""
    net = network
    context, page = _logged_in_state(chromium, net, "alice")
    try:
        page.goto(f"{net.todo}/create")
        _fill_and_send(
            page, {"Name": "website", "Description": "Bugs of **the site**."}, "Create tracker"
        )
        tracker = page.url.rstrip("/")
        tickets = [
            ("Dark mode makes code unreadable", "Steps:\n\n1. Open\n2. Look"),
            ("A word that does not end " + "b" * 200, LONG_WORD),
        ]
        urls = []
        for title, text in tickets:
            page.goto(f"{tracker}/new")
            _fill_and_send(page, {"Title": title, "Description": text}, "Submit ticket")
            urls.append(page.url)
            assert page.get_by_role("heading", name=title).is_visible(), page.url
            _fill_and_send(page, {"Add a comment": "Seen here too: " + LONG_WORD}, "Comment")
        page.goto(f"{net.paste}/new")
        long_line = "x = '" + "0123456789" * 300 + "'\nprint(x)\n"
        title = "long" + "g" * 240 + ".py"
        _fill_and_send(page, {"Title": title, "Text": long_line}, "Create paste")
        long_paste = page.url
        assert "/p/" in long_paste, long_paste
        page.goto(f"{net.todo}/webhooks/new")
        page.get_by_label("Payload URL").fill(f"https://hooks.example.invalid/{LONG_WORD[:1500]}")
        page.locator("input[name=events]").first.check()
        with page.expect_navigation():
            page.locator("form.form-card button[type=submit]").click()
        assert page.get_by_role("heading", name="Webhook #1").is_visible(), page.url
        page.goto(f"{net.meta}/security")
        page.locator("#tokens").get_by_label("Name").fill("deploy " + "t" * 120)
        page.locator("input[name=scopes]").first.check()
        with page.expect_navigation():
            page.get_by_role("button", name="Create token").click()
        assert page.locator("#new-token").is_visible()
        page.goto(f"{net.meta}/clients")
        redirect = f"https://app.example.invalid/{LONG_WORD[:400]}/callback"
        _fill_and_send(page, {"Name": "Gadget", "Redirect URIs": redirect}, "Register")
        assert page.locator("main table").get_by_text("Gadget").is_visible()
        states = {"alice": context.storage_state()}
    finally:
        context.close()
    context, _ = _logged_in_state(chromium, net, "bob")
    try:
        states["bob"] = context.storage_state()
    finally:
        context.close()
    states["anonymous"] = None
    return Seeded(net, states, tracker, urls[1], long_paste)


@dataclass
class Walk:
    """One person's tab: what went wrong on the page shown now, and on every page so far."""

    page: Any
    origins: tuple[str, ...]
    #: What the walk types into a GET form's empty text fields (a search, a filter).
    word: str = "a"
    now: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.page.on("console", self._console)
        self.page.on("pageerror", lambda e: self.now.append(f"script error: {e}"))
        self.page.on("requestfailed", self._failed)
        self.page.on("response", self._response)
        self.page.on("request", self._request)

    def _console(self, message: Any) -> None:
        if message.type == "error":
            where = message.location.get("url") or "the page"
            self.now.append(f"console error at {where}: {message.text}")

    def _failed(self, request: Any) -> None:
        # Aborted: the walk moved on to the next page before this one's icon came.
        if request.failure != "net::ERR_ABORTED":
            self.now.append(f"failed: {request.url} ({request.failure})")

    def _response(self, response: Any) -> None:
        if response.status >= 400 and not response.request.is_navigation_request():
            self.now.append(f"resource {response.url}: {response.status}")

    def _request(self, request: Any) -> None:
        if request.is_navigation_request() or request.url.startswith("data:"):
            return
        origin = "{0.scheme}://{0.netloc}".format(urlsplit(request.url))
        if origin not in self.origins:
            self.now.append(f"a resource from elsewhere: {request.url}")

    def visit(self, url: str, came_from: str) -> list[str]:
        """Open *url* (a link of *came_from*) and answer the links of the page it shows."""
        self.now.clear()
        try:
            response = self.page.goto(url)
        except Exception as error:  # a download: what the link leads to is asked for alone
            if "Download is starting" not in str(error):
                raise
            response = self.page.context.request.get(url)
            if response.status >= 400:
                self.failures.append(f"{url} (linked from {came_from}): {response.status}")
            return []
        assert response is not None, url
        if response.status >= 400:
            # The console's note on the document's own status says nothing more.
            self.failures.append(f"{url} (linked from {came_from}): {response.status}")
            return []
        html = "text/html" in response.headers.get("content-type", "")
        links: list[str] = []
        if not html:
            # The browser asks for /favicon.ico on a page naming no icon: let it answer.
            self.page.wait_for_load_state("networkidle")
        else:
            self.page.wait_for_load_state()
            found = self.page.evaluate(_CHECK)
            self.now.extend(found["problems"])
            self.now.extend(f"policy violation: {v}" for v in found["violations"])
            links = self.page.evaluate(_LINKS, self.word)
        self.failures.extend(f"{self.page.url}: {problem}" for problem in self.now)
        return links


def _followed(url: str, origins: tuple[str, ...]) -> bool:
    parts = urlsplit(url)
    origin = f"{parts.scheme}://{parts.netloc}"
    return origin in origins and not any(part in parts.path for part in NOT_FOLLOWED)


def _context(chromium: Any, state: Any, **options: Any) -> Any:
    context = chromium.new_context(storage_state=state, **options)
    context.set_default_timeout(STEP_MS)
    context.set_default_navigation_timeout(STEP_MS)
    context.add_init_script(_LISTEN)
    return context


def _shape(url: str) -> tuple[str, tuple[str, ...]]:
    """What pages of one kind share: the path, its numbers as N, and the query's keys."""
    parts = urlsplit(url)
    keys = tuple(sorted({key for key, _ in parse_qsl(parts.query, keep_blank_values=True)}))
    return re.sub(r"[0-9]+", "N", parts.path), keys


def _crawl(
    walk: Walk, starts: list[str], follow: Callable[[str], bool], per_shape: int | None = None
) -> tuple[int, list[str]]:
    """Visit *starts* and every link *follow* takes from them, breadth first, at most
    :data:`LIMIT` pages, and at most *per_shape* of one :func:`_shape` (an account's page,
    a filtered log) when given; answer how many were visited and what was left unvisited."""
    queue = [(url, "the start") for url in starts]
    seen = set(starts)
    shapes: Counter[tuple[str, tuple[str, ...]]] = Counter()
    visited = 0
    while queue and visited < LIMIT:
        url, came_from = queue.pop(0)
        visited += 1
        for link in walk.visit(url, came_from):
            link = urldefrag(link).url
            if link in seen or not follow(link):
                continue
            seen.add(link)
            if per_shape is not None:
                shapes[_shape(link)] += 1
                if shapes[_shape(link)] > per_shape:
                    continue
            queue.append((link, url))
    return visited, [url for url, _ in queue]


@pytest.mark.parametrize("viewport", [PHONE, DESKTOP], ids=["phone", "desktop"])
@pytest.mark.parametrize("person", ["anonymous", "alice", "bob"])
def test_every_link_leads_to_a_sound_page(
    seeded: Seeded, chromium: Any, person: str, viewport: dict[str, int]
) -> None:
    net = seeded.net
    origins = (net.meta, net.todo, net.paste)
    context = _context(chromium, seeded.states[person], viewport=viewport)
    try:
        walk = Walk(context.new_page(), origins)
        starts = [f"{origin}/" for origin in origins]
        visited, left = _crawl(walk, starts, lambda link: _followed(link, origins))
        assert visited > 10, f"{person} reached only {visited} pages"
        # Links that make ever new pages (a return path inside a return path) never end.
        assert not left, f"{person}: still {len(left)} links after {LIMIT} pages: {left[-1]}"
        assert not walk.failures, f"{person}, {visited} pages:\n" + "\n".join(walk.failures)
    finally:
        context.close()


_SIDEWAYS = "() => [document.documentElement.scrollWidth, document.documentElement.clientWidth]"


@pytest.mark.parametrize("viewport", [PHONE, DESKTOP], ids=["phone", "desktop"])
def test_long_words_and_lines_stay_inside_the_page(
    seeded: Seeded, chromium: Any, viewport: dict[str, int]
) -> None:
    context = _context(chromium, seeded.states["alice"], viewport=viewport)
    try:
        page = context.new_page()
        wide = []
        net = seeded.net
        pages = (seeded.tracker, seeded.long_ticket, seeded.long_paste, f"{net.paste}/mine")
        pages += (f"{net.todo}/webhooks", f"{net.todo}/webhooks/1", f"{net.meta}/clients")
        pages += (f"{net.meta}/security",)
        for url in pages:
            assert page.goto(url).status == 200, url
            scroll, client = page.evaluate(_SIDEWAYS)
            if scroll > client:
                wide.append(f"{url}: {scroll} px in {client}")
        assert not wide, "\n".join(wide)
    finally:
        context.close()


def test_skip_link_and_main_flow_without_javascript(seeded: Seeded, chromium: Any) -> None:
    net = seeded.net
    context = _context(
        chromium, seeded.states["alice"], viewport=DESKTOP, java_script_enabled=False
    )
    try:
        page = context.new_page()
        for url in (f"{net.meta}/profile", f"{net.todo}/", seeded.long_paste):
            assert page.goto(url).status == 200, url
            page.keyboard.press("Tab")
            focused = page.evaluate("document.activeElement.textContent.trim()")
            assert focused == "Skip to content", (url, focused)
            page.keyboard.press("Enter")
            page.wait_for_url(lambda u: u.endswith("#main"))
            assert page.evaluate("document.activeElement.id") == "main", url
        # todo's front page, the tracker, a ticket, a comment: links and a plain form.
        page.goto(f"{net.todo}/")
        page.locator("main").get_by_role("link", name="website").first.click()
        page.wait_for_url(seeded.tracker)
        page.get_by_role("link", name="Dark mode makes code unreadable").click()
        page.wait_for_url(lambda u: u.startswith(seeded.tracker + "/"))
        _fill_and_send(page, {"Add a comment": "Without scripts."}, "Comment")
        assert page.get_by_text("Without scripts.").is_visible()
    finally:
        context.close()


def test_error_pages_are_sound_pages(seeded: Seeded, chromium: Any) -> None:
    """A page that is not there, and alice's webhook asked for by bob."""
    net = seeded.net
    failures = []
    for person, url in (
        ("anonymous", f"{net.meta}/no-such-page"),
        ("anonymous", f"{net.todo}/~alice/no-such-tracker"),
        ("anonymous", f"{net.paste}/p/nosuchpaste"),
        ("bob", f"{net.todo}/webhooks/1"),
    ):
        context = _context(chromium, seeded.states[person], viewport=PHONE)
        try:
            walk = Walk(context.new_page(), (net.meta, net.todo, net.paste))
            response = walk.page.goto(url)
            assert response.status == 404, (url, response.status)
            found = walk.page.evaluate(_CHECK)
            failures.extend(f"{url}: {problem}" for problem in found["problems"])
        finally:
            context.close()
    assert not failures, "\n".join(failures)


#: Enough of each for every list to have pages at the services' default 25 (meta's admin
#: lists: 50) a page.
CROWD = 55
#: Pages a walk through one list takes at most, one way.
MAX_PAGES = 10


@dataclass
class Crowded:
    """Lists long enough to have pages, and an admin's browser state."""

    admin: Any
    #: alice's tracker with :data:`CROWD` more tickets.
    tracker: str
    #: A ticket of hers with :data:`CROWD` comments.
    ticket: str
    #: Ids of a suspended account and of one deleted after its audit entries were written.
    suspended: int
    deleted: int


def _hidden_fields(page: Any, url: str) -> dict[str, str]:
    """The hidden fields of the form on *url* (its CSRF token, a one-time token)."""
    page.goto(url)
    fields = page.eval_on_selector_all(
        "main form[method=post] input[type=hidden]", "els => els.map(e => [e.name, e.value])"
    )
    return dict(fields)


def _post_forms(
    page: Any, url: str, forms: list[dict[str, str]], *, fresh: bool = False, to: str = ""
) -> None:
    """Send each of *forms* from the page *url* to *to* (*url* itself if not given) the way
    the page would (the page again for each if *fresh*: its one-time token counts once),
    each answered with a redirect."""
    hidden = _hidden_fields(page, url)
    for form in forms:
        if fresh:
            hidden = _hidden_fields(page, url)
        answer = page.request.post(to or url, form={**hidden, **form}, max_redirects=0)
        assert answer.status == 302, (url, form, answer.status, answer.text()[:500])


def _crowd_meta(net: Network) -> tuple[int, int]:
    """carol, an admin made as the operator does, and :data:`CROWD` accounts with the
    longest names and addresses meta takes, some suspended (a long notice) and one deleted,
    each with audit entries (long details and browsers): answer a suspended and the
    deleted account's id."""
    from meta import audit, create_app, logic
    from meta.admin.cli import create_user, set_admin
    from meta.audit import Kind

    from srcore.db import UserType, utcnow

    config = str(net.config)
    create_user(config, "carol", "carol@example.org", PASSWORD)
    set_admin(config, "carol", admin=True)
    app = create_app(config=config)
    agent = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 " + "Gecko" * 60
    try:
        with app.app_context(), app.extensions["srcore"].db.transaction() as session:
            carol = logic.find_login(session, "carol")
            assert carol is not None
            hashed = app.extensions["meta"].passwords.hash(PASSWORD)
            made = []
            for n in range(CROWD):
                name = f"u{n:02d}-" + "n" * 26
                user = logic.create_user(
                    session,
                    username=name,
                    email=f"{name}.{'m' * 30}@{'d' * 60}.{'e' * 60}.example.org",
                    password_hash=hashed,
                )
                user.user_type, user.email_confirmed_at = UserType.active, utcnow()
                user.url = "https://" + "w" * 200 + ".example.invalid/"
                user.location = "L" * 250
                user.pending_email = "p" * 60 + "@" + "q" * 120 + ".example.org"
                entry = audit.record(session, Kind.login_failed, user.id, detail=LONG_WORD)
                entry.user_agent, entry.address = agent, "2001:db8:ffff:ffff:ffff:ffff:ffff:ffff"
                audit.record(session, Kind.password_changed, user.id, detail=f"entry {n}")
                made.append(user)
            for user in made[::7]:
                notice = "Suspended for " + LONG_WORD[:1500]
                logic.suspend(session, user, notice)
                audit.record(
                    session, Kind.account_suspended, user.id, actor_id=carol.id, detail=notice
                )
            alice = logic.find_login(session, "alice")
            assert alice is not None
            for n in range(CROWD):
                audit.record(session, Kind.login_failed, alice.id, detail=f"alice's {n}")
            gone = made[-1]
            audit.record(session, Kind.account_deleted, gone.id, actor_id=gone.id)
            logic.delete_user(session, gone)
            return made[0].id, gone.id
    finally:
        app.extensions["srcore"].db.dispose()


@pytest.fixture(scope="module")
def crowded(seeded: Seeded, chromium: Any) -> Crowded:
    """alice's trackers, tickets and pastes by the form posts of their pages (not a click
    each), then meta's accounts and audit entries in its database, and carol's login."""
    net = seeded.net
    context = _context(chromium, seeded.states["alice"], viewport=DESKTOP)
    try:
        page = context.new_page()
        names = [{"name": f"crowd-{n:02d}", "description": "Many."} for n in range(CROWD)]
        _post_forms(page, f"{net.todo}/create", names)
        tickets = [{"title": f"Crowded ticket {n}"} for n in range(CROWD)]
        _post_forms(page, f"{seeded.tracker}/new", tickets, fresh=True)
        ticket = f"{seeded.tracker}/3"
        comments = [{"text": f"Comment {n}"} for n in range(CROWD)]
        _post_forms(page, ticket, comments, fresh=True, to=f"{ticket}/comment")
        pastes = [{"title": f"crowd {n}", "text": f"paste {n}"} for n in range(CROWD)]
        _post_forms(page, f"{net.paste}/new", pastes)
    finally:
        context.close()
    suspended, deleted = _crowd_meta(net)
    context, _ = _logged_in_state(chromium, net, "carol")
    try:
        admin = context.storage_state()
    finally:
        context.close()
    return Crowded(admin, seeded.tracker, ticket, suspended, deleted)


@pytest.mark.parametrize("viewport", [PHONE, DESKTOP], ids=["phone", "desktop"])
def test_an_admin_walks_the_admin_pages(
    seeded: Seeded, crowded: Crowded, chromium: Any, viewport: dict[str, int]
) -> None:
    """The links of the account list, the accounts' pages (a suspended one among them) and
    the audit log (a deleted account's entries among them), a few pages of each kind; the
    search and the log's filter sent with carol's name, and never a form that posts."""
    net = seeded.net
    origins = (net.meta, net.todo, net.paste)
    context = _context(chromium, crowded.admin, viewport=viewport)
    try:
        walk = Walk(context.new_page(), origins, word="carol")
        admin = f"{net.meta}/admin"
        starts = [f"{admin}/users", f"{admin}/audit", f"{admin}/users/{crowded.suspended}"]
        starts.append(f"{admin}/audit?user=%23{crowded.deleted}")

        def follow(link: str) -> bool:
            return _followed(link, origins) and urlsplit(link).path.startswith("/admin/")

        # A few of each kind: the accounts' pages differ in their values only.
        visited, left = _crawl(walk, starts, follow, per_shape=4)
        assert visited > 20, f"the admin reached only {visited} pages"
        assert not left, f"still {len(left)} links after {LIMIT} pages: {left[-1]}"
        assert not walk.failures, f"{visited} pages:\n" + "\n".join(walk.failures)
    finally:
        context.close()


#: Each list's items as the walk tells them apart: by their id, their first link or text.
_ITEMS = """([selector, by]) => Array.from(document.querySelectorAll(selector), (el) => {
  const link = el.querySelector("a[href]");
  if (by === "id") return el.id;
  return by === "text" || !link ? el.textContent.replace(/\\s+/g, " ").trim() : link.href;
})"""


def _page_through(walk: Walk, start: str, items: str, nav: str, by: str) -> list[str]:
    """Follow the ``rel=next`` links in *nav* from *start* to the last page and the
    ``rel=prev`` ones back to a page with no previous one, each page a sound page; answer
    what went wrong (items on two pages, a way back that ends elsewhere)."""
    problems = []

    def step(rel: str) -> bool:
        link = walk.page.locator(f"{nav} a[rel={rel}]")
        if not link.count():
            return False
        walk.visit(link.first.evaluate("a => a.href"), walk.page.url)
        return True

    walk.visit(start, "the start")
    pages = [walk.page.evaluate(_ITEMS, [items, by])]
    while len(pages) <= MAX_PAGES and step("next"):
        pages.append(walk.page.evaluate(_ITEMS, [items, by]))
    if len(pages) < 2:
        problems.append(f"{start}: one page only")
    shown = [item for page in pages for item in page]
    if len(set(shown)) != len(shown):
        twice = sorted({item for item in shown if shown.count(item) > 1})
        problems.append(f"{start}: shown on two pages: {twice[:3]}")
    if any(not page for page in pages):
        problems.append(f"{start}: an empty page among {len(pages)}")
    if nav == "main > nav":
        # A numbered list: a page past its end (an old link, a list that shrank) leads
        # back to its last page, not to another page past the end.
        beyond = f"{start}{'&' if '?' in start else '?'}page={len(pages) + 5}"
        walk.visit(beyond, "the start")
        if not step("prev"):
            problems.append(f"{beyond}: no way back")
        elif walk.page.evaluate(_ITEMS, [items, by]) != pages[-1]:
            problems.append(f"{beyond}: previous leads to {walk.page.url}, not the last page")
        walk.visit(start, "the start")
        for _ in range(len(pages) - 1):
            step("next")
    back = 0
    while back <= MAX_PAGES and step("prev"):
        back += 1
        here = walk.page.evaluate(_ITEMS, [items, by])
        if here not in pages:
            problems.append(f"{walk.page.url}: not a page met going forward")
    if walk.page.evaluate(_ITEMS, [items, by]) != pages[0]:
        problems.append(f"{start}: the way back ends at {walk.page.url}, not the first page")
    return problems


@pytest.mark.parametrize("viewport", [PHONE, DESKTOP], ids=["phone", "desktop"])
def test_long_lists_page_to_the_end_and_back(
    seeded: Seeded, crowded: Crowded, chromium: Any, viewport: dict[str, int]
) -> None:
    """Next to the last page and previous back to the first, through each list long enough:
    todo's trackers (yours by cursor, the public ones by number), a tracker's tickets and
    a ticket's comments, paste's public and own pastes, alice's activity at meta, meta's
    accounts and audit log; alice's public lists also as nobody and as bob."""
    net = seeded.net
    origins = (net.meta, net.todo, net.paste)
    lists = {
        "alice": [
            (f"{net.todo}/", "#your-trackers .item-list > li", "#your-trackers", "link"),
            (f"{net.todo}/", "#public-trackers .item-list > li", "main > nav", "link"),
            (crowded.tracker, ".item-list > li", "main > nav", "link"),
            (crowded.ticket, "#comments article.comment", "#comments", "id"),
            (f"{net.paste}/", ".item-list > li", "main > nav", "link"),
            (f"{net.paste}/mine", ".item-list > li", "main > nav", "link"),
            (f"{net.meta}/security/activity", "#activity tbody tr", "main > nav", "text"),
        ],
        "admin": [
            (f"{net.meta}/admin/users", "#users tbody tr", "main > nav", "link"),
            (f"{net.meta}/admin/audit", "#audit-log tbody tr", "main > nav", "text"),
        ],
    }
    # Others see alice's public lists, long as they are: her trackers among the public
    # ones, her tracker's tickets, a ticket's comments, her public pastes.
    public = [
        (f"{net.todo}/", "#public-trackers .item-list > li", "main > nav", "link"),
        (crowded.tracker, ".item-list > li", "main > nav", "link"),
        (crowded.ticket, "#comments article.comment", "#comments", "id"),
        (f"{net.paste}/", ".item-list > li", "main > nav", "link"),
    ]
    lists |= {"anonymous": public, "bob": public}
    problems = []
    for person, starts in lists.items():
        state = crowded.admin if person == "admin" else seeded.states[person]
        context = _context(chromium, state, viewport=viewport)
        try:
            walk = Walk(context.new_page(), origins)
            for start, items, nav, by in starts:
                problems += _page_through(walk, start, items, nav, by)
            problems += walk.failures
        finally:
            context.close()
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("viewport", [PHONE, DESKTOP], ids=["phone", "desktop"])
@pytest.mark.parametrize("person", ["anonymous", "bob"])
def test_others_walk_alices_long_lists(
    seeded: Seeded, crowded: Crowded, chromium: Any, person: str, viewport: dict[str, int]
) -> None:
    """Nobody and bob follow every link of todo and paste once alice's lists are long: the
    public trackers, her tracker of many tickets, a ticket of many comments, her pastes,
    each page a sound page; a few pages of each kind."""
    net = seeded.net
    origins = (net.meta, net.todo, net.paste)
    context = _context(chromium, seeded.states[person], viewport=viewport)
    try:
        walk = Walk(context.new_page(), origins)
        starts = [f"{net.todo}/", crowded.tracker, crowded.ticket, f"{net.paste}/"]

        def follow(link: str) -> bool:
            return _followed(link, origins) and not link.startswith(net.meta)

        visited, left = _crawl(walk, starts, follow, per_shape=4)
        assert visited > 20, f"{person} reached only {visited} pages"
        assert not left, f"{person}: still {len(left)} links after {LIMIT} pages: {left[-1]}"
        assert not walk.failures, f"{person}, {visited} pages:\n" + "\n".join(walk.failures)
    finally:
        context.close()


#: Webhooks of alice's at todo beside her first (its list has pages of 20), and
#: deliveries in the first one's log (pages of 20), each with attempts.
HOOKS = 45
DELIVERIES = 45
#: Attempts of the deliveries that have the most: more than the log shows of one (20).
ATTEMPTS = 23
#: An error as long as the log keeps one, without a space to break at.
LONG_ERROR = "connection refused by " + "e" * 490


@dataclass
class Hooked:
    """alice's webhooks at todo and the one with a long delivery log."""

    index: str
    logged: str


def _hook_todo(net: Network) -> int:
    """In todo's database: :data:`HOOKS` more webhooks of alice's (long URLs, some disabled
    with a long reason, some failing), and :data:`DELIVERIES` deliveries of her first one
    (every status, many attempts, long errors, headers and bodies): its id."""
    import json

    import todo
    from sqlalchemy import select

    from srcore.db import utcnow
    from srcore.webhooks.catalog import PING
    from srcore.webhooks.models import Attempt, Delivery, OutboxRow, Subscription

    app = todo.create_app(config=str(net.config))
    long_url = "https://hooks.example.invalid/" + "/".join(["segment" * 30] * 8)
    try:
        with app.app_context(), app.extensions["srcore"].db.transaction() as session:
            first = session.scalars(select(Subscription).order_by(Subscription.id)).first()
            assert first is not None and first.owner_id is not None
            now = utcnow()
            for n in range(HOOKS):
                hook = Subscription(
                    owner_id=first.owner_id,
                    url=f"{long_url}?n={n}&" + "q" * 900,
                    events=first.events,
                    scopes=first.scopes,
                    secret=first.secret,
                    confirmed_at=now,
                    resource="tracker:" + "r" * 200 if n % 5 == 1 else None,
                )
                if n % 3 == 0:
                    hook.enabled, hook.disabled_reason = False, "Disabled: " + "d" * 480
                elif n % 3 == 1:
                    hook.failing_since = now
                session.add(hook)
            statuses = ["pending", "delivered", "failed", "cancelled"]
            body = json.dumps({"type": "ticket.created", "data": {"title": "t" * 3000}})
            headers = json.dumps({"content-type": "application/json", "x-long": "h" * 1500})
            for n in range(DELIVERIES):
                row = OutboxRow(
                    event=PING, payload=body, owner_id=first.owner_id, fanned_out_at=now
                )
                tries = ATTEMPTS if n % 4 == 0 else n % 4
                delivery = Delivery(
                    subscription=first,
                    outbox=row,
                    status=statuses[n % 4],
                    attempts=tries,
                    next_attempt_at=now,
                    last_status_code=500,
                )
                session.add(delivery)
                session.flush()
                for k in range(tries):
                    answered = k % 2 == 0
                    session.add(
                        Attempt(
                            delivery_id=delivery.id,
                            request_headers=headers,
                            request_body=body,
                            response_status=502 if answered else None,
                            response_headers=headers if answered else "{}",
                            response_body="<html>" + "b" * 3000 if answered else "",
                            duration_ms=30_000,
                            error=None if answered else LONG_ERROR,
                        )
                    )
            return first.id
    finally:
        app.extensions["srcore"].db.dispose()


@pytest.fixture(scope="module")
def hooked(seeded: Seeded) -> Hooked:
    net = seeded.net
    first = _hook_todo(net)
    return Hooked(f"{net.todo}/webhooks", f"{net.todo}/webhooks/{first}")


#: Opens every attempt of a delivery log, as someone reading it does.
_OPEN_ATTEMPTS = "() => document.querySelectorAll('details.attempt').forEach(d => d.open = true)"


@pytest.mark.parametrize("viewport", [PHONE, DESKTOP], ids=["phone", "desktop"])
def test_webhook_pages_with_long_lists(
    seeded: Seeded, hooked: Hooked, chromium: Any, viewport: dict[str, int]
) -> None:
    """alice's webhook pages once she has many webhooks (long URLs, long reasons) and one
    has a long delivery log (many attempts, long errors, headers and bodies): every link
    of them a sound page, a few of each kind; both lists paged to the end and back; the
    log's attempts opened, each page still inside the screen."""
    net = seeded.net
    origins = (net.meta, net.todo, net.paste)
    context = _context(chromium, seeded.states["alice"], viewport=viewport)
    try:
        walk = Walk(context.new_page(), origins)

        def follow(link: str) -> bool:
            return _followed(link, origins) and urlsplit(link).path.startswith("/webhooks")

        visited, left = _crawl(walk, [hooked.index, hooked.logged], follow, per_shape=4)
        assert visited > 10, f"alice reached only {visited} webhook pages"
        assert not left, f"still {len(left)} links after {LIMIT} pages: {left[-1]}"
        problems = list(walk.failures)
        walk.failures.clear()
        problems += _page_through(
            walk, hooked.index, "#webhooks .item-list > li", "main > nav.pagination-cursor", "link"
        )
        problems += _page_through(
            walk, hooked.logged, "#deliveries .item-list > li", "#deliveries", "id"
        )
        problems += walk.failures
        walk.failures.clear()
        # Every page of the log, its attempts open: still no sideways scrolling.
        url = hooked.logged
        for _ in range(MAX_PAGES):
            walk.visit(url, "the start")
            walk.page.evaluate(_OPEN_ATTEMPTS)
            found = walk.page.evaluate(_CHECK)
            problems += [f"{url}, attempts open: {problem}" for problem in found["problems"]]
            shown = walk.page.locator("details.attempt").count()
            if not shown:
                problems.append(f"{url}: no attempt shown")
            older = walk.page.locator("#deliveries a[rel=next]")
            if not older.count():
                break
            url = older.first.evaluate("a => a.href")
        problems += walk.failures
        assert not problems, "\n".join(problems)
    finally:
        context.close()
