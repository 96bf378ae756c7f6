"""``srcore dev``: every configured service and its worker on 127.0.0.1, in one log.

The command reads the config, refuses at once when a service's port is taken, migrates
every service (one progress line each, then a summary), starts each service with the
Flask development server on its origin's port (``srcore serve SERVICE --debug
--no-reload``) and its local webhook worker (``srcore worker SERVICE``), and merges their
output into one stream through :mod:`srcore.supervisor`. A change to the code (the
services' packages, srcore's) or to the config restarts every process, found by
watchfiles: one watcher for all, instead of a reloader inside each server that the
workers would not have. Ctrl-C (or SIGTERM) stops them all: SIGTERM to each process group,
a bounded wait, SIGKILL for what is left, and a one-line summary.

The pieces that decide things (which processes to run, which paths to watch, whether a
port is free) are plain functions; the supervisor runs the processes.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import os
import socket
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import click

from srcore.supervisor import (
    AlreadyRunning,
    Child,
    Program,
    Stopped,
    Supervisor,
    lock_path,
    running_alone,
)

__all__ = [
    "DEV_LABEL",
    "ChildSpec",
    "bind_port",
    "build_plan",
    "code_paths",
    "config_problems",
    "dev_command",
    "port_free",
    "restart_on_changes",
    "srcore_argv",
]

#: The label of the lines ``srcore dev`` writes itself.
DEV_LABEL = "dev"
#: What a change to restarts the processes: code, templates the app reads at start-up
#: (service.yaml), and config.
WATCHED_SUFFIXES = (".py", ".yaml", ".yml", ".ini", ".toml")


@dataclass(frozen=True)
class ChildSpec:
    """One process ``srcore dev`` runs: its label in the log, service, argv and port."""

    label: str
    service: str
    argv: tuple[str, ...]
    port: int | None = None  # the port a server listens on; None for a worker

    @property
    def is_server(self) -> bool:
        return self.port is not None

    def program(self, env: Mapping[str, str]) -> Program:
        """What the supervisor runs; a service's server and worker share its colour."""
        return Program(self.label, self.argv, env, colour_key=self.service)


def bind_port(origin: str) -> int:
    """The port ``srcore serve`` and ``srcore dev`` listen on for *origin* (8000 if none)."""
    return urlsplit(origin).port or 8000


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    """Whether a server could listen on *host*:*port* now.

    ``SO_REUSEADDR`` as the servers set it, so connections of a server just stopped
    (``TIME_WAIT``) do not count; only a listening socket does.
    """
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def srcore_argv(executable: str | None = None) -> tuple[str, ...]:
    """How to run the ``srcore`` command in a child process.

    The console script beside the interpreter when there is one, else
    ``python -m srcore``.
    """
    python = Path(executable or sys.executable)
    script = python.parent / "srcore"
    if script.is_file():
        return (str(script),)
    return (str(python), "-m", "srcore")


def build_plan(
    origins: Mapping[str, str],
    *,
    config_path: Path,
    srcore: Sequence[str],
    workers: bool = True,
) -> list[ChildSpec]:
    """The processes for *origins* (service id -> origin, in config order): each service's
    development server, then each service's webhook worker."""
    base = (*srcore, "--config", str(config_path))
    plan = []
    for service, origin in origins.items():
        port = bind_port(origin)
        argv = (*base, "serve", service, "--debug", "--no-reload", "--bind", f"127.0.0.1:{port}")
        plan.append(ChildSpec(service, service, argv, port))
    if workers:
        plan += [
            ChildSpec(f"{service} worker", service, (*base, "worker", service))
            for service in origins
        ]
    return plan


def code_paths(packages: Sequence[str], config_path: Path) -> list[Path]:
    """The directories of *packages* (srcore's and the services') and the config file:
    what ``srcore dev`` watches. A package that cannot be found is left out."""
    paths: list[Path] = []
    for package in packages:
        spec = importlib.util.find_spec(package)
        for location in (spec.submodule_search_locations or []) if spec else []:
            if Path(location) not in paths:
                paths.append(Path(location))
    return [*paths, config_path]


def config_problems(path: Path) -> list[str]:
    """What is wrong with the network config at *path* (every problem, as ``srcore config
    check`` says them); empty when every process could start with it."""
    from srcore.config import ConfigError
    from srcore.manifest import load_network_config

    try:
        load_network_config(path)
    except ConfigError as exc:
        return [str(problem) for problem in exc.problems]
    return []


def _watched(_change: object, path: str) -> bool:
    parts = Path(path).parts
    return path.endswith(WATCHED_SUFFIXES) and "__pycache__" not in parts


def restart_on_changes(
    supervisor: Supervisor,
    children: list[Child],
    paths: Sequence[Path],
    *,
    check: Callable[[], Sequence[str]] | None = None,
) -> threading.Thread:
    """A thread that restarts every child in *children* (replaced in place) whenever a
    watched file under *paths* changes, until the supervisor is asked to stop.

    *check* returns the problems that would stop every child at its start (a config
    saved half-edited, say): while there are some, they are said once and the running
    children are kept, rather than each of them stopped to print the same errors and
    exit; the next change that fixes them restarts everything.
    """
    import watchfiles

    def run() -> None:
        for changes in watchfiles.watch(
            *paths, watch_filter=_watched, stop_event=supervisor.stop_requested
        ):
            names = sorted({Path(p).name for _, p in changes})
            shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
            problems = list(check()) if check is not None else []
            if problems:
                count = f"{len(problems)} problem{'s' if len(problems) != 1 else ''}"
                supervisor.say(
                    f"{shown} changed, but {count} would stop every process at its start: "
                    f"keeping the {len(children)} running; fix and save again"
                )
                for problem in problems:
                    supervisor.say(f"  {problem}")
                continue
            supervisor.say(f"{shown} changed: restarting {len(children)} process(es)")
            try:
                for index, child in enumerate(list(children)):
                    children[index] = supervisor.restart(child)
            except Stopped:
                return

    thread = threading.Thread(target=run, name="dev-reload", daemon=True)
    thread.start()
    return thread


def _health(port: int | None) -> int | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except (urllib.error.URLError, OSError):
        return None


def _watch_health(
    supervisor: Supervisor, servers: Mapping[ChildSpec, Child], workers: int, timeout: float
) -> None:
    """Report each server once it answers ``/healthz``, then one summary line."""
    started = time.monotonic()
    pending = dict(servers)
    deadline = started + timeout
    while pending and not supervisor.stop_requested.is_set() and time.monotonic() < deadline:
        for spec, child in list(pending.items()):
            if child.process.poll() is not None:
                del pending[spec]
            elif _health(spec.port) == 200:
                del pending[spec]
                supervisor.say(
                    f"{spec.label} is up: http://127.0.0.1:{spec.port}/ answers /healthz "
                    f"with 200 after {time.monotonic() - started:.1f} s"
                )
        if pending:
            supervisor.stop_requested.wait(0.2)
    if supervisor.stop_requested.is_set():
        return
    for spec in pending:
        supervisor.say(
            f"{spec.label} did not answer /healthz within {timeout:.0f} s (see its lines above)"
        )
    up = [s for s, c in servers.items() if s not in pending and c.process.poll() is None]
    urls = ", ".join(f"{s.label} http://127.0.0.1:{s.port}/" for s in up)
    supervisor.say(
        f"ready: {len(up)} of {len(servers)} services up ({urls or 'none'}), {workers} "
        "worker(s); Ctrl-C stops them all"
    )


# -- the command --------------------------------------------------------------------------


def _installed() -> dict[str, str]:
    from importlib import metadata

    from srcore.manifest import ENTRY_POINT_GROUP

    return {ep.name: ep.value for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)}


def _migrate(
    supervisor: Supervisor,
    services: Sequence[str],
    *,
    srcore: Sequence[str],
    config_path: Path,
    env: Mapping[str, str],
) -> bool:
    """``srcore migrate SERVICE upgrade`` for each service, one progress line each.

    False when one failed. A stop asked for meanwhile lets the migration in hand finish
    (not cut in the middle), then raises :class:`~srcore.supervisor.Stopped`.
    """
    started = time.monotonic()
    for number, service in enumerate(services, 1):
        supervisor.say(f"migrating {service} ({number}/{len(services)}) ...")
        began = time.monotonic()
        argv = (*srcore, "--config", str(config_path), "migrate", service, "upgrade")
        result = supervisor.run(Program(f"{service} migrate", argv, env), echo=False)
        lines = result.output.strip().splitlines()
        if result.returncode != 0:
            for line in lines:
                supervisor.say(f"{service}: {line}")
            supervisor.say(
                f"migrating {service} failed (status {result.returncode}); nothing started"
            )
            return False
        at = "; ".join(line.strip() for line in lines if line.strip()) or "up to date"
        supervisor.say(f"migrated {service} in {time.monotonic() - began:.1f} s: {at}")
    supervisor.say(
        f"migrated {len(services)} service(s) ({', '.join(services)}) in "
        f"{time.monotonic() - started:.1f} s"
    )
    return True


@click.command(
    "dev",
    epilog="Example:\n\n\b\n  srcore --config var/config.ini dev\n"
    "  srcore dev todo meta --no-workers\n  NO_COLOR=1 srcore dev | tee dev.log",
)
@click.argument("services", nargs=-1)
@click.option("--no-migrate", is_flag=True, help="Start without migrating the databases first.")
@click.option("--no-workers", is_flag=True, help="Start the services without their workers.")
@click.option("--no-restart", is_flag=True, help="Do not restart the processes on code changes.")
@click.option(
    "--stop-timeout",
    default=5.0,
    show_default=True,
    type=click.FloatRange(min=0),
    help="Seconds to wait for the processes after Ctrl-C before killing them.",
)
@click.pass_context
def dev_command(
    ctx: click.Context,
    services: tuple[str, ...],
    no_migrate: bool,
    no_workers: bool,
    no_restart: bool,
    stop_timeout: float,
) -> None:
    """Run every service of the config (or the ones named) on 127.0.0.1 for development.

    Migrates each service, starts it with the Flask development server on its origin's
    port and its webhook worker (`srcore worker`), and merges their output into one log,
    each line prefixed with its time and process, in the service's colour (no colour when
    the output is not a terminal or NO_COLOR is set). A change to the code or the config
    restarts them all. Ctrl-C stops them all.
    """
    supervisor = Supervisor(
        sys.stdout,
        name=DEV_LABEL,
        colour=False if os.environ.get("NO_COLOR") else None,  # no-color.org: set, not empty
        stop_timeout=stop_timeout,
    )
    # From the start: a Ctrl-C while the config loads is a stop like any other.
    with supervisor.handling_signals(), contextlib.ExitStack() as held:
        plan, chosen, env, installed, path = _prepare(ctx, supervisor, services, no_workers, held)
        status = 0
        try:
            supervisor.check()
            if not no_migrate and not _migrate(
                supervisor, chosen, srcore=srcore_argv(), config_path=path, env=env
            ):
                status = 1
            else:
                children = [supervisor.start(spec.program(env)) for spec in plan]
                servers = {s: c for s, c in zip(plan, children, strict=True) if s.is_server}
                threading.Thread(
                    target=_watch_health,
                    args=(supervisor, servers, len(plan) - len(servers), 60.0),
                    name="dev-health",
                    daemon=True,
                ).start()
                if no_restart:
                    status = supervisor.watch(until="all")
                else:
                    packages = ["srcore", *(installed[s].split(":")[0] for s in chosen)]
                    paths = code_paths(packages, path)
                    supervisor.say(
                        f"watching {', '.join(str(p) for p in paths)}: a change restarts "
                        "every process (one that exited too)"
                    )
                    restart_on_changes(
                        supervisor, children, paths, check=functools.partial(config_problems, path)
                    )
                    status = supervisor.watch(until="stop")
        except Stopped:
            status = 0
        finally:
            supervisor.stop()
    if status:
        raise ctx.exit(status)


def _prepare(
    ctx: click.Context,
    supervisor: Supervisor,
    services: Sequence[str],
    no_workers: bool,
    held: contextlib.ExitStack,
) -> tuple[list[ChildSpec], list[str], dict[str, str], dict[str, str], Path]:
    """Read the config, take its lock into *held*, refuse clearly (a usage error, or
    status 1 for a bad config, a config another srcore dev or demo runs, or a taken port);
    the plan, the services chosen, the children's environment, the installed services'
    packages and the config's path."""
    from srcore.config import ConfigError, find_config_path
    from srcore.manifest import load_network_config

    config_option = ctx.find_root().params.get("config")
    try:
        path = find_config_path(config_option).resolve()
        cfg = load_network_config(path)
    except ConfigError as exc:
        for problem in exc.problems:
            click.echo(str(problem), err=True)
        raise ctx.exit(1) from None

    configured = cfg.services
    chosen = list(services) or configured
    missing = [s for s in chosen if s not in configured]
    if missing:
        raise click.UsageError(
            f"not in {path}: {', '.join(missing)} (it has: {', '.join(configured) or 'none'})"
        )
    installed = _installed()
    absent = [s for s in chosen if s not in installed]
    if absent:
        raise click.UsageError(
            f"[{'], ['.join(absent)}] in {path} but not installed "
            f"(installed: {', '.join(sorted(installed)) or 'none'}); pip install it, or "
            "name the services to run: srcore dev meta todo"
        )
    if not chosen:
        raise click.UsageError(f"no services in {path}: add a section per service")
    origins = {s: str(cfg.section(s)["origin"]) for s in chosen}

    # Before the ports: a second run on this config would migrate the databases the first
    # one is migrating, and its ports are only taken once that is done.
    try:
        held.enter_context(running_alone(lock_path(path), "srcore dev"))
    except AlreadyRunning as exc:
        click.echo(
            f"srcore dev: cannot start: {exc.holder} runs already on {path}. Stop it "
            "(Ctrl-C in its terminal), or run this one on a config of its own.",
            err=True,
        )
        raise ctx.exit(1) from None
    except OSError:
        pass  # a config in a directory we cannot write to: the ports still tell

    ports: dict[int, str] = {}
    busy = []
    for service, origin in origins.items():
        port = bind_port(origin)
        if port in ports:
            busy.append(f"port {port} is both {ports[port]}'s and {service}'s")
        elif not port_free(port):
            busy.append(f"port {port} of {service} ({origin}) is in use")
        ports.setdefault(port, service)
    if busy:
        click.echo(
            f"srcore dev: cannot start: {'; '.join(busy)}. Another srcore dev or demo still "
            f"running? Stop it, or change the origins in {path}.",
            err=True,
        )
        raise ctx.exit(1)

    plan = build_plan(origins, config_path=path, srcore=srcore_argv(), workers=not no_workers)
    supervisor.align(spec.label for spec in plan)
    for warning in cfg.warnings:
        supervisor.say(f"warning: {warning}")
    if cfg.global_["environment"] == "production":
        supervisor.say("warning: environment = production, but srcore dev runs development servers")
    env = dict(os.environ, SRCORE_CONFIG=str(path), PYTHONUNBUFFERED="1")
    for name in ("WERKZEUG_RUN_MAIN", "WERKZEUG_SERVER_FD"):
        env.pop(name, None)
    return plan, chosen, env, installed, path
