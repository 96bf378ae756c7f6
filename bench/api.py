"""Section 1: todo's API GET of one ticket against a bare Flask + SQLAlchemy app.

Both sides serve ``GET /api/trackers/bench/tickets/1`` from the same database with the
same code: todo's cached statement (``todo.api._ticket_with_people()``, built once per
process, never per request) and todo's ``ticket_json``. What differs is the framework:

- todo, on srcore: a bearer JWT verified by ``@oauth`` (cached by hash after the first
  request), request hygiene, ids, security headers, CORS, metrics, the access log hook,
  the request session, which on a GET runs its query in autocommit;
- bare: ``Flask()``, a dict lookup of the ``Authorization`` header and a plain
  SQLAlchemy ``Session`` (``BEGIN``, the query, ``ROLLBACK`` on PostgreSQL).

Measured two ways: in process (WSGI calls, interleaved rounds; µs per request) with the
round trips each side sends (:mod:`srcore.sqltrace`), and under gunicorn (the same worker
count for both, srcore with the options ``srcore serve`` passes) loaded by ``wrk``, whose
requests per second are compared. gunicorn loads the apps from this module
(:func:`served`), so both are built exactly as in process.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import network
from measure import paired, wsgi_caller

#: The bare app's whole authentication is a lookup of this header value in a dict.
BARE_TOKEN = "Bearer bare-token"
USER_ID = 1


@dataclass
class Setup:
    """A migrated, seeded todo database and what both apps need to serve it."""

    backend: str
    tmp: Path
    url: str
    config: Path
    jwks: Path
    token: str

    @property
    def bearer(self) -> str:
        return f"Bearer {self.token}"

    def as_file(self) -> Path:
        path = self.tmp / "setup.json"
        fields = {"backend": self.backend, "url": self.url, "config": str(self.config)}
        fields.update(jwks=str(self.jwks), token=self.token)
        path.write_text(json.dumps(fields), encoding="utf-8")
        return path

    @classmethod
    def from_file(cls, path: str) -> Setup:
        fields = json.loads(Path(path).read_text(encoding="utf-8"))
        return cls(
            backend=fields["backend"],
            tmp=Path(path).parent,
            url=fields["url"],
            config=Path(fields["config"]),
            jwks=Path(fields["jwks"]),
            token=fields["token"],
        )


@contextlib.contextmanager
def prepared(backend: str) -> Iterator[Setup | None]:
    """A seeded database on *backend* (None when PostgreSQL is not reachable)."""
    import todo

    from srcore import migrate, testdb
    from srcore.testing import _signing_key, mint_token, write_config

    if backend == "postgresql" and not testdb.postgres_available():
        yield None
        return
    tmp = Path(tempfile.mkdtemp(prefix=f"srcore-bench-api-{backend}-"))
    if backend == "sqlite":
        url = f"sqlite:///{tmp / 'todo.db'}"
    else:
        url = testdb.create_test_database(prefix="srcore_bench")
    try:
        config = write_config(tmp / "config.ini", service_id="todo", database_url=url)
        text = config.read_text(encoding="utf-8")
        # At the default level srcore logs a line per request, which the bare app does not.
        config.write_text(text.replace("[global]\n", "[global]\nlog-level = error\n", 1))
        key = _signing_key()
        jwks = tmp / "jwks.json"
        jwks.write_text(json.dumps({"keys": [key.as_dict(private=False)]}), encoding="utf-8")
        token = mint_token(key, audience="todo", scopes="todo/tickets:RO", user_id=USER_ID)
        setup = Setup(backend, tmp, url, config, jwks, token)
        app = build_srcore(setup)
        st = app.extensions["srcore"]
        migrate.upgrade_all(
            migrate.MigrationTarget(
                service_id="todo",
                database_url=url,
                metadata=st.metadata,
                versions_dir=Path(todo.__file__).parent / "migrations" / "versions",
            )
        )
        network.seed_todo(app, USER_ID)
        st.db.dispose()
        yield setup
    finally:
        if backend == "postgresql":
            testdb.drop_test_database(url)
        shutil.rmtree(tmp, ignore_errors=True)


def build_srcore(setup: Setup) -> Any:
    """todo as it runs, trusting the bench's signing key instead of meta's."""
    import todo
    from joserfc.jwk import KeySet

    from srcore.auth.tokens import StaticKeySource, TokenVerifier
    from srcore.testing import TEST_ISSUER

    keys = KeySet.import_key_set(json.loads(setup.jwks.read_text(encoding="utf-8")))
    verifier = TokenVerifier(keys=StaticKeySource(keys), issuer=TEST_ISSUER, audience="todo")
    return todo.create_app(config=setup.config, token_verifier=verifier)


def build_bare(setup: Setup) -> tuple[Any, Any]:
    """The bare app and its engine: todo's statement and JSON, a dict for auth."""
    from flask import Flask, abort, request
    from sqlalchemy import create_engine
    from sqlalchemy.orm import sessionmaker
    from todo import logic
    from todo.api import _ticket_with_people
    from todo.shapes import ticket_json

    from srcore.db import normalize_url

    engine = create_engine(normalize_url(setup.url))
    make_session = sessionmaker(engine, expire_on_commit=False)
    statement = _ticket_with_people()  # the very object todo's view executes
    tokens = {BARE_TOKEN: USER_ID}
    app = Flask("bare")
    app.json.sort_keys = False  # type: ignore[attr-defined]  # as srcore's provider

    @app.get("/api/trackers/<name>/tickets/<int:number>")
    def get_ticket(name: str, number: int) -> Any:
        user_id = tokens.get(request.headers.get("Authorization", ""))
        if user_id is None:
            abort(401)
        if not logic.plausible_name(name):
            abort(404)
        with make_session() as session:
            row = session.execute(
                statement, {"owner_id": user_id, "name": name, "number": number}
            ).first()
            if row is None:
                abort(404)
            tracker, ticket, owner, submitter = row
            if owner.is_suspended:
                abort(403)
            return ticket_json(ticket, tracker, owner, submitter)

    return app, engine


def served(kind: str, setup_path: str) -> Any:
    """The WSGI app gunicorn runs: ``api:served('srcore', '/tmp/.../setup.json')``."""
    import logging

    logging.getLogger("srcore").setLevel(logging.ERROR)
    setup = Setup.from_file(setup_path)
    return build_srcore(setup) if kind == "srcore" else build_bare(setup)[0]


# -- in process -------------------------------------------------------------------------


def wire_of(engine: Any, call: Callable[[], int]) -> list[str]:
    from srcore import sqltrace

    with sqltrace.watch(engine) as wire:
        status = call()
    if status != 200:
        raise RuntimeError(f"the request answered {status}")
    return wire.sent


def in_process(setup: Setup, *, n: int, rounds: int) -> dict[str, Any]:
    app = build_srcore(setup)
    bare_app, bare_engine = build_bare(setup)
    srcore_call = wsgi_caller(app, network.TICKET_PATH, {"Authorization": setup.bearer})
    bare_call = wsgi_caller(bare_app, network.TICKET_PATH, {"Authorization": BARE_TOKEN})
    for call in (srcore_call, bare_call, srcore_call, bare_call):  # warm: token cache, pool
        if call() != 200:
            raise RuntimeError("a contender did not answer 200")
    engine = app.extensions["srcore"].db.engine
    wires = {"srcore": wire_of(engine, srcore_call), "bare": wire_of(bare_engine, bare_call)}
    timed = paired(srcore_call, bare_call, n=n, rounds=rounds)
    app.extensions["srcore"].db.dispose()
    bare_engine.dispose()
    return {"srcore": timed["first"], "bare": timed["second"], "wires": wires, **timed}


def profile(setup: Setup, *, n: int, top: int = 25) -> str:
    """cProfile of *n* srcore requests, the functions with the most own time first."""
    import cProfile
    import io
    import pstats

    app = build_srcore(setup)
    call = wsgi_caller(app, network.TICKET_PATH, {"Authorization": setup.bearer})
    for _ in range(50):
        call()
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(n):
        call()
    profiler.disable()
    app.extensions["srcore"].db.dispose()
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    out.write(f"{stats.total_calls / n:.0f} function calls per request\n")  # type: ignore[attr-defined]
    stats.sort_stats("tottime").print_stats(top)
    return out.getvalue()


# -- gunicorn + wrk ---------------------------------------------------------------------


@dataclass
class Served:
    """An app under gunicorn: its URL and its master's process id."""

    url: str
    pid: int

    def cpu_seconds(self) -> float:
        """User and system CPU time its workers have used so far (Linux ``/proc``)."""
        total = 0
        master = Path(f"/proc/{self.pid}/task/{self.pid}/children")
        for child in master.read_text(encoding="ascii").split():
            with contextlib.suppress(OSError):  # a worker that just exited
                fields = Path(f"/proc/{child}/stat").read_text(encoding="ascii")
                utime, stime = fields.rsplit(")", 1)[1].split()[11:13]
                total += int(utime) + int(stime)
        return total / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def gunicorn(kind: str, setup: Setup, *, workers: int, timeout: float = 30) -> Iterator[Served]:
    """Serve *kind* under gunicorn on 127.0.0.1 until the block ends, run by
    :mod:`srcore.supervisor` (its own process group, stopped with its workers); its log
    goes to a file beside the setup's."""
    from srcore.serving import gunicorn_options
    from srcore.supervisor import Program, Supervisor
    from srcore.testing import free_port

    port = free_port()
    options = gunicorn_options() if kind == "srcore" else []
    argv = (
        sys.executable,
        "-m",
        "gunicorn",
        "--bind",
        f"127.0.0.1:{port}",
        "--workers",
        str(workers),
        "--graceful-timeout",
        "2",
        "--control-socket",
        str(setup.tmp / f"gunicorn-{port}.ctl"),
        "--pythonpath",
        str(Path(__file__).resolve().parent),
        *options,
        f"api:served({kind!r}, {str(setup.as_file())!r})",
    )
    url = f"http://127.0.0.1:{port}"
    authorization = BARE_TOKEN if kind == "bare" else setup.bearer

    def answers() -> bool:
        request = urllib.request.Request(
            url + network.TICKET_PATH, headers={"Authorization": authorization}
        )
        try:
            with urllib.request.urlopen(request, timeout=1) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    with (
        open(setup.tmp / f"gunicorn-{kind}-{port}.log", "a", encoding="utf-8") as log,
        Supervisor(log, name="bench", stop_timeout=10) as supervisor,
    ):
        child = supervisor.start(Program(kind, argv))
        supervisor.wait_until(answers, child, timeout=timeout)
        yield Served(url, child.pid)


_RATE = re.compile(r"Requests/sec:\s+([\d.]+)")
_COUNT = re.compile(r"(\d+) requests in ")
_BAD = re.compile(r"Non-2xx or 3xx responses:\s+(\d+)|Socket errors:.*timeout (\d+)")


def wrk(url: str, authorization: str, *, seconds: float, connections: int) -> tuple[float, int]:
    """Requests per second and requests ``wrk`` got from *url*; raises on any non-200."""
    command = [
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{seconds:g}s",
        "--timeout",
        "5s",
        "-H",
        f"Authorization: {authorization}",
        url + network.TICKET_PATH,
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 30, check=True)
    bad = [int(g) for m in _BAD.finditer(done.stdout) for g in m.groups() if g]
    if any(bad):
        raise RuntimeError(f"wrk saw failed requests:\n{done.stdout}")
    rate, count = _RATE.search(done.stdout), _COUNT.search(done.stdout)
    if rate is None or count is None:
        raise RuntimeError(f"no Requests/sec in wrk's output:\n{done.stdout}")
    return float(rate.group(1)), int(count.group(1))


def under_gunicorn(
    setup: Setup, *, seconds: float, rounds: int, workers: int, connections: int
) -> dict[str, float]:
    """Both apps served at once and loaded by turns (ABBA, so a drift in the machine's
    load hits both alike); per app the median req/s and the workers' median CPU time per
    request, which other processes' load disturbs far less than the wall clock, and the
    median of the rounds' req/s ratios."""
    import statistics

    kinds = ("srcore", "bare")
    rates: dict[str, list[float]] = {kind: [] for kind in kinds}
    cpu: dict[str, list[float]] = {kind: [] for kind in kinds}
    auth = {"srcore": setup.bearer, "bare": BARE_TOKEN}
    with (
        gunicorn("srcore", setup, workers=workers) as srcore_served,
        gunicorn("bare", setup, workers=workers) as bare_served,
    ):
        served = {"srcore": srcore_served, "bare": bare_served}
        for kind in kinds:  # warm up: imports done lazily, pools, token caches
            wrk(served[kind].url, auth[kind], seconds=1, connections=connections)
        for turn in range(rounds):
            for kind in kinds if turn % 2 == 0 else reversed(kinds):
                before = served[kind].cpu_seconds()
                rate, count = wrk(
                    served[kind].url, auth[kind], seconds=seconds, connections=connections
                )
                rates[kind].append(rate)
                cpu[kind].append((served[kind].cpu_seconds() - before) / count * 1e6)
    result = {kind: statistics.median(values) for kind, values in rates.items()}
    result.update({f"{kind}_cpu_us": statistics.median(cpu[kind]) for kind in kinds})
    ratios = [s / b for s, b in zip(rates["srcore"], rates["bare"], strict=True)]
    result["ratio"] = statistics.median(ratios)
    quartiles = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else ratios * 3
    result["ratio_q1"], result["ratio_q3"] = quartiles[0], quartiles[-1]
    result["cpu_ratio"] = result["srcore_cpu_us"] / result["bare_cpu_us"]
    return result


# -- report -----------------------------------------------------------------------------


def section(backends: list[str], *, quick: bool, show_profile: bool = False) -> None:
    n, rounds = (100, 20) if quick else (200, 60)
    seconds, wrk_rounds = (1.0, 4) if quick else (2.0, 10)
    workers, connections = 2, 4
    print("1. API GET of one ticket: todo (bearer JWT) vs bare Flask + SQLAlchemy")
    print("   (same cached statement, same ticket_json; the bare app's auth is a dict lookup)")
    print(
        f"   in process, {rounds} rounds of {n} requests in turns (ABBA): median µs per"
        " request, median ratio srcore / bare (quartiles): above 1, srcore is slower"
    )
    print(f"   {'backend':<11}{'srcore µs':>10}{'bare µs':>10}{'ratio':>8}{'':12} round trips")
    served_results: list[tuple[str, dict[str, float] | str]] = []
    for backend in backends:
        with prepared(backend) as setup:
            if setup is None:
                print(f"   {backend:<11}(not reachable, skipped)")
                continue
            result = in_process(setup, n=n, rounds=rounds)
            wires = result["wires"]
            trips = {
                kind: (len(sent) if backend == "postgresql" else 0) for kind, sent in wires.items()
            }
            print(
                f"   {backend:<11}{result['srcore']:>10.0f}{result['bare']:>10.0f}"
                f"{result['ratio']:>8.2f} ({result['ratio_q1']:.2f}-{result['ratio_q3']:.2f})"
                f"   {trips['srcore']} vs {trips['bare']}"
                f"   (srcore sends {describe(wires['srcore'])}; bare {describe(wires['bare'])})"
            )
            if show_profile:
                print(textwrap_indent(calls_by_hook(setup)))
                print(textwrap_indent(profile(setup, n=2000)))
            if shutil.which("wrk") is None:
                served_results.append((backend, "wrk is not installed (apt-get install wrk)"))
                continue
            served_results.append(
                (
                    backend,
                    under_gunicorn(
                        setup,
                        seconds=seconds,
                        rounds=wrk_rounds,
                        workers=workers,
                        connections=connections,
                    ),
                )
            )
    print("   goal on PostgreSQL: ratio at most 1.00; round trips 1 vs 3")
    print(
        f"   under gunicorn ({workers} sync workers each), wrk -t1 -c{connections}, "
        f"{wrk_rounds} rounds of {seconds:g} s each, in turns:"
    )
    print(
        f"   {'backend':<11}{'srcore r/s':>11}{'bare r/s':>10}{'ratio':>8}{'':12}"
        f"{'srcore CPU µs':>15}{'bare CPU µs':>13}{'ratio':>8}"
    )
    for backend, served_result in served_results:
        if isinstance(served_result, str):
            print(f"   {backend:<11}({served_result})")
            continue
        print(
            f"   {backend:<11}{served_result['srcore']:>11.0f}{served_result['bare']:>10.0f}"
            f"{served_result['ratio']:>8.2f}"
            f" ({served_result['ratio_q1']:.2f}-{served_result['ratio_q3']:.2f})"
            f"{served_result['srcore_cpu_us']:>15.0f}"
            f"{served_result['bare_cpu_us']:>13.0f}{served_result['cpu_ratio']:>8.2f}"
        )
    print(
        "   (r/s ratio srcore / bare: median of the rounds' ratios (quartiles), below 1 srcore"
        " serves fewer;\n   CPU: the workers' own per request, ratio above 1 srcore spends more)"
    )
    print("   goal on PostgreSQL: req/s ratio at least 1.00\n")


def calls_by_hook(setup: Setup, *, n: int = 200) -> str:
    """Python function calls per request of each side, by the hook or view they run under.

    Unlike time, a count does not move with the machine's load, so it shows where a gap
    between the two apps lies even on a busy machine. Each call is counted for the
    innermost of the app's own functions running it: a before/after-request hook, a step
    of srcore's one before/after hook (indented; the hook's line is what it does itself), a
    teardown, the view (with the query it runs); "flask + werkzeug" is everything else
    (routing, contexts, the response's WSGI call, each hook's call through Flask).
    """
    counts: dict[str, dict[str, float]] = {}
    for kind in ("srcore", "bare"):
        if kind == "srcore":
            app, authorization = build_srcore(setup), setup.bearer
        else:
            app, authorization = build_bare(setup)[0], BARE_TOKEN
        call = wsgi_caller(app, network.TICKET_PATH, {"Authorization": authorization})
        for _ in range(20):
            call()
        counts[kind] = _count_calls(app, call, n=n)
        if kind == "srcore":
            app.extensions["srcore"].db.dispose()
    totals = {kind: sum(found.values()) for kind, found in counts.items()}
    lines = [
        "Python calls per request (under the innermost hook or view):"
        f" srcore {totals['srcore']:.0f}, bare {totals['bare']:.0f}"
    ]
    names = sorted(
        set(counts["srcore"]) | set(counts["bare"]),
        key=lambda name: -(counts["srcore"].get(name, 0) - counts["bare"].get(name, 0)),
    )
    for name in names:
        mine, theirs = counts["srcore"].get(name, 0.0), counts["bare"].get(name, 0.0)
        lines.append(f"  {name:<58}{mine:>7.0f}{theirs:>7.0f}{mine - theirs:>+7.0f}")
    return "\n".join(lines) + "\n"


def _count_calls(app: Any, call: Callable[[], int], *, n: int) -> dict[str, float]:
    """Calls per request of *n* calls, keyed by the innermost hook or view of *app*."""
    roots: dict[Any, str] = {}
    hooks = {
        "before": app.before_request_funcs.get(None, []),
        "after": app.after_request_funcs.get(None, []),
        "teardown": app.teardown_appcontext_funcs,
        "view": app.view_functions.values(),
    }
    if "srcore" in app.extensions:  # the steps srcore's one before/after function runs
        from srcore import lifecycle

        extensions = app.extensions
        after = [extensions.get(lifecycle.HEADERS_STEP), extensions.get(lifecycle.CORS_STEP)]
        hooks["  before step"] = lifecycle.before_steps(app)
        hooks["  after step"] = [step for step in after if step] + lifecycle.after_steps(app)
    for where, functions in hooks.items():
        for function in functions:
            while function is not None:  # a decorated view: the decorator(s), then the view
                code = getattr(function, "__code__", None)
                inner = getattr(function, "__wrapped__", None)
                if code is not None:  # named by its code: functools.wraps copies the names
                    module = function.__globals__.get("__name__", "?")
                    name = f"{module}.{code.co_qualname}".replace(".<locals>", "")
                    if where != "view":
                        roots.setdefault(code, f"{where}: {name}")
                    elif inner is not None:
                        roots.setdefault(code, f"view decorator: {name}")
                    else:  # the two apps' views run the same query and the same JSON
                        roots.setdefault(code, "view (its query included)")
                function = inner
    counts: dict[str, int] = {}
    stack: list[str | None] = []

    def owner() -> str:
        return next((name for name in reversed(stack) if name), "flask + werkzeug")

    def tracer(frame: Any, event: str, _arg: Any) -> None:
        if event == "call":
            stack.append(roots.get(frame.f_code))
            counts[owner()] = counts.get(owner(), 0) + 1
        elif event == "return":
            if stack:
                stack.pop()
        elif event == "c_call":
            counts[owner()] = counts.get(owner(), 0) + 1

    sys.setprofile(tracer)
    try:
        for _ in range(n):
            call()
    finally:
        sys.setprofile(None)
    return {name: count / n for name, count in counts.items()}


def describe(sent: list[str]) -> str:
    """``BEGIN, SELECT, ROLLBACK``: the first word of each thing sent."""
    words = [(item.split() or ["?"])[0].upper() for item in sent]
    return ", ".join(words) or "nothing"


def textwrap_indent(text: str) -> str:
    return "\n".join("      " + line if line else "" for line in text.splitlines())
