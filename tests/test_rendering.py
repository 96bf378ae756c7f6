from __future__ import annotations

import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta, timezone
from html.parser import HTMLParser

import pytest
from flask import Flask, render_template_string
from hypothesis import assume, given
from hypothesis import strategies as st
from markupsafe import Markup

from srcore import rendering
from srcore.highlighting import highlight_lines, reveal_hidden
from srcore.rendering import (
    ICON_NAMES,
    format_date,
    format_datetime,
    icon,
    markdown,
    sanitize_html,
    timeago,
    timeago_tag,
)

NOW = datetime(2026, 11, 21, 14, 3, tzinfo=UTC)


class TagCollector(HTMLParser):
    """Collect every start tag with its attributes, as a browser would see them."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    handle_startendtag = handle_starttag


def tags_of(html: str) -> list[tuple[str, dict[str, str | None]]]:
    parser = TagCollector()
    parser.feed(html)
    parser.close()
    return parser.tags


def hrefs(html: str) -> list[str]:
    return [attrs.get("href") or "" for tag, attrs in tags_of(html) if tag == "a"]


# -- markdown -------------------------------------------------------------------------


def test_markdown_returns_markup() -> None:
    out = markdown("**bold** and *em*")
    assert isinstance(out, Markup)
    assert str(out) == "<p><strong>bold</strong> and <em>em</em></p>\n"


@pytest.mark.parametrize("text", [None, ""])
def test_markdown_of_nothing_is_empty(text: str | None) -> None:
    assert markdown(text) == Markup("")


def test_script_tags_are_removed_with_their_content() -> None:
    out = markdown('Hello <script>alert("x")</script> world\n\n<script>\nalert(1)\n</script>')
    assert "<script" not in out
    assert "alert" not in out
    assert "Hello" in out
    assert "world" in out


def test_javascript_links_lose_their_href() -> None:
    for text in (
        "[click](javascript:alert(1))",
        '<a href="javascript:alert(1)">click</a>',
        '<a href="JaVaScRiPt:alert(1)">click</a>',
        '<a href="  javascript:alert(1)">click</a>',
        '<a href="java&#x09;script:alert(1)">click</a>',
    ):
        out = markdown(text)
        assert "click" in out
        assert all("javascript" not in h.lower() for h in hrefs(out)), text


def test_event_handler_attributes_are_stripped() -> None:
    out = markdown(
        '<a href="https://example.org" onclick="steal()">x</a> '
        '<img src="https://example.org/a.png" onerror="steal()"> '
        '<b onmouseover="steal()">b</b>'
    )
    assert "steal" not in out
    for _tag, attrs in tags_of(out):
        assert not any(name.startswith("on") for name in attrs)


def test_links_get_nofollow_noopener() -> None:
    out = markdown("[site](https://example.org/x) and <mailto:me@example.org>")
    links = [attrs for tag, attrs in tags_of(out) if tag == "a"]
    assert [a["href"] for a in links] == ["https://example.org/x", "mailto:me@example.org"]
    assert all(a["rel"] == "nofollow noopener" for a in links)


def test_only_http_https_mailto_and_relative_links_keep_their_href() -> None:
    out = markdown(
        "[a](http://example.org) [b](ftp://example.org/f) [c](/tickets/1) "
        "[d](data:text/html;base64,PHNjcmlwdD4=) [e](#anchor) [f](vbscript:x)"
    )
    # markdown-it leaves data: and vbscript: links as text; nh3 drops the ftp: href.
    assert hrefs(out) == ["http://example.org", "", "/tickets/1", "#anchor"]


def test_tables_and_strikethrough_are_rendered() -> None:
    out = markdown("| Status | Count |\n|:--|--:|\n| open | 3 |\n\n~~gone~~")
    assert "<table>" in out
    assert "<th" in out
    assert '<td class="align-right">3</td>' in out
    assert '<th class="align-left">Status</th>' in out
    assert "<s>gone</s>" in out


def test_table_alignment_is_a_class_because_the_csp_blocks_style_attributes() -> None:
    out = markdown("| a | b | c | d |\n|:-:|--:|:--|---|\n| 1 | 2 | 3 | 4 |")
    assert "style=" not in out
    cells = [attrs for tag, attrs in tags_of(str(out)) if tag == "td"]
    assert cells == [
        {"class": "align-center"},
        {"class": "align-right"},
        {"class": "align-left"},
        {},
    ]


def test_style_attributes_and_other_classes_are_dropped() -> None:
    out = markdown(
        '<table><tr><td style="text-align:center;background:url(\'x\')" class="btn">x</td>'
        '<td class="align-right">y</td></tr></table><p style="position:fixed">z</p>'
    )
    assert "style=" not in out
    assert "background" not in out
    assert "btn" not in out
    assert '<td class="align-right">y</td>' in out


def test_code_blocks_keep_only_a_language_class() -> None:
    out = markdown('```python\nprint(1)\n```\n\n<code class="btn btn-danger">x</code>')
    assert '<code class="language-python">' in out
    assert "btn" not in out


def test_fenced_code_in_a_known_language_is_highlighted_with_classes() -> None:
    out = markdown('```python\ndef f():\n    return "<b>"\n```')
    assert '<code class="language-python">' in out
    assert '<span class="hl-k">def</span>' in out
    assert '<span class="hl-nf">f</span>' in out
    assert "&lt;b&gt;" in out
    assert "<b>" not in out
    assert "style=" not in out  # the CSP allows no inline style: colours come from classes


def test_fenced_code_in_an_unknown_or_no_language_is_only_escaped() -> None:
    out = markdown("```nosuchlanguage\n<i>x</i>\n```\n\n```\ndef f(): pass\n```")
    assert '<code class="language-nosuchlanguage">&lt;i&gt;x&lt;/i&gt;' in out
    assert "<span" not in out


def test_raw_spans_keep_only_highlighting_classes() -> None:
    out = markdown('<span class="hl-k">a</span><span class="btn flash">b</span>')
    assert tags_of(str(out))[1:] == [("span", {"class": "hl-k"}), ("span", {})]


def test_headings_get_prefixed_ids_and_a_link_to_them() -> None:
    out = markdown("# Getting started\n\n## The `config` file!")
    tags = tags_of(str(out))
    assert ("h1", {"id": "user-content-getting-started"}) in tags
    assert ("h2", {"id": "user-content-the-config-file"}) in tags
    assert hrefs(out) == ["#user-content-getting-started", "#user-content-the-config-file"]


def test_heading_ids_are_unique_in_a_document() -> None:
    out = markdown("# Notes\n# Notes\n# Notes-1\n# Notes\n#\n# !!!")
    ids = [attrs["id"] for tag, attrs in tags_of(str(out)) if tag == "h1"]
    assert len(ids) == len(set(ids)) == 6
    assert ids[:2] == ["user-content-notes", "user-content-notes-1"]
    # Every heading's link points at its own id.
    assert hrefs(out) == [f"#{i}" for i in ids]


def test_raw_html_ids_are_prefixed_so_they_cannot_clobber_the_page() -> None:
    out = markdown('<h2 id="csrf_token">x</h2><h3 id="user-content-ok">y</h3><p id="main">z</p>')
    tags = tags_of(str(out))
    assert ("h2", {"id": "user-content-csrf_token"}) in tags
    assert ("h3", {"id": "user-content-ok"}) in tags
    assert ("p", {}) in tags


def test_task_list_items_get_disabled_checkboxes() -> None:
    out = markdown("- [ ] write tests\n- [x] see them fail\n- [X] fix\n- plain item")
    tags = tags_of(str(out))
    assert tags[0] == ("ul", {"class": "contains-task-list"})
    boxes = [attrs for tag, attrs in tags if tag == "input"]
    assert boxes == [
        {"aria-label": "Task", "disabled": "", "type": "checkbox"},
        {"aria-label": "Task", "checked": "", "disabled": "", "type": "checkbox"},
        {"aria-label": "Task", "checked": "", "disabled": "", "type": "checkbox"},
    ]
    items = [attrs for tag, attrs in tags if tag == "li"]
    assert items == [{"class": "task-list-item"}] * 3 + [{}]
    assert "[ ]" not in out
    assert "[x]" not in out
    assert "write tests" in out


def test_brackets_elsewhere_are_not_tasks() -> None:
    out = markdown("[ ] not in a list\n\n- a [ ] in the middle\n- [y] other letter")
    assert "<input" not in out
    assert "[ ] not in a list" in out


def test_unknown_tags_are_dropped_but_their_text_kept() -> None:
    out = markdown(
        '<iframe src="https://evil.example"></iframe>'
        '<form action="/x"><input name="q" value="v" type="text" form="f">hi</form>'
    )
    assert "<iframe" not in out
    assert "<form" not in out
    assert "hi" in out
    # The one input user text may hold is a read-only checkbox, named and tied to nothing.
    for tag, attrs in tags_of(str(out)):
        if tag == "input":
            assert attrs == {"type": "checkbox", "disabled": "", "aria-label": "Task"}


def test_images_become_links_or_text() -> None:
    """None is embedded: it would tell its host who reads the page, and the CSP allows the
    service's own images only."""
    out = markdown(
        "![screenshot](https://example.org/shot.png) ![plain](http://example.org/a.png) "
        "![inline](data:image/png;base64,AAAA) ![](https://example.org/bare.png)"
    )
    assert "<img" not in out
    assert hrefs(out) == [
        "https://example.org/shot.png",
        "http://example.org/a.png",
        "",
        "https://example.org/bare.png",
    ]
    for text in ("screenshot", "plain", "inline", ">https://example.org/bare.png<"):
        assert text in out


def test_raw_img_tags_are_dropped() -> None:
    out = markdown(
        '<img src="https://example.org/a.png" alt="a"> <img src="/local.png" alt="b"> after'
    )
    assert "<img" not in out
    assert "after" in out


def test_comments_are_stripped() -> None:
    assert "secret" not in markdown("a <!-- secret --> b")


def test_sanitize_html_can_be_used_on_its_own() -> None:
    out = sanitize_html('<p onclick="x">hi <a href="https://e.org">e</a></p><style>p{}</style>')
    assert out == Markup('<p>hi <a href="https://e.org" rel="nofollow noopener">e</a></p>')


class TextCollector(TagCollector):
    """Start tags, plus the text a reader would select and copy."""

    def __init__(self) -> None:
        super().__init__()
        self.text: list[str] = []

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def test_code_lines_are_numbered_by_css_and_highlighted() -> None:
    out = highlight_lines('x = "<b>"\r\n\r\nprint(x)', "python")
    assert out.startswith('<pre class="code"><code><span class="line">')
    assert out.count('<span class="line">') == 3
    assert '<span class="hl-s2">&quot;&lt;b&gt;&quot;</span>' in out or "&lt;b&gt;" in out
    assert '<span class="hl-nb">print</span>' in out
    assert "\r" not in out


def test_code_lines_in_an_unknown_language_are_escaped_only() -> None:
    out = highlight_lines("<script>alert(1)</script>\n", "no-such-language")
    assert out == Markup(
        '<pre class="code"><code><span class="line">&lt;script&gt;alert(1)&lt;/script&gt;\n'
        "</span></code></pre>"
    )


@given(
    st.text(max_size=200),
    st.sampled_from([None, "", "python", "html", "javascript", "markdown", "bogus", "c++"]),
)
def test_code_lines_keep_the_text_and_add_only_spans(text: str, language: str | None) -> None:
    # Bidirectional controls and invisible characters are shown as <U+...> instead (see
    # test_text_spoofing.py); any other text is kept as it is.
    assume(reveal_hidden(text) == Markup.escape(text))
    out = highlight_lines(text, language)
    collector = TextCollector()
    collector.feed(str(out))
    collector.close()
    assert {tag for tag, _attrs in collector.tags} <= {"pre", "code", "span"}
    for _tag, attrs in collector.tags:
        assert set(attrs) <= {"class"}
    lines = text.replace("\r\n", "\n").replace("\r", "\n").removeprefix("\ufeff")
    expected = lines if lines.endswith("\n") else lines + "\n"
    assert "".join(collector.text) == expected
    assert str(out).count('<span class="line">') == expected.count("\n")


def test_markdown_is_built_lazily_and_cached() -> None:
    code = (
        "import sys, srcore.rendering as r; "
        "assert 'markdown_it' not in sys.modules and 'nh3' not in sys.modules; "
        "r.markdown('x'); assert 'markdown_it' in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    assert rendering._parser() is rendering._parser()
    assert rendering._cleaner() is rendering._cleaner()


_DANGEROUS = st.sampled_from(
    [
        "<script>alert(1)</script>",
        "<SCRIPT SRC=//evil.example/x.js></SCRIPT>",
        "<scr<script>ipt>",
        "javascript:alert(1)",
        "[x](javascript:alert(1))",
        "[x](JAVASCRIPT:alert(1))",
        "[x](&#106;avascript:alert(1))",
        "<a href='javascript:alert(1)'>x</a>",
        '<a href="jav&#x09;ascript:alert(1)">x</a>',
        "<img src=x onerror=alert(1)>",
        "<svg onload=alert(1)>",
        "<style>*{}</style>",
        "![x](javascript:alert(1))",
        "<details open ontoggle=alert(1)>",
        "<<",
        "`",
        "|a|\n|-|\n|b|",
        "\n\n",
        "> ",
        "~~",
        "\n```python\n",
        "\n```js\n",
        "\n```\n",
        "\n# ",
        "\n## ",
        "\n- [ ] ",
        "\n- [x] ",
        '<form name="login"><input name="csrf_token"></form>',
        '<h2 id="csrf_token">x</h2>',
        '<p style="position:fixed">x</p>',
        '<span class="hl-k" onmouseover="alert(1)">x</span>',
        '<input type="text" onfocus="alert(1)" autofocus>',
        "<a class=anchor href=javascript:alert(1)>#</a>",
    ]
)

_ALLOWED_ATTRS = {
    tag: set(names)
    | ({"rel"} if tag == "a" else set())
    | ({"loading", "referrerpolicy"} if tag == "img" else set())
    | ({"type", "disabled", "aria-label"} if tag == "input" else set())
    for tag, names in rendering.ALLOWED_ATTRIBUTES.items()
}
_EVENT_HANDLER = re.compile(r"\son[a-z]+\s*=", re.IGNORECASE)


@given(st.lists(st.one_of(st.text(max_size=40), _DANGEROUS), max_size=12).map("".join))
def test_arbitrary_markdown_never_yields_script_or_javascript(text: str) -> None:
    out = markdown(text)
    assert isinstance(out, Markup)
    assert "<script" not in out.lower()
    for tag, attrs in tags_of(str(out)):
        assert tag in rendering.ALLOWED_TAGS
        assert set(attrs) <= _ALLOWED_ATTRS.get(tag, set()), (tag, attrs)
        for name in ("href", "src"):
            value = (attrs.get(name) or "").strip().lower()
            assert not value.startswith(("javascript:", "vbscript:", "data:")), value
        if "id" in attrs:
            assert (attrs["id"] or "").startswith("user-content-"), attrs
        assert "style" not in attrs, (tag, attrs)
    # Text may mention "javascript:" or "onclick=": no attribute name or value may.
    attributes = [
        (name, value or "") for _tag, attrs in tags_of(str(out)) for name, value in attrs.items()
    ]
    assert not any("javascript:" in value.lower() for _name, value in attributes)
    assert not any(_EVENT_HANDLER.search(f" {name}=") for name, _value in attributes)


# -- dates ----------------------------------------------------------------------------


def test_date_and_datetime_formats() -> None:
    moment = datetime(2026, 11, 21, 14, 3, 59, tzinfo=UTC)
    assert format_date(moment) == "2026-11-21"
    assert format_datetime(moment) == "2026-11-21 14:03 UTC"


def test_dates_are_shown_in_utc() -> None:
    berlin = timezone(timedelta(hours=2))
    moment = datetime(2026, 11, 22, 1, 30, tzinfo=berlin)
    assert format_date(moment) == "2026-11-21"
    assert format_datetime(moment) == "2026-11-21 23:30 UTC"


def test_naive_datetimes_are_taken_as_utc() -> None:
    assert format_datetime(datetime(2026, 11, 21, 14, 3)) == "2026-11-21 14:03 UTC"
    assert timeago(datetime(2026, 11, 21, 13, 58), NOW) == "5 minutes ago"


def test_plain_dates_and_none() -> None:
    from datetime import date

    assert format_date(date(2026, 1, 2)) == "2026-01-02"
    assert format_date(None) == ""
    assert format_datetime(None) == ""
    assert timeago(None, NOW) == ""
    assert timeago_tag(None, NOW) == Markup("")


@pytest.mark.parametrize(
    ("delta", "expected"),
    [
        (timedelta(0), "just now"),
        (timedelta(seconds=59), "just now"),
        (timedelta(seconds=-30), "in under a minute"),
        (timedelta(seconds=-1), "in under a minute"),
        (timedelta(seconds=60), "1 minute ago"),
        (timedelta(seconds=119), "1 minute ago"),
        (timedelta(minutes=5), "5 minutes ago"),
        (timedelta(minutes=59, seconds=59), "59 minutes ago"),
        (timedelta(hours=1), "1 hour ago"),
        (timedelta(hours=23), "23 hours ago"),
        (timedelta(days=1), "1 day ago"),
        (timedelta(days=-3), "in 3 days"),
        (timedelta(minutes=-10), "in 10 minutes"),
        (timedelta(days=29), "29 days ago"),
        (timedelta(days=30), "1 month ago"),
        (timedelta(days=95), "3 months ago"),
        (timedelta(days=364), "11 months ago"),
        (timedelta(days=365), "1 year ago"),
        (timedelta(days=800), "2 years ago"),
        (timedelta(days=-800), "in 2 years"),
    ],
)
def test_timeago(delta: timedelta, expected: str) -> None:
    assert timeago(NOW - delta, NOW) == expected


def test_timeago_compares_across_time_zones() -> None:
    tokyo = timezone(timedelta(hours=9))
    assert timeago(datetime(2026, 11, 21, 23, 0, tzinfo=tokyo), NOW) == "3 minutes ago"


def test_timeago_tag_carries_the_exact_time() -> None:
    out = timeago_tag(NOW - timedelta(minutes=5), NOW)
    assert out == Markup(
        '<time datetime="2026-11-21T13:58:00Z" title="2026-11-21 13:58 UTC">5 minutes ago</time>'
    )


def test_timeago_without_now_uses_the_clock() -> None:
    assert timeago(datetime.now(UTC) - timedelta(hours=2)) == "2 hours ago"


# -- icons ----------------------------------------------------------------------------

REQUIRED_ICONS = {
    "plus", "edit", "trash", "check", "x", "alert", "info", "user", "log-in", "log-out",
    "search", "chevron-left", "chevron-right", "external", "lock", "comment", "tag",
}  # fmt: skip


def test_required_icons_exist() -> None:
    assert set(ICON_NAMES) >= REQUIRED_ICONS
    assert list(ICON_NAMES) == sorted(ICON_NAMES)


@pytest.mark.parametrize("name", ICON_NAMES)
def test_every_icon_is_a_decorative_svg_by_default(name: str) -> None:
    out = icon(name)
    assert isinstance(out, Markup)
    [(tag, attrs), *_] = tags_of(str(out))
    assert tag == "svg"
    assert attrs["aria-hidden"] == "true"
    assert attrs["class"] == f"icon icon-{name}"
    assert attrs["stroke"] == "currentColor"
    assert "role" not in attrs
    assert out.endswith("</svg>")


def test_labelled_icon_is_announced_and_escaped() -> None:
    out = icon("trash", label='Delete "<b>"', size=24)
    [(_tag, attrs), *_] = tags_of(str(out))
    assert attrs["role"] == "img"
    assert attrs["aria-label"] == 'Delete "<b>"'
    assert attrs["width"] == attrs["height"] == "24"
    assert "aria-hidden" not in attrs
    assert "<title>Delete &#34;&lt;b&gt;&#34;</title>" in out
    assert "<b>" not in out


def test_unknown_icon_raises() -> None:
    with pytest.raises(ValueError, match="unknown icon 'nope'"):
        icon("nope")


# -- Flask glue -----------------------------------------------------------------------


def test_init_app_registers_filters_and_globals() -> None:
    app = Flask(__name__)
    rendering.init_app(app, clock=lambda: NOW)
    rendering.init_app(app, clock=lambda: NOW)  # idempotent
    moment = NOW - timedelta(days=3)
    with app.app_context():
        out = render_template_string(
            "{{ text|markdown }}|{{ m|date }}|{{ m|datetime }}|{{ m|timeago }}|"
            "{{ m|timeago_tag }}|{{ timeago_tag(m) }}|{{ icon('plus') }}",
            text="*hi*",
            m=moment,
        )
    parts = out.split("|")
    assert parts[0] == "<p><em>hi</em></p>\n"
    assert parts[1:4] == ["2026-11-18", "2026-11-18 14:03 UTC", "3 days ago"]
    assert parts[4] == parts[5]
    assert ">3 days ago</time>" in parts[4]
    assert parts[6].startswith("<svg ")


def test_init_app_keeps_apps_apart() -> None:
    first, second = Flask(__name__), Flask(__name__)
    rendering.init_app(first, clock=lambda: NOW)
    rendering.init_app(second, clock=lambda: NOW + timedelta(days=1))
    template = "{{ m|timeago }}"
    with first.app_context():
        assert render_template_string(template, m=NOW) == "just now"
    with second.app_context():
        assert render_template_string(template, m=NOW) == "1 day ago"
    assert "markdown" not in Flask(__name__).jinja_env.filters


def test_filters_escape_nothing_they_should_not() -> None:
    app = Flask(__name__)
    rendering.init_app(app)
    with app.app_context():
        out = render_template_string("{{ text|markdown }}", text="<b>bold</b> & <i>x</i>")
    assert out == "<p><b>bold</b> &amp; <i>x</i></p>\n"
