"""When to try a failed delivery again: a fixed backoff over about three days, with jitter.

Pure functions over plain values; the caller passes the random source.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from datetime import datetime, timedelta

__all__ = ["JITTER", "MAX_ATTEMPTS", "SCHEDULE", "next_attempt_at", "retry_delay"]

#: Delay before attempt n+1 (index n); the first attempt is immediate. The sum is ~3 days.
SCHEDULE: tuple[timedelta, ...] = (
    timedelta(0),
    timedelta(seconds=5),
    timedelta(minutes=5),
    timedelta(minutes=30),
    timedelta(hours=2),
    timedelta(hours=5),
    timedelta(hours=10),
    timedelta(hours=14),
    timedelta(hours=20),
    timedelta(hours=24),
)
#: Attempts made before a delivery is given up.
MAX_ATTEMPTS = len(SCHEDULE)
#: Each delay is spread by up to this fraction either way, so retries do not arrive in herds.
JITTER = 0.1


def retry_delay(
    attempts: int,
    rng: random.Random,
    *,
    jitter: float = JITTER,
    schedule: Sequence[timedelta] = SCHEDULE,
) -> timedelta | None:
    """The wait before the next attempt, after *attempts* attempts; None: give up.

    *schedule* gives the delay before attempt n+1 at index n (default :data:`SCHEDULE`);
    its length is the number of attempts made before giving up.
    """
    if attempts < 0:
        raise ValueError("attempts must be >= 0")
    if attempts >= len(schedule):
        return None
    base = schedule[attempts]
    if not base:
        return base
    factor = 1.0 + rng.uniform(-jitter, jitter)
    return timedelta(seconds=round(base.total_seconds() * factor, 3))


def next_attempt_at(
    attempts: int,
    now: datetime,
    rng: random.Random,
    *,
    jitter: float = JITTER,
    schedule: Sequence[timedelta] = SCHEDULE,
) -> datetime | None:
    """When to try again after *attempts* attempts made, counting from *now*; None: give up."""
    delay = retry_delay(attempts, rng, jitter=jitter, schedule=schedule)
    return None if delay is None else now + delay
