"""Code inside user markdown shows its hidden characters, as srcore's code views do.

A ticket or paste that says "run this" over a code block or a `code span` is read as code:
a bidi override in it makes the shown command differ from the one copied (Trojan Source),
and a zero-width character makes two identical-looking names differ. Inside code each such
character is shown as ``<U+…>`` in its place; prose keeps its joiners and marks, which
Persian, Hindi and emoji sequences need.
"""

from __future__ import annotations

from html.parser import HTMLParser

import pytest
from hypothesis import given
from hypothesis import strategies as st

from srcore.rendering import markdown

RLO, PDI, ZWSP = "\u202e", "\u2069", "\u200b"
#: "if access_level != \"user\"" that reads as if the check were the other way round.
SPOOF = f'if access_level != "user{RLO} {PDI}// Check if admin{PDI}":'


def _shown(html: str) -> str:
    class Text(HTMLParser):
        def __init__(self) -> None:
            super().__init__()
            self.parts: list[str] = []

        def handle_data(self, data: str) -> None:
            self.parts.append(data)

    parser = Text()
    parser.feed(html)
    return "".join(parser.parts)


@pytest.mark.parametrize(
    "text",
    [
        f"```python\n{SPOOF}\n```\n",  # a language Pygments knows
        f"```not-a-language\n{SPOOF}\n```\n",  # escaped, no colours
        f"intro\n\n    {SPOOF}\n",  # indented code block
        f"Run `{SPOOF}` first.",  # code span
        f"<pre>{SPOOF}</pre>",  # raw HTML the allow-list keeps
        f"<p><code>{SPOOF}</code></p>",
        f"Press <kbd>{SPOOF}</kbd>",
        f"<samp>{SPOOF}</samp>",
    ],
    ids=["fence-known", "fence-unknown", "indented", "span", "pre", "code", "kbd", "samp"],
)
def test_code_shows_each_hidden_character_in_its_place(text: str) -> None:
    html = str(markdown(text))
    assert RLO not in html and PDI not in html
    shown = _shown(html)
    assert "<U+202E>" in shown and "<U+2069>" in shown
    assert shown.index("<U+202E>") < shown.index("<U+2069>")
    assert 'class="hidden-char"' in html


def test_prose_keeps_joiners_and_marks() -> None:
    family = "\U0001f468\u200d\U0001f469\u200d\U0001f467"  # one emoji, joined by ZWJ
    persian = "\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645"  # ZWNJ is part of it
    hebrew = "\u200f\u05e2\u05d1\u05e8\u05d9\u05ea"
    html = str(markdown(f"{family} {persian} {hebrew}"))
    assert family in html and persian in html and "\u200f" in html
    assert "hidden-char" not in html


def test_a_zero_width_space_in_a_code_span_is_seen() -> None:
    html = str(markdown(f"`pip install reqe{ZWSP}sts`"))
    assert "<U+200B>" in _shown(html)


def test_tags_and_attributes_are_left_whole() -> None:
    """Only text is changed: an attribute holding a hidden character or a ``>`` keeps its
    quotes, and the HTML still parses to the same elements."""
    html = str(markdown(f'<code><abbr title="a > b {RLO}">x{RLO}</abbr></code>'))
    assert html.count("<abbr") == 1 and html.count("</abbr>") == 1
    assert "<U+202E>" in _shown(html)


@given(st.text(alphabet=st.sampled_from(["`", "<", ">", "&", "a", " ", "\n", RLO, ZWSP, '"'])))
def test_any_text_renders_without_hidden_characters_in_code(text: str) -> None:
    html = str(markdown(text))
    # Between <code> and </code> no hidden character is left as it is.
    depth = 0
    for part in html.replace(">", ">\x00").replace("<", "\x00<").split("\x00"):
        if part.startswith("<code"):
            depth += 1
        elif part.startswith("</code"):
            depth -= 1
        elif depth and not part.startswith("<"):
            assert RLO not in part and ZWSP not in part, html
