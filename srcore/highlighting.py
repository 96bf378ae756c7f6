"""Syntax highlighting of code with Pygments, as class-based HTML.

Every token becomes a ``<span class="hl-…">`` whose colour comes from the shared
stylesheet, which carries a light and a dark palette. Nothing is styled inline: the
security headers' ``style-src 'self'`` would drop an inline style anyway, and a class is
something the markdown sanitizer can check against a fixed list.

Languages are named by Pygments' lexer aliases (``python``, ``js``, ``c++``...). Every
function here takes an alias and never guesses a language from the code: a guess costs
time on every view and is wrong often enough to surprise.

Highlighting has a budget of CPU time (:data:`HIGHLIGHT_BUDGET`, of the thread doing it,
garbage collections left out).
Many lexers take time that grows with the square of some runs of text (blank lines for
C, Java or C#, and worse for a few), so a paste of a few hundred kilobytes chosen for it
could hold a worker for hours on every view. Lexing is checked against the budget
between tokens, the sub-lexers of a template language's lexer included; code that runs
out of it is shown escaped, as if its language were unknown. :func:`budget` lets several
blocks of one document (a markdown text's fences) share one budget.

Code can read otherwise than it runs: a bidirectional override or isolate in a comment or
a string shows the characters after it in another order than a compiler reads them
("Trojan Source", CVE-2021-42574), and an invisible character can make two identifiers
that look the same differ. :func:`highlight_lines` shows each such character as a visible
``<U+202E>`` in its place, in the order the code is stored, under a note saying so.

Since the budget is checked between tokens, one token must not take long either. Some
lexers take time that grows with the square of a run within one line (or worse), so a
line longer than :data:`MAX_LINE_LENGTH` is not highlighted either, and the few lexers
whose time grows faster still even on short lines (:data:`UNBOUNDED_LANGUAGES`) are not
offered at all: their code is plain text.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import re
import threading
import time
import unicodedata
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, TypeVar

from markupsafe import Markup, escape

if TYPE_CHECKING:
    from pygments.formatters.html import HtmlFormatter
    from pygments.lexer import Lexer

__all__ = [
    "CLASS_PREFIX",
    "CODE_ELEMENTS",
    "HIDDEN_CHARACTERS_NOTE",
    "HIGHLIGHT_BUDGET",
    "MAX_LINE_LENGTH",
    "UNBOUNDED_LANGUAGES",
    "budget",
    "canonical_language",
    "highlight",
    "highlight_lines",
    "language_choices",
    "language_name",
    "out_of_time",
    "reveal_hidden",
    "reveal_in_code",
    "token_classes",
]

#: Prefixed to Pygments' short token classes (``k`` → ``hl-k``) so that they cannot be
#: mistaken for the site's own classes.
CLASS_PREFIX = "hl-"

#: Code longer than this is shown escaped but not highlighted: even where highlighting
#: is linear in the input, a paste at the size limit would cost every reader's request.
MAX_HIGHLIGHT_LENGTH = 300_000

#: Code with a line longer than this is shown escaped but not highlighted: a single
#: token of a long line can cost time in the square of its length, before any check of
#: the budget (a minified file is the one honest case).
MAX_LINE_LENGTH = 2_000

#: Lexers one token of which, on a short line of hostile text, takes seconds (a few
#: thousand tabs take Easytrieve's minutes; a quote and sixty backslashes, UrbiScript's
#: hours): not offered, their code is plain text.
UNBOUNDED_LANGUAGES: frozenset[str] = frozenset({"easytrieve", "urbiscript"})

#: Seconds of CPU time that highlighting one block, or one document's blocks together
#: (see :func:`budget`), may take. Ordinary code of the size limit lexes in well under it.
HIGHLIGHT_BUDGET = 1.0

#: Shown above code that holds characters :func:`highlight_lines` makes visible.
HIDDEN_CHARACTERS_NOTE = (
    "This code holds bidirectional controls or invisible characters, shown here as"
    " <U+…> where they are: other programs may show it in another order or hide"
    " them, and it may not do what it seems to there. Raw holds the text as it is."
)

# Characters shown as a visible <U+...> in code: format characters (bidirectional controls
# and marks, zero-width spaces and joiners, the byte order mark, tag characters...), C1
# controls, the line and paragraph separators (line breaks to JavaScript, not to a page),
# and the letters that draw nothing (the Hangul fillers, valid in identifiers).
_HIDDEN = re.compile(
    "[\x80-\x9f\xad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180e\u200b-\u200f"
    "\u2028-\u202e\u2060-\u206f\u3164\ufeff\uffa0\ufff9-\ufffb"
    "\U000e0000-\U000e007f]"
)

_T = TypeVar("_T")

#: When the highlighting under way must stop (:func:`_work_time`), or ``None``.
_deadline: ContextVar[float | None] = ContextVar("srcore_highlight_deadline", default=None)


class _OutOfTime(Exception):
    """Highlighting used up its budget: the code is shown without colours."""


@contextlib.contextmanager
def budget(seconds: float | None = None) -> Iterator[None]:
    """Let every :func:`highlight` inside the block share one budget of CPU time.

    ``seconds`` defaults to :data:`HIGHLIGHT_BUDGET`. Inside another budget, the outer
    one stays in force: a document cannot grant itself more time by nesting.
    """
    if _deadline.get() is not None:
        yield
        return
    limit = HIGHLIGHT_BUDGET if seconds is None else seconds
    _watch_collections()
    token = _deadline.set(_work_time() + limit)
    try:
        yield
    finally:
        _deadline.reset(token)


def out_of_time() -> bool:
    """Whether the :func:`budget` in force is spent; ``False`` outside any.

    Other work on user text (parsing markdown) checks the same budget, so a document's
    parsing and the highlighting of its code blocks share one.
    """
    deadline = _deadline.get()
    return deadline is not None and _work_time() > deadline


# A garbage collection runs in whichever thread allocates when one is due, and with a
# long-lived worker's heap a full one takes over half a second: counted, it made ordinary
# text run out of its budget and show as plain text, kept so in the render cache for the
# life of the process. Its time is left out of the budget; the work's own is not.
_collections = threading.local()


def _on_collection(phase: str, info: dict[str, int]) -> None:
    now = time.thread_time()
    if phase == "start":
        _collections.started = now
    elif (started := getattr(_collections, "started", None)) is not None:
        _collections.spent = getattr(_collections, "spent", 0.0) + now - started
        _collections.started = None


@functools.cache
def _watch_collections() -> None:
    """Start timing garbage collections, once per process, at the first budget."""
    gc.callbacks.append(_on_collection)


def _work_time() -> float:
    """This thread's CPU time, less what garbage collections in it took."""
    return time.thread_time() - getattr(_collections, "spent", 0.0)


def _timed(tokens: Iterable[_T]) -> Iterator[_T]:
    """Pass ``tokens`` on, stopping with :class:`_OutOfTime` once the budget is spent."""
    for token in tokens:
        if out_of_time():
            raise _OutOfTime
        yield token


@functools.cache
def _aliases() -> Mapping[str, str]:
    """Every alias of every lexer, lower-cased, to the lexer's first (canonical) alias."""
    from pygments.lexers import get_all_lexers

    table: dict[str, str] = {}
    for _name, aliases, _patterns, _mimetypes in get_all_lexers(plugins=False):
        if not aliases or aliases[0] in UNBOUNDED_LANGUAGES:
            continue
        for alias in aliases:
            table.setdefault(alias.lower(), aliases[0])
    return table


@functools.cache
def language_choices() -> tuple[tuple[str, str], ...]:
    """``(alias, human name)`` of every language, sorted by name, for a ``<select>``."""
    from pygments.lexers import get_all_lexers

    pairs = {
        aliases[0]: name
        for name, aliases, _p, _m in get_all_lexers(plugins=False)
        if aliases and aliases[0] not in UNBOUNDED_LANGUAGES
    }
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


def _watch(lexer: Lexer) -> Lexer:
    """Check the budget inside a template language's lexer too.

    Such a lexer runs its two sub-lexers over the whole text before it gives its first
    token, so checking only its own tokens would come too late. Its sub-lexers belong
    to this one cached instance: nothing outside it changes.
    """
    from pygments.lexer import DelegatingLexer

    if isinstance(lexer, DelegatingLexer):
        for name in ("root_lexer", "language_lexer"):
            sub = _watch(getattr(lexer, name))
            setattr(sub, "get_tokens_unprocessed", _timed_method(sub.get_tokens_unprocessed))  # noqa: B010
    return lexer


def _timed_method(unprocessed: Callable[..., Any]) -> Callable[..., Any]:
    """``unprocessed`` with its tokens passed through :func:`_timed`, arguments and all.

    Some lexers call the method again themselves with other arguments (Ruby's, for the
    inside of a string: ``context=``).
    """

    def timed_unprocessed(*args: Any, **kwargs: Any) -> Any:
        return _timed(unprocessed(*args, **kwargs))

    return timed_unprocessed


@functools.cache
def _lexer(alias: str) -> Lexer:
    from pygments.lexers import get_lexer_by_name

    # Keep the code as it is: no stripped blank lines, no added final newline.
    return _watch(get_lexer_by_name(alias, stripnl=False, ensurenl=False))


@functools.cache
def _formatter() -> HtmlFormatter[str]:
    from pygments.formatters.html import HtmlFormatter

    return HtmlFormatter(nowrap=True, classprefix=CLASS_PREFIX)


def highlight(code: str, language: str | None) -> Markup | None:
    """Highlight ``code`` as ``language``; ``None`` when the language is unknown.

    The result is the escaped code with ``<span class="hl-…">`` around its tokens and
    no wrapping element. Each line's spans are closed at its end, so the result can be
    split on ``"\\n"`` into lines that are each well-formed. Code that runs out of the
    budget (its own, or the :func:`budget` around it), or with a line longer than
    :data:`MAX_LINE_LENGTH`, also gives ``None``.
    """
    canonical = canonical_language(language)
    if canonical is None or len(code) > MAX_HIGHLIGHT_LENGTH:
        return None
    if max(map(len, code.split("\n"))) > MAX_LINE_LENGTH:
        return None
    from pygments import format as pygments_format
    from pygments import lex

    with budget():
        try:
            html = pygments_format(_timed(lex(code, _lexer(canonical))), _formatter())
        except _OutOfTime:
            return None
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
    # Escaped HTML holds these characters as they are (never in a tag or an entity).
    body, hidden = _HIDDEN.subn(_show_hidden, body)
    lines = body.split("\n")
    inner = "".join(f'<span class="line">{line}\n</span>' for line in lines)
    text = escape(HIDDEN_CHARACTERS_NOTE)
    note = f'<p class="code-note" role="note">{text}</p>' if hidden else ""
    return Markup(f'{note}<pre class="code"><code>{inner}</code></pre>')  # noqa: S704


def reveal_hidden(text: str) -> Markup:
    """*text* escaped, each character that :func:`highlight_lines` makes visible shown as
    ``<U+…>`` in its place: for a short text that must be read as it is stored (an
    application's name on a consent page) when it holds what the input rules refuse."""
    return Markup(_HIDDEN.sub(_show_hidden, str(escape(text))))  # noqa: S704


#: Elements whose text is read as code, where :func:`reveal_in_code` shows hidden characters.
CODE_ELEMENTS = frozenset({"code", "pre", "kbd", "samp"})
# A tag as a sanitizer serializes it: attribute values in double quotes, which may hold ">".
_TAG = re.compile(r'<(/?)([A-Za-z][A-Za-z0-9]*)(?:[^>"]|"[^"]*")*>')


def reveal_in_code(html: str) -> str:
    """Sanitized *html* with each hidden character in the text of a code element (see
    :data:`CODE_ELEMENTS`) shown as ``<U+…>``, as :func:`highlight_lines` shows them.

    Code in a document is read as code: a bidi override in it makes what is shown differ
    from what is copied or run. Prose is left alone, since Persian, Hindi and emoji
    sequences need their joiners, and right-to-left writing its marks. Tags and attribute
    values are copied as they are.
    """
    if not _HIDDEN.search(html):
        return html
    parts: list[str] = []
    depth = position = 0
    for tag in _TAG.finditer(html):
        text = html[position : tag.start()]
        parts.append(_HIDDEN.sub(_show_hidden, text) if depth else text)
        parts.append(tag.group())
        if tag.group(2).lower() in CODE_ELEMENTS:
            depth = max(depth - 1, 0) if tag.group(1) else depth + 1
        position = tag.end()
    tail = html[position:]
    parts.append(_HIDDEN.sub(_show_hidden, tail) if depth else tail)
    return "".join(parts)


def _show_hidden(match: re.Match[str]) -> str:
    """A hidden character as visible text, its name in a tooltip: in its place, and in the
    order the code is stored, since the character itself no longer reorders anything."""
    char = match.group()
    name = unicodedata.name(char, "control character")
    return f'<span class="hidden-char" title="{name}">&lt;U+{ord(char):04X}&gt;</span>'
