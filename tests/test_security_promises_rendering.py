"""docs/security.md, "Text that shows something else": marks only srcore's own markup may
carry are not taken from raw HTML a user writes.

The sanitizer's allow-list keeps a heading's "#" link (class ``anchor``, named "Link to
this section") and the ``hidden-char`` marker of a hidden character in code, because
srcore's renderer makes them. Raw HTML in a ticket could then make a link to another site
that a screen reader announces as this page's anchor, or a made-up ``<U+202E>`` warning.
Checked on the rendered HTML, and in Chromium on a ticket of todo under gunicorn, by the
accessible names the browser gives its links.

And the promise under "Security headers" as a browser keeps it: a ticket's title, text and
comment full of markup meant to run script, load from another host, refresh or re-base
the page, or cover it, run and load nothing in Chromium, and the policy never even has to
block an attempt (test_hostile_markup_runs_and_loads_nothing_in_a_browser).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from test_security_promises_outsider import Todo
from test_security_promises_outsider import todo as todo  # the module's running todo

from srcore.rendering import ANCHOR_LABEL, markdown
from srcore.testing import launch_chromium

#: A ticket's text: a real heading, and raw HTML dressed as srcore's own marks.
DRESSED = (
    "# Steps\n\n"
    f'<a href="https://evil.invalid/" class="anchor" aria-label="{ANCHOR_LABEL}">the docs</a>\n\n'
    '<span class="hidden-char" title="RIGHT-TO-LEFT OVERRIDE">&lt;U+202E&gt;</span> fake\n\n'
    "`run\u202eme`\n"
)


def test_raw_html_does_not_carry_srcores_own_marks() -> None:
    html = str(markdown(DRESSED))
    # The heading's own link keeps its name and class; the user's link has neither.
    assert html.count(f'aria-label="{ANCHOR_LABEL}"') == 1, html
    assert html.count('class="anchor"') == 1, html
    assert 'href="#user-content-steps" aria-label' in html, html
    assert '<a href="https://evil.invalid/" rel="nofollow noopener">the docs</a>' in html, html
    # The only marker is the one srcore put on the real override, inside the code.
    assert html.count('class="hidden-char"') == 1, html
    assert '<code>run<span class="hidden-char"' in html, html


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with launch_chromium() as browser:
        yield browser


@pytest.mark.browser
def test_a_screen_reader_hears_the_anchor_name_only_on_the_anchor(todo: Todo, browser: Any) -> None:
    made = todo.submit(
        "/~alice/secret/new", {"title": "dressed", "description": DRESSED}, who="alice"
    )
    assert made.status == 302, made
    path = made.headers["location"]
    context = browser.new_context()
    try:
        context.set_default_timeout(15_000)
        name, _, value = todo.cookies["alice"].partition("=")
        context.add_cookies([{"name": name, "value": value, "url": todo.origin}])
        page = context.new_page()
        page.goto(todo.origin + path)
        named = page.get_by_role("link", name=ANCHOR_LABEL, exact=True)
        hrefs = [named.nth(i).get_attribute("href") for i in range(named.count())]
        assert hrefs == ["#user-content-steps"], hrefs
        # The user's link is announced by its own text, as it reads.
        assert page.get_by_role("link", name="the docs", exact=True).count() == 1
    finally:
        context.close()


#: Markup meant to run script or reach another host, as a ticket's text and comment.
HOSTILE = "\n\n".join(
    [
        "<script>window.__ran = 'script'</script>",
        "<img src=x onerror=\"window.__ran = 'img'\">",
        "![x](https://evil.invalid/track.png)",
        "[link](javascript:window.__ran='link')",
        "<a href=\"jav&#x09;ascript:window.__ran='entity'\">entity</a>",
        "<svg><script>window.__ran = 'svg'</script></svg>",
        "<details open ontoggle=\"window.__ran = 'toggle'\">x</details>",
        '<iframe src="https://evil.invalid/"></iframe>',
        "<style>body { background: url(https://evil.invalid/x) }</style>",
        '<form action="https://evil.invalid/"><button>send</button></form>',
        "<math><mtext><table><mglyph><style><img src=x onerror=\"window.__ran='mxss'\">",
        '<base href="https://evil.invalid/">',
        '<meta http-equiv="refresh" content="0; url=https://evil.invalid/">',
        '<a href="https://example.org" style="position:fixed;inset:0">cover</a>',
    ]
)

#: Records what the page would load from elsewhere or run, before its own content runs.
WATCH = """
window.__violations = [];
document.addEventListener("securitypolicyviolation", (e) => {
  window.__violations.push(e.violatedDirective + " " + e.blockedURI);
});
"""


@pytest.mark.browser
def test_hostile_markup_runs_and_loads_nothing_in_a_browser(todo: Todo, browser: Any) -> None:
    made = todo.submit(
        "/~alice/secret/new",
        {"title": "<img src=x onerror=\"window.__ran='title'\">", "description": HOSTILE},
        who="alice",
    )
    assert made.status == 302, made
    path = made.headers["location"]
    commented = todo.submit(path + "/comment", {"text": HOSTILE}, who="alice")
    assert commented.status == 302, commented
    context = browser.new_context()
    try:
        context.set_default_timeout(15_000)
        name, _, value = todo.cookies["alice"].partition("=")
        context.add_cookies([{"name": name, "value": value, "url": todo.origin}])
        page = context.new_page()
        page.add_init_script(WATCH)
        requested: list[str] = []
        dialogs: list[str] = []
        page.on("request", lambda r: requested.append(r.url))
        page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
        page.goto(todo.origin + path)
        page.wait_for_load_state("load")
        assert page.url == todo.origin + path  # no refresh or <base> took it elsewhere
        assert page.evaluate("window.__ran") is None
        assert dialogs == []
        # Not even blocked attempts: whatever the sanitizer kept, the policy never had to stop.
        assert page.evaluate("window.__violations") == []
        assert [url for url in requested if not url.startswith(todo.origin)] == []
        # Nothing is drawn over the page: its own "Comment" button is what a click there hits.
        button = page.get_by_role("button", name="Comment")
        button.scroll_into_view_if_needed()
        box = button.bounding_box()
        assert box is not None
        hit = page.evaluate(
            "([x, y]) => document.elementFromPoint(x, y).closest('button')?.textContent",
            [box["x"] + box["width"] / 2, box["y"] + box["height"] / 2],
        )
        assert hit is not None and "Comment" in hit
    finally:
        context.close()
