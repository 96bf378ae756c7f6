"""Rendered user text is kept per process: a page shown again does not render it again.

Renders are counted by wrapping the functions that do them, never timed.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from flask import Flask, render_template_string
from hypothesis import given, settings
from hypothesis import strategies as st
from markupsafe import Markup

from srcore import highlighting, rendering
from srcore.render_cache import RenderCache, cache_key
from srcore.testing import write_config

#: A hang guard for the threads below; nothing is timed.
HANG_GUARD = 30.0


class Counted:
    """A function wrapped to count its calls."""

    def __init__(self, function: Callable[..., Any]) -> None:
        self.function = function
        self.calls = 0

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        return self.function(*args, **kwargs)


@pytest.fixture
def app() -> Flask:
    app = Flask(__name__)
    rendering.init_app(app)
    return app


@pytest.fixture
def renders(monkeypatch: pytest.MonkeyPatch) -> dict[str, Counted]:
    counted = {
        "markdown": Counted(rendering._render_markdown),
        "summary": Counted(rendering._summarize),
        "code": Counted(highlighting.highlight_lines),
    }
    monkeypatch.setattr(rendering, "_render_markdown", counted["markdown"])
    monkeypatch.setattr(rendering, "_summarize", counted["summary"])
    monkeypatch.setattr(highlighting, "highlight_lines", counted["code"])
    return counted


def show(app: Flask, template: str, **context: Any) -> str:
    with app.app_context():
        return render_template_string(template, **context)


def test_a_text_shown_again_is_not_rendered_again(app: Flask, renders: dict[str, Counted]) -> None:
    text = "# Title\n\n- [x] done\n\n```python\nx = 1\n```\n"
    first = show(app, "{{ text|markdown }}", text=text)
    second = show(app, "{{ text|markdown }}", text=text)
    assert renders["markdown"].calls == 1
    assert first == second == str(rendering.markdown(text))
    stats = app.extensions["srcore.render_cache"].stats()
    assert (stats.hits, stats.misses, stats.entries) == (1, 1, 1)


def test_code_and_summaries_are_kept_too(app: Flask, renders: dict[str, Counted]) -> None:
    code = "def f():\n    return 1\n"
    pages = [show(app, "{{ code|code('python') }}", code=code) for _ in range(3)]
    summaries = [show(app, "{{ text|markdown_summary }}", text="**Hello** world") for _ in range(3)]
    assert (renders["code"].calls, renders["summary"].calls) == (1, 1)
    assert pages[0] == pages[2] == str(highlighting.highlight_lines(code, "python"))
    assert 'class="hl-k"' in pages[0]
    assert summaries == ["Hello world"] * 3


def test_an_edited_text_shows_its_new_rendering(app: Flask, renders: dict[str, Counted]) -> None:
    before = show(app, "{{ text|markdown }}", text="Version *one*")
    after = show(app, "{{ text|markdown }}", text="Version *two*")
    assert "<em>one</em>" in before
    assert "<em>two</em>" in after and "one" not in after
    assert show(app, "{{ text|markdown }}", text="Version *one*") == before
    assert renders["markdown"].calls == 2


def test_what_shapes_the_output_is_part_of_the_key(
    app: Flask, renders: dict[str, Counted], monkeypatch: pytest.MonkeyPatch
) -> None:
    code = "x = 1\n"
    python = show(app, "{{ code|code('python') }}", code=code)
    assert show(app, "{{ code|code('Python') }}", code=code) == python  # the same lexer
    plain = show(app, "{{ code|code(none) }}", code=code)
    assert plain != python and "hl-" not in plain
    assert renders["code"].calls == 2
    # A markdown document and a code block of the same text are different renderings.
    assert show(app, "{{ code|markdown }}", code=code) == "<p>x = 1</p>\n"
    # A limit of the renderer changed (as a new version would): rendered afresh.
    text = "<b>a</b><b>b</b>"
    show(app, "{{ text|markdown }}", text=text)
    monkeypatch.setattr(rendering, "MAX_RAW_HTML_TAGS", 1)
    assert "&lt;b&gt;b" in show(app, "{{ text|markdown }}", text=text)
    assert renders["markdown"].calls == 3


def test_a_summary_from_the_cache_is_still_escaped_by_the_template(app: Flask) -> None:
    """A summary is plain text, which may read like a tag once its markup is gone."""
    text = "&lt;script&gt;alert(1)&lt;/script&gt;"
    pages = [show(app, "{{ text|markdown_summary }}", text=text) for _ in range(2)]
    assert pages == ["&lt;script&gt;alert(1)&lt;/script&gt;"] * 2
    summary = rendering.markdown_summary(text, cache=app.extensions["srcore.render_cache"])
    assert not isinstance(summary, Markup)


def test_a_full_cache_lets_the_least_recently_shown_go() -> None:
    cache = RenderCache(max_size=4000)
    pages = {name: Markup(name * 300) for name in "abcdefgh"}
    rendered: list[str] = []

    def show_page(name: str) -> Markup:
        def render() -> Markup:
            rendered.append(name)
            return pages[name]

        return cache.render("test", (), name, render)

    for name in "abc":
        show_page(name)
    show_page("a")  # a is now the most recently shown, b the least
    for name in "defgh":
        show_page(name)
    stats = cache.stats()
    assert stats.size <= stats.max_size
    assert stats.entries < len(pages)
    rendered.clear()
    show_page("h")
    assert rendered == []  # the newest is kept
    show_page("b")
    assert rendered == ["b"]  # the least recently shown went first


def test_an_entry_larger_than_a_quarter_of_the_cache_is_not_kept() -> None:
    cache = RenderCache(max_size=10_000)
    cache.render("test", (), "small", lambda: Markup("s"))
    calls = Counted(lambda: Markup("x" * 3000))
    for _ in range(2):
        assert cache.render("test", (), "large", calls) == "x" * 3000
    assert calls.calls == 2
    assert cache.stats().entries == 1  # the small one is still there


def test_a_cache_of_size_zero_keeps_nothing() -> None:
    cache = RenderCache(max_size=0)
    calls = Counted(lambda: Markup("<p>a</p>"))
    for _ in range(3):
        cache.render("test", (), "a", calls)
    assert calls.calls == 3
    assert cache.stats().entries == 0
    with pytest.raises(ValueError, match="0 or more bytes"):
        RenderCache(max_size=-1)


def test_a_failed_render_leaves_nothing_behind() -> None:
    cache = RenderCache()

    def fail() -> Markup:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        cache.render("test", (), "a", fail)
    assert cache.render("test", (), "a", lambda: Markup("ok")) == "ok"


def test_the_key_separates_kind_options_and_text() -> None:
    assert cache_key("markdown", (1,), "a") != cache_key("code", (1,), "a")
    assert cache_key("code", ("python",), "a") != cache_key("code", ("c",), "a")
    assert cache_key("code", ("a",), "b") != cache_key("code", ("ab",), "")
    assert cache_key("markdown", (), "\udc80") != cache_key("markdown", (), "?")


class _CountingEvent(threading.Event):
    """An event that counts the threads waiting on it, for the test to wait on."""

    waiting = 0
    changed = threading.Condition()

    def wait(self, timeout: float | None = None) -> bool:
        with _CountingEvent.changed:
            _CountingEvent.waiting += 1
            _CountingEvent.changed.notify_all()
        return super().wait(timeout)


def test_threads_missing_the_same_text_at_once_render_it_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from srcore import render_cache

    monkeypatch.setattr(render_cache, "Event", _CountingEvent)
    monkeypatch.setattr(_CountingEvent, "waiting", 0)
    cache = RenderCache()
    release = threading.Event()
    started = threading.Event()
    calls = 0

    def slow_render() -> Markup:
        nonlocal calls
        calls += 1
        started.set()
        assert release.wait(HANG_GUARD)
        return Markup("<p>done</p>")

    results: list[str] = []

    def view() -> None:
        results.append(cache.render("test", (), "same text", slow_render))

    first = threading.Thread(target=view)
    first.start()
    assert started.wait(HANG_GUARD)
    others = [threading.Thread(target=view) for _ in range(5)]
    for thread in others:
        thread.start()
    with _CountingEvent.changed:
        assert _CountingEvent.changed.wait_for(lambda: _CountingEvent.waiting == 5, HANG_GUARD)
    release.set()
    for thread in [first, *others]:
        thread.join(HANG_GUARD)
    assert results == ["<p>done</p>"] * 6
    assert calls == 1
    assert cache.stats().misses == 1


def test_a_services_cache_has_the_configured_size(tmp_path: Path) -> None:
    import sample_service

    def build(extra: str) -> Any:
        path = write_config(
            tmp_path / "config.ini",
            service_id="sample",
            database_url=f"sqlite:///{tmp_path / 'sample.db'}",
            extra=extra,
        )
        return sample_service.create_app(config=path)

    assert build("").extensions["srcore.render_cache"].max_size == 32 * 1024 * 1024
    assert build("render-cache-size = 0\n").extensions["srcore.render_cache"].max_size == 0


# -- the same output with and without the cache ----------------------------------------------

_HOSTILE = [
    "<script>alert(1)</script>",
    "<img src=x onerror=alert(1)>",
    '<a href="javascript:alert(1)">x</a>',
    "[x](javascript:alert(1))",
    "![x](https://tracker.invalid/p.gif)",
    '<span class="hl-k" id="csrf_token" style="color:red">s</span>',
    "<details open><summary>s</summary>",
    "\n```python\nx = '<b>'\n```\n",
    "\n```\n<b>\n",
    "\n- [ ] a\n- [x] b\n",
    "\n# heading\n",
    "\n| a | b |\n|:-:|--:|\n| <i>c</i> | d |\n",
    "> " * 5,
    "`code`",
    "**",
    "&lt;script&gt;",
    "\x00",
    "\u202e",
    "\r\n",
    " ",
    "a",
]


@settings(max_examples=150, deadline=None)
@given(st.lists(st.sampled_from(_HOSTILE) | st.text(max_size=5), max_size=12))
def test_hostile_markdown_renders_the_same_from_the_cache(parts: list[str]) -> None:
    text = "".join(parts)
    cache = RenderCache()
    bare = rendering.markdown(text)
    assert rendering.markdown(text, cache=cache) == bare  # rendered
    assert rendering.markdown(text, cache=cache) == bare  # read back
    assert type(rendering.markdown(text, cache=cache)) is Markup
    summary = rendering.markdown_summary(text)
    assert rendering.markdown_summary(text, cache=cache) == summary
    assert rendering.markdown_summary(text, cache=cache) == summary
    if text:
        assert cache.stats().hits == 3
