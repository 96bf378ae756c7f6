"""The cost of authentication on todo's hottest API route, and the calls it makes to meta.

meta runs for real under gunicorn on 127.0.0.1 and issues the token (a personal access
token minted by ``meta.oauth.pats.create_token``). todo runs in process, built from the
same config, with its link to meta going through a counting HTTP session: the verifier
fetches meta's JWKS over HTTP on the first request, and every later call to meta (JWKS,
user look-ups, revocation pulls) is counted by path.

Two routes of the same todo app are timed, interleaved, with in-process WSGI calls:

- ``GET /api/trackers/bench/tickets/1``: todo's own view behind ``@oauth`` (Bearer JWT,
  verified locally, cached by hash, checked against the revocation store);
- ``GET /api/bench-noauth/trackers/bench/tickets/1``: the very same view function with
  the ``@oauth`` wrapper peeled off (``__wrapped__``): it sets the already verified token
  on ``g`` and runs the same query and JSON, so the difference is the auth check alone.
"""

from __future__ import annotations

import contextlib
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import network
from measure import counting, interleaved, round_trips, wsgi_caller

REDIS_BENCH_URL = "redis://127.0.0.1:6379/9"
NOAUTH_PREFIX = "/api/bench-noauth"


def counting_session() -> Any:
    """A requests session that counts the requests it sends, by path."""
    import requests

    class CountingSession(requests.Session):
        def __init__(self) -> None:
            super().__init__()
            self.calls: Counter[str] = Counter()

        def request(self, method: str | bytes, url: str | bytes, *args: Any, **kw: Any) -> Any:
            path = urlsplit(url if isinstance(url, str) else url.decode()).path
            self.calls[f"{method!s} {path}"] += 1
            return super().request(method, url, *args, **kw)

    return CountingSession()


def redis_available(url: str = REDIS_BENCH_URL) -> bool:
    try:
        import redis

        redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1).ping()
        return True
    except Exception:
        return False


def clear_redis_store(url: str, service_id: str = "todo") -> None:
    """Delete the revocation keys a previous run left (its seq would hide meta's new events)."""
    import redis

    client = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=2)
    prefix = f"srcore:revocation:{service_id}:"
    keys = list(client.scan_iter(match=prefix + "*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


@contextlib.contextmanager
def todo_database(backend: str, tmp: Path) -> Iterator[str | None]:
    """A database URL for todo on *backend*, or None when that backend is not reachable."""
    from srcore import testdb

    if backend == "sqlite":
        yield f"sqlite:///{tmp / 'todo.db'}"
        return
    if not testdb.postgres_available():
        yield None
        return
    url = testdb.create_test_database(prefix="srcore_bench")
    try:
        yield url
    finally:
        testdb.drop_test_database(url)


def add_noauth_variant(app: Any, token: list[Any]) -> str:
    """Register todo's get_ticket view without its ``@oauth`` wrapper; return the path.

    *token* will hold the verified token (Flask takes no new routes after a request, and
    the token is verified by the first request, which fetches meta's keys).
    """
    from flask import g
    from todo.api import NUMBER

    inner = app.view_functions["api.get_ticket"].__wrapped__

    def get_ticket_noauth(name: str, number: int) -> Any:
        g.srcore_token = token[0]  # what @oauth sets after its check, minus the check
        return inner(name=name, number=number)

    app.add_url_rule(
        f"{NOAUTH_PREFIX}/trackers/<name>/tickets/{NUMBER}",
        endpoint="bench_noauth_get_ticket",
        view_func=get_ticket_noauth,
    )
    return NOAUTH_PREFIX + network.TICKET_PATH.removeprefix("/api")


def wait_for(check: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def bench_auth(
    backend: str, *, n: int, rounds: int, store: str = "memory"
) -> dict[str, Any] | None:
    """Time the two routes on *backend* with the in-process or Redis revocation store."""
    import todo

    from srcore.auth.oauth_client import build_meta_link
    from srcore.config import load_config
    from srcore.manifest import load_manifest

    redis_url = REDIS_BENCH_URL if store == "redis" else None
    if redis_url is not None:
        if not redis_available(redis_url):
            return None
        clear_redis_store(redis_url)
    tmp = Path(tempfile.mkdtemp(prefix=f"srcore-bench-auth-{backend}-"))
    with todo_database(backend, tmp) as url:
        if url is None:
            return None
        net = network.prepare(
            tmp, tokens=1, todo_database_url=url, redis_url=redis_url, pull_interval=30
        )
        token = net.pats[0].token
        with network.serve("meta", net, port=net.meta_port):
            http = counting_session()
            config = load_config(net.config, specs=dict(load_manifest("todo").config))
            link = build_meta_link(config, "todo", http=http)
            assert link is not None and link.puller is not None
            app = todo.create_app(config=config, identity=link)
            st = app.extensions["srcore"]
            network.seed_todo(app, net.user_id)

            verified: list[Any] = []  # filled after the first request (no IO before it)
            noauth_path = add_noauth_variant(app, verified)
            headers = {"Authorization": f"Bearer {token}"}
            auth_call = wsgi_caller(app, network.TICKET_PATH, headers)
            assert auth_call() == 200, "todo's API did not answer 200 with meta's token"
            # The first request started the revocation pull; let its first round finish so
            # that it is not mistaken for a call the timed requests made.
            wait_for(lambda: link.puller.pulls >= 1, 10)
            before = Counter(http.calls)
            verified.append(st.token_verifier.verify(token))
            noauth_call = wsgi_caller(app, noauth_path, {})
            assert noauth_call() == 200, "the no-auth variant did not answer 200"

            with counting(st.db.engine) as auth_counts:
                auth_call()
            with counting(st.db.engine) as noauth_counts:
                noauth_call()
            http.calls.clear()
            started = time.perf_counter()
            times = interleaved({"auth": auth_call, "noauth": noauth_call}, n=n, rounds=rounds)
            elapsed = time.perf_counter() - started
            during = Counter(http.calls)
            fetches = link.keys.fetches
            if link.puller is not None:
                link.puller.stop()
            st.db.dispose()
    pulls = sum(v for k, v in during.items() if k.endswith("/oauth/revocations"))
    return {
        "backend": backend,
        "store": store,
        "auth_us": times["auth"],
        "noauth_us": times["noauth"],
        "ratio": times["auth"] / times["noauth"],
        "auth_statements": auth_counts["statements"],
        "noauth_statements": noauth_counts["statements"],
        "auth_round_trips": round_trips(auth_counts, backend),
        "noauth_round_trips": round_trips(noauth_counts, backend),
        "meta_before": dict(before),
        "meta_during": dict(during),
        "meta_during_requests": sum(during.values()) - pulls,
        "meta_during_pulls": pulls,
        "jwks_fetches": fetches,
        "timed_seconds": elapsed,
        "requests": 2 * (n * rounds + max(50, n // 10)),
    }


def report(
    results: list[dict[str, Any] | None], skipped: list[str], *, n: int, rounds: int
) -> None:
    print(
        "3. Bearer JWT from real meta vs the same todo route without @oauth "
        f"(in-process WSGI, {n} requests x {rounds} rounds, median)"
    )
    print(
        f"   {'backend':<11}{'store':<8}{'auth µs':>9}{'no-auth µs':>12}{'ratio':>7}"
        f"{'SQL stmts':>11}{'round trips':>13}{'meta calls':>12}{'pulls':>7}"
    )
    for r in results:
        if r is None:
            continue
        print(
            f"   {r['backend']:<11}{r['store']:<8}{r['auth_us']:>9.0f}{r['noauth_us']:>12.0f}"
            f"{r['ratio']:>7.2f}"
            f"{str(r['auth_statements']) + ' vs ' + str(r['noauth_statements']):>11}"
            f"{str(r['auth_round_trips']) + ' vs ' + str(r['noauth_round_trips']):>13}"
            f"{r['meta_during_requests']:>12}{r['meta_during_pulls']:>7}"
        )
    for what in skipped:
        print(f"   {what}  (not reachable, skipped)")
    print("   goals: ratio at most 1.15; meta calls during the timed run 0")
    for r in results:
        if r is None:
            continue
        before = ", ".join(f"{k} x{v}" for k, v in sorted(r["meta_before"].items())) or "none"
        print(
            f"   {r['backend']}/{r['store']}: before timing, todo called meta: {before}; "
            f"JWKS fetched {r['jwks_fetches']}x in all; {r['requests']} timed requests "
            f"in {r['timed_seconds']:.1f} s"
        )
    print(
        "   meta calls = requests to meta during the timed loop other than the revocation pull;"
        "\n   pulls = background GET /oauth/revocations rounds in that time (every 30 s here,"
        "\n   whatever the load). store: memory = in-process revocation store, redis = "
        "[global] redis-url\n   (checks read a per-process copy kept current by Redis pub/sub)."
    )
