"""What srcore's write rate limits cost a write request, in process, on SQLite.

    .venv/bin/python bench/ratelimit.py [--quick]

todo's app with ``write-rate-limit = off`` against the same app counting writes in
memory and in Redis (when reachable on 127.0.0.1:6379), each POST carrying a bearer
token of one user: a no-op POST view (the limit's whole cost shows) and a real one
(``POST /api/trackers/<name>/tickets``, a row and an event written). The limits are the
default ones, and the requests take turns among many users so that every request is
counted and none refused (a moving window costs in proportion to its count). Reads are
not measured here: a GET returns from the limit's hook after one comparison.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

REDIS_URL = "redis://127.0.0.1:6379/0"
LIMITS = "60/minute, 500/hour"  # the default
#: Users the requests take turns as, so that no one of them reaches the limits: a full run
#: makes about 8,400 writes per app, 14 per user, under the 60 a minute allowed.
USERS = 600


def _redis_up() -> bool:
    try:
        import redis

        return bool(redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1).ping())
    except Exception:  # no server, no package: the Redis row is left out
        return False


def _poster(app: Any, path: str, bearers: list[str], body: Callable[[], dict[str, Any]]) -> Any:
    client = app.test_client()
    turns = itertools.cycle([{"Authorization": bearer} for bearer in bearers])

    def call() -> int:
        answer = client.post(path, json=body(), headers=next(turns))
        if answer.status_code >= 400:
            text = answer.get_data(as_text=True)
            raise RuntimeError(f"POST {path} answered {answer.status_code}: {text}")
        return int(answer.status_code)

    return call


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds, for a smoke run")
    args = parser.parse_args()
    n, rounds = (40, 6) if args.quick else (200, 20)

    import api
    from measure import paired

    from srcore.testing import _signing_key, mint_token

    with api.prepared("sqlite") as setup:
        assert setup is not None
        key = _signing_key()
        setup.jwks.write_text(json.dumps({"keys": [key.as_dict(private=False)]}), "utf-8")
        scopes = "todo/trackers:RW todo/tickets:RW"
        ids = range(1000, 1000 + USERS)
        bearers = [
            "Bearer " + mint_token(key, audience="todo", scopes=scopes, user_id=i) for i in ids
        ]
        text = setup.config.read_text(encoding="utf-8").replace("write-rate-limit = off\n", "")
        kinds = {"off": "write-rate-limit = off\n", "memory": f"write-rate-limit = {LIMITS}\n"}
        if _redis_up():
            kinds["redis"] = f"write-rate-limit = {LIMITS}\nredis-url = {REDIS_URL}\n"
        apps = {}
        for kind, lines in kinds.items():
            path = setup.tmp / f"config-{kind}.ini"
            path.write_text(text.replace("[global]\n", "[global]\n" + lines, 1), "utf-8")
            app = _rebuilt(setup, path)
            app.add_url_rule("/api/_noop", "bench_noop", lambda: ("", 204), methods=["POST"])
            app.extensions["srcore.ratelimit"].prefix = f"srcore-bench/{uuid.uuid4().hex}"
            apps[kind] = app
        _add_users(apps["off"], ids, list(kinds))
        for app in apps.values():  # each token verified once, as a busy client's would be
            warm = app.test_client()
            for bearer in bearers:
                warm.post("/api/_noop", headers={"Authorization": bearer})
        cases = {
            "no-op POST view": ("/api/_noop", lambda: {}),
            "POST a ticket": ("/api/trackers/bench-{kind}/tickets", lambda: {"title": "t"}),
        }
        print(f"write limits ({LIMITS}): µs per POST in process, SQLite, n={n} x {rounds}")
        for label, (path, body) in cases.items():
            base = _poster(apps["off"], path.format(kind="off"), bearers, body)
            row = []
            for kind in [k for k in kinds if k != "off"]:
                counted = _poster(apps[kind], path.format(kind=kind), bearers, body)
                result = paired(counted, base, n=n, rounds=rounds)
                row.append(
                    f"{kind} {result['first']:.0f} µs vs off {result['second']:.0f} µs, "
                    f"ratio {result['ratio']:.2f} ({result['ratio_q1']:.2f}-"
                    f"{result['ratio_q3']:.2f}), +{result['first'] - result['second']:.0f} µs"
                )
            print(f"  {label}:")
            for line in row:
                print(f"    {line}")
        for app in apps.values():
            app.extensions["srcore"].db.dispose()
        if "redis" in kinds:
            _forget(apps["redis"].extensions["srcore.ratelimit"].prefix)


def _add_users(app: Any, ids: range, kinds: list[str]) -> None:
    """Users *ids*, each with a tracker per app (``bench-<kind>``): apps that took turns
    on one tracker would number its tickets in turn, each in its own session."""
    from todo.models import Tracker, User, Visibility

    from srcore.db import UserType

    with app.extensions["srcore"].db.transaction() as session:
        for i in ids:
            email = f"u{i}@example.org"
            session.add(User(id=i, username=f"u{i}", email=email, user_type=UserType.active))
        session.flush()
        for i in ids:
            for kind in kinds:
                name = f"bench-{kind}"
                session.add(
                    Tracker(owner_id=i, name=name, description="", visibility=Visibility.public)
                )


def _rebuilt(setup: Any, config: Path) -> Any:
    import api

    return api.build_srcore(
        api.Setup(setup.backend, setup.tmp, setup.url, config, setup.jwks, setup.token)
    )


def _forget(prefix: str) -> None:
    import redis

    connection = redis.Redis.from_url(REDIS_URL)
    for key in connection.scan_iter(f"*{prefix}*"):
        connection.delete(key)
    connection.close()


if __name__ == "__main__":
    main()
