"""The write counts kept in process (no Redis): as ``limits``' moving windows count, but a
write touches its own key only and the keys are bounded.

``limits``' memory storage expires entries with a timer that walks every key it holds
after each write, so each write cost CPU in proportion to the identities seen in the last
hour, and a stranger with many addresses (an IPv6 /48 holds 65,536 /64s) could make every
other writer's requests slower and the process's memory larger.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from srcore.ratelimit import WriteLimits, parse_limits
from srcore.windows import MovingWindows


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    now = [1_000_000.0]
    monkeypatch.setattr(time, "time", lambda: now[0])
    return now


def test_a_write_starts_no_thread_and_walks_no_other_key(
    clock: list[float], monkeypatch: pytest.MonkeyPatch
) -> None:
    started: list[Any] = []

    class Counted(threading.Timer):
        def start(self) -> None:
            started.append(self)
            super().start()

    monkeypatch.setattr(threading, "Timer", Counted)
    limits = WriteLimits(parse_limits(["60/minute", "500/hour"]), prefix="srcore-writes/t")
    for who in range(2_000):
        clock[0] += 0.02  # each write after the last has gone quiet
        assert limits.hit(f"address:10.0.{who // 250}.{who % 250}")[0].allowed
    assert started == []


def test_the_keys_kept_are_bounded_the_oldest_written_dropped_first(clock: list[float]) -> None:
    windows = MovingWindows(max_keys=100)
    for n in range(300):
        assert windows.acquire_entry(f"k{n}", 1, 60)
    assert len(windows) == 100
    assert not windows.acquire_entry("k299", 1, 60)  # kept: still at its limit
    assert windows.acquire_entry("k0", 1, 60)  # dropped: starts afresh


def test_the_process_store_of_an_app_without_redis_is_bounded() -> None:
    limits = WriteLimits(parse_limits(["60/minute"]), prefix="srcore-writes/t")
    assert isinstance(limits.store(), MovingWindows)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        # Waits of a step that no sum of them makes the window's 60 s exactly: there,
        # limits counts an entry in when it checks a write and out when it reports.
        st.tuples(
            st.sampled_from(["a", "b", "c"]),
            st.integers(0, 40).map(lambda k: k * 0.7071),
            st.integers(1, 2),
        ),
        max_size=60,
    )
)
def test_it_counts_as_limits_memory_storage_does(steps: list[tuple[str, float, int]]) -> None:
    """Same answers and windows as ``limits``' own memory storage, step for step."""
    from limits.storage import MemoryStorage

    now = [5_000.0]
    real = time.time
    time.time = lambda: now[0]  # type: ignore[assignment]  # both read the clock so
    try:
        ours, theirs = MovingWindows(), MemoryStorage()
        try:
            for key, wait, amount in steps:
                now[0] += wait
                assert ours.acquire_entry(key, 3, 60, amount) == theirs.acquire_entry(
                    key, 3, 60, amount
                )
                mine, count = ours.get_moving_window(key, 3, 60)
                other, other_count = theirs.get_moving_window(key, 3, 60)
                assert count == other_count
                if count:
                    assert mine == other
        finally:
            theirs.timer.cancel()
    finally:
        time.time = real  # type: ignore[assignment]


def test_the_readme_states_the_bound() -> None:
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    assert f"{MovingWindows().max_keys:,} counts written, one per identity and limit" in readme
