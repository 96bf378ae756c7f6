"""A person clicking every link of meta, todo and paste in headless Chromium, as nobody,
as alice (a tracker with tickets and comments, a paste, a webhook) and as bob (nothing of
his own, alice's things in view).

From each service's front page the walk follows every link to one of the three services
(never a log-out or delete link, no form sent but a GET one such as a search, at most
:data:`LIMIT` pages a person). A link the pages show must lead somewhere: a 4xx or 5xx for
its viewer means the page should not have shown it. Every HTML page loads with no console
error, no content security policy violation and no failed or foreign resource; it has a
title, one ``<h1>``, a label for each field, a working "Skip to content" link, its
tables in a ``.table-wrap``, and it does not scroll sideways, at phone and desktop widths.
Then the pages of the long words by name (a 2,000-character word in a ticket, a very long
line in a paste, a webhook's long URL) at both widths, error pages, and the skip link and
the main todo flow with JavaScript off.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urldefrag, urlsplit

import pytest
import test_sessions_cross_service_browser
from test_sessions_cross_service_browser import Network, open_page

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

#: The page's links, and the URLs its GET forms lead to, with "a" in empty text fields.
_LINKS = """() => {
  const links = Array.from(document.querySelectorAll("a[href]"), (a) => a.href);
  for (const form of document.querySelectorAll("form")) {
    if (form.method !== "get" || form.closest("#api-docs")) continue;
    const data = new FormData(form);
    const texts = "input[type=search], input[type=text], input:not([type])";
    for (const el of form.querySelectorAll(texts)) {
      if (el.name && !el.value) data.set(el.name, "a");
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
            links = self.page.evaluate(_LINKS)
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
        queue = [(f"{origin}/", "the start") for origin in origins]
        seen = {url for url, _ in queue}
        visited = 0
        while queue and visited < LIMIT:
            url, came_from = queue.pop(0)
            visited += 1
            for link in walk.visit(url, came_from):
                link = urldefrag(link).url
                if link not in seen and _followed(link, origins):
                    seen.add(link)
                    queue.append((link, url))
        assert visited > 10, f"{person} reached only {visited} pages"
        # Links that make ever new pages (a return path inside a return path) never end.
        assert not queue, f"{person}: still {len(queue)} links after {LIMIT} pages: {queue[-1]}"
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
