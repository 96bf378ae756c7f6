"""An operator who runs srcore locked down, as a container (``docker run --read-only --user
4242``) or a hardened systemd unit does: a uid with no entry in the passwd database, no
``HOME``, ``USER`` or ``TMPDIR``, a minimal ``PATH``, the working directory ``/``, the code
and the config file readable but not writable, and one data directory it may write in.

Every command then works, or refuses in one line naming what it needs. Before: without a
writable temporary directory ``srcore serve`` (gunicorn's heartbeat files, the metrics
directory) and a Celery worker's prefork pool died with tracebacks; Celery's beat died
with tracebacks over its schedule file in the working directory while the worker ran on
without it (retries were never picked up), and Celery warned that a worker under such a
uid ran as root; a PostgreSQL URL naming no role failed with libpq's "local user with ID
4242 does not exist" and advice to check that the server is up.

"Read-only but the data directory" is made real with a mount namespace: every place a
user may write in (``/tmp``, ``/var/tmp``, ``/dev/shm``, ``/run/lock``) is mounted
read-only for the command, the data directory excepted.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import site
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from srcore.testing import free_port, require_or_skip, write_config

#: A uid (and gid) with no entry in the passwd database, as ``docker run --user 4242``
#: gives; the next free one should a test host have an account there.
NOBODY = 4242


@dataclass
class Host:
    """The locked-down host: an interpreter the uid can run, the config, the data."""

    python: str
    environ: dict[str, str]  # what the interpreter needs (LD_LIBRARY_PATH) and nothing else
    config: Path  # root:NOBODY 0640, in a directory root:NOBODY 0750
    data: Path  # NOBODY's, 0700: the one place it may write


def _nameless_uid() -> int:
    for uid in range(NOBODY, NOBODY + 100):
        try:
            pwd.getpwuid(uid)
        except KeyError:
            return uid
    raise AssertionError("no uid without a passwd entry near 4242")


def _as_uid(uid: int) -> dict[str, object]:
    return {"user": uid, "group": uid, "extra_groups": []}


def _interpreter_for(uid: int, base: Path) -> tuple[str, dict[str, str]]:
    """An interpreter *uid* can run with srcore importable: the test's own, or, when it
    lives where only root may enter (``/root/.pyenv``), a copy of its standard library
    in *base* that reads the same site-packages."""
    probe = [sys.executable, "-I", "-c", "import srcore"]
    with contextlib.suppress(PermissionError):  # a directory on its path is root's alone
        tried = subprocess.run(
            probe,
            cwd="/",
            env={"PATH": "/usr/bin:/bin"},
            capture_output=True,
            timeout=60,
            check=False,
            **_as_uid(uid),  # type: ignore[arg-type]
        )
        if tried.returncode == 0:
            return sys.executable, {}
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    prefix = Path(sys.base_prefix)
    copy = base / "python"
    (copy / "bin").mkdir(parents=True)
    executable = copy / "bin" / version
    shutil.copy2(os.path.realpath(sys.executable), executable)
    (copy / "lib").mkdir()
    for library in (prefix / "lib").glob("libpython*.so*"):
        shutil.copy2(library, copy / "lib" / library.name)
    skipped = shutil.ignore_patterns("test", "site-packages", "config-*", "idlelib", "tkinter")
    shutil.copytree(prefix / "lib" / version, copy / "lib" / version, ignore=skipped)
    packages = copy / "lib" / version / "site-packages"
    packages.mkdir()
    ours = [sysconfig.get_paths()["purelib"], *site.getsitepackages()]
    lines = "".join(f"import site; site.addsitedir({path!r})\n" for path in dict.fromkeys(ours))
    (packages / "srcore-under-test.pth").write_text(lines)
    environ = {"LD_LIBRARY_PATH": str(copy / "lib")}
    done = subprocess.run(
        [str(executable), "-c", "import srcore"],
        cwd="/",
        env={"PATH": "/usr/bin:/bin", **environ},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        **_as_uid(uid),  # type: ignore[arg-type]
    )
    assert done.returncode == 0, f"uid {uid} cannot import srcore: {done.stderr}"
    return str(executable), environ


@pytest.fixture(scope="module")
def host() -> Iterator[Host]:
    require_or_skip(os.geteuid() == 0, "root, to run commands as another uid")
    uid = _nameless_uid()
    base = Path(tempfile.mkdtemp(prefix="srcore-locked-"))
    try:
        base.chmod(0o755)
        python, environ = _interpreter_for(uid, base)
        etc, data = base / "etc", base / "data"
        etc.mkdir(mode=0o750)
        data.mkdir(mode=0o700)
        os.chown(etc, 0, uid)
        os.chown(data, uid, uid)
        config = write_config(
            etc / "config.ini",
            service_id="todo",
            database_url=f"sqlite:///{data / 'todo.db'}",
            extra="metrics-path = /metrics\n",
        )
        config.chmod(0o640)
        os.chown(config, 0, uid)
        yield Host(python, environ, config, data)
    finally:
        shutil.rmtree(base, ignore_errors=True)


#: Run as root in a mount namespace of its own: every place other users may write in
#: read-only, the data directory ($1, unless empty) excepted, and a fresh tmpfs at $3 (if
#: given), then the command as the uid ($2).
_LOCKED = r"""
data=$1; uid=$2; tmpfs=$3; shift 3
for place in /tmp /var/tmp /dev/shm /run/lock; do
    [ -d "$place" ] || continue
    mount --bind "$place" "$place" && mount -o remount,bind,ro "$place" || exit 97
done
if [ -n "$data" ]; then
    mount --bind "$data" "$data" && mount -o remount,bind,rw "$data" || exit 97
fi
if [ -n "$tmpfs" ]; then
    mount -t tmpfs -o mode=1777,size=16m tmpfs "$tmpfs" || exit 97
fi
exec setpriv --reuid="$uid" --regid="$uid" --clear-groups -- "$@"
"""


def _argv(
    host: Host,
    command: Sequence[str],
    *,
    locked: bool,
    data_writable: bool = True,
    tmpfs: str = "",
    pid1: bool = False,
) -> tuple[list[str], dict[str, object]]:
    uid = _nameless_uid()
    argv = [host.python, *command]
    if not locked:
        return argv, _as_uid(uid)
    wrapper = ["unshare", "--mount", "--propagation", "private"]
    if pid1:  # the command is PID 1 of a PID namespace of its own, as in a container
        wrapper += ["--pid", "--fork", "--kill-child", "--mount-proc"]
    wrapper += ["sh", "-c", _LOCKED, "sh"]
    return [*wrapper, str(host.data) if data_writable else "", str(uid), tmpfs, *argv], {}


def _environ(host: Host, extra: Mapping[str, str]) -> dict[str, str]:
    # No HOME, USER, LOGNAME or TMPDIR: what a container's process is given. The code
    # under test is the test's own, should it come from PYTHONPATH.
    same = {name: os.environ[name] for name in ("PYTHONPATH",) if name in os.environ}
    return {
        "PATH": "/usr/bin:/bin",
        "SRCORE_CONFIG": str(host.config),
        **host.environ,
        **same,
        **extra,
    }


def _run(
    host: Host,
    *command: str,
    locked: bool = True,
    env: Mapping[str, str] | None = None,
    data_writable: bool = True,
) -> subprocess.CompletedProcess[str]:
    argv, switch = _argv(host, command, locked=locked, data_writable=data_writable)
    done = subprocess.run(
        argv,
        cwd="/",
        env=_environ(host, env or {}),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        **switch,  # type: ignore[arg-type]
    )
    assert done.returncode != 97, f"could not lock the host down: {done.stderr}"
    return done


@contextlib.contextmanager
def _started(
    host: Host,
    *command: str,
    locked: bool = True,
    env: Mapping[str, str] | None = None,
    data_writable: bool = True,
    tmpfs: str = "",
    pid1: bool = False,
) -> Iterator[subprocess.Popen[str]]:
    argv, switch = _argv(
        host, command, locked=locked, data_writable=data_writable, tmpfs=tmpfs, pid1=pid1
    )
    process = subprocess.Popen(
        argv,
        cwd="/",
        env=_environ(host, env or {}),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **switch,  # type: ignore[arg-type]
    )
    try:
        yield process
    finally:
        if process.poll() is None:
            if pid1:  # the namespace's PID 1 first: unshare's death does not take it along
                for child in _children(process):  # (it changed its uid)
                    os.kill(child, signal.SIGKILL)
            process.kill()
        process.communicate(timeout=30)


def _children(process: subprocess.Popen[str]) -> list[int]:
    """The processes *process* started (``unshare --fork``'s one child)."""
    with contextlib.suppress(OSError):
        return [
            int(pid)
            for pid in Path(f"/proc/{process.pid}/task/{process.pid}/children").read_text().split()
        ]
    return []


def _stop(process: subprocess.Popen[str], *, pid1: bool = False) -> tuple[int, str, str]:
    """SIGTERM, as ``docker stop`` and systemd send: the exit status and what was said.
    With *pid1*, to the PID 1 of the process's namespace (``unshare --fork``'s child),
    as ``docker stop`` sends it from outside the container."""
    if pid1:
        (child,) = _children(process)
        os.kill(child, signal.SIGTERM)
    else:
        process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=60)
    said = getattr(process, "said", "")  # on the stream _said read: either holds it
    return process.returncode, said + out, said + err


def _said(process: subprocess.Popen[str], needle: str, *, stderr: bool = False) -> bool:
    """Whether the process said *needle* on stdout (or stderr), waiting up to 30 s (or its
    exit); what it said meanwhile is kept for :func:`_stop`."""
    import select

    stream = process.stderr if stderr else process.stdout
    assert stream is not None
    said = ""
    deadline = time.monotonic() + 30
    while needle not in said and time.monotonic() < deadline:
        if select.select([stream], [], [], 0.1)[0]:
            chunk = os.read(stream.fileno(), 65536).decode(errors="replace")
            if not chunk:
                break
            said += chunk
    process.said = said  # type: ignore[attr-defined]
    return needle in said


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _wait_for(url: str, process: subprocess.Popen[str]) -> None:
    for _ in range(300):  # up to 30 s
        assert process.poll() is None, process.communicate(timeout=30)
        with contextlib.suppress(urllib.error.URLError, OSError):
            if _get(url)[0] == 200:
                return
        time.sleep(0.1)
    raise AssertionError(f"{url} never answered")


def _scratch(host: Host) -> Path:
    """A temporary directory for the uid in its data directory, as ``TMPDIR`` names."""
    scratch = host.data / "tmp"
    scratch.mkdir(mode=0o700, exist_ok=True)
    os.chown(scratch, _nameless_uid(), _nameless_uid())
    return scratch


def _one_line(stderr: str) -> str:
    """The one line *stderr* holds, besides the config's warning that this network of one
    service has no meta (a Celery worker builds the app first, and logs it)."""
    assert "Traceback" not in stderr, stderr
    alone = "warning: no [meta] section"
    lines = [line for line in stderr.splitlines() if line.strip() and alone not in line]
    assert len(lines) == 1, stderr
    return lines[0]


def test_serve_without_a_temporary_directory_refuses_in_one_line(host: Host) -> None:
    """Nowhere to write but the data directory, and ``TMPDIR`` unset: gunicorn's workers
    (their heartbeat files) and the metrics directory have nowhere to go. ``srcore serve``
    died in gunicorn's master with ``FileNotFoundError: No usable temporary directory``
    and its traceback; it now says so in one line, with the variable to set."""
    assert _run(host, "-m", "srcore", "migrate", "todo", "upgrade").returncode == 0
    done = _run(host, "-m", "srcore", "serve", "todo", "--bind", f"127.0.0.1:{free_port()}")
    assert done.returncode == 1, done.stderr
    line = _one_line(done.stderr)
    assert line.startswith("srcore serve todo: no directory for temporary files: "), line
    assert f"uid {_nameless_uid()}" in line and "set TMPDIR to a directory" in line, line


def test_a_locked_down_operator_runs_every_command_and_stops_them_with_sigterm(
    host: Host,
) -> None:
    """With ``TMPDIR`` in the data directory: config check, migrations, the web app (its
    pages, API and metrics) and the webhook worker, each stopped by SIGTERM with status 0,
    logging to stderr only, and leaving nothing in the temporary directory."""
    scratch = _scratch(host)
    env = {"TMPDIR": str(scratch)}
    for command in (["config", "check"], ["migrate", "--all", "upgrade"]):
        done = _run(host, "-m", "srcore", *command, env=env)
        assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    port = free_port()
    serve = ["-m", "srcore", "serve", "todo", "--bind", f"127.0.0.1:{port}", "--workers", "2"]
    with _started(host, *serve, env=env) as server:
        _wait_for(f"http://127.0.0.1:{port}/healthz", server)
        assert _get(f"http://127.0.0.1:{port}/")[0] == 200
        assert _get(f"http://127.0.0.1:{port}/api/trackers")[0] == 401
        status, body = _get(f"http://127.0.0.1:{port}/metrics")
        assert status == 200 and b"srcore_http_requests_total" in body, body
        status, out, err = _stop(server)
    assert status == 0, err
    assert out == "" and "Traceback" not in err, (out, err)
    assert list(scratch.iterdir()) == []  # the metrics directory went with the server
    with _started(host, "-m", "srcore", "worker", "todo", env=env) as worker:
        assert _said(worker, " ready in ")
        status, out, err = _stop(worker)
    assert status == 0 and "Traceback" not in err, (out, err)
    assert out.rstrip().endswith("srcore worker: stopped"), out


def _celery(*options: str) -> list[str]:
    return [
        "-m",
        "celery",
        "-A",
        "srcore.webhooks.celery",
        "worker",
        "--loglevel",
        "info",
        *options,
    ]


CELERY = {"SRCORE_SERVICE": "todo", "SRCORE__GLOBAL__WEBHOOKS_BROKER": "memory://"}


def test_celery_beat_runs_in_a_working_directory_it_cannot_write(host: Host) -> None:
    """``celery worker --beat`` as the documented command has it, started where the uid
    cannot write (``/``), without ``--schedule``: beat kept its schedule in
    ``./celerybeat-schedule``, died with three tracebacks of ``PermissionError`` while the
    worker ran on without it, so retries came due and nobody queued them. srcore's one
    tick is now kept in memory: beat ticks. And Celery, finding no group entry for the
    gid, warned that the worker ran "with superuser privileges" as uid 4242: no more."""
    assert _run(host, "-m", "srcore", "migrate", "todo", "upgrade").returncode == 0
    with _started(host, *_celery("--beat", "--pool", "solo"), locked=False, env=CELERY) as worker:
        ticks = _said(worker, "Sending due task srcore-webhooks-tick", stderr=True)
        status, _, err = _stop(worker)
    assert ticks, err
    assert status == 0, err
    assert "Traceback" not in err and "celerybeat-schedule" not in err, err
    assert "superuser privileges" not in err and "SecurityWarning" not in err, err


def test_a_celery_prefork_pool_that_cannot_start_says_so_in_one_line(host: Host) -> None:
    """The prefork pool keeps its shared memory in the temporary directory and its locks
    in POSIX semaphores (``/dev/shm``): without either, Celery logged "Unrecoverable
    error" and a traceback from deep in billiard. Each is now one line naming what to
    give the uid, or the pool that needs neither."""
    assert _run(host, "-m", "srcore", "migrate", "todo", "upgrade").returncode == 0
    done = _run(host, *_celery(), env=CELERY)
    assert done.returncode == 1, done.stderr
    line = _one_line(done.stderr)
    assert line.startswith("celery worker (srcore-webhooks.todo): no directory for temporary "), (
        line
    )
    assert "set TMPDIR" in line and line.endswith("or run it with --pool threads"), line
    scratch = _scratch(host)
    done = _run(host, *_celery(), env={**CELERY, "TMPDIR": str(scratch)})
    assert done.returncode == 1, done.stderr
    assert _one_line(done.stderr) == (
        "celery worker (srcore-webhooks.todo): the prefork pool cannot make a semaphore "
        f"(Read-only file system): this user (uid {_nameless_uid()}) needs to write in "
        "/dev/shm, or run it with --pool threads"
    )


def test_a_postgresql_url_without_a_role_names_the_fix_for_a_nameless_uid(host: Host) -> None:
    """``postgresql+psycopg://127.0.0.1/todo`` logs in as the process's user name, and uid
    4242 has none: every command failed with libpq's "local user with ID 4242 does not
    exist" and the advice to check that the server is up and the database exists. It now
    says what is missing and the two ways to give it (no server is reached: libpq looks
    for the name first)."""
    env = {"SRCORE__TODO__DATABASE_URL": "postgresql+psycopg://127.0.0.1:1/srcore_nameless"}
    done = _run(host, "-m", "srcore", "migrate", "todo", "current", locked=False, env=env)
    assert done.returncode == 1, done.stderr
    line = _one_line(done.stderr)
    assert f"local user with ID {_nameless_uid()} does not exist" in line, line
    assert "Check that the server is up" not in line, line
    assert (
        f"The URL names no role, and this process's user (uid {_nameless_uid()}) has no name "
        "in the passwd database for PostgreSQL's client to log in as: add the role to [todo] "
        "database-url (or SRCORE__TODO__DATABASE_URL, which wins), as in "
        "postgresql+psycopg://ROLE@HOST/DB, or set PGUSER"
    ) in line, line
    env["PGUSER"] = "srcore"  # a name to log in as: the server (none there) is what fails
    done = _run(host, "-m", "srcore", "migrate", "todo", "current", locked=False, env=env)
    assert done.returncode == 1 and "The URL names no role" not in done.stderr, done.stderr


def test_serve_on_a_unix_socket_where_the_user_cannot_make_it_refuses_in_one_line(
    host: Host,
) -> None:
    """operators.md binds to ``unix:/run/srcore/todo.sock``; in a directory the uid cannot
    write (the read-only config directory here, or a ``/run/srcore`` left to root),
    gunicorn tried five times in five seconds, each an "[ERROR] connection to ...
    failed", then "Can't connect". One line now names the directory."""
    assert _run(host, "-m", "srcore", "migrate", "todo", "upgrade").returncode == 0
    socket = host.config.parent / "todo.sock"
    env = {"TMPDIR": str(_scratch(host))}
    done = _run(host, "-m", "srcore", "serve", "todo", "--bind", f"unix:{socket}", env=env)
    assert done.returncode == 1, done.stderr
    assert _one_line(done.stderr) == (
        f"srcore serve todo: --bind unix:{socket}: the socket's directory {socket.parent} is "
        f"not writable by this user (uid {_nameless_uid()}): give a directory this user can "
        "write in (such as /run/srcore, owned by it)"
    )
    assert not socket.exists()
    private = host.config.parent.parent / "private"
    private.mkdir(mode=0o700, exist_ok=True)  # root's alone: what is in it cannot be seen
    beyond = private / "run" / "todo.sock"
    done = _run(host, "-m", "srcore", "serve", "todo", "--bind", f"unix:{beyond}", env=env)
    assert done.returncode == 1, done.stderr
    assert _one_line(done.stderr) == (
        f"srcore serve todo: --bind unix:{beyond}: the socket's directory {beyond.parent} is "
        f"out of reach: this user (uid {_nameless_uid()}) may not enter {private}: give a "
        "directory this user can write in (such as /run/srcore, owned by it)"
    )


def test_the_webhook_worker_stopped_while_it_starts_exits_cleanly(host: Host) -> None:
    """``docker stop`` or systemd may send SIGTERM while ``srcore worker`` is still
    starting (its config, its database): it had no handler until after its "ready" line,
    so it died of the signal (status -15), and as a container's PID 1, which the kernel
    gives no signal it has no handler for, it would have ignored it until the SIGKILL."""
    env = {"TMPDIR": str(_scratch(host))}
    assert _run(host, "-m", "srcore", "migrate", "todo", "upgrade", env=env).returncode == 0
    with _started(host, "-m", "srcore", "worker", "todo", env=env) as worker:
        assert _said(worker, "[1/4] config")
        status, out, err = _stop(worker)
    assert status == 0, (out, err)
    assert "Traceback" not in err, err
    assert "srcore worker: stopped" in out + err, (out, err)


def test_serve_stopped_while_it_looks_at_the_database_exits_cleanly(host: Host) -> None:
    """Before gunicorn starts, ``srcore serve`` looks at the database, for up to its
    connect timeout (5 s) when the server does not answer. A SIGTERM then killed it
    (status -15), and as a container's PID 1 was dropped until the SIGKILL."""
    import socket

    with socket.socket() as silent:  # takes the connection, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        silent.settimeout(30)
        url = f"postgresql+psycopg://srcore@127.0.0.1:{silent.getsockname()[1]}/todo"
        env = {"SRCORE__TODO__DATABASE_URL": url}
        serve = ["-m", "srcore", "serve", "todo", "--bind", f"127.0.0.1:{free_port()}"]
        with _started(host, *serve, locked=False, env=env) as server:
            connection, _ = silent.accept()  # serve is waiting for the database now
            with connection:
                status, out, err = _stop(server)
    assert status == 0, (out, err)
    assert err.splitlines()[-1] == "srcore serve todo: stopped while starting", err


def test_celery_says_what_keeps_it_from_loading_the_app_as_written(tmp_path: Path) -> None:
    """A container's Celery worker started without ``SRCORE_SERVICE`` was told to "set
    srcore_service ... and srcore_config" (Celery capitalizes the text, lowercasing the
    rest): variables of that case do nothing. A service that is not installed, a config
    file that is not there and a config without ``webhooks-broker`` printed tracebacks."""
    config = write_config(
        tmp_path / "config.ini", service_id="todo", database_url=f"sqlite:///{tmp_path / 'x.db'}"
    )
    same = {name: os.environ[name] for name in ("PATH", "PYTHONPATH") if name in os.environ}
    base = {"PATH": "/usr/bin:/bin", **same}
    cases = {
        "Set SRCORE_SERVICE to the service whose webhooks this worker delivers (e.g. "
        "SRCORE_SERVICE=todo), and SRCORE_CONFIG to its config file": {},
        "SRCORE_SERVICE=nosuch is neither an installed service nor a package": {
            "SRCORE_SERVICE": "nosuch"
        },
        f"{tmp_path / 'nope.ini'}: no such config file": {
            "SRCORE_SERVICE": "todo",
            "SRCORE_CONFIG": str(tmp_path / "nope.ini"),
        },
        f"[global] webhooks-broker is empty in {config}: the Celery dispatcher needs a broker "
        "URL (the local worker needs none)": {
            "SRCORE_SERVICE": "todo",
            "SRCORE_CONFIG": str(config),
        },
    }
    for said, environ in cases.items():
        done = subprocess.run(
            [sys.executable, "-m", "celery", "-A", "srcore.webhooks.celery", "worker"],
            env={**base, **environ},
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode != 0, done.stderr
        assert "Traceback" not in done.stderr, done.stderr
        assert said in done.stderr.splitlines(), done.stderr


@pytest.mark.parametrize(("signum", "status"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_migrate_waiting_for_another_writer_stops_on_sigterm_and_ctrl_c(
    tmp_path: Path, signum: int, status: int
) -> None:
    """Containers that migrate as they start take turns on SQLite: the second waits up to
    300 s for the first. That wait was one call into SQLite, during which no signal
    handler runs: Ctrl-C went unheard until it ended, and SIGTERM (``docker stop``) killed
    the command (-15), or as PID 1 was dropped. Both now stop it at once, rolled back and
    said as such, with the shell's status for the signal."""
    import sqlite3

    database = tmp_path / "todo.db"
    config = write_config(
        tmp_path / "config.ini", service_id="todo", database_url=f"sqlite:///{database}"
    )
    same = {name: os.environ[name] for name in ("PATH", "PYTHONPATH") if name in os.environ}
    argv = [sys.executable, "-m", "srcore", "--config", str(config), "migrate", "todo", "upgrade"]
    done = subprocess.run(argv, env=same, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    writer = sqlite3.connect(database, isolation_level=None)  # the other migration
    try:
        writer.execute("BEGIN IMMEDIATE")
        waiting = subprocess.Popen(
            argv, env=same, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        try:
            assert _said(waiting, "waiting up to 300 s", stderr=True)
            time.sleep(1)  # into the wait that follows the line
            waiting.send_signal(signum)
            _, err = waiting.communicate(timeout=30)
        finally:
            if waiting.poll() is None:
                waiting.kill()
                waiting.communicate(timeout=30)
    finally:
        writer.rollback()
        writer.close()
    assert waiting.returncode == status, err
    assert "Error: interrupted: each lineage is upgraded or downgraded in one transaction" in err


def test_a_data_directory_mounted_read_only_is_named_as_such(host: Host) -> None:
    """The data directory on a read-only mount (a ``:ro`` volume, or none under
    ``--read-only``): ``srcore serve`` told the uid that owns the files to chown them to
    itself, and ``srcore worker`` said "ready", then logged a traceback every second. Both
    now name the read-only file system; the worker stops there, since it must write."""
    assert _run(host, "-m", "srcore", "migrate", "todo", "upgrade").returncode == 0
    read_only = f"the file system of {host.data} is mounted read-only, and SQLite writes the "
    done = _run(host, "-m", "srcore", "worker", "todo", data_writable=False)
    assert done.returncode == 1, done.stdout + done.stderr
    line = _one_line(done.stderr)
    assert line.startswith("srcore worker todo: cannot use the database of todo (sqlite:"), line
    assert read_only in line and line.endswith("give the data directory a writable volume)")
    assert "ready" not in done.stdout, done.stdout
    port = free_port()
    serve = ["-m", "srcore", "serve", "todo", "--bind", f"127.0.0.1:{port}"]
    env = {"TMPDIR": "/dev/shm"}  # a fresh tmpfs there, as docker run --tmpfs gives
    with _started(host, *serve, env=env, data_writable=False, tmpfs="/dev/shm") as server:
        _wait_for(f"http://127.0.0.1:{port}/healthz", server)
        status, _, err = _stop(server)
    assert status == 0, err
    said = [line for line in err.splitlines() if line.startswith("srcore serve todo: ")]
    assert len(said) == 1 and read_only in said[0], err
    assert "chown" not in said[0], said


def test_a_config_or_working_directory_the_user_may_not_enter_is_named(host: Host) -> None:
    """``/etc/srcore`` left ``0750 root:root`` (the guide says ``root:srcore``), or a
    command run with ``sudo -u srcore`` from root's home (``0700``): looking for the config
    file there raised PermissionError with a traceback in every command. The directory
    is named instead, and an unreadable working directory holds no ``./config.ini``."""
    private = host.config.parent.parent / "private"
    private.mkdir(mode=0o700, exist_ok=True)  # root's alone
    hidden = private / "config.ini"
    argv, switch = _argv(host, ["-m", "srcore", "config", "check"], locked=False)
    for environ, cwd in (({"SRCORE_CONFIG": str(hidden)}, "/"), ({"SRCORE_CONFIG": ""}, private)):
        done = subprocess.run(
            argv,
            cwd=cwd,
            env=_environ(host, environ),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            **switch,  # type: ignore[arg-type]
        )
        assert done.returncode == 1, done.stderr
        assert "Traceback" not in done.stderr, done.stderr
        first = done.stderr.splitlines()[0]
        if cwd == "/":
            assert first == (
                f"{hidden}: this user (uid {_nameless_uid()}) may not enter {private} (mode "
                "0700, root:root), so cannot read the config file: give it the directory's "
                "group (as the operator guide's 0750 root:srcore does), or name a file it can read"
            )
        else:
            assert first.startswith("no config file: looked for --config"), first


def test_a_database_in_a_directory_the_user_may_not_enter_is_named(host: Host) -> None:
    """An SQLite ``database-url`` under a directory the uid may not enter (``/var/lib``
    kept ``0700``, a volume mounted with root's modes): looking at the database raised
    PermissionError with a traceback in config check, migrate and the worker. The
    directory is named in one line instead."""
    private = host.config.parent.parent / "private"
    private.mkdir(mode=0o700, exist_ok=True)  # root's alone
    env = {"SRCORE__TODO__DATABASE_URL": f"sqlite:///{private / 'todo.db'}"}
    shut = (
        f"this user (uid {_nameless_uid()}) may not enter the directory {private}, on the way "
        "to the database"
    )
    for command in (["config", "check"], ["migrate", "todo", "current"], ["worker", "todo"]):
        done = _run(host, "-m", "srcore", *command, locked=False, env=env)
        assert done.returncode == 1, done.stderr
        assert "Traceback" not in done.stderr, done.stderr
        assert shut in done.stderr, (command, done.stderr)


def test_as_a_containers_pid_1_every_long_running_command_stops_on_sigterm(host: Host) -> None:
    """In a container the command is PID 1, and the kernel gives PID 1 no signal it has
    no handler for: a SIGTERM that came while ``srcore worker`` started (before its
    handler) was dropped, and the worker ran on until the SIGKILL. Each of ``srcore
    worker`` (stopped while it starts), ``srcore serve`` and a Celery worker with beat
    (stopped once they serve) now exits 0."""
    env = {"TMPDIR": str(_scratch(host))}
    assert _run(host, "-m", "srcore", "migrate", "todo", "upgrade", env=env).returncode == 0
    with _started(host, "-m", "srcore", "worker", "todo", env=env, pid1=True) as worker:
        assert _said(worker, "[1/4] config")
        status, out, err = _stop(worker, pid1=True)
    assert status == 0, (out, err)
    port = free_port()
    serve = ["-m", "srcore", "serve", "todo", "--bind", f"127.0.0.1:{port}"]
    with _started(host, *serve, env=env, pid1=True) as server:
        _wait_for(f"http://127.0.0.1:{port}/healthz", server)
        status, out, err = _stop(server, pid1=True)
    assert status == 0 and "Traceback" not in err, err
    beat = _celery("--beat", "--pool", "solo")
    with _started(host, *beat, env={**env, **CELERY}, pid1=True) as celery:
        assert _said(celery, "Sending due task srcore-webhooks-tick", stderr=True)
        status, out, err = _stop(celery, pid1=True)
    assert status == 0 and "Traceback" not in err, err
