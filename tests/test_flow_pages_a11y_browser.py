"""The pages a crawl never reaches, because only a POST or a sequence of steps leads to
them, checked like every crawled page (tests/test_pages_a11y_browser.py): axe-core in
Chromium at 1280 and 375 px wide, in the light and the dark colour scheme, no sideways
scroll, and the same layout checks.

Each page is reached through its real flow, with meta, todo and paste under gunicorn:

- "Not sent: your session changed" (srcore's ``form_again``) on each service, with a form
  (a long comment shown again, a password and a file to enter again) and without one (a
  button: who is logged in now, and a link to open the page again). The form is sent from
  the service's own page with the security token of the session before a new login.
- meta's "Login replaced" (409), after two accounts' logins wait for their second step in
  one browser, and the second-step page itself ("Logging in as ...").
- meta's network logout question, at its end-session endpoint for todo.
- meta's audit log filtered by its "From (UTC)" and "Until (UTC)" fields.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import pytest

from srcore.testing import launch_chromium, run_network
from tests.test_browser_tabs_outsider import (
    PASSWORD,
    Network,
    _totp,
    _turn_on_two_factor,
    log_in,
    log_out,
    meta_password_step,
)
from tests.test_pages_a11y_browser import (
    ARTIFACTS,
    AXE,
    BLOCKING,
    RUN_AXE,
    STEP_MS,
    VIEWPORTS,
    _describe,
    _look,
)

pytestmark = [pytest.mark.browser, pytest.mark.slow]

LONG = "\n".join(
    f"Line {n}: what I meant to say, at length, with a word long enough to matter: "
    "supercalifragilisticexpialidocious-and-then-some."
    for n in range(25)
)
#: Where each service's form is sent: a real form's address, so the service's own checks
#: (its security token first) answer as they would for that form.
FORM_TARGET = {"meta": "/email", "todo": "/create", "paste": "/new"}

#: Builds a form on the page the tab shows (so the browser sends the page's own Origin)
#: with the page's security token, which a new login in another tab makes one of an
#: earlier session.
BUILD_FORM = """([action, token, withText]) => {
  const form = document.createElement("form");
  form.method = "post";
  form.action = action;
  form.enctype = "multipart/form-data";
  form.id = "sent-later";
  const add = (tag, name, value, type) => {
    const input = document.createElement(tag);
    input.name = name;
    if (type) input.type = type;
    if (value !== null) input.value = value;
    form.append(input);
    return input;
  };
  add("input", "csrf_token", token, "hidden");
  if (withText) {
    add("input", "title", "A title of a few words", "text");
    add("textarea", "comment", withText, null);
    add("input", "current_password", "typed before", "password");
    add("input", "attachment", null, "file");
  }
  document.body.append(form);
}"""


#: A page a flow left a tab showing: its name (for the report and the screenshot), the
#: status it should answer with, the tab, and the response it answered with.
Reached = tuple[str, int, Any, Any]


#: Layout faults of the pages here besides the crawl's (LOOK): the paragraphs of a message
#: box run together with no space between them, and a card with empty space at its top
#: (its first visible block pushed down by a margin meant to set it off from a block above).
FLOW_LOOK = """() => {
  const problems = [];
  for (const box of document.querySelectorAll(".form-errors, .flash, .notice")) {
    for (const p of box.querySelectorAll("p + p")) {
      const above = p.previousElementSibling.getBoundingClientRect().bottom;
      const gap = p.getBoundingClientRect().top - above;
      if (gap < 4) problems.push(`paragraphs run together (${gap} px) in ${box.className}`);
    }
  }
  for (const card of document.querySelectorAll("main .card")) {
    const first = [...card.children].find((c) => c.getClientRects().length > 0);
    if (!first) continue;
    const style = getComputedStyle(card);
    const inner = card.getBoundingClientRect().top + parseFloat(style.borderTopWidth)
      + parseFloat(style.paddingTop);
    const gap = first.getBoundingClientRect().top - inner;
    if (gap > 2) problems.push(`${gap} px of empty space at the top of a card: ${card.className}`);
  }
  return problems;
}"""


@dataclass
class Net(Network):
    two_factor: dict[str, str]


@pytest.fixture
def network(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Net]:
    import meta
    from meta.admin.cli import create_user
    from meta.models import User
    from sqlalchemy import update

    from srcore.db import UserType

    # A network of its own for each run: meta counts login forms per address (20 a minute),
    # and each run sends a dozen.
    tmp = tmp_path_factory.mktemp("flow-a11y")
    keys = {"revocation-pull-interval": "1h"}
    with run_network(tmp, ("meta", "todo", "paste"), global_keys=keys) as running:
        for name in ("alice", "tfa-one", "tfa-two"):
            create_user(str(running.config), name, f"{name}@example.org", PASSWORD)
        app = meta.create_app(config=running.config)
        try:
            with app.extensions["srcore"].db.transaction() as session:
                session.execute(
                    update(User).where(User.username == "alice").values(user_type=UserType.admin)
                )
        finally:
            app.extensions["srcore"].db.dispose()
        urls = running.urls
        net = Net(urls["meta"], urls["todo"], urls["paste"], running.config, {})
        for name in ("tfa-one", "tfa-two"):
            net.two_factor[name] = _turn_on_two_factor(net, name)
        yield net


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    with launch_chromium() as browser:
        yield browser


def _sent_from_an_earlier_session(net: Net, context: Any, service: str) -> list[Reached]:
    """Two forms of a page of *service* (one with text, one a bare button), sent after
    alice logged out and in again in another tab."""
    base = getattr(net, service)
    tabs = {"form-again": context.new_page(), "form-again-button": context.new_page()}
    log_in(tabs["form-again"], net, service, "alice")
    for name, tab in tabs.items():
        tab.goto(f"{base}/")
        token = tab.evaluate(
            "() => { const t = document.querySelector('input[name=csrf_token]');"
            " return t ? t.value : null; }"
        )
        assert token, f"{service}'s front page has no security token"
        text = LONG if name == "form-again" else ""
        tab.evaluate(BUILD_FORM, [base + FORM_TARGET[service], token, text])
        if text:
            tab.set_input_files(
                "#sent-later input[type=file]",
                files=[{"name": "notes.txt", "mimeType": "text/plain", "buffer": b"notes"}],
            )
    # Another tab: alice logs out of the service and in again, a session of its own.
    other = context.new_page()
    log_out(other, base)
    log_in(other, net, service, "alice")
    reached = []
    for name, tab in tabs.items():
        with tab.expect_navigation() as navigation:
            tab.evaluate("() => document.getElementById('sent-later').submit()")
        main = tab.locator("main").inner_text()
        assert "You are logged in as alice" in main, main
        if name == "form-again":
            assert "Send again" in main and tab.locator("main input[type=file]").count() == 1
        else:
            assert "Open the page again" in main and tab.locator("main form").count() == 0
        reached.append((f"{service}-{name}", 400, tab, navigation.value))
    return reached


def _second_steps(net: Net, context: Any) -> list[Reached]:
    """Two accounts' logins waiting for their second step in two tabs; the code typed on
    the first one's page."""
    first, second = context.new_page(), context.new_page()
    for page, name in ((first, "tfa-one"), (second, "tfa-two")):
        meta_password_step(page, net, name)
        page.wait_for_url(f"{net.meta}/login/verify")
    shown = second.reload()
    assert "Logging in as tfa-two" in second.locator("main").inner_text()
    first.get_by_label("Code").fill(_totp(net.two_factor["tfa-one"], time.time()))
    with first.expect_navigation() as navigation:
        first.locator("main").get_by_role("button", name="Log in").click()
    first.get_by_role("heading", name="Login replaced").wait_for()
    return [
        ("meta-second-step", 200, second, shown),
        ("meta-login-replaced", 409, first, navigation.value),
    ]


def _logout_question(net: Net, context: Any) -> list[Reached]:
    tab = context.new_page()
    log_in(tab, net, "todo", "alice")
    query = urlencode({"client_id": "todo", "post_logout_redirect_uri": net.todo + "/"})
    response = tab.goto(f"{net.meta}/oauth/logout?{query}")
    main = tab.locator("main").inner_text()
    assert "You are logged out of todo" in main and "Stay logged in" in main, main
    return [("meta-network-logout", 200, tab, response)]


def _audit_filtered(net: Net, context: Any) -> list[Reached]:
    tab = context.new_page()
    log_in(tab, net, "meta", "alice")
    tab.goto(f"{net.meta}/admin/audit")
    tab.get_by_label("From (UTC)").fill("2020-01-01")
    tab.get_by_label("Until (UTC)").fill("2099-12-31")
    with tab.expect_navigation() as navigation:
        tab.get_by_label("Until (UTC)").press("Enter")
    return [("meta-audit-filtered", 200, tab, navigation.value)]


FLOWS: list[Callable[[Net, Any], list[Reached]]] = [
    *(
        functools.partial(_sent_from_an_earlier_session, service=service)
        for service in ("meta", "todo", "paste")
    ),
    _second_steps,
    _logout_question,
    _audit_filtered,
]


def _check(page: Any, viewport: str) -> list[str]:
    problems = []
    violations = page.evaluate(RUN_AXE, [])
    blocking = [v for v in violations if v["impact"] in BLOCKING]
    if blocking:
        problems.append(_describe(blocking))
    width = page.evaluate("document.documentElement.scrollWidth")
    if width > VIEWPORTS[viewport]["width"]:
        problems.append(f"scrolls sideways ({width} px)")
    problems.extend(_look(page))
    problems.extend(dict.fromkeys(page.evaluate(FLOW_LOOK)))
    return problems


@pytest.mark.parametrize("viewport", sorted(VIEWPORTS))
@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_pages_reached_through_a_flow_pass_axe(
    network: Net, chromium: Any, scheme: str, viewport: str
) -> None:
    out = ARTIFACTS / f"{scheme}-{viewport}"
    out.mkdir(parents=True, exist_ok=True)
    failures: list[str] = []
    for flow in FLOWS:
        # A browser of its own for each flow: no cookies.
        context = chromium.new_context(viewport=VIEWPORTS[viewport], color_scheme=scheme)
        context.set_default_timeout(STEP_MS)
        context.set_default_navigation_timeout(STEP_MS)
        context.add_init_script(path=str(AXE))
        try:
            try:
                reached = flow(network, context)
            except Exception:
                # What the tabs show says which step went wrong.
                for tab in context.pages:
                    print(tab.url, tab.locator("body").inner_text()[:800])
                raise
            for name, status, page, response in reached:
                assert response is not None, name
                if response.status != status:
                    failures.append(f"{name}: status {response.status}")
                    continue
                page.wait_for_load_state()
                page.screenshot(path=str(out / f"flow-{name}.png"), full_page=True)
                failures.extend(f"{name}: {problem}" for problem in _check(page, viewport))
        finally:
            context.close()
    assert not failures, f"{scheme}, {viewport}:\n" + "\n".join(failures)
