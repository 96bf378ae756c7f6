"""The consent page and a paste in Chromium: text is shown in the order it is written.

meta serves a consent page for an application whose stored name holds a right-to-left
override (a name from before the input rule); paste serves code with the "Trojan Source"
controls of CVE-2021-42574 in it. Read from the pixels, by where each character is drawn:
the sentence naming where the user is sent must read left to right, and the code's
comment must stay after the string it sits in. Screenshots go to artifacts/spoofing/
(git-ignored) for people to look at.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_text_spoofing import TROJAN
from test_text_spoofing_meta import add_client, consent_path

from srcore import migrate
from srcore.app import migration_target
from srcore.testing import (
    create_user,
    free_port,
    launch_chromium,
    run_service,
    session_cookie,
    write_config,
)

pytestmark = pytest.mark.browser

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts" / "spoofing"
STEP_MS = 15_000

#: Where the first character of each of *texts* is drawn inside the element *selector*:
#: [left, top] of its box, or null when the element's text does not hold it.
DRAWN_AT = """([selector, texts]) => {
  const root = document.querySelector(selector);
  const nodes = [];
  let full = "";
  const walker = document.createTreeWalker(root, NodeFilter.SHOW_TEXT);
  while (walker.nextNode()) {
    nodes.push([walker.currentNode, full.length]);
    full += walker.currentNode.data;
  }
  return texts.map((text) => {
    const at = full.indexOf(text);
    if (at < 0) return null;
    return [...text].map((_, i) => {
      const [node, start] = nodes.filter(([, s]) => s <= at + i).pop();
      const range = document.createRange();
      range.setStart(node, at + i - start);
      range.setEnd(node, at + i - start + 1);
      const box = range.getBoundingClientRect();
      return [box.left, box.top];
    });
  });
}"""


def _in_order(boxes: list[list[float]]) -> bool:
    """Whether characters are drawn one after the other: right of the one before, or on a
    line below it."""
    return all(
        b[1] > a[1] + 2 or (abs(b[1] - a[1]) <= 2 and b[0] >= a[0])
        for a, b in itertools.pairwise(boxes)
    )


def _site(tmp: Path, service: str) -> tuple[Path, int]:
    port = free_port()
    config = write_config(
        tmp / "config.ini",
        service_id=service,
        database_url=f"sqlite:///{tmp / (service + '.db')}",
        origin=f"http://127.0.0.1:{port}",
    )
    migrate.upgrade_all(migration_target(service, config))
    return config, port


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with launch_chromium() as browser:
        yield browser


def _page(browser: Any, url: str, cookie: tuple[str, str], path: str, shot: str) -> Any:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(STEP_MS)
    context.add_cookies([{"name": cookie[0], "value": cookie[1], "url": url}])
    page = context.new_page()
    response = page.goto(url + path)
    assert response is not None and response.status == 200
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{shot}.png"), full_page=True)
    return page


def test_consent_page_reads_in_order(browser: Any, tmp_path: Path) -> None:
    import meta

    config, port = _site(tmp_path, "meta")
    app = meta.create_app(config=config)
    owner = create_user(app, "mallory", password_hash="x")
    alice = create_user(app, "alice", password_hash="x")
    add_client(app, owner, "Gadget\u202emoc.elpmaxe-evil")
    cookie = session_cookie(app, alice)
    app.extensions["srcore"].db.dispose()
    with run_service("meta", config, port=port) as url:
        page = _page(
            browser,
            url,
            cookie,
            consent_path("gadget-client", "https://evil.example/cb"),
            "consent",
        )
        gadget, wants, sent, host, reversed_ = page.evaluate(
            DRAWN_AT,
            [
                ".page-header p",
                ["Gadget", "wants to use your", "You will be sent back to", "evil.example",
                 "moc.elpmaxe-evil"],
            ],
        )  # fmt: skip
        assert gadget and wants and sent and host and reversed_
        for boxes in (gadget, wants, sent, host):
            assert _in_order(boxes)
        # the name's own characters too, in the order stored, and the sentence after it
        assert _in_order(reversed_)
        assert _in_order([gadget[0], reversed_[0], wants[0], sent[0], host[0]])


def test_trojan_source_reads_as_it_runs(browser: Any, tmp_path: Path) -> None:
    import paste
    from paste.models import Format, Paste, Visibility

    config, port = _site(tmp_path, "paste")
    app = paste.create_app(config=config)
    alice = create_user(app, "alice")
    with app.extensions["srcore"].db.transaction() as session:
        session.add(
            Paste(owner_id=alice.id, short_id="trjan23456", title="check.py", text=TROJAN,
                  format=Format.plain, language="python", visibility=Visibility.public)
        )  # fmt: skip
    cookie = session_cookie(app, alice)
    app.extensions["srcore"].db.dispose()
    with run_service("paste", config, port=port) as url:
        page = _page(browser, url, cookie, "/p/trjan23456", "trojan-source")
        assert page.locator(".code-note").is_visible()
        user, comment, end = page.evaluate(
            DRAWN_AT, ["pre.code .line", ['"user', "// Check if admin", '":']]
        )
        assert user and comment and end
        # As Python reads it: the comment is inside the string, which ends after it.
        assert _in_order([user[0], comment[0], end[0]])
