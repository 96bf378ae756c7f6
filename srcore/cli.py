"""The ``srcore`` command group, ``serve``, ``init`` and ``webhooks docs``; the other commands
live in their own modules and are added by :func:`main`."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator
from importlib import metadata
from pathlib import Path

import click

__all__ = ["cli", "main", "webhooks_command", "write_private"]


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
    """The package of an installed service, or a usage error naming the installed ones."""
    from srcore.manifest import ManifestError
    from srcore.manifest import service_package as find

    try:
        return find(service_id)
    except ManifestError as exc:
        raise click.UsageError(str(exc)) from None


@cli.command(epilog="Example: srcore serve todo --bind 127.0.0.1:5001 --workers 4")
@click.argument("service")
@click.option(
    "--bind", default=None, help="Address to listen on (default: the origin's port on 127.0.0.1)."
)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=2,
    show_default=True,
    help="gunicorn worker processes.",
)
@click.option(
    "--threads",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Threads per worker (gthread above 1).",
)
@click.option(
    "--debug", is_flag=True, help="Use Flask's reloading debug server instead of gunicorn."
)
@click.option(
    "--no-reload",
    is_flag=True,
    help="With --debug: no reloader (srcore dev restarts the server itself on changes).",
)
@click.pass_context
def serve(
    ctx: click.Context,
    service: str,
    bind: str | None,
    workers: int,
    threads: int,
    debug: bool,
    no_reload: bool,
) -> None:
    """Serve one service: gunicorn in production, the Flask debug server with --debug."""
    from urllib.parse import urlsplit

    from srcore.config import ConfigError, find_config_path
    from srcore.manifest import load_network_config

    package = _service_package(service)
    config_option = ctx.find_root().params.get("config")
    try:
        path = find_config_path(config_option)
        section = load_network_config(path).section(service)
    except (ConfigError, KeyError) as exc:
        click.echo(str(exc), err=True)
        sys.exit(1)
    from srcore.serving import bind_problem, gunicorn_options

    if bind is None:
        origin = urlsplit(str(section["origin"]))
        bind = f"127.0.0.1:{origin.port or 8000}"
    elif (problem := bind_problem(bind)) is not None:
        click.echo(f"srcore serve {service}: --bind {problem}", err=True)
        sys.exit(1)
    os.environ["SRCORE_CONFIG"] = str(path)
    from srcore.extras import require

    if not debug:
        require("server", f"srcore serve {service} (without --debug)")
        from srcore.forks import temporary_directory_problem

        # gunicorn's workers and the metrics directory keep files there.
        if (problem := temporary_directory_problem()) is not None:
            click.echo(f"srcore serve {service}: {problem}", err=True)
            sys.exit(1)
    try:
        with _stoppable(service):
            _preflight(
                service, path, lambda text: click.echo(f"srcore serve {service}: {text}", err=True)
            )
    except _ServeRefused as exc:
        click.echo(f"srcore serve {service}: {exc}", err=True)
        sys.exit(1)
    if debug:
        host, _, port = bind.rpartition(":")
        module = __import__(package)
        from srcore.redact import dev_request_handler

        module.create_app(config=path).run(
            host=host,
            port=int(port),
            debug=True,
            use_reloader=not no_reload,
            # Tracebacks in the browser, but no Python console (/console, or one per
            # frame): its PIN is made of what every account of the machine can read (the
            # machine id, the MAC address, the user and the path of srcore), so any of
            # them could run code as the developer through 127.0.0.1.
            use_evalex=False,
            request_handler=dev_request_handler(),
        )
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
        *gunicorn_options(threads=threads),
        # Its access log (off unless turned on) leaves reset tokens and OAuth codes out.
        "--logger-class",
        "srcore.gunicorn_logging.AccessLogger",
        f"{package}:create_app()",
    ]
    os.execv(sys.executable, argv)  # noqa: S606 - argv is built here, not from input


@contextlib.contextmanager
def _stoppable(service: str) -> Iterator[None]:
    """SIGTERM and SIGINT stop ``srcore serve`` while it looks at the database (up to its
    connect timeout), before gunicorn, which has handlers of its own, replaces it.

    Without a handler a SIGTERM then (``docker stop``, systemd) killed it (status -15),
    and as a container's PID 1, which the kernel gives no signal it has no handler for,
    was dropped until the SIGKILL. The previous handlers are put back afterwards.
    """
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers belong to the main thread
        return

    def stopped(signum: int, _frame: object) -> None:
        click.echo(f"srcore serve {service}: stopped while starting", err=True)
        sys.exit(0 if signum == signal.SIGTERM else 130)

    previous = {
        number: signal.signal(number, stopped) for number in (signal.SIGTERM, signal.SIGINT)
    }
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


class _ServeRefused(Exception):
    """Serving would only answer errors, or write where it must not: the database is not
    there at all, or it is another service's."""


def _preflight(
    service: str, config_path: str | os.PathLike[str], say: Callable[[str], None]
) -> None:
    """Look at *service*'s database before serving it, and tell the operator what is wrong.

    A web app starts whatever its database's state and answers 503 until it can use it
    (a database restarting must not stop a deploy), so a missing migration or an
    unreachable server would otherwise show only in the first requests' logs. Both are
    said (through *say*) and serving goes on, as are SQLite files this user cannot write
    (made by ``sudo srcore migrate``). An SQLite file that does not exist is refused
    with :class:`_ServeRefused`: the first request would create it empty at a misspelt path.
    Only reads; waits at most :data:`srcore.db.CONNECT_TIMEOUT` for PostgreSQL.
    """
    from srcore import migrate
    from srcore.app import migration_target
    from srcore.config import ConfigError
    from srcore.config.database import sqlite_storage_problem
    from srcore.manifest import ManifestError

    try:
        target = migration_target(service, config_path)
    except ManifestError:  # a service with no tables of its own: nothing to compare with
        return
    except ConfigError as exc:  # what only building the app checks: each worker would fail
        raise _ServeRefused(str(exc)) from None
    try:
        behind = migrate.behind(target)
    except (migrate.DatabaseMissing, migrate.OtherServicesDatabase) as exc:
        raise _ServeRefused(str(exc)) from None
    except migrate.NewerDatabase as exc:  # the code was put back: it may well still serve
        say(f"{exc}; serving anyway")
        return
    except migrate.DatabaseUnreachable as exc:
        say(f"{exc}; serving anyway: requests and /healthz answer 503 until it can be opened")
        return
    except FileNotFoundError:  # no migrations directory: nothing to compare with
        return
    found = sqlite_storage_problem(target.database_url)
    if found is not None:  # it can be read (behind did): writing is what fails
        say(
            f"the database of {service} cannot be written: {found}; serving anyway: what "
            "writes answers 503 until then"
        )
    if behind:
        say(
            f"the database of {service} is not migrated ({migrate.describe_behind(behind)}): "
            f"run srcore migrate {service} upgrade; until then what needs it answers 503"
        )


_PORT_OFFSETS = {"meta": 0, "todo": 1, "paste": 2}


def render_development_config(
    services: list[str], *, data_dir: Path, first_port: int = 5000
) -> str:
    """A development config for *services* on 127.0.0.1 with SQLite and fresh secrets."""
    import secrets

    from srcore.scaffold.netconfig import sqlite_url

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
            f"database-url = {sqlite_url(data_dir / (service + '.db'))}",
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
    last = 65535 - len(chosen) + 1  # each service gets the next port: all must be TCP ports
    if not 1 <= first_port <= last:
        raise click.UsageError(
            f"--first-port {first_port}: the {len(chosen)} services need ports {first_port} to "
            f"{first_port + len(chosen) - 1}; give one from 1 to {last}"
        )
    exists = f"{path} exists; pass --force to overwrite it"
    source = click.get_current_context().get_parameter_source("first_port")
    if source is not None and source != click.core.ParameterSource.DEFAULT:
        exists += f" (--first-port {first_port} only applies to a new file: it keeps its ports)"
    if (path.is_symlink() or path.exists()) and not force:
        raise click.UsageError(exists)
    data = (data_dir or path.parent).resolve()
    text = render_development_config(chosen, data_dir=data, first_port=first_port)
    try:
        data.mkdir(parents=True, exist_ok=True)
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            write_private(path, text, replace=force)
        except FileExistsError:
            raise click.UsageError(exists) from None
    except OSError as exc:
        where = exc.filename if exc.filename is not None else path
        raise click.ClickException(f"cannot write {path}: {where}: {exc.strerror or exc}") from None
    click.echo(f"wrote {path} for {', '.join(chosen)}")


@cli.group("webhooks", epilog="Example: srcore webhooks docs todo")
def webhooks_command() -> None:
    """Webhook tools for service authors."""


@webhooks_command.command("docs", epilog="Example: srcore webhooks docs todo --readme README.md")
@click.argument("package")
@click.option(
    "--readme",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Rewrite the generated part of this file instead of printing it.",
)
@click.option("--check", is_flag=True, help="With --readme: only fail if it is out of date.")
def webhooks_docs(package: str, readme: Path | None, check: bool) -> None:
    """Document the webhook events of the service in PACKAGE (its Python package), in
    Markdown from its event catalog."""
    from srcore.manifest import ManifestError, load_manifest
    from srcore.webhooks.catalog import render, update_readme

    try:
        manifest = load_manifest(package)
        if readme is None:
            click.echo(render(manifest), nl=False)
            return
        text = readme.read_text(encoding="utf-8")
        new = update_readme(text, manifest)
    except OSError as exc:
        raise click.ClickException(f"cannot read {readme}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise click.ClickException(f"cannot read {readme}: not UTF-8 text") from None
    except (ManifestError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    if new == text:
        click.echo(f"{readme}: up to date")
    elif check:
        click.echo(f"{readme}: out of date; run srcore webhooks docs {package} --readme {readme}")
        sys.exit(1)
    else:
        try:
            readme.write_text(new, encoding="utf-8")
        except OSError as exc:
            raise click.ClickException(f"cannot write {readme}: {exc.strerror or exc}") from None
        click.echo(f"{readme}: updated")


def _create_private(path: Path, text: str) -> None:
    # O_EXCL: never through a file or symlink already there; 0600 from the first byte.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as file:
        file.write(text)


def write_private(path: Path, text: str, *, replace: bool = False) -> None:
    """Write *text* to a new file *path* that only its owner can read, from its creation on.

    Written and then chmod-ed, a file of secrets is readable by anyone in between. With
    *replace*, an existing *path* is swapped for a new owner-only file (an existing
    file's looser mode or a symlink is not reused); otherwise it raises FileExistsError.
    """
    if not replace:
        _create_private(path, text)
        return
    import secrets

    temporary = path.with_name(f".{path.name}.{secrets.token_hex(6)}")
    try:
        _create_private(temporary, text)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def _add_commands() -> None:
    from srcore.config_cli import config_command, keygen_command
    from srcore.dev import dev_command
    from srcore.migrate_cli import migrate_command
    from srcore.scaffold.cli import new_service_command
    from srcore.worker_cli import worker_command

    cli.add_command(config_command)
    cli.add_command(keygen_command)
    cli.add_command(migrate_command)
    cli.add_command(dev_command)
    cli.add_command(new_service_command)
    cli.add_command(worker_command)


def main() -> None:
    """Entry point of the ``srcore`` console script."""
    from srcore.extras import MissingExtraError

    _add_commands()
    try:
        cli(prog_name="srcore")
    except MissingExtraError as exc:  # the config asks for a part that is not installed
        click.echo(f"srcore: {exc}", err=True)
        sys.exit(1)
