"""Text that shows something other than what it is: the input rules of single lines and
names (srcore.validation), and code shown with its hidden characters visible
(srcore.highlighting).

A bidirectional override makes ``invoice\\u202efdp.exe`` read ``invoiceexe.pdf``; in code
it makes a comment read as code ("Trojan Source"); an invisible character makes two names
that look the same differ. Multi-line text keeps what right-to-left languages need.
"""

# ruff: noqa: RUF001 - right-to-left letters are what these tests are about

from __future__ import annotations

import pytest

from srcore.highlighting import HIDDEN_CHARACTERS_NOTE, highlight_lines, reveal_hidden
from srcore.validation import MAX_COMBINING_MARKS, Invalid, Validation, coerce_string

BIDI_CONTROLS = [chr(c) for c in (*range(0x202A, 0x202F), *range(0x2066, 0x206A))]


@pytest.mark.parametrize("control", BIDI_CONTROLS)
@pytest.mark.parametrize("kind", ["line", "name"])
def test_a_line_or_a_name_refuses_bidirectional_controls(control: str, kind: str) -> None:
    with pytest.raises(Invalid) as caught:
        coerce_string(f"invoice{control}fdp.exe", text=kind)  # type: ignore[arg-type]
    assert f"U+{ord(control):04X}" in caught.value.reason
    assert control not in caught.value.reason


@pytest.mark.parametrize("value", ["a\nb", "a\rb", "a\x85b", "a\u2028b", "a\u2029b"])
def test_a_line_is_one_line(value: str) -> None:
    with pytest.raises(Invalid, match="single line"):
        coerce_string(value, text="line")


def test_a_line_refuses_c1_controls() -> None:
    with pytest.raises(Invalid, match="U\\+009B"):
        coerce_string("a\x9b31mb", text="line")


def test_a_line_refuses_a_stack_of_combining_marks() -> None:
    mark = "\u0301"
    assert coerce_string("Z" + mark * MAX_COMBINING_MARKS, text="line")
    with pytest.raises(Invalid, match="combining marks"):
        coerce_string("Z" + mark * (MAX_COMBINING_MARKS + 1) + "algo", text="line")
    with pytest.raises(Invalid, match="combining marks"):
        coerce_string("Z" + "\u20dd" * 40, text="line")  # enclosing marks too


@pytest.mark.parametrize(
    "value",
    [
        "שלום עולם",  # Hebrew
        "مرحبا بالعالم 2024",  # Arabic and digits
        "\u200fשלום: v2",  # a mark that sets the line's direction
        "Vi\u1ec7t Nam ti\u1ebfng Vi\u1ec7\u0323t",  # stacked accents
        "می\u200cخواهم",  # Persian's zero-width non-joiner
        "family \U0001f468\u200d\U0001f469\u200d\U0001f467",  # an emoji sequence
        "\u2764\ufe0f ok",  # a variation selector after an emoji
        "tab\tinside",
    ],
)
def test_lines_and_names_keep_what_languages_need(value: str) -> None:
    if "\u200f" not in value:
        assert coerce_string(value, text="name") == value
    assert coerce_string(value, text="line") == value


@pytest.mark.parametrize(
    "value",
    [
        "Git\u200bHub",  # zero width space
        "Git\u200dHub",  # a joiner between ASCII letters joins nothing
        "Git\u2060Hub",  # word joiner
        "\ufeffGitHub",  # byte order mark
        "GitHub\U000e0041",  # a tag character
        "GitHub\u3164",  # Hangul filler
        "G\ufe0fitHub",  # a variation selector after ASCII
        "\u200fGitHub",  # a right-to-left mark
        "Git\u00adHub",  # soft hyphen
    ],
)
def test_a_name_refuses_invisible_characters(value: str) -> None:
    with pytest.raises(Invalid, match="does not show"):
        coerce_string(value, text="name")


def test_multiline_text_keeps_bidirectional_controls() -> None:
    """Prose is edited as written: a right-to-left writer's embeddings are kept."""
    text = "quote: \u202bעברית\u202c\nnext line \u2067x\u2069"
    assert coerce_string(text) == text
    assert coerce_string(text, text="multiline") == text


def test_validation_records_the_rule_for_the_field() -> None:
    valid = Validation(data={"title": "invoice\u202efdp.exe", "name": "Git\u200bHub"})
    valid.require("title", max_length=256, text="line")
    valid.require("name", max_length=128, text="name")
    assert [err.field for err in valid.errors] == ["title", "name"]
    assert "U+202E" in (valid.error_for("title") or "")
    assert "U+200B" in (valid.error_for("name") or "")


TROJAN = 'if access_level != "user\u202e \u2066// Check if admin\u2069 \u2066":\n    ok()\n'


@pytest.mark.parametrize("language", ["python", None])
def test_code_shows_bidirectional_controls_in_place_with_a_note(language: str | None) -> None:
    html = str(highlight_lines(TROJAN, language))
    for control in "\u202e\u2066\u2069":
        assert control not in html
    assert html.count("&lt;U+202E&gt;") == 1
    assert html.count("&lt;U+2066&gt;") == 2
    assert 'title="RIGHT-TO-LEFT OVERRIDE"' in html
    assert html.index("&lt;U+202E&gt;") < html.index("// Check if admin") < html.index("ok")
    assert html.startswith('<p class="code-note" role="note">')
    assert "bidirectional controls" in HIDDEN_CHARACTERS_NOTE


@pytest.mark.parametrize(
    "char", ["\u200b", "\u200e", "\u061c", "\ufeff", "\u3164", "\u2028", "\x85", "\U000e0041"]
)
def test_code_shows_invisible_characters(char: str) -> None:
    html = str(highlight_lines(f"a = 1\nb{char}c = 2\n", None))
    assert char not in html
    assert f"&lt;U+{ord(char):04X}&gt;" in html
    assert html.count('<span class="line">') == 2


def test_code_without_hidden_characters_has_no_note() -> None:
    html = str(highlight_lines("x = 'שלום'  # é\n", "python"))
    assert "code-note" not in html
    assert "hidden-char" not in html


def test_reveal_hidden_escapes_and_shows() -> None:
    html = str(reveal_hidden("<b>Gadget\u202emoc.elpmaxe</b>"))
    assert html.startswith('&lt;b&gt;Gadget<span class="hidden-char"')
    assert "\u202e" not in html
