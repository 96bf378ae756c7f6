"""User text as an attacker writes it: hostile markdown and code, and what it may cost.

Every time bound here is a hang guard on a subprocess (it fails only when the work does
not end at all in reasonable time); what is asserted is a count or a size.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from markdown_it import MarkdownIt
from markdown_it.rules_core import StateCore
from markdown_it.token import Token

from srcore import highlighting, rendering
from srcore.rendering import markdown

#: Generous: each script below needs a few seconds at most; without its fix, hours.
HANG_GUARD = 120


def _run(code: str) -> str:
    """Run ``code`` in a fresh interpreter, failing if it has not finished by the guard."""
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=HANG_GUARD,
        check=True,
        cwd=Path(__file__).parent,  # srcore as installed, not as the working directory has it
    )
    return done.stdout.strip()


# -- task lists -------------------------------------------------------------------------


class _CountingTokens(list[Token]):
    """A token list that counts how often an item is read by index."""

    reads = 0

    def __getitem__(self, index: Any) -> Any:
        self.reads += 1
        return super().__getitem__(index)


def test_a_long_task_list_is_marked_in_one_pass() -> None:
    """Each task used to look back over every item before it: a paste of tasks took minutes."""
    items = 2000
    text = "- [ ] a\n" * items
    parser = MarkdownIt("commonmark")
    state = StateCore(text, parser, {})
    parser.core.process(state)
    tokens = _CountingTokens(state.tokens)
    state.tokens = tokens

    rendering._task_lists(state)

    assert sum(1 for t in tokens if t.type == "list_item_open" and t.attrGet("class")) == items
    assert tokens[0].attrGet("class") == rendering.TASK_LIST_CLASS
    assert tokens.reads <= 4 * len(tokens)


def test_a_task_list_at_the_paste_size_limit_renders() -> None:
    # Marking the tasks is what is measured here, not the render budget (which this
    # many list items outlast: see test_rendering_cache_budget.py).
    out = _run(
        """
        from srcore import rendering
        rendering.RENDER_BUDGET = 3600.0
        html = rendering.markdown("- [ ] a\\n" * (262144 // 8))
        print(html.count('type="checkbox"'))
        """
    )
    assert out == str(262144 // 8)


@pytest.mark.parametrize(
    ("text", "list_class"),
    [
        ("- [ ] a\n- b\n  - [x] c\n", "contains-task-list"),
        ("1. [ ] a\n2. [x] b\n", None),
        ("- a\n  1. [ ] b\n- [x] c\n", "contains-task-list"),
    ],
)
def test_tasks_mark_their_own_bulleted_list_only(text: str, list_class: str | None) -> None:
    out = str(markdown(text))
    assert out.count('type="checkbox"') == 2
    first_list = out.split(">", 1)[0]
    assert (list_class in first_list) if list_class else ("class" not in first_list)
    assert "<ol>" in out or "<ol" not in out  # an ordered list never gets the task class


# -- highlighting budget ------------------------------------------------------------------


class _FakeClock:
    """``time.thread_time`` that moves ``step`` seconds at every reading."""

    def __init__(self, step: float) -> None:
        self.now = 0.0
        self.step = step
        self.readings = 0

    def thread_time(self) -> float:
        self.readings += 1
        self.now += self.step
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> _FakeClock:
    fake = _FakeClock(step=highlighting.HIGHLIGHT_BUDGET / 100)
    monkeypatch.setattr(highlighting, "time", fake)
    return fake


def test_code_that_runs_out_of_its_budget_is_shown_escaped(clock: _FakeClock) -> None:
    assert highlighting.highlight("x = 1\n", "python") is not None
    long_code = "x = 1\n" * 100
    assert highlighting.highlight(long_code, "python") is None
    lines = highlighting.highlight_lines("<b>\n" * 100, "python")
    assert "&lt;b&gt;" in lines
    assert "hl-" not in lines


def test_a_documents_fences_share_one_budget(clock: _FakeClock) -> None:
    """Many fences, each under the budget, must not add up to many budgets."""
    fence = "```python\n" + "x = 1\n" * 8 + "```\n\n"
    out = str(markdown(fence * 20))
    highlighted = out.count('<code class="language-python"><span')
    assert 1 <= highlighted < 20
    plain = out.count('<code class="language-python">x = 1\n' + "x = 1\n" * 7 + "</code>")
    assert plain == 20 - highlighted  # the rest is still there, escaped


def test_template_languages_check_the_budget_inside_their_sub_lexers() -> None:
    """Such a lexer lexes the whole text twice before its first token comes out."""
    lexer: Any = highlighting._lexer(highlighting.canonical_language("html+php") or "")
    with highlighting.budget(-1.0):
        with pytest.raises(highlighting._OutOfTime):
            list(lexer.language_lexer.get_tokens_unprocessed("<?php echo 1; ?>"))
        with pytest.raises(highlighting._OutOfTime):
            list(lexer.root_lexer.get_tokens_unprocessed("<p>x</p>"))
    assert highlighting.highlight("<?php echo 1; ?>", "html+php") is not None


@pytest.mark.parametrize(
    ("language", "unit"),
    [
        ("c", "\\n"),  # blank lines: each token looks ahead over all of them
        ("autohotkey", "\\n"),
        ("c-objdump", " "),  # a template lexer: nothing comes out until both passes end
    ],
)
def test_hostile_code_at_the_paste_size_limit_is_bounded(language: str, unit: str) -> None:
    out = _run(
        f"""
        from srcore import highlighting
        code = "{unit}" * 262144
        print(highlighting.highlight_lines(code, "{language}").count('class="line"'))
        """
    )
    assert int(out) >= 1


@pytest.mark.parametrize(
    ("language", "unit"),
    [
        ("lilypond", "a"),  # one word token: time in the square of its length
        ("systemd", " "),
    ],
)
def test_a_long_line_is_not_highlighted(language: str, unit: str) -> None:
    longest = "x = 1\n" + "y" * highlighting.MAX_LINE_LENGTH + "\n"
    assert highlighting.highlight(longest, "python") is not None
    assert highlighting.highlight(longest.replace("y", "yy", 1), "python") is None
    assert highlighting.highlight(unit * (highlighting.MAX_LINE_LENGTH + 1), language) is None
    out = _run(
        f"""
        from srcore import highlighting
        print(highlighting.highlight("{unit}" * 262144, "{language}") is None)
        """
    )
    assert out == "True"


def test_languages_whose_lexer_has_no_bound_are_not_offered() -> None:
    assert "easytrieve" in highlighting.UNBOUNDED_LANGUAGES
    for name in highlighting.UNBOUNDED_LANGUAGES:
        assert highlighting.canonical_language(name) is None
        assert name not in dict(highlighting.language_choices())
    assert "```easytrieve" not in str(markdown("```easytrieve\n\t\n```"))
    # A few thousand tabs, far below every limit, took Easytrieve's lexer minutes.
    out = _run(
        """
        from srcore import highlighting
        print(highlighting.highlight_lines("\\t" * 5000, "easytrieve").count("hl-"))
        """
    )
    assert out == "0"
    out = _run(
        """
        from srcore import highlighting
        print(highlighting.highlight_lines("'" + "\\\\" * 60, "urbiscript").count("hl-"))
        """
    )
    assert out == "0"


def test_markdown_of_many_hostile_fences_is_bounded() -> None:
    out = _run(
        """
        from srcore.rendering import markdown
        fence = "```c\\n" + "\\n" * 32000 + "x\\n```\\n"
        print(markdown(fence * 8).count("<pre>"))
        """
    )
    assert out == "8"


# -- raw HTML -------------------------------------------------------------------------------


def _depth(html: str) -> int:
    """How deep elements nest in ``html``, as a browser's parser builds them."""
    from html.parser import HTMLParser

    class Depth(HTMLParser):
        def __init__(self) -> None:
            super().__init__()
            self.open: list[str] = []
            self.deepest = 0

        def handle_starttag(self, tag: str, attrs: Any) -> None:
            if tag not in {"br", "hr", "img", "input"}:
                self.open.append(tag)
                self.deepest = max(self.deepest, len(self.open))

        def handle_endtag(self, tag: str) -> None:
            if tag in self.open:
                while self.open.pop() != tag:
                    pass

    parser = Depth()
    parser.feed(html)
    return parser.deepest


@pytest.mark.parametrize(
    "unit", ["<ul><li>", "<details><summary>", "<blockquote>", "x <span><div></span> "]
)
def test_raw_html_nests_no_deeper_than_its_tag_limit(unit: str) -> None:
    """Sanitizing costs time in the square of the depth: 40,000 ``<ul><li>`` took seconds."""
    limit = rendering.MAX_RAW_HTML_TAGS
    out = str(markdown(unit * (limit * 4)))
    assert _depth(out) <= limit + 2
    assert out.count("&lt;") >= limit  # the rest is shown, as text


def test_raw_html_within_the_limit_is_kept() -> None:
    out = str(markdown("<details><summary>More</summary>\n\n<kbd>Ctrl</kbd> <b>bold</b>\n"))
    assert "<details><summary>More</summary>" in out
    assert "<kbd>Ctrl</kbd> <b>bold</b>" in out
    assert "&lt;" not in out


# -- deep nesting -----------------------------------------------------------------------------


@pytest.mark.parametrize("depth", [10, 12, 40])
def test_text_in_lists_nested_past_the_limit_is_kept(depth: int) -> None:
    """A tenth level of list used to hide itself and the whole rest of the document."""
    text = "".join("  " * level + f"- item{level}\n" for level in range(depth))
    out = str(markdown(text + "\nafter the list\n"))
    assert all(f"item{level}" in out for level in range(depth))
    assert "<p>after the list</p>" in out
    assert _depth(out) <= rendering.MAX_BLOCK_NESTING + 2


@pytest.mark.parametrize("depth", [20, 21, 300])
def test_text_in_quotes_nested_past_the_limit_is_kept(depth: int) -> None:
    out = str(markdown("> " * depth + "deep\n\nafter\n"))
    assert "deep" in out
    assert "<p>after</p>" in out
    assert out.count("<blockquote>") == min(depth, rendering.MAX_BLOCK_NESTING)


def test_quotes_past_the_limit_with_lazy_lines_keep_every_line() -> None:
    text = "".join(">" * (n % 24) + f" line{n}\n" for n in range(200))
    out = str(markdown(text))
    assert all(f"line{n}" in out for n in range(200))
    assert _depth(out) <= rendering.MAX_BLOCK_NESTING + 2


def test_deep_quotes_at_the_paste_size_limit_are_bounded() -> None:
    out = _run(
        """
        from srcore.rendering import markdown
        text = "".join(">" * (n % 40) + " a\\n" for n in range(262144 // 22))
        print(markdown(text).count("a"))
        """
    )
    assert int(out) >= 262144 // 22


# -- summaries --------------------------------------------------------------------------------


def test_a_summary_leaves_out_the_heading_links() -> None:
    assert rendering.markdown_summary("# Overview\n\nThe tracker for *X*.") == (
        "Overview The tracker for X."
    )


def test_a_summary_highlights_nothing_and_reads_only_the_start(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A list of trackers summarises many texts: each used to cost a full rendering."""
    read: list[int] = []
    monkeypatch.setattr(highlighting, "highlight", lambda *args: pytest.fail("highlighted"))
    parser = rendering._parser(summary=True)
    render = parser.render

    def counting_render(src: str, env: Any = None) -> str:
        read.append(len(src))
        return render(src, env)

    monkeypatch.setattr(parser, "render", counting_render)
    text = "Bugs of the parser.\n\n```c\n" + "\n" * 16_000 + "int x;\n```\n"
    assert rendering.markdown_summary(text) == "Bugs of the parser."
    assert read == [rendering.SUMMARY_SOURCE_LENGTH]
    assert rendering.markdown_summary(None) == ""


# -- links ------------------------------------------------------------------------------------


def test_a_link_cannot_be_named_other_than_its_text() -> None:
    out = str(markdown('<a href="https://x.invalid/" aria-label="Your bank">the docs</a>'))
    assert "aria-label" not in out
    assert "Your bank" not in out
    heading = str(markdown("# Intro"))
    assert f'aria-label="{rendering.ANCHOR_LABEL}"' in heading


@pytest.mark.parametrize(
    ("text", "href"),
    [
        ("[a](https://x.invalid/p?q=1#f)", "https://x.invalid/p?q=1#f"),
        ("[a](mailto:someone@x.invalid)", "mailto:someone@x.invalid"),
        ("<https://x.invalid/auto>", "https://x.invalid/auto"),
        ("<someone@x.invalid>", "mailto:someone@x.invalid"),
        ("[a](/relative/path)", "/relative/path"),
        ("[a](#section)", "#section"),
        ("[a][r]\n\n[r]: https://x.invalid/ref", "https://x.invalid/ref"),
    ],
)
def test_kept_links_are_nofollow_noopener_and_open_in_place(text: str, href: str) -> None:
    out = str(markdown(text))
    assert f'href="{href}"' in out
    assert 'rel="nofollow noopener"' in out
    assert "target=" not in out


@pytest.mark.parametrize(
    "text",
    [
        "[a](javascript:alert(1))",
        "[a](JAVASCRIPT:alert(1))",
        "[a](&#x6A;avascript:alert(1))",
        "[a](vbscript:x)",
        "[a](data:text/html,x)",
        "[a](file:///etc/passwd)",
        "[a][r]\n\n[r]: javascript:alert(1)",
        "<a href=' javascript:alert(1)'>a</a>",
        "<a href='java&#0;script:alert(1)'>a</a>",
        "<a href='&#14;javascript:alert(1)'>a</a>",
        "<a href='javascript&colon;alert(1)'>a</a>",
        "![a](data:image/svg+xml,x)",
    ],
)
def test_other_schemes_leave_no_href(text: str) -> None:
    out = str(markdown(text)).lower()
    for attribute in ('href="', "src="):
        for scheme in ("javascript", "vbscript", "data", "file"):
            assert f"{attribute}{scheme}" not in out


def test_every_template_language_highlights_nested_strings() -> None:
    """Ruby's lexer calls itself again with ``context=`` for what a string interpolates."""
    from pygments.lexer import DelegatingLexer

    sample = '<% puts "a #{b} c" %>\n%%{ x = "#{y}"; }%%\n<?php echo "$a {$b}"; ?>\n{{ "x" }}\n'
    templates = [
        alias
        for alias, _name in highlighting.language_choices()
        if isinstance(highlighting._lexer(alias), DelegatingLexer)
    ]
    assert "ragel-ruby" in templates
    for alias in templates:
        assert highlighting.highlight(sample, alias) is not None, alias
