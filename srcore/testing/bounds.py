"""Calling what might hang, in a test that must end.

A test of a timeout (a server that answers one byte at a time, a lock never let go) fails
when the code under test waits for ever; run in the test's own thread, it would hold the
whole suite instead. :func:`bounded` runs the call on a thread of its own and fails the
test once the limit passes, leaving the stuck thread behind (a daemon, so it does not keep
the process alive).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["bounded"]

T = TypeVar("T")


def bounded(call: Callable[[], T], limit: float = 30.0) -> T:
    """What *call* returns (or raises); an :class:`AssertionError` if it is still running
    after *limit* seconds."""
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["value"] = call()
        except BaseException as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(limit)
    assert not thread.is_alive(), f"still waiting after {limit} s"
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]  # type: ignore[no-any-return]
