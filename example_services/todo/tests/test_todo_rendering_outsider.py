"""Hostile tickets, comments and tracker descriptions, as another user writes them.

What the pages send back is checked as a browser would read it: no script, no handler,
no URL of a scheme other than http(s) and mailto, and nesting that stays bounded.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser
from typing import Any

from srcore import rendering

HOSTILE = "\n\n".join(
    [
        "[a](javascript:alert(1)) [b](JaVaScRiPt:alert(1)) [c](&#106;avascript:alert(1))",
        "<a href=\"java\tscript:alert(1)\">d</a> <a href='&#x6A;avascript:alert(1)'>e</a>",
        "[ref]\n\n[ref]: vbscript:alert(1)",
        "<img src=x onerror=alert(1)> <svg onload=alert(1)> <script>alert(1)</script>",
        "<details open ontoggle=alert(1)>x</details> <input autofocus onfocus=alert(1)>",
        '```js" onmouseover="alert(1)\ncode\n```',
        "# <b onclick=alert(1)>heading</b>",
        '<h2 id="csrf_token">clobber</h2> <a href="https://x.invalid/" target=_blank>out</a>',
        "&lt;script&gt;alert(1)&lt;/script&gt;",
    ]
)

_HANDLER = re.compile(r"^on", re.IGNORECASE)


class Page(HTMLParser):
    """Every element's attributes, and how deep elements nest."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.open: list[str] = []
        self.deepest = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        if tag not in {"br", "hr", "img", "input", "meta", "link"}:
            self.open.append(tag)
            self.deepest = max(self.deepest, len(self.open))

    def handle_endtag(self, tag: str) -> None:
        if tag in self.open:
            while self.open.pop() != tag:
                pass


def read(client: Any, path: str) -> Page:
    response = client.get(path)
    assert response.status_code == 200, path
    page = Page()
    page.feed(response.get_data(as_text=True))
    return page


def assert_harmless(page: Page) -> None:
    scripts = [attrs.get("src") for tag, attrs in page.tags if tag == "script"]
    assert all(src and src.startswith("/static/") for src in scripts), scripts
    for tag, attrs in page.tags:
        assert not any(_HANDLER.match(name) for name in attrs), (tag, attrs)
        assert "target" not in attrs or tag == "form", (tag, attrs)
        for name in ("href", "src", "action", "formaction"):
            value = (attrs.get(name) or "").strip()
            scheme = value.split(":", 1)[0].lower() if ":" in value.split("/", 1)[0] else ""
            assert scheme in {"", "http", "https", "mailto"}, (tag, attrs)
        if tag == "a" and (attrs.get("href") or "").startswith(("http:", "https:", "mailto:")):
            assert attrs.get("rel") == "nofollow noopener" or attrs.get("class"), (tag, attrs)
    ids = [attrs["id"] for _tag, attrs in page.tags if attrs.get("id")]
    assert "csrf_token" not in ids


def test_a_hostile_ticket_and_comment_render_harmlessly(
    bob_client: Any, user_client: Any, csrf: Any, tracker: Any
) -> None:
    page = "/~alice/bugs/new"
    title = "<script>alert(1)</script><img src=x onerror=alert(1)>"
    response = csrf.post(bob_client, page, {"title": title, "description": HOSTILE}, page=page)
    assert response.status_code == 302
    response = csrf.post(bob_client, "/~alice/bugs/1/comment", {"text": HOSTILE}, page=page)
    assert response.status_code == 302
    for path in ("/~alice/bugs/1", "/~alice/bugs"):
        assert_harmless(read(user_client, path))
    body = user_client.get("/~alice/bugs/1").get_data(as_text=True)
    assert body.count("&lt;script&gt;alert(1)&lt;/script&gt;") >= 2  # the title, as text
    assert 'id="user-content-heading"' in body


def test_a_hostile_tracker_description_renders_harmlessly(
    client: Any, make: Any, user: Any
) -> None:
    make.tracker(user, "hostile", description=HOSTILE)
    for path in ("/", "/~alice/hostile"):
        assert_harmless(read(client, path))
    # The one-line summary is text: an escaped tag in the markdown stays escaped.
    assert "<script>alert(1)" not in client.get("/").get_data(as_text=True)


def test_a_comment_of_nested_raw_html_stays_shallow(
    user_client: Any, csrf: Any, tracker: Any, ticket: Any
) -> None:
    """16 KiB of ``<ul><li>`` nests four thousand deep: sanitizing it took seconds."""
    page = "/~alice/bugs/1"
    text = "<ul><li>" * (16_384 // 8)
    response = csrf.post(user_client, f"{page}/comment", {"text": text}, page=page)
    assert response.status_code == 302
    shown = read(user_client, page)
    assert shown.deepest <= rendering.MAX_RAW_HTML_TAGS + 50
    assert_harmless(shown)


def test_a_comment_full_of_tasks_renders_them_all(
    user_client: Any, csrf: Any, tracker: Any, ticket: Any, monkeypatch: Any
) -> None:
    # What is checked is that every task gets its box, not how fast: the render budget
    # is CPU time, which a garbage collection of a long test process's heap can spend
    # on its own (the budget itself is tested with a fake clock).
    monkeypatch.setattr(rendering, "RENDER_BUDGET", 3600.0)
    page = "/~alice/bugs/1"
    text = "- [ ] a\n" * (16_384 // 8)
    response = csrf.post(user_client, f"{page}/comment", {"text": text}, page=page)
    assert response.status_code == 302
    body = user_client.get(page).get_data(as_text=True)
    assert body.count('type="checkbox"') == 16_384 // 8
