"""docs/security.md, "Text that shows something else": marks only srcore's own markup may
carry are not taken from raw HTML a user writes.

The sanitizer's allow-list keeps a heading's "#" link (class ``anchor``, named "Link to
this section") and the ``hidden-char`` marker of a hidden character in code, because
srcore's renderer makes them. Raw HTML in a ticket could then make a link to another site
that a screen reader announces as this page's anchor, or a made-up ``<U+202E>`` warning.
Checked on the rendered HTML, and in Chromium on a ticket of todo under gunicorn, by the
accessible names the browser gives its links.
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
