"""``srcore dev``: every configured service and its worker on 127.0.0.1, in one log.

The command reads the config, refuses at once when a service's port is taken, migrates
every service (one progress line each, then a summary), starts each service with the
Flask reloading development server on its origin's port (``srcore serve SERVICE --debug``)
and its local webhook worker (``srcore worker SERVICE``), and merges their output into one
stream, each line prefixed with its process's name in the service's own colour. Ctrl-C
(or SIGTERM) stops them all: SIGTERM to each process group, a bounded wait, SIGKILL for
what is left, and a one-line summary.

The pieces that decide things (colour, prefixes, which processes to run, whether a port is
free) are plain functions; :class:`Supervisor` is the thin layer that runs processes.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit

import click

__all__ = [
    "COLOURS",
    "DEV_LABEL",
    "ChildSpec",
    "MergedLog",
    "Supervisor",
    "bind_port",
    "build_plan",
    "dev_command",
    "port_free",
    "prefixes",
    "srcore_argv",
    "use_colour",
]

#: ANSI colours given to services in config order (cyan, magenta, yellow, green, blue, ...).
COLOURS: tuple[str, ...] = ("36", "35", "33", "32", "34", "91", "96", "95", "93", "92", "94")
#: The label of the lines ``srcore dev`` writes itself.
DEV_LABEL = "dev"
_RESET = "\033[0m"
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
_BOLD = "1"


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


def use_colour(stream: IO[str], environ: Mapping[str, str]) -> bool:
    """Colour only for a terminal, and never when ``NO_COLOR`` is set (no-color.org)."""
    if environ.get("NO_COLOR"):
        return False
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


def prefixes(
    services: Sequence[str], labels: Sequence[tuple[str, str]], *, colour: bool
) -> dict[str, str]:
    """The prefix of every label's lines: the label padded to one width, then ``| ``.

    *labels* are ``(label, service)`` pairs; a service's processes share its colour, in
    the order of *services*. :data:`DEV_LABEL` is bold.
    """
    width = max((len(label) for label, _ in labels), default=0)
    width = max(width, len(DEV_LABEL))
    out: dict[str, str] = {}
    for label, service in [*labels, (DEV_LABEL, "")]:
        text = f"{label:<{width}} | "
        if colour:
            code = COLOURS[services.index(service) % len(COLOURS)] if service in services else _BOLD
            text = f"\033[{code}m{label:<{width}}{_RESET} | "
        out[label] = text
    return out


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

    The console script beside the interpreter when there is one (the Flask reloader
    restarts a child with its own argv, so it must be a real script or ``-m``), else
    ``python -m srcore.dev``.
    """
    python = Path(executable or sys.executable)
    script = python.parent / "srcore"
    if script.is_file():
        return (str(script),)
    return (str(python), "-m", "srcore.dev")


def build_plan(
    origins: Mapping[str, str],
    *,
    config_path: Path,
    srcore: Sequence[str],
    workers: bool = True,
) -> list[ChildSpec]:
    """The processes for *origins* (service id -> origin, in config order): each service's
    reloading server, then each service's webhook worker."""
    base = (*srcore, "--config", str(config_path))
    plan = []
    for service, origin in origins.items():
        port = bind_port(origin)
        plan.append(
            ChildSpec(
                service,
                service,
                (*base, "serve", service, "--debug", "--bind", f"127.0.0.1:{port}"),
                port,
            )
        )
    if workers:
        plan += [
            ChildSpec(f"{service} worker", service, (*base, "worker", service))
            for service in origins
        ]
    return plan


class MergedLog:
    """One output stream shared by every process's lines; each write is one whole line."""

    def __init__(
        self, stream: IO[str], prefixes: Mapping[str, str], *, strip_ansi: bool = False
    ) -> None:
        self.stream = stream
        self.prefixes = dict(prefixes)
        #: Remove the children's own colour codes (the Flask server colours its warnings).
        self.strip_ansi = strip_ansi
        self._lock = threading.Lock()

    def line(self, label: str, text: str) -> None:
        prefix = self.prefixes.get(label, f"{label} | ")
        if self.strip_ansi:
            text = _ANSI.sub("", text)
        with self._lock:
            try:
                self.stream.write(prefix + text + "\n")
                self.stream.flush()
            except (BrokenPipeError, ValueError):
                pass  # the reader went away (a closed pipe): keep running, unheard

    def dev(self, text: str) -> None:
        self.line(DEV_LABEL, text)

    def pump(self, label: str, pipe: IO[bytes]) -> None:
        """Copy *pipe*'s lines to the log until it closes (run in a thread)."""
        for raw in iter(pipe.readline, b""):
            self.line(label, raw.decode("utf-8", "replace").rstrip("\r\n"))
        pipe.close()


@dataclass
class _Running:
    spec: ChildSpec
    process: subprocess.Popen[bytes]
    reader: threading.Thread
    reported: bool = False


@dataclass
class Supervisor:
    """Runs the planned processes, watches them, and stops them all within a bound."""

    plan: Sequence[ChildSpec]
    log: MergedLog
    env: Mapping[str, str]
    stop_timeout: float = 10.0
    ready_timeout: float = 60.0
    stop: threading.Event = field(default_factory=threading.Event)
    force: threading.Event = field(default_factory=threading.Event)
    running: list[_Running] = field(default_factory=list)

    def on_signal(self, signum: int, _frame: object) -> None:
        if self.stop.is_set():
            self.force.set()  # a second Ctrl-C: do not wait for anyone
        self.stop.set()

    def start(self) -> None:
        for spec in self.plan:
            process = subprocess.Popen(  # noqa: S603 - argv built by build_plan
                spec.argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                env=dict(self.env),
                # Its own process group: the terminal's Ctrl-C reaches only this
                # supervisor, which then stops every group (the reloader's child too).
                start_new_session=True,
            )
            assert process.stdout is not None
            reader = threading.Thread(
                target=self.log.pump,
                args=(spec.label, process.stdout),
                name=f"dev-log-{spec.label}",
                daemon=True,
            )
            reader.start()
            self.running.append(_Running(spec, process, reader))
            what = (
                f"reloading server on http://127.0.0.1:{spec.port}/"
                if spec.is_server
                else "webhook worker"
            )
            self.log.dev(f"started {spec.label} (pid {process.pid}): {what}")

    def watch_health(self) -> threading.Thread:
        """Report each server once it answers ``/healthz``, then one summary line."""

        def watch() -> None:
            started = time.monotonic()
            servers = [r for r in self.running if r.spec.is_server]
            pending = list(servers)
            deadline = started + self.ready_timeout
            while pending and not self.stop.is_set() and time.monotonic() < deadline:
                for item in list(pending):
                    if item.process.poll() is not None:
                        pending.remove(item)
                        continue
                    status = _health(item.spec.port)
                    if status == 200:
                        pending.remove(item)
                        self.log.dev(
                            f"{item.spec.label} is up: http://127.0.0.1:{item.spec.port}/ "
                            f"answers /healthz with 200 after {time.monotonic() - started:.1f} s"
                        )
                if pending:
                    self.stop.wait(0.2)
            if self.stop.is_set():
                return
            for item in pending:
                self.log.dev(
                    f"{item.spec.label} did not answer /healthz within "
                    f"{self.ready_timeout:.0f} s (see its lines above)"
                )
            up = [r for r in servers if r not in pending and r.process.poll() is None]
            workers = sum(1 for r in self.running if not r.spec.is_server)
            urls = ", ".join(f"{r.spec.label} http://127.0.0.1:{r.spec.port}/" for r in up)
            self.log.dev(
                f"ready: {len(up)} of {len(servers)} services up ({urls or 'none'}), "
                f"{workers} worker(s); code changes reload the servers; Ctrl-C stops them all"
            )

        thread = threading.Thread(target=watch, name="dev-health", daemon=True)
        thread.start()
        return thread

    def wait(self) -> int:
        """Until a signal, or until every process has exited; 0 after a signal."""
        while not self.stop.wait(0.2):
            for item in self.running:
                code = item.process.poll()
                if code is not None and not item.reported:
                    item.reported = True
                    self.log.dev(
                        f"{item.spec.label} exited with status {code}; the others keep "
                        "running (fix it, then restart srcore dev)"
                    )
            if all(item.reported for item in self.running):
                self.log.dev("every process has exited")
                return 1
        return 0

    def shutdown(self) -> str:
        """Stop every process group: SIGTERM, a bounded wait, then SIGKILL. A summary."""
        started = time.monotonic()
        groups = [item.process.pid for item in self.running]
        for pgid in groups:
            _signal_group(pgid, signal.SIGTERM)
        deadline = started + self.stop_timeout
        while time.monotonic() < deadline and not self.force.is_set():
            for item in self.running:
                item.process.poll()
            if not any(_group_alive(pgid) for pgid in groups):
                break
            time.sleep(0.05)
        killed = [item.spec.label for item in self.running if _group_alive(item.process.pid)]
        for pgid in groups:
            _signal_group(pgid, signal.SIGKILL)
        for item in self.running:
            with contextlib.suppress(subprocess.TimeoutExpired):
                item.process.wait(timeout=5)
        kill_deadline = time.monotonic() + 5
        while any(_group_alive(pgid) for pgid in groups) and time.monotonic() < kill_deadline:
            time.sleep(0.05)
        for item in self.running:
            item.reader.join(timeout=2)
        servers = [i.spec.label for i in self.running if i.spec.is_server]
        workers = len(self.running) - len(servers)
        summary = (
            f"stopped {len(self.running)} process(es) ({', '.join(servers) or 'no services'}"
            f" and {workers} worker(s)) in {time.monotonic() - started:.1f} s"
        )
        if killed:
            summary += f"; killed {', '.join(killed)} after {self.stop_timeout:.0f} s"
        return summary


def _health(port: int | None) -> int | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except (urllib.error.URLError, OSError):
        return None


def _signal_group(pgid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# -- the command --------------------------------------------------------------------------


def _installed() -> dict[str, str]:
    from importlib import metadata

    from srcore.manifest import ENTRY_POINT_GROUP

    return {ep.name: ep.value for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)}


def _migrate(
    log: MergedLog,
    services: Sequence[str],
    *,
    srcore: Sequence[str],
    config_path: Path,
    env: Mapping[str, str],
    stop: threading.Event,
) -> bool:
    """``srcore migrate SERVICE upgrade`` for each service, one progress line each.

    False when one failed or a signal came (the migration in hand is finished first).
    """
    started = time.monotonic()
    for number, service in enumerate(services, 1):
        if stop.is_set():
            log.dev(f"stopped before migrating {service}; nothing started")
            return False
        log.dev(f"migrating {service} ({number}/{len(services)}) ...")
        began = time.monotonic()
        result = subprocess.run(  # noqa: S603 - argv built here
            [*srcore, "--config", str(config_path), "migrate", service, "upgrade"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            env=dict(env),
            check=False,
            # Not the terminal's Ctrl-C: a migration is finished, not cut in the middle.
            start_new_session=True,
        )
        lines = (result.stdout + result.stderr).strip().splitlines()
        if result.returncode != 0:
            for line in lines:
                log.line(service, line)
            log.dev(f"migrating {service} failed (status {result.returncode}); nothing started")
            return False
        at = "; ".join(line.strip() for line in lines if line.strip()) or "up to date"
        log.dev(f"migrated {service} in {time.monotonic() - began:.1f} s: {at}")
    log.dev(
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
@click.option(
    "--stop-timeout",
    default=10.0,
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
    stop_timeout: float,
) -> None:
    """Run every service of the config (or the ones named) on 127.0.0.1 for development.

    Migrates each service, starts it with the Flask reloading server on its origin's
    port and its webhook worker (`srcore worker`), and merges their output into one log,
    each line prefixed with its process in the service's colour (no colour when the
    output is not a terminal or NO_COLOR is set). Ctrl-C stops them all. Workers are not
    reloaded; the servers reload when their code changes.
    """
    from srcore.config import ConfigError, find_config_path, load_config

    config_option = ctx.find_root().params.get("config")
    try:
        path = find_config_path(config_option).resolve()
        cfg = load_config(path)
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

    srcore = srcore_argv()
    plan = build_plan(origins, config_path=path, srcore=srcore, workers=not no_workers)
    colour = use_colour(sys.stdout, os.environ)
    log = MergedLog(
        sys.stdout,
        prefixes(chosen, [(c.label, c.service) for c in plan], colour=colour),
        strip_ansi=not colour,
    )
    for warning in cfg.warnings:
        log.dev(f"warning: {warning}")
    if cfg.global_["environment"] == "production":
        log.dev("warning: environment = production, but srcore dev runs development servers")
    env = dict(os.environ, SRCORE_CONFIG=str(path), PYTHONUNBUFFERED="1")
    for name in ("WERKZEUG_RUN_MAIN", "WERKZEUG_SERVER_FD"):
        env.pop(name, None)

    supervisor = Supervisor(plan, log, env, stop_timeout=stop_timeout)
    previous: dict[signal.Signals, Any] = {}
    for signum in (signal.SIGINT, signal.SIGTERM):
        previous[signum] = signal.signal(signum, supervisor.on_signal)
    status = 0
    try:
        if not no_migrate and not _migrate(
            log, chosen, srcore=srcore, config_path=path, env=env, stop=supervisor.stop
        ):
            raise ctx.exit(0 if supervisor.stop.is_set() else 1)
        if supervisor.stop.is_set():
            log.dev("stopped before starting anything")
            return
        supervisor.start()
        supervisor.watch_health()
        status = supervisor.wait()
    finally:
        if supervisor.running:
            log.dev("stopping ..." if status == 0 else "stopping the rest ...")
            log.dev(supervisor.shutdown())
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    if status:
        raise ctx.exit(status)


def _main() -> None:  # pragma: no cover - `python -m srcore.dev` when there is no script
    from srcore.cli import main

    main()


if __name__ == "__main__":  # pragma: no cover
    _main()
