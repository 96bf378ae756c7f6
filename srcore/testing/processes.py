"""A service under gunicorn, or its webhook worker, in processes of their own for a test.

Both run on :mod:`srcore.supervisor`, as ``srcore dev`` and the demo do: each child in a
process group of its own, stopped with everything it started.
"""

from __future__ import annotations

import contextlib
import functools
import os
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from srcore.supervisor import Program, Supervisor, http_ok

__all__ = [
    "RunningNetwork",
    "free_port",
    "gunicorn_argv",
    "run_network",
    "run_service",
    "run_worker",
]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def gunicorn_argv(
    app: str, *, port: int, workers: int = 1, threads: int = 1, options: tuple[str, ...] = ()
) -> tuple[str, ...]:
    """The command running *app* (``package:create_app()``) under gunicorn on 127.0.0.1:*port*
    as ``srcore serve`` would, with *options* of the test's own (``--max-requests 4``)."""
    from srcore.serving import gunicorn_options

    threaded = ("--threads", str(threads)) if threads > 1 else ()
    return (
        sys.executable,
        "-m",
        "gunicorn",
        "--bind",
        f"127.0.0.1:{port}",
        "--no-control-socket",
        *gunicorn_options(threads=threads),
        "--workers",
        str(workers),
        *threaded,
        *options,
        "--graceful-timeout",
        "2",
        app,
    )


@contextlib.contextmanager
def run_service(
    package: str,
    config_path: Path,
    *,
    port: int,
    workers: int = 1,
    threads: int = 1,
    timeout: float = 30,
) -> Iterator[str]:
    """Run *package* under gunicorn on 127.0.0.1:*port* until the block ends; yield its URL.
    Each of its *workers* serves *threads* requests at once.

    Run by :mod:`srcore.supervisor`: in a process group of its own, stopped with its
    workers (SIGTERM, then SIGKILL after 10 s). Its log goes to a temporary file; the
    error raised when it exits or does not answer ``/healthz`` quotes its last lines.
    """
    argv = gunicorn_argv(f"{package}:create_app()", port=port, workers=workers, threads=threads)
    url = f"http://127.0.0.1:{port}"
    with _supervised(config_path) as (supervisor, env):
        child = supervisor.start(Program(package, argv, env))
        supervisor.wait_until(functools.partial(http_ok, url + "/healthz"), child, timeout=timeout)
        yield url


@contextlib.contextmanager
def _supervised(config_path: Path) -> Iterator[tuple[Supervisor, dict[str, str]]]:
    """A supervisor logging to a temporary file (nobody reads a pipe while a test runs),
    and the environment of its children."""
    import tempfile

    env = dict(os.environ, SRCORE_CONFIG=str(config_path), PYTHONUNBUFFERED="1")
    with (
        tempfile.TemporaryFile("w+", encoding="utf-8") as log,
        Supervisor(log, name="srcore.testing", stop_timeout=10) as supervisor,
    ):
        yield supervisor, env


@contextlib.contextmanager
def run_worker(
    service: str, config_path: Path, *, poll_interval: float | None = 0.2, timeout: float = 30
) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``srcore worker SERVICE`` (its webhook worker) until the block ends.

    Yields the process once the worker has said it started; *poll_interval* is passed
    as ``--poll-interval`` (meta's worker carries revocations, so tests poll fast). Run
    and stopped by :mod:`srcore.supervisor`, as :func:`run_service` is.
    """
    argv: tuple[str, ...] = (
        sys.executable,
        "-c",
        "from srcore.cli import main; main()",
        "worker",
        service,
    )
    if poll_interval is not None:
        argv += ("--poll-interval", str(poll_interval))
    with _supervised(config_path) as (supervisor, env):
        child = supervisor.start(Program(f"{service} worker", argv, env))
        supervisor.wait_for_line(child, "srcore worker:", timeout=timeout)
        yield child.process


@dataclass(frozen=True)
class RunningNetwork:
    """Services of one network running for a test: their config file and each one's URL."""

    config: Path
    urls: dict[str, str]


@contextlib.contextmanager
def run_network(
    directory: Path,
    services: Sequence[str],
    *,
    global_keys: Mapping[str, object] | None = None,
    workers: Sequence[str] = (),
    timeout: float = 60,
) -> Iterator[RunningNetwork]:
    """Run *services* under gunicorn, each on a free port of 127.0.0.1, and the webhook
    workers of *workers*, until the block ends: their config is written to
    ``directory/config.ini`` (:func:`.configs.write_network_config`, with *global_keys*)
    and each one's database migrated first, as an operator's first start would."""
    from srcore.app import migration_target
    from srcore.migrate import upgrade_all
    from srcore.testing.configs import write_network_config

    ports = {service: free_port() for service in services}
    config = write_network_config(directory / "config.ini", ports, global_keys=global_keys)
    for service in services:
        upgrade_all(migration_target(service, config))
    with contextlib.ExitStack() as stack:
        urls = {
            service: stack.enter_context(run_service(service, config, port=port, timeout=timeout))
            for service, port in ports.items()
        }
        for service in workers:
            stack.enter_context(run_worker(service, config, timeout=timeout))
        yield RunningNetwork(config, urls)
