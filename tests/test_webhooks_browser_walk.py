"""A person clicking through todo's webhook pages in headless Chromium, and a second person
trying to reach the first one's webhooks.

todo runs under gunicorn with its webhook worker, which may deliver to 127.0.0.1 (the
config's ``allow-private-webhook-targets``), where a receiver answers every POST with a
little JSON. Both people start logged in through todo's real session cookie. A full-page
screenshot of every step goes to artifacts/webhooks/ (git-ignored), for people to look at.
"""

from __future__ import annotations

import json
import re
import secrets
import sqlite3
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from srcore import migrate
from srcore.app import migration_target
from srcore.testing import (
    create_user,
    free_port,
    launch_chromium,
    run_service,
    run_worker,
    serving,
    session_cookie,
)

pytestmark = [pytest.mark.browser, pytest.mark.slow]

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts" / "webhooks"
#: Milliseconds Playwright waits for an element or a navigation before failing.
STEP_MS = 15_000
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 375, "height": 780}
#: Seconds to wait for the worker to log a delivery.
DELIVERY_S = 15.0
#: The message Chromium logs for every document answered 4xx, which the walk expects
#: (a form with errors is a 400, another's webhook a 404) and checks by status instead.
_DOCUMENT_4XX = re.compile(r"^Failed to load resource: the server responded with a status of 4")


@dataclass
class Site:
    url: str
    database: Path
    receiver: str
    received: list[dict[str, Any]]
    cookies: dict[str, tuple[str, str]]
    tracker: int


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    import todo
    from todo.models import Tracker, Visibility

    tmp = tmp_path_factory.mktemp("webhooks-walk")
    port = free_port()
    database = tmp / "todo.db"
    config = tmp / "config.ini"
    config.write_text(
        "[global]\n"
        "site-name = srcore test network\n"
        "environment = development\n"
        "allow-private-webhook-targets = 127.0.0.0/8\n\n"
        "[todo]\n"
        f"origin = http://127.0.0.1:{port}\n"
        f"database-url = sqlite:///{database}\n"
        f"secret-key = {secrets.token_urlsafe(48)}\n",
        encoding="utf-8",
    )
    migrate.upgrade_all(migration_target("todo", config))
    app = todo.create_app(config=config)
    alice = create_user(app, "alice")
    bob = create_user(app, "bob")
    with app.extensions["srcore"].db.transaction() as session:
        tracker = Tracker(owner_id=alice.id, name="website", visibility=Visibility.public)
        session.add(tracker)
        session.flush()
        tracker_id = tracker.id
    cookies = {"alice": session_cookie(app, alice), "bob": session_cookie(app, bob)}
    app.extensions["srcore"].db.dispose()

    received: list[dict[str, Any]] = []

    class Receiver(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            received.append(json.loads(body))
            answer = b'{"received": true}'
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, *args: Any) -> None:
            return None

    with (
        serving(ThreadingHTTPServer(("127.0.0.1", 0), Receiver)) as receiver,
        run_service("todo", config, port=port, timeout=60) as url,
        run_worker("todo", config, timeout=60),
    ):
        hook = f"http://127.0.0.1:{receiver.server_address[1]}/hook"
        yield Site(url, database, hook, received, cookies, tracker_id)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with launch_chromium() as browser:
        yield browser


@dataclass
class Person:
    """One person's tab: numbered screenshots, console errors and 5xx answers kept."""

    name: str
    page: Any
    site: Site
    step: int = 0
    errors: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.page.on("console", self._console)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on("response", self._response)

    def _console(self, message: Any) -> None:
        if message.type == "error" and not _DOCUMENT_4XX.match(message.text):
            self.errors.append(f"{self.page.url}: {message.text}")

    def _response(self, response: Any) -> None:
        if response.status >= 500:
            self.failures.append(f"{response.request.method} {response.url}: {response.status}")

    def shoot(self, name: str) -> None:
        self.step += 1
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / f"{self.name}-{self.step:02d}-{name}.png"
        self.page.screenshot(path=str(path), full_page=True)

    def open(self, path: str, status: int = 200) -> None:
        response = self.page.goto(self.site.url + path)
        assert response is not None and response.status == status, (path, response)

    def press(self, button: str, *, status: int = 200) -> Any:
        """Press a submit button and wait for the page it leads to (after redirects)."""
        with self.page.expect_navigation() as arrived:
            self.page.get_by_role("button", name=button, exact=True).click()
        response = arrived.value
        self.page.wait_for_load_state()
        assert response.status == status, (button, response.status, self.page.url)
        return response

    def flashes(self) -> list[str]:
        """The messages of the page's top (the webhook's own notes have ids)."""
        texts = self.page.locator(".flash:not([id])").all_inner_texts()
        return [" ".join(text.split()) for text in texts]

    def wait_for(self, ready: Callable[[], bool], what: str) -> None:
        """Reload until *ready*, as a person waiting for the log would."""
        deadline = time.monotonic() + DELIVERY_S
        while not ready():
            assert time.monotonic() < deadline, f"{what}: not within {DELIVERY_S} s"
            time.sleep(0.3)
            self.page.reload()


@pytest.fixture
def people(browser: Any, site: Site) -> Iterator[dict[str, Person]]:
    contexts = []
    people: dict[str, Person] = {}
    for name, (cookie, value) in site.cookies.items():
        context = browser.new_context(viewport=DESKTOP)
        context.set_default_timeout(STEP_MS)
        context.set_default_navigation_timeout(STEP_MS)
        context.add_cookies([{"name": cookie, "value": value, "url": site.url}])
        contexts.append(context)
        people[name] = Person(name, context.new_page(), site)
    try:
        yield people
    finally:
        for context in contexts:
            context.close()


def _rows(site: Site, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    with sqlite3.connect(site.database) as db:
        return db.execute(sql, args).fetchall()


def _state(site: Site) -> list[list[tuple[Any, ...]]]:
    """Every webhook, delivery and attempt row: what the second person may not change."""
    tables = ("subscription", "delivery", "attempt")
    return [_rows(site, f"SELECT * FROM srcore_webhook_{t} ORDER BY id") for t in tables]


#: Every input, select and textarea a person fills in without a label naming it.
UNLABELLED = """() => [...document.querySelectorAll(
    "input:not([type=hidden]), select, textarea")]
  .filter((e) => !(e.labels && e.labels.length) && !e.getAttribute("aria-label")
                 && !e.getAttribute("aria-labelledby"))
  .map((e) => e.outerHTML)"""

#: The space between a page's notes (the new secret, why it is disabled) and the card below.
NOTES_GAP = """() => {
  const notes = document.querySelector("#new-secret, #webhook-state");
  const card = document.querySelector("#settings");
  return card.getBoundingClientRect().top - notes.getBoundingClientRect().bottom;
}"""

#: The space between the delivery log's page links and the card below them.
PAGES_GAP = """() => {
  const links = document.querySelector("nav.pagination");
  const card = document.querySelector("#danger");
  return card.getBoundingClientRect().top - links.getBoundingClientRect().bottom;
}"""

#: Whether the Events fieldset (or a box around it, inside the form) shows the error mark.
EVENTS_MARKED = """() => {
  for (let e = document.querySelector("#events"); e && e.tagName !== "FORM"; e = e.parentElement) {
    const style = getComputedStyle(e);
    if (style.borderLeftStyle === "solid" && parseFloat(style.borderLeftWidth) >= 2) return true;
  }
  return false;
}"""


def _check_page(person: Person) -> None:
    """Every field labelled; every link of the page answers without a server error."""
    page = person.page
    assert page.evaluate(UNLABELLED) == [], page.url
    links = page.evaluate("() => [...document.querySelectorAll('a[href]')].map((a) => a.href)")
    for link in {link.split("#")[0] for link in links if link.startswith(person.site.url)}:
        answer = page.request.get(link, max_redirects=0)
        assert answer.status < 400, f"{page.url} links to {link}: {answer.status}"


def test_create_ping_see_it_delivered_and_a_stranger_gets_404(
    site: Site, people: dict[str, Person]
) -> None:
    alice, bob = people["alice"], people["bob"]
    page = alice.page

    # The list, empty, offers to make one.
    alice.open("/webhooks")
    assert page.get_by_text("No webhooks yet").is_visible()
    _check_page(alice)
    alice.shoot("empty")
    page.get_by_role("link", name="New webhook").click()
    page.wait_for_url(f"{site.url}/webhooks/new")
    _check_page(alice)

    # A bad URL and no event: both reasons beside their fields, the typed text kept.
    page.get_by_label("Payload URL").fill("not a url")
    page.get_by_label("Only about").fill(f"tracker:{site.tracker}")
    alice.press("Create webhook", status=400)
    assert page.locator("#url-error").inner_text().strip() == "Not a valid URL."
    assert page.locator("#events-error").inner_text().strip() == "Choose at least one event."
    assert page.evaluate(EVENTS_MARKED), "the Events error is not marked like the URL's"
    assert page.get_by_label("Payload URL").input_value() == "not a url"
    assert page.get_by_label("Only about").input_value() == f"tracker:{site.tracker}"
    alice.shoot("errors")

    # Fixed, with an event checked by keyboard, and sent with Enter.
    page.get_by_label("Payload URL").fill(site.receiver)
    page.get_by_label("tracker:created").focus()
    page.keyboard.press("Space")
    page.get_by_label("ticket:created").check()
    with page.expect_navigation() as arrived:
        page.get_by_label("Only about").press("Enter")
    assert arrived.value.status == 201
    assert arrived.value.headers.get("cache-control") == "no-store"
    page.wait_for_load_state()
    (sid,) = (int(n) for n in re.findall(r"Webhook #(\d+)", page.locator("h1").inner_text()))
    secret = page.get_by_label("Signing secret").input_value()
    assert secret.startswith("whsec_")
    assert page.locator("#secret-hint").inner_text().endswith(secret[-4:])
    assert page.evaluate(NOTES_GAP) >= 8, "the secret's note touches the Settings card"
    alice.shoot("created")
    page.set_viewport_size(PHONE)  # the secret fits a phone's width too
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= PHONE["width"], f"the page scrolls sideways on a phone: {width} px"
    alice.shoot("created-phone")
    page.set_viewport_size(DESKTOP)

    # A reload sends the form again: it makes no second webhook, nor shows the secret again.
    page.reload()
    assert page.url == f"{site.url}/webhooks/{sid}", "the form sent again made a webhook again"
    assert page.locator("#secret").count() == 0
    assert "This webhook was created already" in alice.flashes()[0]
    made = "SELECT count(*) FROM srcore_webhook_subscription WHERE url = ?"
    assert _rows(site, made, site.receiver) == [(1,)]
    _check_page(alice)

    # A test event: delivered to the receiver, then in the log with its request and response.
    alice.press("Send test event")
    assert alice.flashes()[0].startswith("A test event (msg_")
    alice.wait_for(
        lambda: page.locator("#deliveries .badge", has_text="Delivered").count() == 1,
        "the ping is not logged as delivered",
    )
    assert [body["type"] for body in site.received] == ["ping"]
    delivery = page.locator("#deliveries li.item").first
    assert delivery.locator(".item-title").inner_text() == "ping"
    delivery.locator("summary").first.click()
    assert '"type": "ping"' in delivery.locator("pre").nth(1).inner_text()
    assert delivery.locator("pre").nth(3).inner_text() == '{"received": true}'
    alice.shoot("delivered")

    # Another one at once: a readable refusal on the same page, not an error page.
    alice.press("Send test event")
    assert page.url == f"{site.url}/webhooks/{sid}"
    (refused,) = alice.flashes()
    assert re.fullmatch(r"A test event was sent moments ago; wait \d+ seconds .*", refused)
    alice.shoot("ping-too-soon")

    # Redelivered: a second attempt, counted with the first.
    message_id = delivery.locator(".item-meta code").first.inner_text()
    alice.press(f"Redeliver ping {message_id}")
    alice.wait_for(
        lambda: page.locator("#deliveries details.attempt").count() == 2,
        "the redelivery is not logged",
    )
    assert "2 attempts" in page.locator("#deliveries .item-meta").first.inner_text()
    alice.shoot("redelivered")

    # Rotated: the new secret shown once; the form sent again rotates nothing more.
    page.get_by_label("Rotate the secret").select_option("0")
    rotated = alice.press("Rotate secret")
    assert rotated.headers.get("cache-control") == "no-store"
    new_secret = page.get_by_label("Signing secret").input_value()
    assert new_secret.startswith("whsec_") and new_secret != secret
    page.reload()
    assert page.url == f"{site.url}/webhooks/{sid}", "the form sent again rotated again"
    assert "rotated since that page was shown" in alice.flashes()[0]
    assert page.locator("#secret-hint").inner_text().endswith(new_secret[-4:])

    # Disabled and enabled again.
    alice.press("Disable")
    assert alice.flashes()[0].startswith("Webhook disabled")
    assert page.get_by_text("Disabled by its owner.").is_visible()
    assert page.evaluate(NOTES_GAP) >= 8, "the disabled note touches the Settings card"
    assert page.get_by_role("button", name="Send test event").count() == 0
    alice.shoot("disabled")
    alice.press("Enable")
    assert alice.flashes() == ["Webhook enabled."]

    # Edited: the form shows the webhook as it is; the change is saved.
    page.get_by_role("link", name="Edit").click()
    page.wait_for_url(f"{site.url}/webhooks/{sid}/edit")
    assert page.get_by_label("Payload URL").input_value() == site.receiver
    assert page.get_by_label("tracker:created").is_checked()
    _check_page(alice)
    page.get_by_label("ticket:created").uncheck()
    alice.press("Save webhook")
    assert alice.flashes() == ["Webhook saved."]
    assert "ticket:created" not in page.locator("#settings").inner_text()
    alice.shoot("edited")

    # The second person: alice's webhook, its pages and its forms are not there for bob.
    before = _state(site)
    bob.open("/webhooks")
    assert bob.page.get_by_text("No webhooks yet").is_visible()
    for path in (f"/webhooks/{sid}", f"/webhooks/{sid}/edit", f"/webhooks/{sid}?cursor=WzFd"):
        bob.open(path, status=404)
    bob.shoot("not-found")
    bob.open("/webhooks/new")
    token = bob.page.locator("input[name=csrf_token]").first.input_value()
    (delivery_id,) = _rows(site, "SELECT max(id) FROM srcore_webhook_delivery")[0]
    forms: list[tuple[str, dict[str, str]]] = [
        ("edit", {"url": site.receiver + "?bob", "events": "ticket:created"}),
        ("ping", {}),
        ("rotate", {"overlap": "0"}),
        ("disable", {}),
        ("enable", {}),
        (f"deliveries/{delivery_id}/redeliver", {}),
        ("delete", {}),
    ]
    for action, data in forms:
        answer = bob.page.request.post(
            f"{site.url}/webhooks/{sid}/{action}",
            form={"csrf_token": token, **data},
            max_redirects=0,
        )
        assert answer.status == 404, (action, answer.status)
    assert _state(site) == before, "bob changed alice's webhook"

    # Deleted, from alice's own page.
    alice.open(f"/webhooks/{sid}")
    delete = page.get_by_role("button", name="Delete webhook", exact=True)
    assert not delete.is_visible(), "one click deletes a webhook"
    page.get_by_text("Delete webhook…").click()
    assert page.get_by_text("This cannot be undone.").is_visible()
    page.get_by_text("Keep it").click()  # changed their mind: closed again
    assert not delete.is_visible()
    page.get_by_text("Delete webhook…").click()
    alice.shoot("delete-confirm")
    alice.press("Delete webhook")
    assert page.url == f"{site.url}/webhooks"
    assert alice.flashes() == ["Webhook deleted."]
    assert page.get_by_text("No webhooks yet").is_visible()
    alice.open(f"/webhooks/{sid}", status=404)

    assert alice.errors == [] and bob.errors == [], alice.errors + bob.errors
    assert alice.failures == [] and bob.failures == [], alice.failures + bob.failures


def test_a_long_delivery_log_pages_and_names_each_redelivery(
    site: Site, people: dict[str, Person]
) -> None:
    from srcore.db import Database, utcnow
    from srcore.webhooks.models import Attempt, Delivery, OutboxRow

    alice = people["alice"]
    page = alice.page
    alice.open("/webhooks/new")
    page.get_by_label("Payload URL").fill(site.receiver + "?log")
    page.get_by_label("ticket:created").check()
    alice.press("Create webhook", status=201)
    (sid,) = (int(n) for n in re.findall(r"Webhook #(\d+)", page.locator("h1").inner_text()))

    # 25 deliveries, logged already (the worker leaves delivered ones alone).
    db = Database(f"sqlite:///{site.database}")
    try:
        with db.transaction() as session:
            now = utcnow()
            for n in range(25):
                created = now - timedelta(minutes=25 - n)
                row = OutboxRow(event="ticket:created", payload="{}", created=created)
                delivery = Delivery(
                    subscription_id=sid,
                    outbox=row,
                    status="delivered",
                    attempts=1,
                    created=created,
                    delivered_at=created,
                )
                session.add(delivery)
                session.flush()
                session.add(
                    Attempt(
                        delivery_id=delivery.id,
                        created=created,
                        request_body=json.dumps({"type": "ticket:created", "n": n}),
                        response_status=200,
                        response_body="{}",
                    )
                )
    finally:
        db.dispose()

    alice.open(f"/webhooks/{sid}")
    items = page.locator("#deliveries li.item")
    assert items.count() == 20
    names = page.locator("#deliveries button").all_text_contents()
    assert len(set(names)) == 20, f"the Redeliver buttons do not say which delivery: {names}"
    assert page.locator("a[rel=prev]").count() == 0
    _check_page(alice)
    alice.shoot("log-first")

    page.get_by_role("link", name="Older").click()
    page.wait_for_url(re.compile(r".*\?cursor="))
    assert items.count() == 5
    assert page.get_by_role("link", name="Older").count() == 0
    assert page.evaluate(PAGES_GAP) >= 8, "the log's page links touch the card below"
    _check_page(alice)
    alice.shoot("log-older")

    page.get_by_role("link", name="Newest").click()
    page.wait_for_url(f"{site.url}/webhooks/{sid}")
    assert items.count() == 20

    assert alice.errors == [], alice.errors
    assert alice.failures == [], alice.failures
