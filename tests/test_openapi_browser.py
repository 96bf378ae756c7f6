"""The API docs page renders the service's description in a real browser, under the
content security policy: Swagger UI draws every operation and reports no violation."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from srcore import migrate
from srcore.app import migration_target
from srcore.testing import free_port, launch_chromium, run_service, write_config

pytestmark = pytest.mark.browser

WATCH = """
window.__violations = [];
document.addEventListener("securitypolicyviolation", (e) => {
  window.__violations.push(e.violatedDirective + " " + e.blockedURI);
});
"""


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("docs-todo")
    port = free_port()
    config = write_config(
        tmp / "config.ini",
        service_id="todo",
        database_url=f"sqlite:///{tmp / 'todo.db'}",
        origin=f"http://127.0.0.1:{port}",
    )
    migrate.upgrade_all(migration_target("todo", config))
    with run_service("todo", config, port=port) as url:
        yield url


def test_docs_page_renders_every_operation_under_the_policy(site: str) -> None:
    with launch_chromium() as browser:
        context = browser.new_context()
        context.add_init_script(WATCH)
        page = context.new_page()
        errors: list[str] = []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        response = page.goto(site + "/api/docs")
        assert response is not None and response.status == 200
        assert "script-src 'self'" in response.headers["content-security-policy"]
        page.wait_for_selector(".swagger-ui .opblock", timeout=15_000)
        summaries = page.locator(".opblock-summary-path").all_inner_texts()
        assert "/api/trackers/{name}/tickets/{number}" in [s.strip() for s in summaries]
        assert page.locator(".opblock").count() >= 11
        # Swagger UI's stylesheet applied: an operation's method badge is coloured.
        badge = page.locator(".opblock-get .opblock-summary-method").first
        assert badge.evaluate("e => getComputedStyle(e).backgroundColor") != "rgba(0, 0, 0, 0)"
        # Opening an operation draws its schema from the document.
        page.locator(".opblock-get .opblock-summary").first.click()
        page.wait_for_selector(".opblock-body .responses-table", timeout=10_000)
        assert page.evaluate("window.__violations") == []
        assert errors == [], errors
        context.close()
