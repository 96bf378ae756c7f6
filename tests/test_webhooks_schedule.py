"""The retry schedule: immediate, 5 s, 5 min, ... 24 h; about three days in all."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from srcore.webhooks.settings import JITTER, SCHEDULE, next_attempt_at

NOW = datetime(2026, 11, 28, tzinfo=UTC)


def delay(
    attempts: int,
    rng: random.Random,
    *,
    jitter: float = JITTER,
    schedule: tuple[timedelta, ...] = SCHEDULE,
) -> timedelta | None:
    """The wait :func:`next_attempt_at` sets after *attempts* attempts."""
    when = next_attempt_at(attempts, NOW, rng, jitter=jitter, schedule=schedule)
    return None if when is None else when - NOW


def test_reference_delays() -> None:
    hours = [d.total_seconds() / 3600 for d in SCHEDULE]
    assert SCHEDULE[:3] == (timedelta(0), timedelta(seconds=5), timedelta(minutes=5))
    assert hours[3:] == [0.5, 2, 5, 10, 14, 20, 24]
    total = sum(SCHEDULE, timedelta())
    assert timedelta(days=3) <= total <= timedelta(days=3, hours=12)


def test_no_jitter_gives_the_schedule() -> None:
    rng = random.Random(1)
    assert [delay(n, rng, jitter=0) for n in range(len(SCHEDULE))] == list(SCHEDULE)
    assert delay(len(SCHEDULE), rng) is None
    assert next_attempt_at(1, NOW, rng, jitter=0) == NOW + timedelta(seconds=5)
    with pytest.raises(ValueError, match=">= 0"):
        next_attempt_at(-1, NOW, rng)


def test_jitter_spreads_retries() -> None:
    rng = random.Random(7)
    delays = {delay(4, rng) for _ in range(20)}
    assert len(delays) > 1


@given(attempts=st.integers(min_value=0, max_value=len(SCHEDULE) - 1), seed=st.integers())
def test_property_jitter_stays_within_bounds(attempts: int, seed: int) -> None:
    found = delay(attempts, random.Random(seed))
    assert found is not None
    base = SCHEDULE[attempts].total_seconds()
    assert base * (1 - JITTER) - 0.001 <= found.total_seconds() <= base * (1 + JITTER) + 0.001


def test_an_injected_schedule_is_used() -> None:
    rng = random.Random(1)
    short = (timedelta(0), timedelta(seconds=1), timedelta(seconds=2))
    assert [delay(n, rng, jitter=0, schedule=short) for n in range(3)] == list(short)
    assert delay(3, rng, schedule=short) is None  # its length is the attempts made
    assert delay(3, rng, jitter=0) == SCHEDULE[3]  # the default is untouched
