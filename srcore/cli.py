"""The ``srcore`` command: config checks, key generation, migrations, serving and workers."""

from __future__ import annotations

import os
import sys
from importlib import metadata
from pathlib import Path
from typing import Any, NoReturn

import click

__all__ = ["cli", "main"]


@click.group(
    context_settings={"help_option_names": ["-h", "--help"]},
    epilog="Example: srcore --config /etc/srcore/config.ini config check",
)
@click.option(
    "--config",
    "config",
    type=click.Path(dir_okay=False),
    envvar="SRCORE_CONFIG",
    help="The network's config file (default: $SRCORE_CONFIG, ./config.ini, "
    "/etc/srcore/config.ini).",
)
@click.version_option(package_name="srcore", prog_name="srcore")
def cli(config: str | None) -> None:
    """Run and manage a network of srcore services."""


def _service_package(service_id: str) -> str:
    from srcore.manifest import ENTRY_POINT_GROUP

    packages = {ep.name: ep.value for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)}
    if service_id not in packages:
        known = ", ".join(sorted(packages)) or "none"
        raise click.UsageError(
            f"no installed service is called {service_id!r} (installed: {known})"
        )
    return packages[service_id]


@cli.command(epilog="Example: srcore serve todo --bind 127.0.0.1:5001 --workers 4")
@click.argument("service")
@click.option(
    "--bind", default=None, help="Address to listen on (default: the origin's port on 127.0.0.1)."
)
@click.option("--workers", default=2, show_default=True, help="gunicorn worker processes.")
@click.option(
    "--threads", default=1, show_default=True, help="Threads per worker (gthread above 1)."
)
@click.option(
    "--debug", is_flag=True, help="Use Flask's reloading debug server instead of gunicorn."
)
@click.pass_context
def serve(
    ctx: click.Context, service: str, bind: str | None, workers: int, threads: int, debug: bool
) -> None:
    """Serve one service: gunicorn in production, the Flask debug server with --debug."""
    from urllib.parse import urlsplit

    from srcore.config import ConfigError, find_config_path, load_config

    package = _service_package(service)
    config_option = ctx.find_root().params.get("config")
    try:
        path = find_config_path(config_option)
        section = load_config(path).section(service)
    except (ConfigError, KeyError) as exc:
        click.echo(str(exc), err=True)
        sys.exit(1)
    if bind is None:
        origin = urlsplit(str(section["origin"]))
        bind = f"127.0.0.1:{origin.port or 8000}"
    os.environ["SRCORE_CONFIG"] = str(path)
    if debug:
        host, _, port = bind.rpartition(":")
        module = __import__(package)
        module.create_app(config=path).run(host=host, port=int(port), debug=True)
        return
    argv = [
        sys.executable,
        "-m",
        "gunicorn",
        "--bind",
        bind,
        "--workers",
        str(workers),
        "--threads",
        str(threads),
        "--name",
        f"srcore-{service}",
        # Several services run on one host: they must not share gunicorn's control socket.
        "--no-control-socket",
        f"{package}:create_app()",
    ]
    os.execv(sys.executable, argv)  # noqa: S606 - argv is built here, not from input


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
    """*url* with its password replaced, so a broker's credentials stay out of logs."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))


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
    applied = migrate.current(target)
    behind = [name for name, head in wanted.items() if applied.get(name) != head]
    fix = f"run: srcore migrate {service} upgrade"
    if migrate.CORE_LINEAGE in behind:
        core = migrate.CORE_LINEAGE
        _fail(
            service,
            f"the database is not migrated: {core} is at {applied.get(core) or 'no revision'}"
            f", its head is {wanted[core]}; {fix}",
        )
    if behind:
        return (
            f"{service} is at {applied.get(service) or 'no revision'}, its head is "
            f"{wanted[service]}: {fix}"
        )
    return f"at head ({', '.join(f'{name} {rev}' for name, rev in applied.items())})"


@cli.command(epilog="Example: srcore worker todo --concurrency 4")
@click.argument("service")
@click.option(
    "--once", is_flag=True, help="Run one cycle (fan out, deliver what is due), then exit."
)
@click.option(
    "--concurrency", default=1, show_default=True, help="Worker threads (PostgreSQL only: >1)."
)
@click.option(
    "--poll-interval",
    type=float,
    default=None,
    help="Seconds between polls when idle (default: [global] webhook-poll-interval, 1s).",
)
@click.pass_context
def worker(
    ctx: click.Context, service: str, once: bool, concurrency: int, poll_interval: float | None
) -> None:
    """Deliver one service's webhooks from its database until SIGTERM or SIGINT.

    Start-up is reported step by step (config, database, migrations, dispatcher) and ends
    with one "ready" line; a database that cannot be reached or lacks the core's webhook
    tables ends it with status 1 instead of failing on every cycle.
    """
    import signal
    import threading
    import time

    from srcore.config import ConfigError, find_config_path
    from srcore.webhooks.dispatch import LocalDispatcher
    from srcore.webhooks.worker import LocalWorker

    started = time.monotonic()
    package = _service_package(service)
    if concurrency < 1:
        raise click.UsageError("--concurrency must be at least 1")
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
    if concurrency > 1 and dialect == "sqlite":
        raise click.UsageError("SQLite supports one worker thread; use PostgreSQL for more")

    shown_url = st.db.url.render_as_string(hide_password=True)
    began = time.monotonic()
    try:
        st.db.check()
    except Exception as exc:  # any driver's error: say which database, then stop
        _fail(service, f"cannot connect to {shown_url}: {exc}")
    _step(service, 2, f"database: {shown_url} (connected in {time.monotonic() - began:.2f} s)")
    _step(service, 3, f"migrations: {_check_migrations(service, package, app)}")

    dispatcher = st.webhook_dispatcher
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

    workers = [LocalWorker(app, poll_interval=poll_interval) for _ in range(concurrency)]
    allowed = ", ".join(str(n) for n in workers[0].policy.allowed) or "none"
    click.echo(
        f"srcore worker: {service} ready in {time.monotonic() - started:.1f} s: {dialect}, "
        f"{mode} dispatcher, {_plural(concurrency, 'thread')}, polling every "
        f"{workers[0].poll_interval:g} s, private targets allowed: {allowed}"
        + (", one cycle" if once else "")
    )
    if once:
        handled = workers[0].run_once()
        workers[0].close()
        click.echo(f"handled {handled} row(s)")
        return
    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        stop.set()
        if isinstance(dispatcher, LocalDispatcher):
            dispatcher.wakeup.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    threads = [
        threading.Thread(target=w.run, args=(stop,), name=f"webhooks-{i}", daemon=True)
        for i, w in enumerate(workers)
    ]
    for thread in threads:
        thread.start()
    while any(t.is_alive() for t in threads):
        for thread in threads:
            thread.join(timeout=0.5)
    for w in workers:
        w.close()
    st.db.dispose()
    click.echo("srcore worker: stopped")


_PORT_OFFSETS = {"meta": 0, "todo": 1, "paste": 2}


def render_development_config(
    services: list[str], *, data_dir: Path, first_port: int = 5000
) -> str:
    """A development config for *services* on 127.0.0.1 with SQLite and fresh secrets."""
    import secrets

    lines = [
        "; Development config written by `srcore init`. Secrets are fresh and local to this",
        "; machine: never commit this file. See config.example.ini for every key.",
        "",
        "[global]",
        "site-name = srcore demo network",
        "environment = development",
        "",
    ]
    next_port = first_port + 10
    for service in services:
        if service in _PORT_OFFSETS:
            port = first_port + _PORT_OFFSETS[service]
        else:
            port, next_port = next_port, next_port + 1
        lines += [
            f"[{service}]",
            f"origin = http://127.0.0.1:{port}",
            f"database-url = sqlite:///{data_dir / (service + '.db')}",
            f"secret-key = {secrets.token_urlsafe(48)}",
        ]
        if "meta" in services and service != "meta":
            # A first-party OAuth client of meta: meta reads these from this file.
            lines += [
                f"oauth-client-id = {service}",
                f"oauth-client-secret = {secrets.token_urlsafe(48)}",
            ]
        lines.append("")
    return "\n".join(lines)


@cli.command(epilog="Example: srcore init --path var/config.ini todo meta")
@click.argument("services", nargs=-1)
@click.option(
    "--path",
    "path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("config.ini"),
    show_default=True,
    help="Where to write the config.",
)
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where the SQLite databases go (default: beside the config file).",
)
@click.option("--force", is_flag=True, help="Overwrite an existing file.")
@click.option(
    "--first-port", default=5000, show_default=True, help="meta gets this port, todo the next."
)
def init(
    services: tuple[str, ...], path: Path, data_dir: Path | None, force: bool, first_port: int
) -> None:
    """Write a development config for the installed services (or the ones named)."""
    from srcore.manifest import ENTRY_POINT_GROUP

    installed = [ep.name for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)]
    chosen = list(services) or sorted(installed, key=lambda s: (s != "meta", s))
    unknown = [s for s in chosen if s not in installed]
    if unknown:
        raise click.UsageError(
            f"not installed: {', '.join(unknown)} (installed: {', '.join(installed) or 'none'})"
        )
    if path.exists() and not force:
        raise click.UsageError(f"{path} exists; pass --force to overwrite it")
    data = (data_dir or path.parent).resolve()
    data.mkdir(parents=True, exist_ok=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        render_development_config(chosen, data_dir=data, first_port=first_port), encoding="utf-8"
    )
    path.chmod(0o600)
    click.echo(f"wrote {path} for {', '.join(chosen)}")


def _add_commands() -> None:
    from srcore.config_cli import config_command, keygen_command
    from srcore.dev import dev_command
    from srcore.migrate_cli import migrate_command
    from srcore.scaffold.cli import new_service_command

    cli.add_command(config_command)
    cli.add_command(keygen_command)
    cli.add_command(migrate_command)
    cli.add_command(dev_command)
    cli.add_command(new_service_command)


def main() -> None:
    """Entry point of the ``srcore`` console script."""
    _add_commands()
    cli(prog_name="srcore")
