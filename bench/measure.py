"""Measurement helpers shared by the benchmark sections: WSGI calls, timing, SQL counts."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any


def percentile(values: list[float], q: float) -> float:
    """The *q*-th percentile (0-100) of *values*, nearest-rank (p99 of 50 values = the max)."""
    import math

    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def wsgi_caller(app: Any, path: str, headers: dict[str, str]) -> Callable[[], int]:
    """A function that runs one request through *app* at the WSGI level and returns the status."""
    from werkzeug.test import EnvironBuilder

    environ = EnvironBuilder(
        path=path, headers=headers, base_url="http://127.0.0.1:5001"
    ).get_environ()

    def call() -> int:
        status: list[str] = []

        def start_response(s: str, h: Any, exc_info: Any = None) -> Any:
            status.append(s)
            return lambda data: None

        body = app(dict(environ), start_response)
        try:
            for _ in body:
                pass
        finally:
            close = getattr(body, "close", None)
            if close is not None:
                close()
        return int(status[0].split()[0])

    return call


def per_call_us(fn: Callable[[], Any], n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - start) / n * 1e6


def interleaved(
    contenders: dict[str, Callable[[], Any]], *, n: int, rounds: int
) -> dict[str, float]:
    """Median over *rounds* of the mean µs per call, the contenders taking turns each round."""
    for fn in contenders.values():
        per_call_us(fn, max(50, n // 10))  # warm up: caches, pools, JIT-less but lazy imports
    samples: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(rounds):
        for name, fn in contenders.items():
            samples[name].append(per_call_us(fn, n))
    return {name: statistics.median(values) for name, values in samples.items()}


def paired(
    first: Callable[[], Any], second: Callable[[], Any], *, n: int, rounds: int
) -> dict[str, float]:
    """Mean µs per call of two contenders over many short rounds in ABBA order.

    On a loaded machine the load drifts within seconds; short rounds taken in turns, half
    of them in each order, let each round's ratio compare like with like. Returns each
    contender's median and the median of the rounds' ratios (first / second), with its
    quartiles to show the spread.
    """
    for fn in (first, second):
        per_call_us(fn, max(50, n))
    times: tuple[list[float], list[float]] = ([], [])
    for turn in range(rounds):
        order = ((0, first), (1, second)) if turn % 2 == 0 else ((1, second), (0, first))
        for index, fn in order:
            times[index].append(per_call_us(fn, n))
    ratios = sorted(a / b for a, b in zip(*times, strict=True))
    quartiles = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else ratios * 3
    return {
        "first": statistics.median(times[0]),
        "second": statistics.median(times[1]),
        "ratio": statistics.median(ratios),
        "ratio_q1": quartiles[0],
        "ratio_q3": quartiles[-1],
    }


@contextmanager
def counting(engine: Any) -> Iterator[dict[str, int]]:
    """Count statements (SQLAlchemy's) and round trips (the wire's) on *engine*.

    SQLAlchemy reports a ``begin`` and a ``rollback`` for a read in autocommit although
    nothing reaches the server for either, so round trips are read from the wire
    (:mod:`srcore.sqltrace`): 0 on SQLite, which runs in the process.
    """
    from sqlalchemy import event

    from srcore import sqltrace

    counts = {"statements": 0, "round_trips": 0}

    def on_execute(*args: Any) -> None:
        counts["statements"] += 1

    event.listen(engine, "before_cursor_execute", on_execute)
    try:
        with sqltrace.watch(engine) as wire:
            yield counts
    finally:
        event.remove(engine, "before_cursor_execute", on_execute)
    counts["round_trips"] = wire.round_trips


def round_trips(counts: dict[str, int], backend: str) -> int:
    """The round trips :func:`counting` saw (*backend* is kept for the callers' sake)."""
    return counts["round_trips"]
