"""Revocation latency: from a revoke at meta to the first 401 at todo.

meta and todo run under gunicorn on 127.0.0.1 with one config file. meta mints personal
access tokens for ``todo/tickets:RO`` (``meta.oauth.pats.create_token``); each one is used
once at todo (200), then revoked through meta's PAT API (``DELETE /api/tokens/<id>`` with
an admin PAT holding ``meta/tokens:RW``), and todo's ticket route is polled with it every
~10 ms until it answers 401 three times in a row (bounded). The latency is the time from
sending the revoke to the first of those 401s.

Scenarios:

- push: the revoke writes a ``revocation:issued`` webhook to meta's outbox in its
  transaction; meta's webhook worker (``srcore worker meta``, polling every 0.2 s) fans it
  out and delivers it to todo's ``/_srcore/events``; the pull runs every 30 s, so what is
  measured is that delivery.
- pushes dropped: todo's ``internal-origin`` (where meta's worker delivers) is a port
  nobody listens on, so only todo's pull of ``/oauth/revocations`` every
  ``revocation-pull-interval`` brings the event: the bound is that interval (plus a
  request).

each with 1 todo worker and no Redis, and with 2 todo workers and ``[global] redis-url``:
the worker that takes meta's push passes it to the other over Redis pub/sub (the
fan-out), and each worker pulls on its own.
"""

from __future__ import annotations

import contextlib
import random
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import network
from auth import REDIS_BENCH_URL, clear_redis_store, redis_available
from measure import percentile

from srcore.testing import run_worker

POLL_INTERVAL = 0.01
#: How often meta's webhook worker looks for new events when idle.
WORKER_POLL = 0.2
CONFIRM = 3  # 401s in a row: with several workers, every one of them must have it
#: Tokens revoked before the measured ones, untimed: the first revokes pay for cold code
#: paths in meta's and todo's fresh workers (lazy imports, first push, first key load).
WARMUP = 4


@dataclass(frozen=True)
class Scenario:
    store: str  # "memory" or "redis"
    workers: int
    push: bool
    pull_interval: float

    @property
    def label(self) -> str:
        workers = f"{self.workers} worker{'s' if self.workers > 1 else ''}"
        where = f"no Redis, {workers}" if self.store == "memory" else f"redis fan-out, {workers}"
        how = "push" if self.push else f"pushes dropped, pull {self.pull_interval:g} s"
        return f"{how:<28}{where}"

    @property
    def bound(self) -> float:
        """How long one token is polled before it counts as a miss."""
        return (1.0 if self.push else self.pull_interval) + 5.0


def scenarios(pull_interval: float) -> list[Scenario]:
    return [
        Scenario("memory", 1, True, 30),
        Scenario("memory", 1, False, pull_interval),
        Scenario("redis", 2, True, 30),
        Scenario("redis", 2, False, pull_interval),
    ]


def measure_one(net: network.Network, pat: network.Pat, bound: float) -> dict[str, Any]:
    """Revoke *pat* at meta and poll todo until it is refused; times in seconds."""
    import requests

    with requests.Session() as http:
        bearer = {"Authorization": f"Bearer {pat.token}"}
        admin = {"Authorization": f"Bearer {net.admin.token}"} if net.admin else {}
        url = net.todo_url + network.TICKET_PATH
        started = time.perf_counter()
        answer = http.delete(f"{net.meta_url}/api/tokens/{pat.id}", headers=admin, timeout=10)
        revoked = time.perf_counter()
        if answer.status_code != 204:
            raise RuntimeError(f"meta refused to revoke a PAT: {answer.status_code} {answer.text}")
        first: float | None = None
        streak = 0
        polls = 0
        while time.perf_counter() - started < bound:
            status = http.get(url, headers=bearer, timeout=10).status_code
            polls += 1
            now = time.perf_counter()
            if status == 401:
                if streak == 0:
                    first = now
                streak += 1
                if streak >= CONFIRM:
                    break
            else:
                streak, first = 0, None
            time.sleep(POLL_INTERVAL)
    latency = first - started if first is not None and streak >= CONFIRM else None
    return {"latency": latency, "revoke_call": revoked - started, "polls": polls}


def run_scenario(sc: Scenario, *, tokens: int, parallel: int) -> dict[str, Any] | None:
    import requests

    redis_url = REDIS_BENCH_URL if sc.store == "redis" else None
    if redis_url is not None:
        if not redis_available(redis_url):
            return None
        clear_redis_store(redis_url)
    tmp = Path(tempfile.mkdtemp(prefix="srcore-bench-revocation-"))
    net = network.prepare(
        tmp,
        tokens=WARMUP + tokens,
        redis_url=redis_url,
        pull_interval=sc.pull_interval,
        drop_pushes=not sc.push,
    )
    network.seed_todo_from_config(net)
    with contextlib.ExitStack() as stack:
        stack.enter_context(network.serve("meta", net, port=net.meta_port, workers=2))
        stack.enter_context(run_worker("meta", net.config, poll_interval=WORKER_POLL))
        stack.enter_context(network.serve("todo", net, port=net.todo_port, workers=sc.workers))
        # Every token works before it is revoked (and todo's workers have meta's keys).
        with requests.Session() as http:
            for pat in net.pats:
                answer = http.get(
                    net.todo_url + network.TICKET_PATH,
                    headers={"Authorization": f"Bearer {pat.token}"},
                    timeout=10,
                )
                if answer.status_code != 200:
                    raise RuntimeError(f"todo refused a fresh token: {answer.status_code}")
        rng = random.Random(1)

        def one(pat: network.Pat) -> dict[str, Any]:
            if not sc.push:
                # A revoke right after the 401 of the previous one would come right after a
                # pull, every time: a random pause spreads the revokes over the pull's phase.
                time.sleep(rng.uniform(0, sc.pull_interval))
            return measure_one(net, pat, sc.bound)

        for pat in net.pats[:WARMUP]:
            measure_one(net, pat, sc.bound)
        started = time.perf_counter()
        with ThreadPoolExecutor(max_workers=parallel) as pool:
            results = list(pool.map(one, net.pats[WARMUP:]))
        elapsed = time.perf_counter() - started
    latencies = [r["latency"] for r in results if r["latency"] is not None]
    return {
        "scenario": sc,
        "n": len(results),
        "misses": len(results) - len(latencies),
        "p50": percentile(latencies, 50),
        "p99": percentile(latencies, 99),
        "max": max(latencies) if latencies else float("nan"),
        "revoke_call": percentile([r["revoke_call"] for r in results], 50),
        "seconds": elapsed,
    }


def report(results: list[dict[str, Any]], skipped: list[Scenario], *, tokens: int) -> None:
    print(
        f"4. Revocation latency, revoke at meta -> 401 at todo ({tokens} PATs per row, "
        f"gunicorn on 127.0.0.1, polled every {POLL_INTERVAL * 1000:.0f} ms)"
    )
    print(
        f"   {'scenario':<28}{'todo':<29}{'p50 ms':>8}{'p99 ms':>8}{'max ms':>8}"
        f"{'misses':>8}{'revoke call ms':>16}   goal"
    )
    for r in results:
        sc: Scenario = r["scenario"]
        goal = (
            "p99 < 1000 ms"
            if sc.push
            else f"p99 <= pull interval ({sc.pull_interval * 1000:.0f} ms) + a request"
        )
        print(
            f"   {sc.label:<57}{r['p50'] * 1000:>8.0f}{r['p99'] * 1000:>8.0f}"
            f"{r['max'] * 1000:>8.0f}{r['misses']:>8}{r['revoke_call'] * 1000:>16.0f}   {goal}"
        )
    for sc in skipped:
        print(f"   {sc.label:<57}  (Redis not reachable, skipped)")
    print(
        "   push rows: todo's pull runs every 30 s, so meta's webhook alone is measured. dropped\n"
        "   rows: meta's worker delivers to todo's internal-origin, a port nobody listens on;\n"
        "   only the pull catches up, so the bound is the pull interval. misses = tokens\n"
        "   still accepted after the bound (push: 6 s; dropped: interval + 5 s). p99 of 50 =\n"
        "   the max.\n"
        "   revoke call = median time of meta's DELETE /api/tokens/<id> (the event is one\n"
        f"   outbox row in its transaction; meta's worker, polling every {WORKER_POLL:g} s,\n"
        "   delivers it to todo's /_srcore/events)."
    )
