"""Syntax highlighting of code with Pygments, as class-based HTML.

Every token becomes a ``<span class="hl-…">`` whose colour comes from the shared
stylesheet, which carries a light and a dark palette. Nothing is styled inline: the
security headers' ``style-src 'self'`` would drop an inline style anyway, and a class is
something the markdown sanitizer can check against a fixed list.

Languages are named by Pygments' lexer aliases (``python``, ``js``, ``c++``...). Every
function here takes an alias and never guesses a language from the code: a guess costs
time on every view and is wrong often enough to surprise.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import TYPE_CHECKING

from markupsafe import Markup, escape

if TYPE_CHECKING:
    from pygments.formatters.html import HtmlFormatter
    from pygments.lexer import Lexer

__all__ = [
    "CLASS_PREFIX",
    "canonical_language",
    "highlight",
    "highlight_lines",
    "language_choices",
    "language_name",
    "token_classes",
]

#: Prefixed to Pygments' short token classes (``k`` → ``hl-k``) so that they cannot be
#: mistaken for the site's own classes.
CLASS_PREFIX = "hl-"

#: Code longer than this is shown escaped but not highlighted: highlighting is linear in
#: the input, but a paste at the size limit would cost every reader's request.
MAX_HIGHLIGHT_LENGTH = 300_000


@functools.cache
def _aliases() -> Mapping[str, str]:
    """Every alias of every lexer, lower-cased, to the lexer's first (canonical) alias."""
    from pygments.lexers import get_all_lexers

    table: dict[str, str] = {}
    for _name, aliases, _patterns, _mimetypes in get_all_lexers(plugins=False):
        if not aliases:
            continue
        for alias in aliases:
            table.setdefault(alias.lower(), aliases[0])
    return table


@functools.cache
def language_choices() -> tuple[tuple[str, str], ...]:
    """``(alias, human name)`` of every language, sorted by name, for a ``<select>``."""
    from pygments.lexers import get_all_lexers

    pairs = {aliases[0]: name for name, aliases, _p, _m in get_all_lexers(plugins=False) if aliases}
    return tuple(sorted(pairs.items(), key=lambda pair: (pair[1].casefold(), pair[0])))


def canonical_language(name: str | None) -> str | None:
    """The canonical alias for a language name or alias (any case), or ``None``."""
    if not name:
        return None
    return _aliases().get(name.strip().lower())


def language_name(alias: str | None) -> str | None:
    """The human name of a language (``"Python"`` for ``python``), or ``None``."""
    canonical = canonical_language(alias)
    if canonical is None:
        return None
    return dict(language_choices()).get(canonical)


@functools.cache
def token_classes() -> frozenset[str]:
    """Every class :func:`highlight` can emit, prefix included."""
    from pygments.token import STANDARD_TYPES

    return frozenset(CLASS_PREFIX + name for name in STANDARD_TYPES.values() if name)


@functools.cache
def _lexer(alias: str) -> Lexer:
    from pygments.lexers import get_lexer_by_name

    # Keep the code as it is: no stripped blank lines, no added final newline.
    return get_lexer_by_name(alias, stripnl=False, ensurenl=False)


@functools.cache
def _formatter() -> HtmlFormatter[str]:
    from pygments.formatters.html import HtmlFormatter

    return HtmlFormatter(nowrap=True, classprefix=CLASS_PREFIX)


def highlight(code: str, language: str | None) -> Markup | None:
    """Highlight ``code`` as ``language``; ``None`` when the language is unknown.

    The result is the escaped code with ``<span class="hl-…">`` around its tokens and
    no wrapping element. Each line's spans are closed at its end, so the result can be
    split on ``"\\n"`` into lines that are each well-formed.
    """
    canonical = canonical_language(language)
    if canonical is None or len(code) > MAX_HIGHLIGHT_LENGTH:
        return None
    from pygments import highlight as pygments_highlight

    html = pygments_highlight(code, _lexer(canonical), _formatter())
    if not code.endswith("\n") and html.endswith("\n"):
        html = html[:-1]
    return Markup(html)  # noqa: S704 - Pygments escapes the code it is given


def highlight_lines(code: str, language: str | None) -> Markup:
    """Code as a numbered block: ``<pre class="code"><code>`` with one span per line.

    The numbers come from a CSS counter on ``.line::before``, so they are not part of
    the text: selecting and copying the code copies the code alone. Each line keeps its
    newline, so the copied text has the original line breaks. An unknown language (or
    none) shows the code escaped, without colours.
    """
    # As Pygments reads code: one kind of line break (a browser's form sends CRLF), no
    # byte order mark; the lines are then the same with or without a language.
    code = code.replace("\r\n", "\n").replace("\r", "\n").removeprefix("\ufeff")
    highlighted = highlight(code, language)
    body = str(highlighted) if highlighted is not None else str(escape(code))
    if body.endswith("\n"):
        body = body[:-1]
    lines = body.split("\n")
    inner = "".join(f'<span class="line">{line}\n</span>' for line in lines)
    return Markup(f'<pre class="code"><code>{inner}</code></pre>')  # noqa: S704
