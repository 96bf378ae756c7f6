"""Every service's pages work under the content security policy in a real browser:
headless Chromium against gunicorn, no CSP violation reported, the shared stylesheet and
icon load (a policy that blocked them would leave an unstyled page)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from srcore import migrate
from srcore.app import migration_target
from srcore.testing import free_port, launch_chromium, run_service, write_config

pytestmark = pytest.mark.browser

PAGES = {
    "meta": ["/login", "/register", "/forgot", "/no-such-page"],
    "todo": ["/", "/no-such-page"],
    "paste": ["/", "/no-such-page"],
}

#: Records the violations the page reports, before any of its own content runs.
WATCH = """
window.__violations = [];
document.addEventListener("securitypolicyviolation", (e) => {
  window.__violations.push(e.violatedDirective + " " + e.blockedURI);
});
"""


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with launch_chromium() as browser:
        yield browser


@pytest.fixture(scope="module", params=sorted(PAGES))
def site(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Any:
    service = request.param
    tmp = tmp_path_factory.mktemp(f"csp-{service}")
    port = free_port()
    config = write_config(
        tmp / "config.ini",
        service_id=service,
        database_url=f"sqlite:///{tmp / (service + '.db')}",
        origin=f"http://127.0.0.1:{port}",
    )
    migrate.upgrade_all(migration_target(service, config))
    with run_service(service, config, port=port) as url:
        yield service, url


def test_pages_load_under_the_policy(browser: Any, site: tuple[str, str]) -> None:
    service, url = site
    context = browser.new_context()
    context.add_init_script(WATCH)
    page = context.new_page()
    console: list[str] = []
    page.on("console", lambda m: console.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: console.append(str(e)))
    for path in PAGES[service]:
        response = page.goto(url + path)
        assert response is not None
        assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
        # The shared stylesheet applied: srcore.css sets the page's font stack.
        font = page.evaluate("getComputedStyle(document.body).fontFamily")
        assert font and font.lower() not in ("times new roman", '"times new roman"'), path
        sheets = page.evaluate("document.styleSheets.length")
        assert sheets >= 1, path
        assert page.evaluate("window.__violations") == [], path
    # The browser enforces the policy: a script injected into the page does not run.
    page.evaluate(
        "() => { const s = document.createElement('script');"
        " s.textContent = 'window.__injected = true'; document.body.appendChild(s); }"
    )
    page.wait_for_function("window.__violations.length > 0")
    assert page.evaluate("window.__injected") is None
    assert page.evaluate("window.__violations")[0].startswith("script-src")
    console = [m for m in console if "Content Security Policy" not in m]
    # Only the deliberate 404 pages show up as failed resources.
    assert [m for m in console if "404" not in m] == [], console
    context.close()
