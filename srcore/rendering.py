"""Template helpers shared by every service: markdown, dates and icons.

Everything here is a plain function over plain values; :func:`init_app` only registers
them on a Flask app's Jinja environment. Nothing is built at import time: the markdown
parser and the HTML sanitizer are created on first use and then kept for the life of the
process.

Markdown policy
---------------
User text is parsed with markdown-it's CommonMark preset plus tables and strikethrough,
then the HTML is cleaned by nh3 against the explicit allow-lists below, whatever the
parser produced (raw HTML in the source included). Links may only use ``http``,
``https`` or ``mailto`` (or be relative) and always get ``rel="nofollow noopener"``.

Fenced code blocks that name a language Pygments knows are highlighted with
``<span class="hl-…">`` tokens (see :mod:`srcore.highlighting`), all of a document's
blocks within one budget of time; a block past it is only escaped. Headings get an ``id``
made from their text, unique in the document, and a link to it; every ``id`` carries the
prefix ``user-content-`` (raw HTML's too), so user text can never take the name of an
element of the page around it (a form, a field) and clobber it. A list item that starts
with ``[ ]`` or ``[x]`` is a task: it gets a disabled checkbox. Every class these features
add is checked against a fixed list by the sanitizer; any other class is dropped. No
``style`` attribute survives (the CSP would block it anyway): a table column's alignment
becomes an ``align-left``/``align-center``/``align-right`` class. Raw HTML past the first
:data:`MAX_RAW_HTML_TAGS` start tags of a document is shown as text: the time to sanitize
grows with the square of how deep elements nest, and markdown's own nesting is bounded.

Rendering has a budget of CPU time, :data:`RENDER_BUDGET`, for parsing a document and
highlighting its code together: markdown-it is pure Python, and the largest paste of
markup chosen for it (tens of thousands of list items) took seconds. A document that
runs out of it, or is longer than :data:`MAX_MARKDOWN_LENGTH`, is shown as escaped plain
text under a note saying so. The Jinja filters keep what they render in the app's
:class:`~srcore.render_cache.RenderCache`, so a text is rendered once per process, not on
every view.

Images are never embedded: a markdown image is rendered as a plain link to its source
(subject to the link rules, so a ``data:`` URL leaves just the text), and a raw ``<img>``
is dropped. A reader's browser fetches an image without being asked, so it is the one part
of user markdown that acts on its own: from another host it tells that host who reads the
ticket and when (a tracking pixel), and the content security policy allows the service's
own images only (see :mod:`srcore.headers`), so an embedded one would show broken anyway.
"""

from __future__ import annotations

import functools
import itertools
import re
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Any

from markupsafe import Markup

from srcore import highlighting
from srcore.render_cache import RenderCache

if TYPE_CHECKING:
    import nh3
    from flask import Flask
    from markdown_it import MarkdownIt
    from markdown_it.renderer import RendererHTML
    from markdown_it.rules_block import StateBlock
    from markdown_it.rules_core import StateCore
    from markdown_it.rules_inline import StateInline
    from markdown_it.token import Token
    from markdown_it.utils import EnvType, OptionsDict

__all__ = [
    "ICON_NAMES",
    "MAX_MARKDOWN_LENGTH",
    "PLAIN_TEXT_NOTE",
    "RENDER_BUDGET",
    "format_date",
    "format_datetime",
    "icon",
    "init_app",
    "iso_datetime",
    "markdown",
    "markdown_summary",
    "sanitize_html",
    "slugify",
    "timeago",
    "timeago_tag",
]

Clock = Callable[[], datetime]

# -- markdown -------------------------------------------------------------------------

#: Tags that survive sanitizing. Everything else is dropped (its text kept), except
#: ``script`` and ``style`` whose content is dropped too (nh3's default).
ALLOWED_TAGS: frozenset[str] = frozenset(
    {
        "a", "abbr", "b", "blockquote", "br", "code", "dd", "del", "details", "dl", "dt",
        "em", "h1", "h2", "h3", "h4", "h5", "h6", "hr", "i", "ins", "kbd", "li",
        "mark", "ol", "p", "pre", "q", "s", "samp", "span", "sub", "summary", "sup",
        "strong", "table", "tbody", "td", "tfoot", "th", "thead", "tr", "ul", "input",
    }
)  # fmt: skip

#: Attributes that survive, per tag. ``rel`` is not here: nh3 sets it on every link.
ALLOWED_ATTRIBUTES: Mapping[str, frozenset[str]] = {
    "a": frozenset({"href", "title", "class", "aria-label"}),
    "abbr": frozenset({"title"}),
    "code": frozenset({"class"}),
    "ol": frozenset({"start"}),
    # A hidden character shown in code (highlighting.reveal_in_code) is named by its title.
    "span": frozenset({"class", "title"}),
    "ul": frozenset({"class"}),
    "li": frozenset({"class"}),
    "input": frozenset({"checked"}),
    **{f"h{level}": frozenset({"id"}) for level in range(1, 7)},
    "td": frozenset({"class", "colspan", "rowspan"}),
    "th": frozenset({"class", "colspan", "rowspan"}),
}

URL_SCHEMES: frozenset[str] = frozenset({"http", "https", "mailto"})
LINK_REL = "nofollow noopener"

#: Every ``id`` in user content starts with this, so it never names the page's own
#: elements (``document.getElementById``, ``form.elements``, ``window[id]``...).
ID_PREFIX = "user-content-"
ANCHOR_CLASS = "anchor"
ANCHOR_LABEL = "Link to this section"
TASK_LIST_CLASS = "contains-task-list"
TASK_ITEM_CLASS = "task-list-item"

_LANGUAGE_CLASS = re.compile(r"language-[A-Za-z0-9_+#.-]{1,40}")
#: The one class each tag may carry, besides highlighting's token classes on spans.
_FIXED_CLASSES: Mapping[str, str] = {
    "a": ANCHOR_CLASS,
    "ul": TASK_LIST_CLASS,
    "li": TASK_ITEM_CLASS,
}
_ALIGN_CLASSES = frozenset({"align-left", "align-center", "align-right"})
_HIDDEN_CHAR_CLASS = "hidden-char"


def _filter_attribute(tag: str, attribute: str, value: str) -> str | None:
    """Narrow attributes the allow-list alone cannot: sources, classes and ids."""
    if attribute == "class":
        if tag == "code":
            return value if _LANGUAGE_CLASS.fullmatch(value) else None
        if tag == "span":
            known = value in highlighting.token_classes() or value == _HIDDEN_CHAR_CLASS
            return value if known else None
        if tag in {"td", "th"}:
            return value if value in _ALIGN_CLASSES else None
        return value if _FIXED_CLASSES.get(tag) == value else None
    if attribute == "id":
        return value if value.startswith(ID_PREFIX) else ID_PREFIX + value
    if tag == "a" and attribute == "aria-label":
        # A link's name is its text: another name would read out one address and go to
        # another. Only a heading's own "#" link has one.
        return value if value == ANCHOR_LABEL else None
    return value


@functools.cache
def _cleaner() -> nh3.Cleaner:
    import nh3

    return nh3.Cleaner(
        tags=set(ALLOWED_TAGS),
        attributes={tag: set(names) for tag, names in ALLOWED_ATTRIBUTES.items()},
        attribute_filter=_filter_attribute,
        link_rel=LINK_REL,
        url_schemes=set(URL_SCHEMES),
        set_tag_attribute_values={
            # The only input user text may hold is a task's checkbox, and it is read-only;
            # its name says what it is (its state, done or not, is its checked state).
            "input": {"type": "checkbox", "disabled": "", "aria-label": "Task"},
        },
        strip_comments=True,
    )


def _render_image(
    renderer: RendererHTML,
    tokens: Sequence[Token],
    idx: int,
    options: OptionsDict,
    env: EnvType,
) -> str:
    """Render an image as a plain link to its source (its text, or the source itself)."""
    token = tokens[idx]
    src = str(token.attrGet("src") or "")
    alt = renderer.renderInlineAsText(token.children or [], options, env) or src
    return str(Markup('<a href="{}">{}</a>').format(src, alt))


def _highlight_fence(code: str, language: str, _attrs: str) -> str:
    """markdown-it's ``highlight`` hook: Pygments spans, or "" to let it escape the code."""
    highlighted = highlighting.highlight(code, language)
    return str(highlighted) if highlighted is not None else ""


_SLUG_DROP = re.compile(r"[^\w\- ]")


def slugify(text: str) -> str:
    """A heading's anchor name: lower case, word characters, spaces become ``-``."""
    slug = _SLUG_DROP.sub("", text.strip().lower()).replace(" ", "-")
    return slug or "section"


def _heading_anchors(state: StateCore) -> None:
    """Give each heading a unique ``id`` from its text (``intro``, ``intro-1``...)."""
    used: set[str] = set()
    next_suffix: dict[str, int] = {}
    tokens = state.tokens
    for index, token in enumerate(tokens):
        if token.type != "heading_open" or index + 1 >= len(tokens):
            continue
        text = "".join(
            child.content
            for child in tokens[index + 1].children or []
            if child.type in {"text", "code_inline"}
        )
        base = slugify(text)
        suffix = next_suffix.get(base, 0)
        slug = f"{base}-{suffix}" if suffix else base
        while slug in used:  # "a-1" written out before a second "a"
            suffix += 1
            slug = f"{base}-{suffix}"
        next_suffix[base] = suffix + 1
        used.add(slug)
        token.attrSet("id", ID_PREFIX + slug)


def _render_heading_close(
    renderer: RendererHTML,
    tokens: Sequence[Token],
    idx: int,
    options: OptionsDict,
    env: EnvType,
) -> str:
    """Close a heading with a link to its anchor, so a reader can copy it."""
    opening = tokens[idx - 2] if idx >= 2 else None
    anchor = opening.attrGet("id") if opening is not None else None
    if opening is None or opening.type != "heading_open" or not anchor:
        return renderer.renderToken(tokens, idx, options, env)
    link = Markup('<a class="{}" href="#{}" aria-label="{}">#</a>').format(
        ANCHOR_CLASS, anchor, ANCHOR_LABEL
    )
    return f"{link}</{tokens[idx].tag}>\n"


_TEXT_ALIGN = re.compile(r"text-align:(left|center|right)")


def _table_alignment(state: StateCore) -> None:
    """Align table cells with a class: the CSP (``style-src 'self'``) drops a style attribute."""
    for token in state.tokens:
        if token.type in {"th_open", "td_open"}:
            style = token.attrGet("style")
            if style is None:
                continue
            token.attrs.pop("style", None)
            aligned = _TEXT_ALIGN.fullmatch(str(style))
            if aligned is not None:
                token.attrSet("class", f"align-{aligned.group(1)}")


#: How deep markdown's blocks (lists, quotes) may nest; deeper content is plain text.
MAX_BLOCK_NESTING = 20


def _too_deep(state: StateBlock, start_line: int, end_line: int, silent: bool) -> bool:
    """Show blocks nested past :data:`MAX_BLOCK_NESTING` as one paragraph of their text.

    markdown-it's own limit (a little higher, so this rule runs first) drops everything
    from there to the end of the enclosing block, which for a list is often the rest of
    the document: a tenth level of list would hide what follows it without a word.
    """
    if state.level < MAX_BLOCK_NESTING:
        return False
    if silent:
        return True
    # The block ends where markdown-it would end it: at a line indented less than it,
    # but not at a quote's lazy continuation line (marked by a negative indent).
    stop = start_line
    while stop < end_line and (
        state.isEmpty(stop) or not 0 <= state.sCount[stop] < state.blkIndent
    ):
        stop += 1
    content = state.getLines(start_line, stop, state.blkIndent, False).strip()
    state.line = stop
    if not content:
        return True
    token = state.push("paragraph_open", "p", 1)
    token.map = [start_line, stop]
    token = state.push("inline", "", 0)
    token.content = content
    token.map = [start_line, stop]
    token.children = []
    state.push("paragraph_close", "p", -1)
    return True


#: Raw HTML start tags one document may hold; past them, raw HTML is shown as text.
MAX_RAW_HTML_TAGS = 1000
_START_TAG = re.compile(r"<[A-Za-z]")


def _raw_html_limit(state: StateCore) -> None:
    """Show raw HTML past :data:`MAX_RAW_HTML_TAGS` start tags as text.

    The sanitizer parses HTML as a browser does, and a browser's parser spends time on
    each tag in proportion to the elements still open around it: some tens of thousands
    of ``<ul><li>`` cost seconds on every view. Markdown's own nesting is bounded by the
    parser; raw HTML's is bounded by its number of tags, counted in document order.
    """
    from markupsafe import escape

    seen = 0
    for token in state.tokens:
        raw = [token] if token.type == "html_block" else []
        if token.type == "inline":
            raw = [child for child in token.children or [] if child.type == "html_inline"]
        for html in raw:
            seen += len(_START_TAG.findall(html.content))
            if seen > MAX_RAW_HTML_TAGS:
                html.content = str(escape(html.content))


_TASK_MARKER = re.compile(r"\[([ xX])\] ")


def _task_lists(state: StateCore) -> None:
    """Turn list items starting with ``[ ]`` or ``[x]`` into tasks with a checkbox.

    One pass over the tokens, keeping the lists open at each point: a list of many
    tasks costs as much as its length, never one look back per item.
    """
    from markdown_it.token import Token

    tokens = state.tokens
    open_lists: list[Token] = []
    for index, inline in enumerate(tokens):
        if inline.type in {"bullet_list_open", "ordered_list_open"}:
            open_lists.append(inline)
            continue
        if inline.type in {"bullet_list_close", "ordered_list_close"}:
            if open_lists:
                open_lists.pop()
            continue
        if (
            index < 2
            or inline.type != "inline"
            or tokens[index - 1].type != "paragraph_open"
            or tokens[index - 2].type != "list_item_open"
            or not inline.children
            or inline.children[0].type != "text"
        ):
            continue
        first = inline.children[0]
        marker = _TASK_MARKER.match(first.content)
        if marker is None:
            continue
        first.content = first.content[marker.end() :]
        checkbox = Token("html_inline", "", 0)
        checked = " checked" if marker.group(1) != " " else ""
        checkbox.content = f'<input type="checkbox" disabled{checked}> '
        inline.children.insert(0, checkbox)
        tokens[index - 2].attrJoin("class", TASK_ITEM_CLASS)
        # The item's own list is the innermost one open; only a bulleted one is marked.
        if open_lists and open_lists[-1].type == "bullet_list_open":
            open_lists[-1].attrSet("class", TASK_LIST_CLASS)


#: Markdown longer than this is shown as plain text without being parsed: its parsing
#: would run out of :data:`RENDER_BUDGET` anyway, after spending all of it.
MAX_MARKDOWN_LENGTH = 300_000

#: Seconds of CPU time (of the thread doing it) that rendering one markdown document may
#: take, parsing and highlighting its code blocks together. Ordinary text of the paste
#: size limit renders well within it; markup chosen to be slow does not, and is shown as
#: plain text.
RENDER_BUDGET = 1.0

#: Said above a document shown as plain text because it was too long or slow to render.
PLAIN_TEXT_NOTE = "This text is shown as plain text: it is too long to format."


class _OutOfTime(Exception):
    """Parsing the document used up :data:`RENDER_BUDGET`."""


#: The parse rules below read the clock on one call in this many: reading a thread's CPU
#: time is a system call, and on every call it added up to a quarter to a parse.
_CHECK_EVERY = 32
_calls = itertools.count()


def _check_budget() -> None:
    if not next(_calls) % _CHECK_EVERY and highlighting.out_of_time():
        raise _OutOfTime


def _block_budget(state: StateBlock, start_line: int, end_line: int, silent: bool) -> bool:
    """A block rule that matches nothing: it stops the parse once the budget is spent."""
    _check_budget()
    return False


def _inline_budget(state: StateInline, silent: bool) -> bool:
    """An inline rule that matches nothing: it stops the parse once the budget is spent.

    One paragraph of the size limit takes a second on its own, so checking between
    blocks is not enough; this runs before each inline token.
    """
    _check_budget()
    return False


@functools.cache
def _parser(*, summary: bool = False) -> MarkdownIt:
    """The markdown parser; a summary's neither highlights code nor links headings."""
    from markdown_it import MarkdownIt

    # markdown-it stops at maxNesting; _too_deep takes over just before it does.
    options: dict[str, Any] = {"maxNesting": MAX_BLOCK_NESTING + 2}
    if not summary:
        options["highlight"] = _highlight_fence
    parser = MarkdownIt("commonmark", options).enable(["table", "strikethrough"])
    parser.block.ruler.before("table", "too_deep", _too_deep)
    parser.block.ruler.before("too_deep", "budget", _block_budget)
    parser.inline.ruler.before("text", "budget", _inline_budget)
    parser.core.ruler.push("raw_html_limit", _raw_html_limit)
    parser.core.ruler.push("heading_anchors", _heading_anchors)
    parser.core.ruler.push("task_lists", _task_lists)
    parser.core.ruler.push("table_alignment", _table_alignment)
    parser.add_render_rule("image", _render_image)
    if not summary:
        parser.add_render_rule("heading_close", _render_heading_close)
    return parser


def sanitize_html(html: str) -> Markup:
    """Clean an HTML fragment with the markdown allow-lists and return it as safe markup."""
    return Markup(_cleaner().clean(html))  # noqa: S704 - the cleaner's output is safe


def _markdown_options() -> tuple[object, ...]:
    """What besides the text changes a document's HTML, for the cache's key."""
    return (
        MAX_MARKDOWN_LENGTH,
        RENDER_BUDGET,
        MAX_BLOCK_NESTING,
        MAX_RAW_HTML_TAGS,
        _code_options(None),
    )


def _code_options(language: str | None) -> tuple[object, ...]:
    """What besides the code changes its highlighted HTML, for the cache's key."""
    return (
        highlighting.canonical_language(language),
        highlighting.HIGHLIGHT_BUDGET,
        highlighting.MAX_HIGHLIGHT_LENGTH,
        highlighting.MAX_LINE_LENGTH,
        tuple(sorted(highlighting.UNBOUNDED_LANGUAGES)),
    )


def _plain_text(text: str) -> Markup:
    """A document shown as it was written, escaped, under :data:`PLAIN_TEXT_NOTE`."""
    return Markup('<p class="muted">{}</p><pre>{}</pre>').format(PLAIN_TEXT_NOTE, text)


_LINK_TAG = re.compile(r"<a\s[^>]*>")
_OWN_HREF = re.compile(rf' href="#{ID_PREFIX}[^"]*"')
_LINK_MARKS = re.compile(rf' (?:aria-label="{ANCHOR_LABEL}"|class="{ANCHOR_CLASS}")')
_HIDDEN_CHAR_MARK = f' class="{_HIDDEN_CHAR_CLASS}"'


def _own_link_marks(match: re.Match[str]) -> str:
    tag = match.group(0)
    return tag if _OWN_HREF.search(tag) else _LINK_MARKS.sub("", tag)


def _own_marks_only(html: str) -> str:
    """Sanitized *html* without the marks that only srcore's own markup may carry.

    The allow-list keeps a heading's "#" link (its class and its name, "Link to this
    section") and the marker of a hidden character in code, and so would keep them in
    raw HTML a user wrote: a link named "Link to this section" to another site reads out
    as this page's anchor, and a made-up ``<U+202E>`` marker warns of a character that is
    not there. A link keeps them only when it goes to a section of the text itself, and
    the markers are all added after this (:func:`highlighting.reveal_in_code`). The
    sanitizer's output quotes every attribute value and escapes ``"`` and ``>`` inside
    one, so a tag ends at its first ``>`` and no value can hold `` href="``.
    """
    html = _LINK_TAG.sub(_own_link_marks, html)
    return html.replace(_HIDDEN_CHAR_MARK, "")


def _render_markdown(text: str) -> Markup:
    if len(text) > MAX_MARKDOWN_LENGTH:
        return _plain_text(text)
    # One budget for the parse and all the fences: many small blocks cost no more than one.
    with highlighting.budget(RENDER_BUDGET):
        try:
            html = _parser().render(text)
        except _OutOfTime:
            return _plain_text(text)
    # After the sanitizer: raw <code> and <pre> in the text are code as much as fences.
    revealed = highlighting.reveal_in_code(_own_marks_only(str(sanitize_html(html))))
    return Markup(revealed)  # noqa: S704 - sanitized; the markers added are escaped text


def markdown(text: str | None, *, cache: RenderCache | None = None) -> Markup:
    """Render user-written markdown to sanitized HTML; ``None`` renders as nothing.

    With a *cache*, a text rendered before is read from it, not rendered again.
    """
    if not text:
        return Markup("")
    source = str(text)
    if cache is None:
        return _render_markdown(source)
    return cache.render("markdown", _markdown_options(), source, lambda: _render_markdown(source))


#: How much of a text :func:`markdown_summary` reads, at least.
SUMMARY_SOURCE_LENGTH = 4096


def markdown_summary(
    text: str | None, length: int = 120, *, cache: RenderCache | None = None
) -> str:
    """One line of plain text from user markdown, cut at a word to about ``length``.

    Lists show a description in a line of their own, where markup characters (``**``,
    ``#``, link brackets) would be noise: the text is rendered and sanitized first, so
    what is left is exactly what the full page shows, minus the formatting (and minus
    the ``#`` links of headings). A list shows many summaries at once, so each costs
    little: code is not highlighted, and only the start of the text is read (enough for
    the summary, unless it opens with pages of markup). With a *cache*, a summary made
    before is read from it.
    """
    if not text:
        return ""
    source = str(text)[: max(SUMMARY_SOURCE_LENGTH, 8 * length)]
    if cache is None:
        return _summarize(source, length)
    options = (length, MAX_BLOCK_NESTING, MAX_RAW_HTML_TAGS)
    return cache.render("summary", options, source, lambda: _summarize(source, length))


def _summarize(source: str, length: int) -> str:
    plain = sanitize_html(_parser(summary=True).render(source)).striptags()
    if len(plain) <= length:
        return plain
    cut = plain[:length].rsplit(" ", 1)[0] if " " in plain[:length] else plain[:length]
    return cut.rstrip(" ,;:.") + "…"


# -- dates ----------------------------------------------------------------------------


def _utc(value: datetime) -> datetime:
    """Return ``value`` in UTC, taking a naive datetime to already be UTC."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def _now(clock: Clock | None) -> datetime:
    return _utc(clock()) if clock is not None else datetime.now(UTC)


def format_date(value: date | None) -> str:
    """Format as ``2026-11-21`` (in UTC for datetimes); ``None`` gives ``""``."""
    if value is None:
        return ""
    if isinstance(value, datetime):
        value = _utc(value)
    return value.strftime("%Y-%m-%d")


def format_datetime(value: datetime | None) -> str:
    """Format as ``2026-11-21 14:03 UTC``; ``None`` gives ``""``."""
    if value is None:
        return ""
    return _utc(value).strftime("%Y-%m-%d %H:%M UTC")


def iso_datetime(value: datetime | None) -> str:
    """Format as ``2026-11-21T14:03:09Z``, UTC to the second: what a ``<time datetime=...>``
    holds (HTML allows three digits of a second's fraction at most, ``isoformat()`` writes
    six); ``None`` gives ``""``."""
    if value is None:
        return ""
    return _utc(value).isoformat(timespec="seconds").replace("+00:00", "Z")


def _plural(count: int, unit: str) -> str:
    return f"{count} {unit}" if count == 1 else f"{count} {unit}s"


def timeago(value: datetime | None, now: datetime | None = None) -> str:
    """Describe ``value`` relative to ``now``: ``"5 minutes ago"``, ``"in 3 days"``.

    Anything less than a minute ago is ``"just now"``, and less than a minute ahead
    ``"in under a minute"`` (a retry due shortly is not one that happened). Units are
    floored, so 119 seconds is ``"1 minute ago"``; months count 30 days and years 365.
    """
    if value is None:
        return ""
    reference = _utc(now) if now is not None else datetime.now(UTC)
    seconds = int((reference - _utc(value)).total_seconds())
    future = seconds < 0
    seconds = abs(seconds)
    if seconds < 60:
        return "in under a minute" if future else "just now"
    minutes, hours, days = seconds // 60, seconds // 3600, seconds // 86400
    if minutes < 60:
        span = _plural(minutes, "minute")
    elif hours < 24:
        span = _plural(hours, "hour")
    elif days < 30:
        span = _plural(days, "day")
    elif days < 365:
        span = _plural(min(days // 30, 11), "month")
    else:
        span = _plural(days // 365, "year")
    return f"in {span}" if future else f"{span} ago"


def timeago_tag(value: datetime | None, now: datetime | None = None) -> Markup:
    """Return ``<time datetime=... title=...>5 minutes ago</time>``.

    The title carries the exact timestamp, so hovering a relative date shows it.
    """
    if value is None:
        return Markup("")
    moment = _utc(value)
    return Markup('<time datetime="{}" title="{}">{}</time>').format(
        iso_datetime(moment),
        format_datetime(moment),
        timeago(moment, now),
    )


# -- icons ----------------------------------------------------------------------------

# Drawn on a 24x24 grid with 2px round strokes; the fill is never used so that icons
# take the colour of the text around them (``currentColor``).
_ICONS: Mapping[str, str] = {
    "plus": '<path d="M12 5v14M5 12h14"/>',
    "edit": '<path d="M4 20h4L19 9l-4-4L4 16v4z"/><path d="M13.5 6.5l4 4"/>',
    "trash": '<path d="M4 7h16M9 7V4h6v3M6 7l1 13h10l1-13"/><path d="M10 11v5M14 11v5"/>',
    "check": '<path d="M5 12.5l4.5 4.5L19 7"/>',
    "copy": '<rect x="9" y="9" width="11" height="11" rx="2"/><path d="M15 9V4H4v11h5"/>',
    "x": '<path d="M6 6l12 12M18 6L6 18"/>',
    "alert": '<path d="M12 3.5L2.5 20h19L12 3.5z"/><path d="M12 10v4M12 17h.01"/>',
    "info": '<circle cx="12" cy="12" r="9"/><path d="M12 11v6M12 7.5h.01"/>',
    "user": '<circle cx="12" cy="8" r="4"/><path d="M4 21c0-4 3.6-6.5 8-6.5s8 2.5 8 6.5"/>',
    "log-in": '<path d="M14 4h5v16h-5"/><path d="M3 12h11M10 8l4 4-4 4"/>',
    "log-out": '<path d="M10 4H5v16h5"/><path d="M9 12h12M17 8l4 4-4 4"/>',
    "search": '<circle cx="11" cy="11" r="6.5"/><path d="M20 20l-4.4-4.4"/>',
    "chevron-left": '<path d="M15 5l-7 7 7 7"/>',
    "chevron-right": '<path d="M9 5l7 7-7 7"/>',
    "external": '<path d="M14 4h6v6M20 4l-9 9"/><path d="M18 14v6H4V6h6"/>',
    "lock": '<rect x="5" y="11" width="14" height="10" rx="2"/><path d="M8 11V7a4 4 0 0 1 8 0v4"/>',
    "comment": '<path d="M4 5h16v11H10l-6 4V5z"/>',
    "tag": '<path d="M3 3h8.5l9.5 9.5-8.5 8.5L3 11.5V3z"/><circle cx="7.5" cy="7.5" r="1.5"/>',
    "menu": '<path d="M4 6h16M4 12h16M4 18h16"/>',
    "clock": '<circle cx="12" cy="12" r="9"/><path d="M12 7v5l3 2"/>',
    "link": (
        '<path d="M10 14a4 4 0 0 0 5.7 0l3-3a4 4 0 0 0-5.7-5.7l-1 1"/>'
        '<path d="M14 10a4 4 0 0 0-5.7 0l-3 3a4 4 0 0 0 5.7 5.7l1-1"/>'
    ),
    "mail": '<rect x="3" y="5" width="18" height="14" rx="2"/><path d="M3.5 6l8.5 7 8.5-7"/>',
    "circle-dot": '<circle cx="12" cy="12" r="9"/><circle cx="12" cy="12" r="2"/>',
    "check-circle": '<circle cx="12" cy="12" r="9"/><path d="M8 12.5l3 3 5-6"/>',
}

#: The names :func:`icon` knows, sorted.
ICON_NAMES: tuple[str, ...] = tuple(sorted(_ICONS))


def icon(name: str, *, label: str | None = None, size: int = 16) -> Markup:
    """Return an inline SVG icon drawn in the current text colour.

    Without ``label`` the icon is decorative and hidden from assistive technology; with
    one it is announced as an image with that name. Raises :class:`ValueError` for an
    unknown name, so a typo fails the page in tests rather than showing a blank.
    """
    try:
        body = _ICONS[name]
    except KeyError:
        raise ValueError(f"unknown icon {name!r}; known icons: {', '.join(ICON_NAMES)}") from None
    if label is None:
        a11y = Markup('aria-hidden="true" focusable="false"')
        title = Markup("")
    else:
        a11y = Markup('role="img" aria-label="{}"').format(label)
        title = Markup("<title>{}</title>").format(label)
    return Markup(
        '<svg class="icon icon-{name}" width="{size}" height="{size}" viewBox="0 0 24 24"'
        ' fill="none" stroke="currentColor" stroke-width="2" stroke-linecap="round"'
        ' stroke-linejoin="round" {a11y}>{title}{body}</svg>'
    ).format(name=name, size=int(size), a11y=a11y, title=title, body=Markup(body))  # noqa: S704


# -- Flask glue -----------------------------------------------------------------------


def init_app(app: Flask, *, clock: Clock | None = None, cache: RenderCache | None = None) -> None:
    """Register the filters and globals on ``app``'s Jinja environment.

    Filters: ``markdown``, ``markdown_summary`` (plain text for lists), ``code``
    (numbered, highlighted lines: ``text|code(language)``), ``date``, ``datetime``,
    ``iso_datetime`` (a ``<time datetime=...>``'s value), ``timeago``, ``timeago_tag``.
    Globals: ``icon`` and ``timeago_tag``. ``clock`` returns "now" for the relative
    dates (tests pass a fixed one); calling this again simply registers them again.
    The first three keep what they render in *cache* (a new one of the default size
    when not given), which is ``app.extensions["srcore.render_cache"]``.
    """
    if cache is None:
        cache = RenderCache()
    app.extensions["srcore.render_cache"] = cache

    def markdown_filter(text: str | None) -> Markup:
        return markdown(text, cache=cache)

    def summary_filter(text: str | None, length: int = 120) -> str:
        return markdown_summary(text, length, cache=cache)

    def code_filter(code: str, language: str | None = None) -> Markup:
        source = str(code)
        return cache.render(
            "code",
            _code_options(language),
            source,
            lambda: highlighting.highlight_lines(source, language),
        )

    def timeago_filter(value: datetime | None, now: datetime | None = None) -> str:
        return timeago(value, now if now is not None else _now(clock))

    def timeago_tag_filter(value: datetime | None, now: datetime | None = None) -> Markup:
        return timeago_tag(value, now if now is not None else _now(clock))

    env = app.jinja_env
    env.filters.update(
        markdown=markdown_filter,
        markdown_summary=summary_filter,
        code=code_filter,
        date=format_date,
        datetime=format_datetime,
        iso_datetime=iso_datetime,
        timeago=timeago_filter,
        timeago_tag=timeago_tag_filter,
    )
    env.globals.update(icon=icon, timeago_tag=timeago_tag_filter)
