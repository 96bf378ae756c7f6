"""The retry schedule: immediate, 5 s, 5 min, ... 24 h; about three days in all."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from srcore.webhooks.settings import JITTER, MAX_ATTEMPTS, SCHEDULE, next_attempt_at, retry_delay

NOW = datetime(2026, 11, 28, tzinfo=UTC)


def test_reference_delays() -> None:
    hours = [d.total_seconds() / 3600 for d in SCHEDULE]
    assert SCHEDULE[:3] == (timedelta(0), timedelta(seconds=5), timedelta(minutes=5))
    assert hours[3:] == [0.5, 2, 5, 10, 14, 20, 24]
    total = sum(SCHEDULE, timedelta())
    assert timedelta(days=3) <= total <= timedelta(days=3, hours=12)


def test_no_jitter_gives_the_schedule() -> None:
    rng = random.Random(1)
    assert [retry_delay(n, rng, jitter=0) for n in range(MAX_ATTEMPTS)] == list(SCHEDULE)
    assert retry_delay(MAX_ATTEMPTS, rng) is None
    assert next_attempt_at(MAX_ATTEMPTS, NOW, rng) is None
    assert next_attempt_at(1, NOW, rng, jitter=0) == NOW + timedelta(seconds=5)
    with pytest.raises(ValueError, match=">= 0"):
        retry_delay(-1, rng)


def test_jitter_spreads_retries() -> None:
    rng = random.Random(7)
    delays = {retry_delay(4, rng) for _ in range(20)}
    assert len(delays) > 1


@given(attempts=st.integers(min_value=0, max_value=MAX_ATTEMPTS - 1), seed=st.integers())
def test_property_jitter_stays_within_bounds(attempts: int, seed: int) -> None:
    delay = retry_delay(attempts, random.Random(seed))
    assert delay is not None
    base = SCHEDULE[attempts].total_seconds()
    assert base * (1 - JITTER) - 0.001 <= delay.total_seconds() <= base * (1 + JITTER) + 0.001
    assert next_attempt_at(attempts, NOW, random.Random(seed)) == NOW + delay


def test_an_injected_schedule_is_used() -> None:
    rng = random.Random(1)
    short = (timedelta(0), timedelta(seconds=1), timedelta(seconds=2))
    delays = [retry_delay(n, rng, jitter=0, schedule=short) for n in range(3)]
    assert delays == list(short)
    assert retry_delay(3, rng, schedule=short) is None  # its length is the attempts made
    assert next_attempt_at(3, NOW, rng, schedule=short) is None
    assert next_attempt_at(2, NOW, rng, jitter=0, schedule=short) == NOW + timedelta(seconds=2)
    assert retry_delay(3, rng, jitter=0) == SCHEDULE[3]  # the default is untouched
