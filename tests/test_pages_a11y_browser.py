"""Every page of meta, todo and paste in Chromium, checked by axe-core, at 1280 and 375 px
wide, in the light and the dark colour scheme.

Each service runs under gunicorn on 127.0.0.1 with a small set of data (a tracker with
tickets and comments, pastes of code and markdown, an OAuth client asking for consent),
and the browser starts logged in through the service's real session cookie. On every
page, axe-core (vendored in tests/vendor/axe-core, injected as an init script so that the
pages' content security policy stays as it is) may find no serious or critical
violation, and the page may not scroll sideways. A full-page screenshot of every page in
every mode goes to artifacts/a11y/ (git-ignored), for people to look at.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest

from srcore import migrate
from srcore.app import migration_target
from srcore.db import UserType
from srcore.testing import (
    create_user,
    free_port,
    launch_chromium,
    run_service,
    session_cookie,
    write_config,
)

pytestmark = [pytest.mark.browser, pytest.mark.slow]

AXE = Path(__file__).resolve().parent / "vendor" / "axe-core" / "axe.min.js"
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts" / "a11y"
VIEWPORTS = {"desktop": {"width": 1280, "height": 900}, "phone": {"width": 375, "height": 780}}
#: The violations that fail the walk; "moderate" and "minor" ones are only reported.
BLOCKING = ("serious", "critical")
STEP_MS = 15_000

#: Runs axe-core over the page and answers its violations, shortened to what a report needs.
RUN_AXE = """async (exclude) => {
  const context = exclude.length ? {exclude: exclude.map((s) => [s])} : document;
  const result = await axe.run(context, {resultTypes: ["violations"]});
  return result.violations.map((v) => ({
    id: v.id,
    impact: v.impact,
    help: v.help,
    nodes: v.nodes.slice(0, 5).map((n) => n.target.join(" ") + ": " + n.failureSummary),
  }));
}"""


#: Swagger UI's own markup on /api/docs (vendored, drawn by its script): its method badges'
#: colours, its nested buttons and its unnamed server select are not srcore's to change.
#: The page around it is checked like every other.
SWAGGER_UI = ("#api-docs",)


@dataclass(frozen=True)
class PageSpec:
    """A page to visit: a name for its screenshot, its path, whether to be logged in, and
    the status it answers with."""

    name: str
    path: str
    logged_in: bool = True
    status: int = 200
    #: A submit button to press on the empty form first: the page is then checked with
    #: the reasons beside its fields (status 400 from the server).
    submit: str | None = None
    #: Parts of the page axe leaves out, for third-party widgets whose markup is not ours.
    exclude: tuple[str, ...] = ()


@dataclass
class Site:
    url: str
    cookie: tuple[str, str]
    pages: list[PageSpec]


def _config(tmp: Path, service: str) -> tuple[Path, int]:
    port = free_port()
    config = write_config(
        tmp / "config.ini",
        service_id=service,
        database_url=f"sqlite:///{tmp / (service + '.db')}",
        origin=f"http://127.0.0.1:{port}",
    )
    migrate.upgrade_all(migration_target(service, config))
    return config, port


def _meta(tmp: Path) -> tuple[Path, int, tuple[str, str], list[PageSpec]]:
    import meta
    from meta import logic
    from meta.models import TokenPurpose
    from meta.oauth.models import OAuthClient

    config, port = _config(tmp, "meta")
    app = meta.create_app(config=config)
    admin = create_user(app, "alice", user_type=UserType.admin, password_hash="x")
    bob = create_user(app, "bob", user_type=UserType.active, password_hash="x")
    with app.extensions["srcore"].db.transaction() as session:
        session.add(
            OAuthClient(
                client_id="gadget-client",
                owner_id=bob.id,
                name="Gadget",
                redirect_uris="https://app.example/cb",
                confidential=False,
            )
        )
    with app.app_context(), app.extensions["srcore"].db.transaction() as session:
        reset = logic.issue_token(
            session,
            session.merge(bob),
            TokenPurpose.reset,
            email=bob.email,
            lifetime=timedelta(hours=1),
        )
    cookie = session_cookie(app, admin)
    app.extensions["srcore"].db.dispose()
    challenge = (
        base64.urlsafe_b64encode(hashlib.sha256(b"a verifier of the walk" * 3).digest())
        .rstrip(b"=")
        .decode()
    )
    consent = "/oauth/authorize?" + urlencode(
        {
            "response_type": "code",
            "client_id": "gadget-client",
            "redirect_uri": "https://app.example/cb",
            "scope": "meta/profile:RO",
            "state": "walk",
            "code_challenge": challenge,
            "code_challenge_method": "S256",
        }
    )
    pages = [
        PageSpec("login", "/login", logged_in=False),
        PageSpec("login-errors", "/login", logged_in=False, status=400, submit="Log in"),
        PageSpec("register", "/register", logged_in=False),
        PageSpec("register-errors", "/register", logged_in=False, status=400, submit="Register"),
        PageSpec("forgot", "/forgot", logged_in=False),
        PageSpec("reset", f"/reset/{reset}", logged_in=False),
        PageSpec("reset-bad-link", "/reset/not-a-token", logged_in=False, status=404),
        PageSpec("profile", "/profile"),
        PageSpec("password", "/password"),
        PageSpec("email", "/email"),
        PageSpec("delete", "/delete"),
        PageSpec("security", "/security"),
        PageSpec("two-factor", "/security/two-factor"),
        PageSpec("activity", "/security/activity"),
        PageSpec("clients", "/clients"),
        PageSpec("consent", consent),
        PageSpec("admin-users", "/admin/users"),
        PageSpec("admin-users-none", "/admin/users?q=nobody-at-all"),
        PageSpec("admin-user", f"/admin/users/{bob.id}"),
        PageSpec("admin-audit", "/admin/audit"),
        PageSpec("api-docs", "/api/docs", exclude=SWAGGER_UI),
        PageSpec("webhooks", "/webhooks"),
        PageSpec("webhook-new", "/webhooks/new"),
        PageSpec("not-found", "/no-such-page", status=404),
    ]
    return config, port, cookie, pages


def _todo(tmp: Path) -> tuple[Path, int, tuple[str, str], list[PageSpec]]:
    import todo
    from todo.models import Comment, Resolution, Ticket, TicketStatus, Tracker, Visibility

    config, port = _config(tmp, "todo")
    app = todo.create_app(config=config)
    alice = create_user(app, "alice")
    bob = create_user(app, "bob")
    tickets = [
        ("Dark mode makes code blocks unreadable", TicketStatus.open, None),
        ("Search ignores accented letters", TicketStatus.open, None),
        ("Footer links point to the old domain", TicketStatus.resolved, Resolution.fixed),
    ]
    with app.extensions["srcore"].db.transaction() as session:
        tracker = Tracker(
            owner_id=alice.id,
            name="website",
            description="Bugs and ideas for **the website**: see `docs/` first.",
            visibility=Visibility.public,
            ticket_count=len(tickets),
        )
        empty = Tracker(owner_id=alice.id, name="quiet", visibility=Visibility.private)
        session.add_all([tracker, empty])
        session.flush()
        for number, (title, status, resolution) in enumerate(tickets, start=1):
            session.add(
                Ticket(
                    tracker_id=tracker.id,
                    number=number,
                    title=title,
                    description="Steps to reproduce:\n\n1. Open the page\n2. Look\n\n"
                    "```\ncode { color: #777 }\n```",
                    status=status,
                    resolution=resolution,
                    submitter_id=bob.id if number == 2 else alice.id,
                )
            )
        session.flush()
        first = session.query(Ticket).filter_by(tracker_id=tracker.id, number=1).one()
        session.add_all(
            [
                Comment(ticket_id=first.id, author_id=bob.id, text="Seen on **Firefox** too."),
                Comment(ticket_id=first.id, author_id=alice.id, text="Fixed in `main`."),
            ]
        )
    cookie = session_cookie(app, alice)
    app.extensions["srcore"].db.dispose()
    pages = [
        PageSpec("index-anonymous", "/", logged_in=False),
        PageSpec("index", "/"),
        PageSpec("create", "/create"),
        PageSpec("tracker", "/~alice/website"),
        PageSpec("tracker-resolved", "/~alice/website?status=resolved"),
        PageSpec("tracker-empty", "/~alice/quiet"),
        PageSpec("tracker-anonymous", "/~alice/website", logged_in=False),
        PageSpec("settings", "/~alice/website/settings"),
        PageSpec("delete", "/~alice/website/delete"),
        PageSpec("new-ticket", "/~alice/website/new"),
        PageSpec("new-ticket-errors", "/~alice/website/new", status=400, submit="Submit ticket"),
        PageSpec("ticket", "/~alice/website/1"),
        PageSpec("ticket-resolved", "/~alice/website/3"),
        PageSpec("ticket-no-comments", "/~alice/website/2"),
        PageSpec("ticket-edit", "/~alice/website/1/edit"),
        PageSpec("webhooks", "/webhooks"),
        PageSpec("webhook-new", "/webhooks/new"),
        PageSpec("api-docs", "/api/docs", exclude=SWAGGER_UI),
        PageSpec("not-found", "/no-such-page", status=404),
    ]
    return config, port, cookie, pages


CODE = '''def greet(name: str) -> str:
    """Say hello."""
    return f"Hello, {name}!" + " and a line long enough to wrap on a phone screen, surely"
'''
MARKDOWN = "# Notes\n\n- [x] done\n- [ ] to do\n\n> quoted\n\n| a | b |\n|---|---|\n| 1 | 2 |\n"


def _paste(tmp: Path) -> tuple[Path, int, tuple[str, str], list[PageSpec]]:
    import paste
    from paste.models import Format, Paste, Visibility

    config, port = _config(tmp, "paste")
    app = paste.create_app(config=config)
    alice = create_user(app, "alice")
    with app.extensions["srcore"].db.transaction() as session:
        session.add_all(
            [
                Paste(owner_id=alice.id, short_id="cdxkq2abcd", title="greet.py", text=CODE,
                      format=Format.plain, language="python", visibility=Visibility.public),
                Paste(owner_id=alice.id, short_id="mdwn7yzsab", title="Notes", text=MARKDOWN,
                      format=Format.markdown, visibility=Visibility.unlisted),
            ]
        )  # fmt: skip
    cookie = session_cookie(app, alice)
    app.extensions["srcore"].db.dispose()
    pages = [
        PageSpec("index-anonymous", "/", logged_in=False),
        PageSpec("index", "/"),
        PageSpec("search-empty", "/?search=nothing-matches-this"),
        PageSpec("mine", "/mine"),
        PageSpec("new", "/new"),
        PageSpec("new-errors", "/new", status=400, submit="Create paste"),
        PageSpec("code", "/p/cdxkq2abcd"),
        PageSpec("markdown", "/p/mdwn7yzsab"),
        PageSpec("code-anonymous", "/p/cdxkq2abcd", logged_in=False),
        PageSpec("edit", "/p/cdxkq2abcd/edit"),
        PageSpec("delete", "/p/cdxkq2abcd/delete"),
        PageSpec("webhooks", "/webhooks"),
        PageSpec("api-docs", "/api/docs", exclude=SWAGGER_UI),
        PageSpec("not-found", "/no-such-page", status=404),
    ]
    return config, port, cookie, pages


SEEDS: dict[str, Callable[[Path], tuple[Path, int, tuple[str, str], list[PageSpec]]]] = {
    "meta": _meta,
    "todo": _todo,
    "paste": _paste,
}


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with launch_chromium() as browser:
        yield browser


@pytest.fixture(scope="module", params=sorted(SEEDS))
def site(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Site]:
    service = request.param
    config, port, cookie, pages = SEEDS[service](tmp_path_factory.mktemp(f"a11y-{service}"))
    with run_service(service, config, port=port) as url:
        yield Site(url, cookie, pages)


def _context(browser: Any, site: Site, *, scheme: str, viewport: str, logged_in: bool) -> Any:
    context = browser.new_context(viewport=VIEWPORTS[viewport], color_scheme=scheme)
    context.set_default_timeout(STEP_MS)
    context.set_default_navigation_timeout(STEP_MS)
    # An init script runs in every document whatever its content security policy says.
    context.add_init_script(path=str(AXE))
    if logged_in:
        name, value = site.cookie
        context.add_cookies([{"name": name, "value": value, "url": site.url}])
    return context


#: Layout faults a person would see: the development banner wrapped onto a second line, a
#: border drawn twice (a bordered list or empty state inside a card's own border), and a
#: section heading that touches the block above it.
LOOK = """() => {
  const problems = [];
  const banner = document.querySelector(".env-banner");
  if (banner) {
    const text = banner.querySelector(".env-banner-text");
    const lineHeight = parseFloat(getComputedStyle(text).lineHeight);
    if (text.getBoundingClientRect().height > 1.5 * lineHeight) {
      problems.push("the development banner wraps");
    }
  }
  for (const inner of document.querySelectorAll(".card > .empty-state, .card > .item-list")) {
    if (getComputedStyle(inner).borderTopStyle !== "none") {
      problems.push("a second border inside a card: " + inner.className);
    }
  }
  for (const heading of document.querySelectorAll("main h2")) {
    if (heading.closest(".card")) continue;
    const before = heading.previousElementSibling || heading.parentElement.previousElementSibling;
    if (!before) continue;
    const gap = heading.getBoundingClientRect().top - before.getBoundingClientRect().bottom;
    if (gap < 12) {
      problems.push(`"${heading.textContent.trim()}" is ${gap} px below the block before it`);
    }
  }
  return problems;
}"""


def _look(page: Any) -> list[str]:
    problems: list[str] = page.evaluate(LOOK)
    return problems


def _describe(violations: list[dict[str, Any]]) -> str:
    lines = []
    for v in violations:
        lines.append(f"  {v['impact']} {v['id']}: {v['help']}")
        lines.extend(f"      {node}" for node in v["nodes"])
    return "\n".join(lines)


@pytest.mark.parametrize("viewport", sorted(VIEWPORTS))
@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_every_page_passes_axe(
    browser: Any, site: Site, scheme: str, viewport: str, request: pytest.FixtureRequest
) -> None:
    service = request.node.callspec.params["site"]
    out = ARTIFACTS / f"{scheme}-{viewport}"
    out.mkdir(parents=True, exist_ok=True)
    contexts = {
        logged_in: _context(browser, site, scheme=scheme, viewport=viewport, logged_in=logged_in)
        for logged_in in (True, False)
    }
    failures: list[str] = []
    report: list[str] = []
    try:
        pages = {logged_in: context.new_page() for logged_in, context in contexts.items()}
        for spec in site.pages:
            page = pages[spec.logged_in]
            response = page.goto(site.url + spec.path)
            if spec.submit is not None:
                # The server's reasons are the point here, not the browser's own checks.
                page.evaluate("document.querySelectorAll('form').forEach(f => f.noValidate = true)")
                with page.expect_response(lambda r: r.request.method == "POST") as posted:
                    page.get_by_role("button", name=spec.submit, exact=True).click()
                response = posted.value
                page.wait_for_load_state()
            assert response is not None, spec.path
            if response.status != spec.status:
                failures.append(f"{spec.path} ({spec.name}): status {response.status}")
                continue
            page.wait_for_load_state()
            page.screenshot(path=str(out / f"{service}-{spec.name}.png"), full_page=True)
            violations = page.evaluate(RUN_AXE, list(spec.exclude))
            blocking = [v for v in violations if v["impact"] in BLOCKING]
            counts = {impact: 0 for impact in ("critical", "serious", "moderate", "minor")}
            for v in violations:
                counts[v["impact"]] = counts.get(v["impact"], 0) + 1
            ids = sorted(f"{v['impact']}:{v['id']}" for v in violations)
            report.append(f"{service} {spec.name}: {counts} {ids}")
            if blocking:
                failures.append(f"{spec.path} ({spec.name}):\n{_describe(blocking)}")
            width = page.evaluate("document.documentElement.scrollWidth")
            if width > VIEWPORTS[viewport]["width"]:
                failures.append(f"{spec.path} ({spec.name}): scrolls sideways ({width} px)")
            failures.extend(f"{spec.path} ({spec.name}): {problem}" for problem in _look(page))
    finally:
        for context in contexts.values():
            context.close()
    print("\n".join(report))
    assert not failures, f"{service}, {scheme}, {viewport}:\n" + "\n".join(failures)
