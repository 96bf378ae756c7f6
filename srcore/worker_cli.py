"""``srcore worker SERVICE``: the local webhook worker, with its start-up checks.

Start-up is the moment an operator watches: each step (config, database, migrations,
dispatcher) is reported as it passes, and a database that cannot work ends it with one
clear line instead of a failure on every cycle.
"""

from __future__ import annotations

import math
import os
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any, NoReturn

import click

from srcore.config.declarations import (
    LONGEST_POLL_INTERVAL,
    MAX_WEBHOOK_WORKERS,
    SHORTEST_POLL_INTERVAL,
)

__all__ = ["worker_command"]


#: The steps ``srcore worker`` reports before it is ready.
_WORKER_STEPS = 4


def _step(service: str, number: int, text: str) -> None:
    click.echo(f"srcore worker {service}: [{number}/{_WORKER_STEPS}] {text}")


def _fail(service: str, text: str) -> NoReturn:
    click.echo(f"srcore worker {service}: {text}", err=True)
    sys.exit(1)


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def _redact(url: str) -> str:
    """*url* with its password replaced, so a broker's credentials stay out of logs.

    The same masking as ``srcore config show``: one rule for every URL srcore prints.
    """
    from srcore.config import mask_url

    return mask_url(url)


#: Default ports of the broker schemes Celery speaks over TCP.
_BROKER_PORTS = {"redis": 6379, "rediss": 6379, "amqp": 5672, "amqps": 5671, "pyamqp": 5672}


def _broker_unreachable(url: str, *, timeout: float = 2.0) -> str | None:
    """Why no TCP connection to the broker of *url* opens (None: it opened, or no TCP)."""
    import socket
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    port = parts.port or _BROKER_PORTS.get(parts.scheme)
    if port is None:
        return None
    try:
        socket.create_connection((parts.hostname or "localhost", port), timeout=timeout).close()
    except OSError as exc:
        return str(exc) or type(exc).__name__
    return None


def _check_migrations(service: str, package: str, app: Any) -> str:
    """Step 3 of the worker's start-up: the core lineage must be at its head.

    The worker reads and writes only the core's webhook tables, so a core lineage behind
    its head ends the start-up (every cycle would fail); a service lineage behind is
    reported and tolerated. Returns the step's text.
    """
    from importlib import resources

    from sqlalchemy import MetaData

    from srcore import migrate

    st = app.extensions["srcore"]
    target = migrate.MigrationTarget(
        service_id=service,
        database_url=str(st.section["database-url"]),
        metadata=st.metadata if st.metadata is not None else MetaData(),
        versions_dir=Path(str(resources.files(package))) / "migrations" / "versions",
    )
    try:
        wanted = migrate.heads(target)
    except FileNotFoundError as exc:
        return f"not checked ({exc})"
    try:
        behind = migrate.behind(target)
    except migrate.OtherServicesDatabase as exc:
        _fail(service, str(exc))
    except migrate.NewerDatabase as exc:  # the code was put back: it may well still deliver
        return str(exc)
    fix = f"run: srcore migrate {service} upgrade"
    core = migrate.CORE_LINEAGE
    if core in behind:  # the tables the worker uses are missing
        lag = migrate.describe_behind({core: behind[core]})
        _fail(service, f"the database is not migrated: {lag}; {fix}")
    if behind:
        return f"{migrate.describe_behind(behind)}: {fix}"
    return f"at head ({', '.join(f'{name} {rev}' for name, rev in wanted.items())})"


class _Seconds(click.FloatRange):
    """Seconds from *shortest* to *longest*: the range the config file holds the option's
    key to, so a value the file would refuse is refused on the command line as well.

    ``nan`` is refused too: it compares false with both bounds, so a plain range lets it
    through, and a worker told to wait nan seconds between polls does not wait at all.
    """

    name = "number"

    def __init__(self, shortest: timedelta, longest: timedelta) -> None:
        super().__init__(shortest.total_seconds(), longest.total_seconds())

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        seconds = super().convert(value, param, ctx)
        if isinstance(seconds, float) and math.isnan(seconds):
            self.fail(f"{seconds} is not in the range {self.min}<=x<={self.max}.", param, ctx)
        return seconds


@click.command("worker", epilog="Example: srcore worker todo --concurrency 32")
@click.argument("service")
@click.option(
    "--once", is_flag=True, help="Deliver what is due now (fan out, send, record), then exit."
)
@click.option(
    "--concurrency",
    type=click.IntRange(1, MAX_WEBHOOK_WORKERS),
    default=None,
    help="Requests in flight at once (default: [global] webhook-concurrency, 16).",
)
@click.option(
    "--poll-interval",
    type=_Seconds(SHORTEST_POLL_INTERVAL, LONGEST_POLL_INTERVAL),
    metavar="SECONDS",
    default=None,
    help="Seconds between polls when idle (default: [global] webhook-poll-interval, 1s).",
)
@click.pass_context
def worker_command(
    ctx: click.Context,
    service: str,
    once: bool,
    concurrency: int | None,
    poll_interval: float | None,
) -> None:
    """Deliver one service's webhooks from its database until SIGTERM or SIGINT.

    Start-up is reported step by step (config, database, migrations, dispatcher) and ends
    with one "ready" line; a database that cannot be reached or lacks the core's webhook
    tables ends it with status 1 instead of failing on every cycle.
    """
    import dataclasses
    import functools
    import signal
    import threading
    import time

    from srcore.config import ConfigError, find_config_path
    from srcore.config.database import (
        describe_connect_failure,
        missing_sqlite_database,
        sqlite_storage_problem,
    )
    from srcore.manifest import ManifestError, service_package
    from srcore.webhooks import LocalDispatcher, webhooks_state
    from srcore.webhooks.settings import settings_for
    from srcore.webhooks.worker import Worker

    started = time.monotonic()
    stop = threading.Event()
    running: list[Worker] = []

    def on_signal(signum: int, _frame: object) -> None:
        # From the start: as PID 1 (a container) a SIGTERM finding no handler is dropped,
        # and one arriving between "ready" and the handler killed the worker (status -15).
        if not running:
            click.echo("srcore worker: stopped while starting", err=True)
            raise SystemExit(0 if signum == signal.SIGTERM else 130)
        stop.set()
        running[0].stop()

    if not once and threading.current_thread() is threading.main_thread():
        for number in (signal.SIGTERM, signal.SIGINT):
            if (previous := signal.getsignal(number)) is not None:  # put back when it ends
                ctx.call_on_close(functools.partial(signal.signal, number, previous))
            signal.signal(number, on_signal)
    try:
        package = service_package(service)
    except ManifestError as exc:
        raise click.UsageError(str(exc)) from None
    config_option = ctx.find_root().params.get("config")
    try:
        path = find_config_path(config_option)
        module = __import__(package)
        app = module.create_app(config=path)
    except ConfigError as exc:
        click.echo(str(exc), err=True)
        sys.exit(1)
    st = app.extensions["srcore"]
    _step(service, 1, f"config: {path}")
    dialect = st.db.engine.dialect.name
    shown_url = st.db.url.render_as_string(hide_password=True)
    began = time.monotonic()
    missing = missing_sqlite_database(service, st.db.url)
    if missing is not None:  # connecting would create it, empty
        _fail(service, missing)
    # A worker writes at every step: one that cannot logged a traceback every poll.
    if (unusable := sqlite_storage_problem(st.db.url)) is not None:
        _fail(service, f"cannot use the database of {service} ({shown_url}): {unusable}")
    try:
        st.db.check()
    except Exception as exc:  # any driver's error: say which database, then stop
        _fail(service, describe_connect_failure(service, st.db.url, exc))
    _step(service, 2, f"database: {shown_url} (connected in {time.monotonic() - began:.2f} s)")
    _step(service, 3, f"migrations: {_check_migrations(service, package, app)}")

    dispatcher = webhooks_state(app).dispatcher
    if dispatcher is None or isinstance(dispatcher, LocalDispatcher):
        mode = "local"
        _step(service, 4, "dispatcher: local (no broker: this worker polls the database)")
    else:
        name = type(dispatcher).__name__
        mode = name.removesuffix("Dispatcher").lower() or name
        broker = str(st.config.global_.get("webhooks-broker"))
        problem = _broker_unreachable(broker)
        state = "reachable" if problem is None else f"NOT reachable ({problem})"
        _step(
            service,
            4,
            f"dispatcher: {mode}, broker {_redact(broker)} {state}; this worker polls the "
            "database as well",
        )

    settings = settings_for(app)
    if concurrency is not None:
        settings = dataclasses.replace(settings, concurrency=concurrency)
    worker = Worker(app, settings=settings, poll_interval=poll_interval)
    running.append(worker)
    allowed = ", ".join(str(n) for n in worker.policy.allowed) or "none"
    click.echo(
        f"srcore worker: {service} ready in {time.monotonic() - started:.1f} s: {dialect}, "
        f"{mode} dispatcher, {_plural(settings.concurrency, 'request')} in flight at most, "
        f"polling every {worker.poll_interval:g} s, private targets allowed: {allowed}"
        + (", one pass" if once else "")
    )
    if once:
        handled = worker.drain()
        worker.close()
        click.echo(f"handled {handled} row(s)")
        return
    thread = threading.Thread(target=worker.run, args=(stop,), name="webhooks", daemon=True)
    thread.start()
    # After SIGTERM no request starts and those in flight end within webhook-timeout;
    # recording them takes a moment more. Past that grace the process exits anyway (a
    # delivery whose attempt was not recorded is tried again when its lease ends), so
    # the worker always stops within webhook-timeout and a little.
    grace = settings.timeout.total_seconds() + 1.5
    stopping: float | None = None
    while thread.is_alive():
        thread.join(timeout=0.25)
        if stop.is_set():
            stopping = stopping if stopping is not None else time.monotonic()
            if time.monotonic() - stopping > grace:
                break
    if thread.is_alive():
        click.echo(
            f"srcore worker: stopped with attempts still in flight after {grace:g} s; "
            "their deliveries are tried again when their leases end"
        )
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)  # lanes may still be sending: exit without waiting for them
    worker.close()
    st.db.dispose()
    click.echo("srcore worker: stopped")
