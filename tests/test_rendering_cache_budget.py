"""A markdown document's first render is bounded too: past its budget, it is plain text.

The clock is a fake one that moves at each reading, so what is asserted is the outcome
of running out, never a duration.
"""

from __future__ import annotations

import gc
from html.parser import HTMLParser

import pytest
from markupsafe import Markup

from srcore import highlighting, rendering
from srcore.render_cache import RenderCache
from tests.test_rendering_outsider import _FakeClock


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> _FakeClock:
    fake = _FakeClock(step=rendering.RENDER_BUDGET / 50)
    monkeypatch.setattr(highlighting, "time", fake)
    return fake


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)


def tags(html: str) -> list[str]:
    parser = _Tags()
    parser.feed(html)
    return parser.tags


HOSTILE_LINE = "- [ ] <script>alert(1)</script> <img src=x onerror=alert(1)> [a](javascript:x)\n"


def test_a_document_that_runs_out_of_its_budget_is_plain_text(clock: _FakeClock) -> None:
    text = HOSTILE_LINE * 3000
    html = rendering.markdown(text)
    assert html.startswith(f'<p class="muted">{rendering.PLAIN_TEXT_NOTE}</p><pre>')
    assert tags(html) == ["p", "pre"]  # nothing of the text is markup
    assert str(Markup.escape(text)) in html  # all of it is there, escaped
    assert clock.readings < 200  # it stopped soon after the budget ran out


def test_one_long_paragraph_is_stopped_inside_it(clock: _FakeClock) -> None:
    """A paragraph is one block: checking between blocks alone would parse all of it."""
    text = "*a* _b_ `c` [d](https://e.invalid) " * 5000
    assert "\n" not in text
    assert rendering.PLAIN_TEXT_NOTE in rendering.markdown(text)


def test_a_short_document_renders_within_the_budget(clock: _FakeClock) -> None:
    html = rendering.markdown("# Title\n\n- [x] *done*\n")
    assert rendering.PLAIN_TEXT_NOTE not in html
    assert "<em>done</em>" in html


def test_a_document_longer_than_the_limit_is_not_parsed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rendering, "MAX_MARKDOWN_LENGTH", 100)

    def no_parser(**_options: object) -> None:
        raise AssertionError("parsed")

    monkeypatch.setattr(rendering, "_parser", no_parser)
    text = "<b>x</b> " * 20
    html = rendering.markdown(text)
    assert tags(html) == ["p", "pre"]
    assert "&lt;b&gt;x&lt;/b&gt;" in html


def test_the_plain_text_is_kept_so_the_next_view_is_free(clock: _FakeClock) -> None:
    cache = RenderCache()
    text = HOSTILE_LINE * 3000
    first = rendering.markdown(text, cache=cache)
    readings = clock.readings
    assert rendering.markdown(text, cache=cache) == first
    assert clock.readings == readings  # not rendered again: no budget was even started
    assert cache.stats().hits == 1


class _StillClock:
    """``time.thread_time`` that moves only when told to."""

    def __init__(self) -> None:
        self.now = 0.0

    def thread_time(self) -> float:
        return self.now


def test_a_garbage_collection_does_not_spend_a_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    """A full collection of a large heap, landing in a render, took the render's second."""
    clock = _StillClock()
    monkeypatch.setattr(highlighting, "time", clock)

    def long_collection(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            clock.now += 10 * rendering.RENDER_BUDGET

    with highlighting.budget(rendering.RENDER_BUDGET):
        gc.callbacks.append(long_collection)
        try:
            gc.collect()
        finally:
            gc.callbacks.remove(long_collection)
        assert not highlighting.out_of_time()
        clock.now += 2 * rendering.RENDER_BUDGET
        assert highlighting.out_of_time()
