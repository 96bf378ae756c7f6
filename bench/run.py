"""srcore benchmarks: ratios against a baseline measured in the same run, and latencies.

    .venv/bin/python bench/run.py                         # or: make bench
    .venv/bin/python bench/run.py --quick                 # fewer rounds, for a smoke run
    .venv/bin/python bench/run.py --only auth,revocation  # some sections only

1. (``api``, bench/api.py) todo's ``GET /api/trackers/<name>/tickets/<n>`` (bearer JWT,
   verified locally) against a bare Flask + SQLAlchemy app running todo's same cached
   statement and JSON code behind a dict lookup for auth; on SQLite and, when reachable,
   PostgreSQL: time per request in process, round trips on the wire, and requests per
   second under gunicorn with ``wrk`` (``--profile`` adds each side's Python calls per
   request by hook, which the machine's load does not move, and a cProfile of srcore's).
2. ``import + create_app`` of todo against ``import + Flask() + create_engine`` of a bare
   Flask + SQLAlchemy app, in fresh interpreters.
3. (``auth``, bench/auth.py) the same todo route with a Bearer JWT issued by a real meta
   under gunicorn against the same view without ``@oauth``, and the calls todo makes to
   meta while it serves them.
4. (``revocation``, bench/revocation.py) the time from a revoke at meta to the first 401
   at todo, meta and todo under gunicorn: with meta's push, and with pushes dropped.
5. (``webhooks``, bench/webhooks.py) emit cost with 1 vs 1,000 subscriptions,
   deliveries per second of one worker process (local or Celery) to a fast receiver,
   and the latency of a healthy receiver's events while another receiver trickles.

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
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
logging.getLogger("srcore").setLevel(logging.ERROR)  # config warnings of the throw-away files
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))


def quiet(config: Path) -> Path:
    """Set ``log-level = error``: at the default (info) srcore writes an access log line
    per request to stderr, which would flood the output and be timed with srcore's side."""
    text = config.read_text(encoding="utf-8")
    config.write_text(text.replace("[global]\n", "[global]\nlog-level = error\n", 1), "utf-8")
    return config


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
    parser.add_argument(
        "--profile",
        action="store_true",
        help="api: print calls per request by hook (both sides) and a cProfile of srcore's",
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
        import api

        api.section(backends, quick=options.quick, show_profile=options.profile)
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


def bench_startup_section(*, runs: int) -> None:
    startup = bench_startup(runs=runs)
    print("2. import + create_app, fresh interpreter (median of", runs, "runs)")
    print(f"   python -c pass          {startup['python']:>7.0f} ms")
    print(f"   bare Flask + SQLAlchemy {startup['bare']:>7.0f} ms")
    print(f"   todo on srcore          {startup['srcore']:>7.0f} ms")
    print(f"   ratio srcore / bare     {startup['ratio']:>7.2f}   (goal: at most 2)\n")


if __name__ == "__main__":
    sys.exit(main())
