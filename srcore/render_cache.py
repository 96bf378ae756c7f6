"""Rendered user text kept in memory, so a page shown again does not render it again.

Rendering a user's markdown or highlighting their code is pure Python over the whole
text: the largest paste costs about a second of CPU time. Without a cache it cost that on
every view, and anyone could post one and reload it. A :class:`RenderCache` keeps the
finished, sanitized HTML under a digest of the source text and of everything else that
shapes the output (what kind of rendering, its options, the versions of srcore and of the
libraries doing it), so an edited text is a new key and never shows stale HTML.

The cache is bounded by the bytes of HTML it holds, not by its number of entries: one
large paste renders to megabytes while a ticket's comment is a few hundred bytes. The
least recently used entries go first. An entry larger than a quarter of the cache is not
kept, so one text cannot empty it.

It lives in each process, not in Redis. A hit costs a dictionary look-up, where Redis
would send megabytes over a socket per view; and HTML read back from Redis would be
marked safe and shown to every reader, so whoever could write to Redis could put a
script in every page. Sharing would only save each worker process its own first render
of a text, which :data:`srcore.rendering.RENDER_BUDGET` bounds anyway.

Threads of one process that miss on the same key at once wait for the first one's render
instead of each rendering it.
"""

from __future__ import annotations

import functools
import hashlib
import sys
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from threading import Event, Lock
from typing import TypeVar, cast

__all__ = ["DEFAULT_SIZE", "CacheStats", "RenderCache"]

#: Bytes of rendered HTML one process keeps by default (``render-cache-size``).
DEFAULT_SIZE = 32 * 1024 * 1024

_Text = TypeVar("_Text", bound=str)

#: Bytes counted for each entry besides its HTML: the key and the dictionary's own node.
_ENTRY_OVERHEAD = 200


@functools.cache
def _versions() -> tuple[str, ...]:
    """The versions of srcore and of the libraries whose output is kept."""
    from importlib import metadata

    found = []
    for name in ("srcore", "markdown-it-py", "nh3", "pygments"):
        try:
            found.append(f"{name}={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            found.append(f"{name}=?")
    return tuple(found)


def cache_key(kind: str, options: Hashable, text: str) -> bytes:
    """The digest a rendering of *text* is kept under.

    *options* is everything besides the text that changes the output (a language, a
    length, the limits the renderer applies); its ``repr`` is hashed, which cannot hold a
    NUL, so the text that follows it cannot be mistaken for part of it.
    """
    digest = hashlib.sha256(repr((kind, options, _versions())).encode())
    digest.update(b"\0")
    digest.update(text.encode("utf-8", "surrogatepass"))
    return digest.digest()


@dataclass(frozen=True)
class CacheStats:
    """What a :class:`RenderCache` holds and how it has been used."""

    hits: int
    misses: int
    entries: int
    size: int
    max_size: int


class RenderCache:
    """Rendered text by :func:`cache_key`, at most *max_size* bytes of it; 0 keeps none.

    Safe to share between threads. It hands back the very object it was given, so safe
    markup stays :class:`~markupsafe.Markup` and plain text stays a ``str`` (which a
    template escapes): the kind of rendering is part of the key, so one never comes
    back as the other.
    """

    def __init__(self, max_size: int = DEFAULT_SIZE) -> None:
        if max_size < 0:
            raise ValueError(f"a cache's size is 0 or more bytes, not {max_size}")
        self.max_size = max_size
        self._entries: OrderedDict[bytes, tuple[str, int]] = OrderedDict()
        self._size = 0
        self._rendering: dict[bytes, Event] = {}
        self._lock = Lock()
        self._hits = 0
        self._misses = 0

    def render(self, kind: str, options: Hashable, text: str, render: Callable[[], _Text]) -> _Text:
        """The kept rendering of *text*, or ``render()``'s, kept for next time if it fits."""
        if self.max_size == 0:
            return render()
        key = cache_key(kind, options, text)
        while True:
            with self._lock:
                kept = self._entries.get(key)
                if kept is not None:
                    self._entries.move_to_end(key)
                    self._hits += 1
                    return cast(_Text, kept[0])
                rendering = self._rendering.get(key)
                if rendering is None:
                    done = self._rendering[key] = Event()
                    self._misses += 1
                    break
            # Another thread renders this very text: its result will be here. Were it
            # too large to keep (or had the render failed), the loop renders it itself.
            rendering.wait()
        try:
            html = render()
            self._keep(key, html)
            return html
        finally:
            with self._lock:
                del self._rendering[key]
            done.set()

    def _keep(self, key: bytes, html: str) -> None:
        cost = sys.getsizeof(html) + _ENTRY_OVERHEAD
        if cost > self.max_size // 4:
            return
        with self._lock:
            self._entries[key] = (html, cost)
            self._size += cost
            while self._size > self.max_size:
                _key, (_html, evicted) = self._entries.popitem(last=False)
                self._size -= evicted

    def clear(self) -> None:
        """Forget every entry (the counts stay)."""
        with self._lock:
            self._entries.clear()
            self._size = 0

    def stats(self) -> CacheStats:
        """Hits, misses, and the entries and bytes held now."""
        with self._lock:
            return CacheStats(
                hits=self._hits,
                misses=self._misses,
                entries=len(self._entries),
                size=self._size,
                max_size=self.max_size,
            )
