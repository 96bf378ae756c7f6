"""Run the example network on 127.0.0.1: what `make demo` calls.

Writes a development config with fresh secrets on first run (var/config.ini, git-ignored),
migrates every configured service, starts each one under gunicorn, waits until each
answers its health check, prints where to click, and stops everything on Ctrl-C (or
SIGTERM). The config has no smtp-host, so meta's mails (the confirmation link) are
printed to this terminal instead of being sent.

Set-up is reported in numbered steps (config, migrations with one line per service,
servers and workers) and ends with one "demo ready" line before the guide.

Options (for the test suite): --var DIR puts config and databases elsewhere; --exit-when-ready
stops the services again as soon as they all answered.
"""

from __future__ import annotations

import argparse
import codecs
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import IO

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


#: The numbered steps of the set-up.
STEPS = 5


def srcore(*args: str, config: Path) -> None:
    subprocess.run([str(BIN / "srcore"), "--config", str(config), *args], check=True)


def step(number: int, text: str) -> None:
    print(f"demo [{number}/{STEPS}] {text}")


def first_port_note(config: Path, first_port: int | None) -> str | None:
    """The one line saying --first-port is ignored: an existing config keeps its ports."""
    if first_port is None or not config.exists():
        return None
    return (
        f"--first-port {first_port} ignored: {config} exists and keeps its ports; "
        f"delete it (or its directory) to start over with new ones"
    )


def migrate_all(config: Path) -> int:
    """``srcore migrate --all upgrade``, its output passed on as it comes; revisions applied.

    Passed on in chunks, not lines: a service's progress line is written in two halves
    around its migration, and the first half should show while it runs.
    """
    process = subprocess.Popen(
        [str(BIN / "srcore"), "--config", str(config), "migrate", "--all", "upgrade"],
        stdout=subprocess.PIPE,
    )
    assert process.stdout is not None
    decoder = codecs.getincrementaldecoder("utf-8")("replace")
    text = []
    while chunk := process.stdout.read1(4096):  # type: ignore[attr-defined]
        text.append(decoder.decode(chunk))
        sys.stdout.write(text[-1])
        sys.stdout.flush()
    process.stdout.close()
    if process.wait() != 0:
        raise SystemExit(f"migrating the services failed (status {process.returncode})")
    found = re.search(r"\((\d+) revisions? applied\)", "".join(text))
    return int(found.group(1)) if found else 0


def pass_on(stream: IO[bytes], ready: threading.Event, marker: str) -> None:
    """Copy a worker's output to ours line by line; set *ready* at its line *marker*."""
    for raw in iter(stream.readline, b""):
        line = raw.decode("utf-8", "replace")
        sys.stdout.write(line)
        if line.startswith(marker):
            ready.set()
    stream.close()


def wait_ready(
    service: str, ready: threading.Event, process: subprocess.Popen[bytes], *, seconds: float = 90
) -> None:
    """Until *service*'s worker said it is ready (see :func:`pass_on`), or it exited."""
    deadline = time.monotonic() + seconds
    while not ready.wait(0.1):
        if process.poll() is not None:
            raise SystemExit(f"{service}'s webhook worker exited with status {process.returncode}")
        if time.monotonic() > deadline:
            raise SystemExit(f"{service}'s webhook worker was not ready within {seconds:.0f} s")


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def wait_healthy(url: str, process: subprocess.Popen[bytes], *, seconds: float = 90) -> None:
    """Until *url* answers 200; the bound is generous because a busy machine takes a while
    to import and boot a service, but it still gives up instead of hanging."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"{url}: the server exited with status {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)
    raise SystemExit(f"{url} did not become healthy within {seconds:.0f} s")


def _shown(path: Path | str) -> str:
    """*path* relative to the working directory when it is inside it (shorter to copy)."""
    try:
        return str(Path(path).relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _port_free(origin: str) -> bool:
    """Whether nothing listens on *origin*'s port on 127.0.0.1 yet."""
    import socket
    from urllib.parse import urlsplit

    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", urlsplit(origin).port or 80))
        except OSError:
            return False
    return True


def start_here(origins: dict[str, str], config: Path) -> str:
    """What to do first in the browser, and how to make an admin."""
    meta, todo = origins.get("meta"), origins.get("todo")
    if meta is None:
        return ""
    python = _shown(sys.executable)
    lines = [
        "Start here:",
        "",
        f"  1. Open {meta}/register and make an account.",
        "  2. Mail is not sent in development: the confirmation mail is printed right here,",
        '     in this terminal ("mail not sent ... it would have been:"). Open the',
        f"     {meta}/confirm/... link in it.",
    ]
    if todo is not None:
        lines += [
            f'  3. Open {todo}/ and click "Log in": todo sends you to meta, which logs you in',
            "     (asking for your password only if you are not logged in there) and sends",
            '     you back to todo, logged in. Click "New tracker" to make one.',
        ]
    paste = origins.get("paste")
    if paste is not None:
        lines += [
            f'  {4 if todo is not None else 3}. Open {paste}/ and click "Log in": no password '
            "this time.",
        ]
    lines += [
        "",
        "Make an account an admin (meta's /admin/users: search, suspend, unsuspend):",
        "",
        f"  {python} -m meta.admin make-admin NAME --config {_shown(config)}",
        "",
    ]
    return "\n".join(lines)


def main() -> int:
    # Line by line even into a pipe (`make demo | tee`), so the URLs show up at once.
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    # A SIGTERM stops the services as Ctrl-C does, instead of leaving them running.
    signal.signal(signal.SIGTERM, _interrupt)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--var", type=Path, default=ROOT / "var")
    parser.add_argument("--exit-when-ready", action="store_true")
    parser.add_argument(
        "--first-port", type=int, default=None, help="meta's port in a new config (5000)"
    )
    options = parser.parse_args()

    started = time.monotonic()
    var = options.var.resolve()
    config = var / "config.ini"
    note = first_port_note(config, options.first_port)
    if config.exists():
        step(1, f"config: {_shown(config)} (kept; delete {_shown(var)}/ to start over)")
        if note:
            print(f"demo: {note}", file=sys.stderr)
    else:
        step(1, f"config: writing {_shown(config)} with fresh secrets")
        first_port = 5000 if options.first_port is None else options.first_port
        srcore("init", "--path", str(config), "--first-port", str(first_port), config=config)
    step(2, "config: checking every key")
    srcore("config", "check", config=config)

    sys.path.insert(0, str(ROOT))
    from srcore.config import load_config

    cfg = load_config(config)
    services = cfg.services
    busy = [o for o in (str(cfg.section(s)["origin"]) for s in services) if not _port_free(o)]
    if busy:
        print(
            f"Cannot start: {', '.join(busy)} already answers (another demo still running?). "
            f"Stop it, or change the origins in {config}.",
            file=sys.stderr,
        )
        return 1
    step(3, f"migrations: {', '.join(services)}")
    revisions = migrate_all(config)

    processes: list[tuple[str, str, subprocess.Popen[bytes]]] = []
    workers: list[tuple[str, threading.Event, subprocess.Popen[bytes]]] = []
    env = dict(os.environ, SRCORE_CONFIG=str(config))
    try:
        step(4, f"starting {', '.join(services)} under gunicorn and their webhook workers")
        for service in services:
            origin = str(cfg.section(service)["origin"]).rstrip("/")
            # One process with threads: with the in-process revocation store (no redis-url),
            # a logout meta's worker delivers then reaches the whole service at once.
            serve = ["serve", service, "--workers", "1", "--threads", "4"]
            process = subprocess.Popen(
                [str(BIN / "srcore"), "--config", str(config), *serve], env=env
            )
            processes.append((service, origin, process))
        for service in services:
            # The webhook worker of each service: the local one, no broker to run. meta's
            # carries revocations and profile changes to the services: it polls often.
            poll = ["--poll-interval", "0.2"] if service == "meta" else []
            worker = subprocess.Popen(
                [str(BIN / "srcore"), "--config", str(config), "worker", service, *poll],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
            )
            assert worker.stdout is not None
            ready = threading.Event()
            threading.Thread(
                target=pass_on,
                args=(worker.stdout, ready, f"srcore worker: {service} ready"),
                daemon=True,
            ).start()
            workers.append((service, ready, worker))
        step(5, "waiting until every service answers /healthz and every worker is ready")
        for _service, origin, process in processes:
            wait_healthy(origin + "/healthz", process)
        for service, ready, worker in workers:
            wait_ready(service, ready, worker)
        print(
            f"demo ready in {time.monotonic() - started:.1f} s: {len(processes)} services up "
            f"({', '.join(services)}), {len(workers)} webhook workers ready, "
            f"{revisions} migration{'s' if revisions != 1 else ''} applied, "
            f"config {_shown(config)}"
        )
        width = max(len(s) for s, _, _ in processes)
        print("\nThe network is up:\n")
        for service, origin, _ in processes:
            print(f"  {service:<{width}}  {origin}/")
        print()
        guide = start_here({s: o for s, o, _ in processes}, config)
        if guide:
            print(guide)
        print(f"Webhook workers: {', '.join(services)} (local, straight from each database).")
        print(f"Config: {config} (edit it, then restart). Ctrl-C stops everything.\n")
        if options.exit_when_ready:
            return 0
        everything = [p for _, _, p in processes] + [w for _, _, w in workers]
        while all(p.poll() is None for p in everything):
            time.sleep(0.5)
        return 1
    except KeyboardInterrupt:
        print("\nstopping")
        return 0
    finally:
        children = [p for _, _, p in processes] + [w for _, _, w in workers]
        for process in children:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in children:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()


if __name__ == "__main__":
    sys.exit(main())
