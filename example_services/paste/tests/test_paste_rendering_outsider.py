"""Hostile pastes in a real browser: headless Chromium against gunicorn on 127.0.0.1.

An attacker's paste (markdown, code, a title) must run no script in a reader's browser.
The sanitizer is the defence; the content security policy is the second one, so a
policy violation counts as a failure too: it means something got past the first.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from paste_site import served_site

from srcore.db import UserType
from srcore.testing import create_user, launch_chromium, run_service

pytestmark = pytest.mark.browser

#: Each line is one attempt; every script would call ``pwned()``.
ATTACKS = [
    "[a](javascript:pwned())",
    "[b](JaVaScRiPt:pwned())",
    "[c](&#106;avascript:pwned())",
    "[d](java&#x09;script:pwned())",
    "[e](<javascript:pwned()>)",
    "[f](vbscript:pwned())",
    "[g](data:text/html;base64,PHNjcmlwdD5wd25lZCgpPC9zY3JpcHQ+)",
    "<javascript:pwned()>",
    "[ref]\n\n[ref]: javascript:pwned()",
    "![img](javascript:pwned())",
    '![img](/a.png "t\\" onerror=pwned() x=\\"")',
    '<a href="java\tscript:pwned()">h</a>',
    '<a href="&#x6A;avascript:pwned()">i</a>',
    "<a href='jav&#x0A;ascript:pwned()'>j</a>",
    "<script>pwned()</script>",
    "<img src=x onerror=pwned()>",
    "<svg><script>pwned()</script></svg>",
    "<svg onload=pwned()>",
    '<math><mi xlink:href="javascript:pwned()">m</mi></math>',
    "<details open ontoggle=pwned()><summary>s</summary>d</details>",
    "<input autofocus onfocus=pwned()>",
    "<button formaction=javascript:pwned()>b</button>",
    '<form action="javascript:pwned()"><input type=submit></form>',
    "<iframe srcdoc='<script>parent.pwned()</script>'></iframe>",
    "<object data='javascript:pwned()'></object>",
    "<embed src='javascript:pwned()'>",
    "<meta http-equiv=refresh content='0;url=javascript:pwned()'>",
    "<base href='javascript:pwned()//'>",
    "<style>@import 'javascript:pwned()';</style>",
    '<p style="background:url(javascript:pwned())">st</p>',
    '<img src="/a.png" srcset="javascript:pwned() 1x">',
    '<noscript><p title="</noscript><img src=x onerror=pwned()>"></noscript>',
    '<span class="hl-k" onmouseover="pwned()">hover</span>',
    '<a class="anchor" href="javascript:pwned()">#</a>',
    '```" onmouseover=pwned() x="\ncode\n```',
    '```js"><img src=x onerror=pwned()>\ncode\n```',
    "```<script>pwned()</script>\ncode\n```",
    "# <img src=x onerror=pwned()> heading",
    "| <img src=x onerror=pwned()> | t |\n|-|-|\n| [x](javascript:pwned()) | u |",
    "- [ ] <img src=x onerror=pwned()>",
    "<table><tr><td background=javascript:pwned()>td</td></tr></table>",
    '<a href="https://x.invalid/" target=_blank rel=opener>opener</a>',
]

MARKDOWN = "\n\n".join(ATTACKS) + "\n\n[ok](https://x.invalid/page) [mail](mailto:a@x.invalid)\n"

TITLE = '<img src=x onerror=pwned()>"><script>pwned()</script>'

CODE = "</code></pre><script>pwned()</script><img src=x onerror=pwned()>\n"

#: Records script runs, dialogs and policy violations before the page's own content runs.
WATCH = """
window.__pwned = 0;
window.pwned = () => { window.__pwned += 1; };
window.__violations = [];
document.addEventListener("securitypolicyviolation", (e) => {
  window.__violations.push(e.violatedDirective + " " + e.blockedURI);
});
"""


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    from paste import logic
    from paste.models import Format, Paste

    config, app, port = served_site(tmp_path_factory.mktemp("paste-hostile"))
    mallory = create_user(app, "mallory", user_type=UserType.active)
    ids = {name: logic.new_short_id() for name in ("markdown", "html", "plain")}
    with app.extensions["srcore"].db.transaction() as session:
        session.add(
            Paste(
                owner_id=mallory.id,
                short_id=ids["markdown"],
                title=TITLE,
                text=MARKDOWN,
                format=Format.markdown,
            )
        )
        for kind, language in (("html", "html"), ("plain", None)):
            session.add(
                Paste(
                    owner_id=mallory.id,
                    short_id=ids[kind],
                    title=TITLE,
                    text=CODE,
                    language=language,
                )
            )
    app.extensions["srcore"].db.dispose()
    with run_service("paste", config, port=port) as url:
        yield {"url": url, **ids}


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with launch_chromium() as browser:
        yield browser


def visit(browser: Any, url: str) -> tuple[Any, list[str]]:
    context = browser.new_context()
    context.add_init_script(WATCH)
    page = context.new_page()
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    response = page.goto(url)
    assert response is not None
    assert response.status == 200
    return page, dialogs


def assert_nothing_ran(page: Any, dialogs: list[str], *, links: bool) -> None:
    # Hover and focus everything that could carry a handler, then look.
    page.eval_on_selector_all(
        "#paste *",
        "els => els.forEach(e => ['mouseover', 'focus', 'toggle', 'load', 'error']"
        ".forEach(type => e.dispatchEvent(new Event(type))))",
    )
    page.wait_for_timeout(200)
    assert dialogs == []
    assert page.evaluate("window.__pwned") == 0
    assert page.evaluate("window.__violations") == []
    handlers = page.eval_on_selector_all(
        "#paste *, h1, title",
        "els => els.flatMap(e => [...e.attributes].map(a => a.name))"
        ".filter(n => n.startsWith('on') || n === 'style' || n === 'srcset'"
        " || n === 'formaction' || n === 'target' || n === 'background')",
    )
    assert handlers == []
    urls = page.eval_on_selector_all(
        "#paste [href], #paste [src], #paste [action], #paste [data]",
        "els => els.map(e => e.href || e.src || e.action || e.data || '')",
    )
    assert bool(urls) == links
    for url in urls:
        assert url.split(":", 1)[0] in {"http", "https", "mailto"}, url
    assert page.locator("#paste :is(script, iframe, object, embed, form, svg, math)").count() == 0


def test_a_hostile_markdown_paste_runs_nothing(browser: Any, site: dict[str, Any]) -> None:
    page, dialogs = visit(browser, f"{site['url']}/p/{site['markdown']}")
    assert_nothing_ran(page, dialogs, links=True)
    # The title is text, wherever it is shown.
    assert page.locator("h1").first.inner_text() == TITLE
    assert TITLE in page.title()
    # Links go out with rel="nofollow noopener" and never ask for a new window's opener.
    for link in page.locator(".markdown a[href]").all():
        assert link.get_attribute("rel") == "nofollow noopener"
    assert page.locator(".markdown a[href='mailto:a@x.invalid']").count() == 1
    page.context.close()


@pytest.mark.parametrize("kind", ["html", "plain"])
def test_a_hostile_code_paste_runs_nothing(browser: Any, site: dict[str, Any], kind: str) -> None:
    page, dialogs = visit(browser, f"{site['url']}/p/{site[kind]}")
    assert_nothing_ran(page, dialogs, links=False)
    assert page.locator(".code").inner_text().rstrip("\n") == CODE.rstrip("\n")
    page.context.close()
