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
import functools
import os
import re
import stat
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
sys.path.insert(0, str(ROOT))

from srcore.config import Config  # noqa: E402
from srcore.process_groups import terminal_foreground  # noqa: E402
from srcore.supervisor import (  # noqa: E402
    AlreadyRunning,
    Program,
    Stopped,
    Supervisor,
    http_ok,
    lock_path,
    running_alone,
)

#: The numbered steps of the set-up.
STEPS = 5


def srcore(supervisor: Supervisor, name: str, *args: str, config: Path) -> str:
    """``srcore --config CONFIG ARGS``, its output passed on as it comes; its output.

    Passed on in chunks, not lines: a service's migration progress line is written in two
    halves around its migration, and the first half should show while it runs.
    """
    argv = (str(BIN / "srcore"), "--config", str(config), *args)
    finished = supervisor.run(Program(name, argv))
    if finished.returncode != 0:
        raise RuntimeError(f"{name} failed (status {finished.returncode})")
    return finished.output


def step(supervisor: Supervisor, number: int, text: str) -> None:
    supervisor.echo(f"demo [{number}/{STEPS}] {text}\n")


def first_port_note(config: Path, first_port: int | None) -> str | None:
    """The one line saying --first-port is ignored: an existing config keeps its ports."""
    if first_port is None or not config.exists():
        return None
    return (
        f"--first-port {first_port} ignored: {config} exists and keeps its ports; "
        f"delete it (or its directory) to start over with new ones"
    )


def revisions_applied(output: str) -> int:
    """How many revisions ``srcore migrate --all upgrade`` said it applied."""
    found = re.search(r"\((\d+) revisions? applied\)", output)
    return int(found.group(1)) if found else 0


def _shown(path: Path | str) -> str:
    """*path* relative to the working directory when it is inside it (shorter to copy)."""
    try:
        return str(Path(path).relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _port_free(origin: str) -> bool:
    """Whether nothing listens on *origin*'s port on 127.0.0.1 (a previous run's closed
    connections, still in TIME_WAIT, do not count)."""
    from urllib.parse import urlsplit

    from srcore.dev import port_free

    return port_free(urlsplit(origin).port or 80)


def already_running(exc: AlreadyRunning, config: Path) -> str:
    """What a second demo on the same directory says: which one runs, where to find it."""
    from srcore.config import ConfigError, load_config

    try:
        cfg = load_config(config)
    except (ConfigError, OSError):  # not written yet: the first one is starting
        where = "nothing yet (it is setting up)"
    else:
        where = ", ".join(f"{s} {str(cfg.section(s)['origin']).rstrip('/')}/" for s in cfg.services)
    return (
        f"Cannot start: another demo runs already on {_shown(config.parent)}/: {exc.holder}, "
        f"serving {where}. Use that one, or stop it (Ctrl-C in its terminal); for a second "
        "network beside it, give it a directory and ports of its own: "
        "make demo DEMO_ARGS='--var /tmp/demo2 --first-port 6000'"
    )


def shared_directory(var: Path) -> str | None:
    """Why *var* is no place for the demo's secrets and databases, or ``None``: another
    account owns it, or can write in it, and so could replace the config or a database,
    or put a ``-wal`` file of its own beside one (``--var /tmp/demo2`` names a directory
    anyone may have made first)."""
    try:
        info = var.stat()
    except FileNotFoundError:
        return None
    mode = stat.S_IMODE(info.st_mode)
    if info.st_uid != os.geteuid():
        import pwd

        try:
            owner = pwd.getpwuid(info.st_uid).pw_name
        except KeyError:
            owner = f"uid {info.st_uid}"
        return (
            f"{_shown(var)}/ belongs to {owner}, who could replace the demo's config and "
            "databases there: give it a directory of your own (--var)"
        )
    if mode & 0o022:
        who = "every account of this machine" if mode & 0o002 else "its group"
        return (
            f"{_shown(var)}/ can be written by {who} (mode {mode:04o}), who could replace "
            f"the demo's config and databases there: chmod go-w {var}, or give it a "
            "directory of your own (--var)"
        )
    return None


def missing_files(var: Path, cfg: Config) -> str | None:
    """Why the demo stops when its directory (or a database in it) was deleted under it.

    The servers would go on with the SQLite files they have open, deleted: every page
    answers, every change is lost at the next start, and a worker that opens its database
    anew finds none.
    """
    files = [var / "config.ini"]
    for service in cfg.services:
        url = str(cfg.section(service).get("database-url") or "")
        if url.startswith("sqlite:///"):
            files.append(Path(url.removeprefix("sqlite:///").split("?", 1)[0]))
    gone = [path for path in files if not path.exists()]
    if not gone:
        return None
    shown = f"{_shown(var)}/" if not var.exists() else ", ".join(_shown(p) for p in gone)
    return (
        f"{shown} deleted while the demo ran: stopping (the services would keep serving the "
        "deleted databases and lose every change); make demo again starts a fresh network"
    )


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
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--var", type=Path, default=ROOT / "var")
    parser.add_argument("--exit-when-ready", action="store_true")
    parser.add_argument(
        "--first-port", type=int, default=None, help="meta's port in a new config (5000)"
    )
    options = parser.parse_args()
    # Ctrl-C (or SIGTERM) at any moment stops whatever has started, says so, and exits 0;
    # under `make demo` only this process hears the Ctrl-C, so make reports our status.
    supervisor = Supervisor(name="demo")
    config = options.var.resolve() / "config.ini"
    with terminal_foreground(), supervisor.handling_signals():
        try:
            # One demo per directory: a second one would rewrite the config, migrate the
            # databases the first one serves and fight over its ports.
            with running_alone(lock_path(config), "make demo"):
                status = run(supervisor, options)
        except AlreadyRunning as exc:
            print(already_running(exc, config), file=sys.stderr)
            status = 1
        except OSError as exc:  # the lock cannot be made: not writable, or a link there
            if exc.filename != str(lock_path(config)):
                raise
            print(f"Cannot start: {exc.filename}: {exc.strerror or exc}", file=sys.stderr)
            status = 1
        except Stopped:
            status = 0
        except RuntimeError as exc:
            supervisor.say(str(exc))
            status = 1
        finally:
            supervisor.stop()
    return status


def run(supervisor: Supervisor, options: argparse.Namespace) -> int:
    """The set-up's five steps, then the guide; until a stop is asked for."""
    started = time.monotonic()
    var = options.var.resolve()
    config = var / "config.ini"
    shared = shared_directory(var)  # made by now (the lock is in it), whoever made it
    if shared is not None:
        print(f"Cannot start: {shared}", file=sys.stderr)
        return 1
    note = first_port_note(config, options.first_port)
    if config.exists():
        step(supervisor, 1, f"config: {_shown(config)} (kept; delete {_shown(var)}/ to start over)")
        if note:
            print(f"demo: {note}", file=sys.stderr)
    else:
        step(supervisor, 1, f"config: writing {_shown(config)} with fresh secrets")
        first_port = 5000 if options.first_port is None else options.first_port
        args = ("init", "--path", str(config), "--first-port", str(first_port))
        srcore(supervisor, "init", *args, config=config)
    step(supervisor, 2, "config: checking every key")
    srcore(supervisor, "config check", "config", "check", config=config)

    from srcore.config import load_config

    cfg = load_config(config)
    services = cfg.services
    origins = {s: str(cfg.section(s)["origin"]).rstrip("/") for s in services}
    busy = [o for o in origins.values() if not _port_free(o)]
    if busy:
        print(
            f"Cannot start: {', '.join(busy)} already answers (another demo still running?). "
            f"Stop it, or change the origins in {config}.",
            file=sys.stderr,
        )
        return 1
    step(supervisor, 3, f"migrations: {', '.join(services)}")
    output = srcore(supervisor, "migrate", "migrate", "--all", "upgrade", config=config)
    revisions = revisions_applied(output)

    env = dict(os.environ, SRCORE_CONFIG=str(config), PYTHONUNBUFFERED="1")
    base = (str(BIN / "srcore"), "--config", str(config))
    step(supervisor, 4, f"starting {', '.join(services)} under gunicorn and their webhook workers")
    # One process with threads: with the in-process revocation store (no redis-url), a
    # logout meta's worker delivers then reaches the whole service at once.
    servers = {
        service: supervisor.start(
            Program(service, (*base, "serve", service, "--workers", "1", "--threads", "4"), env)
        )
        for service in services
    }
    # The webhook worker of each service: the local one, no broker to run. meta's carries
    # revocations and profile changes to the services: it polls often.
    workers = {
        service: supervisor.start(
            Program(
                f"{service} worker",
                (*base, "worker", service, *(("--poll-interval", "0.2") * (service == "meta"))),
                env,
                colour_key=service,
            )
        )
        for service in services
    }
    step(supervisor, 5, "waiting until every service answers /healthz and every worker is ready")
    for service, child in servers.items():
        url = origins[service] + "/healthz"
        supervisor.wait_until(functools.partial(http_ok, url), child, timeout=90)
    for service, child in workers.items():
        supervisor.wait_for_line(child, rf"^srcore worker: {re.escape(service)} ready", timeout=90)
    supervisor.echo(
        f"demo ready in {time.monotonic() - started:.1f} s: {len(servers)} services up "
        f"({', '.join(services)}), {len(workers)} webhook workers ready, "
        f"{revisions} migration{'s' if revisions != 1 else ''} applied, "
        f"config {_shown(config)}\n"
    )
    width = max(len(s) for s in services)
    lines = ["", "The network is up:", ""]
    lines += [f"  {service:<{width}}  {origin}/" for service, origin in origins.items()]
    lines.append("")
    guide = start_here(origins, config)
    if guide:
        lines.append(guide)
    lines.append(f"Webhook workers: {', '.join(services)} (local, straight from each database).")
    lines.append(f"Config: {config} (edit it, then restart). Ctrl-C stops everything.\n")
    supervisor.echo("\n".join(lines) + "\n")
    if options.exit_when_ready:
        return 0
    return supervisor.watch(guard=functools.partial(missing_files, var, cfg))


if __name__ == "__main__":
    sys.exit(main())
