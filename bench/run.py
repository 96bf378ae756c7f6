"""srcore benchmarks: ratios against a baseline measured in the same run, and latencies.

    .venv/bin/python bench/run.py                         # or: make bench
    .venv/bin/python bench/run.py --quick                 # fewer rounds, for a smoke run
    .venv/bin/python bench/run.py --only auth,revocation  # some sections only

1. todo's ``GET /api/trackers/<name>/tickets/<n>`` (bearer JWT, verified locally) against a
   bare Flask route that runs the same SQLAlchemy query behind a dict lookup for auth; on
   SQLite and, when reachable, PostgreSQL. Time per request, SQL statements and round trips.
2. ``import + create_app`` of todo against ``import + Flask() + create_engine`` of a bare
   Flask + SQLAlchemy app, in fresh interpreters.
3. (``auth``, bench/auth.py) the same todo route with a Bearer JWT issued by a real meta
   under gunicorn against the same view without ``@oauth``, and the calls todo makes to
   meta while it serves them.
4. (``revocation``, bench/revocation.py) the time from a revoke at meta to the first 401
   at todo, meta and todo under gunicorn: with meta's push, and with pushes dropped.
5. (``webhooks``, bench/webhooks.py) emit cost with 1 vs 1,000 subscriptions, and
   deliveries per second of one local-worker or Celery worker process.

Both sides of each ratio are measured interleaved in the same run, so machine noise hits
both alike. Nothing here asserts on time; it prints.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
logging.getLogger("srcore").setLevel(logging.ERROR)  # config warnings of the throw-away files
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from measure import counting, interleaved, round_trips, wsgi_caller  # noqa: E402


def quiet(config: Path) -> Path:
    """Set ``log-level = error``: at the default (info) srcore writes an access log line
    per request to stderr, which would flood the output and be timed with srcore's side."""
    text = config.read_text(encoding="utf-8")
    config.write_text(text.replace("[global]\n", "[global]\nlog-level = error\n", 1), "utf-8")
    return config


# -- 1. API GET one ticket ----------------------------------------------------------------------


def make_bare_app(database_url: str, tokens: dict[str, tuple[int, Any]]) -> tuple[Any, Any]:
    """A bare Flask app serving the same JSON from the same query, with dict-lookup auth."""
    from flask import Flask, abort, request
    from sqlalchemy import create_engine, select
    from sqlalchemy.orm import sessionmaker
    from todo.api import ticket_json
    from todo.models import Ticket, Tracker, User

    from srcore.db import normalize_url

    engine = create_engine(normalize_url(database_url))
    make_session = sessionmaker(engine, expire_on_commit=False)
    app = Flask("bare")

    @app.get("/api/trackers/<name>/tickets/<int:number>")
    def get_ticket(name: str, number: int) -> Any:
        caller = tokens.get(request.headers.get("Authorization", ""))
        if caller is None:
            abort(401)
        user_id, owner = caller
        with make_session() as session:
            row = session.execute(
                select(Tracker, Ticket, User)
                .join(Ticket, Ticket.tracker_id == Tracker.id)
                .join(User, Ticket.submitter_id == User.id)
                .where(Tracker.owner_id == user_id, Tracker.name == name, Ticket.number == number)
            ).first()
            if row is None:
                abort(404)
            tracker, ticket, submitter = row
            return ticket_json(ticket, tracker, owner, submitter)

    return app, engine


def bench_api(backend: str, *, n: int, rounds: int) -> dict[str, Any] | None:
    import todo
    from joserfc.jwk import KeySet
    from todo.models import Ticket, TicketStatus, Tracker, User, Visibility

    from srcore import migrate, testdb
    from srcore.auth.tokens import StaticKeySource, TokenVerifier
    from srcore.db import UserType
    from srcore.testing import TEST_ISSUER, _signing_key, mint_token, write_config

    tmp = Path(tempfile.mkdtemp(prefix=f"srcore-bench-{backend}-"))
    drop: Callable[[], None] = lambda: None  # noqa: E731
    if backend == "sqlite":
        url = f"sqlite:///{tmp / 'todo.db'}"
    else:
        if not testdb.postgres_available():
            return None
        url = testdb.create_test_database(prefix="srcore_bench")
        drop = lambda: testdb.drop_test_database(url)  # noqa: E731
    try:
        config = quiet(write_config(tmp / "config.ini", service_id="todo", database_url=url))
        key = _signing_key()
        verifier = TokenVerifier(
            keys=StaticKeySource(KeySet([key])), issuer=TEST_ISSUER, audience="todo"
        )
        app = todo.create_app(config=config, token_verifier=verifier)
        st = app.extensions["srcore"]
        migrate.upgrade_all(
            migrate.MigrationTarget(
                service_id="todo",
                database_url=url,
                metadata=st.metadata,
                versions_dir=Path(todo.__file__).parent / "migrations" / "versions",
            )
        )
        with st.db.transaction() as session:
            user = User(
                id=1, username="alice", email="alice@example.org", user_type=UserType.active
            )
            session.add(user)
            session.flush()
            tracker = Tracker(
                owner_id=1, name="bench", description="", visibility=Visibility.public
            )
            session.add(tracker)
            session.flush()
            session.add(
                Ticket(
                    tracker_id=tracker.id,
                    number=1,
                    title="A ticket",
                    description="Some *markdown*.",
                    status=TicketStatus.open,
                    submitter_id=1,
                )
            )
        token = mint_token(key, audience="todo", scopes="todo/tickets:RO", user_id=1)
        path = "/api/trackers/bench/tickets/1"
        srcore_call = wsgi_caller(app, path, {"Authorization": f"Bearer {token}"})
        owner = User(id=1, username="alice")
        bare_app, bare_engine = make_bare_app(url, {"Bearer bare-token": (1, owner)})
        bare_call = wsgi_caller(bare_app, path, {"Authorization": "Bearer bare-token"})
        assert srcore_call() == 200, "todo's API did not answer 200"
        assert bare_call() == 200, "the bare app did not answer 200"

        with counting(st.db.engine) as srcore_counts:
            srcore_call()
        with counting(bare_engine) as bare_counts:
            bare_call()
        times = interleaved({"srcore": srcore_call, "bare": bare_call}, n=n, rounds=rounds)
        st.db.dispose()
        bare_engine.dispose()
        return {
            "backend": backend,
            "srcore_us": times["srcore"],
            "bare_us": times["bare"],
            "ratio": times["srcore"] / times["bare"],
            "srcore_statements": srcore_counts["statements"],
            "bare_statements": bare_counts["statements"],
            "srcore_round_trips": round_trips(srcore_counts, backend),
            "bare_round_trips": round_trips(bare_counts, backend),
        }
    finally:
        drop()


# -- 2. import + create_app -----------------------------------------------------------------------


BARE_STARTUP = """
from flask import Flask
from sqlalchemy import create_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker
class Base(DeclarativeBase):
    pass
class Ticket(Base):
    __tablename__ = "ticket"
    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str]
app = Flask("bare")
app.config["SECRET_KEY"] = "x" * 40
engine = create_engine({url!r})
Session = sessionmaker(engine)
@app.get("/")
def index():
    return {{}}
"""

SRCORE_STARTUP = """
import todo
app = todo.create_app(config={config!r})
"""


def time_startup(code: str) -> float:
    start = time.perf_counter()
    # stderr is kept for a failure only: the throw-away config's warnings are noise here.
    done = subprocess.run([sys.executable, "-c", code], stderr=subprocess.PIPE, check=False)
    if done.returncode != 0:
        sys.stderr.write(done.stderr.decode(errors="replace"))
        raise subprocess.CalledProcessError(done.returncode, code)
    return (time.perf_counter() - start) * 1000


def bench_startup(*, runs: int) -> dict[str, float]:
    from srcore.testing import write_config

    tmp = Path(tempfile.mkdtemp(prefix="srcore-bench-startup-"))
    url = f"sqlite:///{tmp / 'todo.db'}"
    config = quiet(write_config(tmp / "config.ini", service_id="todo", database_url=url))
    contenders = {
        "python": "pass",
        "bare": BARE_STARTUP.format(url=url),
        "srcore": SRCORE_STARTUP.format(config=str(config)),
    }
    for code in contenders.values():
        time_startup(code)  # warm the OS page cache and .pyc files
    samples: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(runs):
        for name, code in contenders.items():
            samples[name].append(time_startup(code))
    result = {name: statistics.median(values) for name, values in samples.items()}
    result["ratio"] = result["srcore"] / result["bare"]
    return result


# -- report ---------------------------------------------------------------------------------


SECTIONS = ("api", "startup", "auth", "revocation", "webhooks")


def main() -> int:
    parser = argparse.ArgumentParser(description="srcore benchmarks (ratios against baselines)")
    parser.add_argument("--quick", action="store_true", help="fewer requests and rounds")
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument(
        "--only",
        default=",".join(SECTIONS),
        help=f"comma-separated sections to run, of: {', '.join(SECTIONS)}",
    )
    options = parser.parse_args()
    only = [name.strip() for name in options.only.split(",") if name.strip()]
    unknown = sorted(set(only) - set(SECTIONS))
    if unknown:
        parser.error(f"unknown section(s) {', '.join(unknown)}; choose from {', '.join(SECTIONS)}")
    n, rounds, runs = (300, 3, 3) if options.quick else (2000, 7, 10)
    backends = options.backends.split(",")

    print(f"srcore benchmarks - Python {sys.version.split()[0]}, {n} requests x {rounds} rounds")
    print(f"sections: {', '.join(only)}{' (quick)' if options.quick else ''}\n")
    if "api" in only:
        bench_api_section(backends, n=n, rounds=rounds)
    if "startup" in only:
        bench_startup_section(runs=runs)
    if "auth" in only:
        import auth

        results, skipped = [], []
        for backend in backends:
            for store in ("memory", "redis"):
                result = auth.bench_auth(backend, n=n, rounds=rounds, store=store)
                results.append(result)
                if result is None:
                    skipped.append(f"{backend:<11}{store:<8}")
        auth.report(results, skipped, n=n, rounds=rounds)
        print()
    if "revocation" in only:
        import revocation

        tokens, pull_interval = (10, 1.0) if options.quick else (50, 2.0)
        done, missing = [], []
        for scenario in revocation.scenarios(pull_interval):
            result = revocation.run_scenario(
                scenario, tokens=tokens, parallel=1 if scenario.push else 2
            )
            if result is None:
                missing.append(scenario)
            else:
                done.append(result)
        revocation.report(done, missing, tokens=tokens)
        print()
    if "webhooks" in only:
        import webhooks

        webhooks.section(backends, quick=options.quick, number="5")
    return 0


def bench_api_section(backends: list[str], *, n: int, rounds: int) -> None:
    print("1. API GET of one ticket (todo, bearer JWT) vs bare Flask + same query (dict auth)")
    print(
        f"   {'backend':<11}{'srcore µs':>10}{'bare µs':>10}{'ratio':>8}   statements   round trips"
    )
    for backend in backends:
        result = bench_api(backend, n=n, rounds=rounds)
        if result is None:
            print(f"   {backend:<11}  (not reachable, skipped)")
            continue
        print(
            f"   {backend:<11}{result['srcore_us']:>10.0f}{result['bare_us']:>10.0f}"
            f"{result['ratio']:>8.2f}   "
            f"{result['srcore_statements']} vs {result['bare_statements']}"
            f"       {result['srcore_round_trips']} vs {result['bare_round_trips']}"
        )
    print("   goal: ratio at most 1.2\n")


def bench_startup_section(*, runs: int) -> None:
    startup = bench_startup(runs=runs)
    print("2. import + create_app, fresh interpreter (median of", runs, "runs)")
    print(f"   python -c pass          {startup['python']:>7.0f} ms")
    print(f"   bare Flask + SQLAlchemy {startup['bare']:>7.0f} ms")
    print(f"   todo on srcore          {startup['srcore']:>7.0f} ms")
    print(f"   ratio srcore / bare     {startup['ratio']:>7.2f}   (goal: at most 2)\n")


if __name__ == "__main__":
    sys.exit(main())
