"""A second, unprivileged account on the host of an operator who followed the README and
the operator guide, under the usual umask 022: what srcore writes must not be open to it.

meta's SQLite database holds password hashes, meta's private token-signing keys and
webhook secrets; SQLite made it (and its ``-wal`` and ``-shm`` files, which take its mode)
``0644``, readable by every account of the machine: with a signing key, anyone could mint
an access token for any user of every service. And srcore said nothing of a config file
or a key file that other accounts can read or change, nor of a database whose directory
other accounts can write in.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from srcore.cli import cli
from srcore.testing import free_port, require_or_skip, write_config
from tests.conftest import run_config_check

#: The second account: made for these tests when missing, removed afterwards; one per
#: pytest-xdist worker, so that no worker removes the one another is using.
OUTSIDER = "srcore-outsider" + os.environ.get("PYTEST_XDIST_WORKER", "").replace("gw", "-")


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def umask_022() -> Iterator[None]:
    """The umask of an operator's shell on most systems."""
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


@pytest.fixture
def checkout(umask_022: None) -> Iterator[Path]:
    """A directory other accounts may enter, as a clone in a home directory is (``0755``),
    unlike pytest's own temporary directories (``0700``)."""
    path = Path(tempfile.mkdtemp(prefix="srcore-checkout-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def outsider() -> Iterator[pwd.struct_passwd]:
    """Another account of the machine, with no group in common with the operator."""
    require_or_skip(os.geteuid() == 0, "root, to make a second account")
    try:
        yield pwd.getpwnam(OUTSIDER)  # left by an interrupted run: used, and kept
        return
    except KeyError:
        pass
    subprocess.run(
        ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", OUTSIDER],
        check=True,
        capture_output=True,
        timeout=30,
    )
    try:
        yield pwd.getpwnam(OUTSIDER)
    finally:
        subprocess.run(["userdel", OUTSIDER], check=False, capture_output=True, timeout=30)


def _as(account: pwd.struct_passwd, code: str) -> subprocess.CompletedProcess[str]:
    """Python *code* run as *account*, with its own uid and gid and no other group."""

    def drop() -> None:
        os.setgroups([])
        os.setgid(account.pw_gid)
        os.setuid(account.pw_uid)

    # The test's own interpreter may live where only root can reach (/root/.pyenv).
    python = shutil.which("python3", path="/usr/bin:/bin") or sys.executable
    return subprocess.run(
        [python, "-I", "-c", code],
        preexec_fn=drop,  # no thread of this test runs meanwhile
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={"PATH": "/usr/bin:/bin"},
    )


def _demo_network(var: Path) -> Path:
    """What ``make demo`` sets up in *var*: ``srcore init``, then every migration."""
    from srcore.app import migration_target
    from srcore.migrate import upgrade_all

    config = var / "config.ini"
    result = CliRunner().invoke(cli, ["init", "--path", str(config), "meta", "todo"])
    assert result.exit_code == 0, result.output
    for service in ("meta", "todo"):
        upgrade_all(migration_target(service, config))
    return config


@contextlib.contextmanager
def _served(config: Path) -> Iterator[None]:
    """meta, having answered its JWKS (which makes its first signing keys), as a served
    meta holds its database: in WAL mode, its ``-wal`` and ``-shm`` files beside it."""
    import meta

    app = meta.create_app(config=config)
    try:
        assert app.test_client().get("/oauth/jwks.json").status_code == 200
        yield
    finally:
        app.extensions["srcore"].db.dispose()


def test_every_database_file_srcore_makes_is_its_owners_alone(
    checkout: Path,
) -> None:
    """The databases ``srcore migrate`` creates, and the ``-wal`` and ``-shm`` files the
    served service makes, are ``0600`` under umask 022 (they were ``0644``)."""
    var = checkout / "var"
    config = _demo_network(var)
    with _served(config):
        files = [var / "meta.db", var / "meta.db-wal", var / "meta.db-shm", var / "todo.db"]
        assert all(path.exists() for path in files), sorted(os.listdir(var))
        assert {str(path): oct(_mode(path)) for path in files} == {
            str(path): oct(0o600) for path in files
        }


def test_a_database_already_there_keeps_its_mode_and_one_made_at_a_link_is_private(
    checkout: Path,
) -> None:
    """Only a missing file is made: one the operator made (or a release before this one)
    keeps its mode, which config check then warns about. A dangling link where the
    database will be is followed by SQLite, as a link to a database is: the file it makes
    at the link's end is owner-only too."""
    from srcore.db import Database

    kept = checkout / "kept.db"
    kept.touch(mode=0o640)
    Database(f"sqlite:///{kept}").engine.connect().close()
    assert _mode(kept) == 0o640
    target = checkout / "elsewhere.db"
    planted = checkout / "planted.db"
    planted.symlink_to(target)
    database = Database(f"sqlite:///{planted}")
    database.engine.connect().close()
    database.dispose()
    assert _mode(target) == 0o600


def test_another_account_cannot_read_metas_signing_keys(
    checkout: Path, outsider: pwd.struct_passwd
) -> None:
    """As the second account: meta's database, with the private keys that sign every
    access token of the network, cannot be opened (it could, and the keys read)."""
    var = checkout / "var"
    config = _demo_network(var)
    assert _mode(var) == 0o755  # the account may look in: the files are what must hold
    uri = f"file:{var / 'meta.db'}?mode=ro"
    code = (
        "import sqlite3\n"
        f"rows = sqlite3.connect({uri!r}, uri=True).execute("
        "'SELECT count(*) FROM oauth_signing_key').fetchone()\n"
        "print('read', rows[0])\n"
    )
    with _served(config):
        done = _as(outsider, code)
        assert "read" not in done.stdout, done.stdout
        assert "unable to open database file" in done.stderr, done.stderr
        for name in ("meta.db-wal", "meta.db-shm", "config.ini"):
            opened = _as(outsider, f"open({str(var / name)!r}, 'rb').read(1)")
            assert "PermissionError" in opened.stderr, (name, opened.stderr)


def _production(path: Path, database: Path, *, extra: str = "") -> Path:
    config = write_config(
        path, service_id="todo", database_url=f"sqlite:///{database}", extra=extra
    )
    text = config.read_text().replace("environment = development", "environment = production")
    config.write_text(text)
    return config


def _warnings(output: str) -> list[str]:
    assert "Traceback" not in output, output
    return [line for line in output.splitlines() if ": warning: " in line and "(mode " in line]


def test_config_check_warns_of_a_config_others_can_read_or_change(
    tmp_path: Path, umask_022: None
) -> None:
    """A production config written as ``0644`` (an editor under umask 022) holds the
    network's secrets for every account to read; one its group can write lets the group
    choose the keys and the database. ``config check`` passed both without a word: now
    one line each names the file and the chmod, and the check still passes."""
    config = _production(tmp_path / "config.ini", tmp_path / "todo.db")
    assert _mode(config) == 0o644
    status, output = run_config_check(config)
    assert status == 0, output
    assert _warnings(output) == [
        f"{config}: warning: this file holds secrets and every user of this machine can read "
        f"it (mode 0644): chmod o-rwx {config}"
    ]
    config.chmod(0o664)
    status, output = run_config_check(config)
    assert status == 0, output
    assert _warnings(output) == [
        f"{config}: warning: this file can be changed by its group (mode 0664): chmod go-w {config}"
    ]
    config.chmod(0o640)  # what the operator guide sets: root:srcore, 0640
    assert _warnings(run_config_check(config)[1]) == []


def test_config_check_warns_of_a_key_file_others_can_read(tmp_path: Path, umask_022: None) -> None:
    """``secret-key-file`` moves the secret out of the config: into a file that, written
    with ``echo >``, every account can read. Named with its key, line and chmod."""
    key = tmp_path / "todo-secret-key"
    key.write_text("k" * 64 + "\n")
    config = tmp_path / "config.ini"
    config.write_text(
        "[global]\nenvironment = production\n\n[todo]\norigin = https://todo.example.org\n"
        f"database-url = sqlite:///{tmp_path / 'todo.db'}\nsecret-key-file = {key}\n"
    )
    status, output = run_config_check(config)
    assert status == 0, output
    assert _warnings(output) == [
        f"{config}:7 [todo] secret-key-file: warning: {key} holds secrets and every user of "
        f"this machine can read it (mode 0644): chmod o-rwx {key}"
    ]
    key.chmod(0o600)
    assert _warnings(run_config_check(config)[1]) == []


def test_config_check_warns_of_a_database_others_can_read_or_plant_files_beside(
    tmp_path: Path, umask_022: None
) -> None:
    """A database of an earlier release (``0644``) is named with its chmod. One in a
    directory other accounts can write (``/tmp``-like, ``1777``) is named too: they can
    put a ``-wal`` file there before the service makes one, and SQLite takes its pages
    into the database when it opens it."""
    data = tmp_path / "data"
    data.mkdir()
    database = data / "todo.db"
    config = _production(tmp_path / "config.ini", database)
    config.chmod(0o600)
    database.touch(mode=0o644)
    status, output = run_config_check(config)
    assert status == 0, output
    (line,) = _warnings(output)
    assert line == (
        f"{config}:8 [todo] database-url: warning: {database} holds secrets and every user "
        f"of this machine can read it (mode 0644): chmod o-rwx {database}"
    )
    database.chmod(0o600)
    data.chmod(0o1777)
    status, output = run_config_check(config)
    assert status == 0, output
    (line,) = _warnings(output)
    assert line.startswith(
        f"{config}:8 [todo] database-url: warning: the directory {data} of this database "
        f"can be written by every user of this machine (mode 1777; chmod go-w {data})"
    ), line


def test_a_link_planted_as_the_demos_lock_is_not_written_through(tmp_path: Path) -> None:
    """``make demo`` and ``srcore dev`` lock ``.config.ini.lock`` beside the config, and
    wrote who holds it there. The demo suggests ``--var /tmp/demo2`` for a second network:
    in a directory another account made (or can write in), a link planted under the
    lock's name had the operator's file it names truncated and overwritten. The link is
    refused (ELOOP) and the file left as it was."""
    from srcore.supervisor import lock_path, running_alone

    victim = tmp_path / "operators-notes.txt"
    victim.write_text("keep me\n")
    config = tmp_path / "shared" / "config.ini"
    config.parent.mkdir()
    lock_path(config).symlink_to(victim)
    held = running_alone(lock_path(config), "make demo")
    with pytest.raises(OSError, match="Too many levels of symbolic links"), held:
        pass
    assert victim.read_text() == "keep me\n"


OPERATORS = Path(__file__).resolve().parent.parent / "docs" / "operators.md"


def test_the_documented_sqlite_backup_is_its_owners_alone(tmp_path: Path, umask_022: None) -> None:
    """operators.md's backup of an SQLite database, run as written (paths moved under
    the test's directory) from a shell with umask 022: the copy, with meta's signing keys
    and password hashes, was ``0644`` for every account to read."""
    import re
    import sqlite3

    (block,) = [
        b for b in re.findall(r"```sh\n(.*?)```", OPERATORS.read_text(), re.S) if "VACUUM" in b
    ]
    live, backups = tmp_path / "lib", tmp_path / "backups"
    live.mkdir()
    backups.mkdir()
    with contextlib.closing(sqlite3.connect(live / "meta.db")) as made:
        made.execute("CREATE TABLE oauth_signing_key (private_key TEXT)")
        made.commit()
    script = block.replace("/var/lib/srcore", str(live)).replace(
        "/var/backups/srcore", str(backups)
    )
    subprocess.run(["sh", "-ec", script], check=True, timeout=60, capture_output=True)
    (copy,) = backups.iterdir()
    assert _mode(copy) == 0o600, block


def test_a_service_says_at_start_that_its_config_is_readable_by_all(
    tmp_path: Path, umask_022: None, caplog: pytest.LogCaptureFixture
) -> None:
    """The same line as config check, in the service's log as it starts: an operator who
    never runs config check sees it there."""
    import todo

    config = _production(tmp_path / "config.ini", tmp_path / "todo.db")
    app = todo.create_app(config=config)
    app.extensions["srcore"].db.dispose()
    said = [
        r.getMessage() for r in caplog.records if "every user of this machine" in r.getMessage()
    ]
    assert said == [
        f"{config}: warning: this file holds secrets and every user of this machine can read "
        f"it (mode 0644): chmod o-rwx {config}"
    ]


DEMO = Path(__file__).resolve().parent.parent / "scripts" / "demo.py"


def _demo(var: Path) -> subprocess.CompletedProcess[str]:
    # Ports of its own, should it ever start the network.
    ports = ["--first-port", str(free_port())]
    return subprocess.run(
        [sys.executable, str(DEMO), "--var", str(var), *ports, "--exit-when-ready"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={k: v for k, v in os.environ.items() if not k.startswith("SRCORE")},
    )


def test_the_demo_refuses_a_directory_another_account_can_write_in(
    tmp_path: Path, umask_022: None
) -> None:
    """The demo's own hint for a second network is ``--var /tmp/demo2``: a name in a
    directory every account writes in, which another may have made first (``1777``, or
    its own). The demo wrote its config and databases into it, where that account could
    swap them. It now refuses, in one line, before writing anything but its lock."""
    var = tmp_path / "demo2"
    var.mkdir()
    var.chmod(0o1777)
    done = _demo(var)
    assert done.returncode == 1, done.stdout + done.stderr
    assert done.stderr == (
        f"Cannot start: {var}/ can be written by every account of this machine (mode 1777), "
        f"who could replace the demo's config and databases there: chmod go-w {var}, or give "
        "it a directory of your own (--var)\n"
    )
    assert sorted(p.name for p in var.iterdir()) == [".config.ini.lock"]


def test_the_demo_refuses_a_directory_of_another_account(
    tmp_path: Path, outsider: pwd.struct_passwd
) -> None:
    """The same directory made first by the other account: its own, and open to all so
    that the operator's demo can write in it (and the account can swap what it wrote)."""
    var = tmp_path / "demo2"
    var.mkdir()
    os.chown(var, outsider.pw_uid, outsider.pw_gid)
    var.chmod(0o777)
    done = _demo(var)
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"Cannot start: {var}/ belongs to {outsider.pw_name}, who could replace" in done.stderr
    assert not (var / "config.ini").exists()


def test_config_check_warns_of_a_config_in_a_directory_others_can_write_in(
    tmp_path: Path, umask_022: None
) -> None:
    """A config kept ``0600`` in a directory every account writes in (``/tmp``-like) can
    still be swapped for another (or, sticky, planted first): named with its chmod."""
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    config = _production(shared / "config.ini", tmp_path / "todo.db")
    config.chmod(0o600)
    status, output = run_config_check(config)
    assert status == 0, output
    assert _warnings(output) == [
        f"{config}: warning: its directory can be written by every user of this machine "
        f"(mode 1777; chmod go-w {shared}), who can put another file in its place"
    ]


def test_config_check_warns_that_production_mail_without_smtp_host_goes_to_the_log(
    tmp_path: Path,
) -> None:
    """With ``smtp-host`` empty, meta writes each mail whole to its log: in production,
    under systemd, to the journal, which the accounts of its reader groups (``adm``,
    ``systemd-journal``) read, and each password-reset link there takes over an account.
    The operator was told only that mail "is written to the log instead"."""
    config = _production(tmp_path / "config.ini", tmp_path / "todo.db")
    config.chmod(0o600)
    status, output = run_config_check(config)
    assert status == 0, output
    assert f"{config}:1 [global] smtp-host: warning: empty in production: every mail is " in (
        output
    )
    config.write_text(
        config.read_text().replace("[global]\n", "[global]\nsmtp-host = mail.example.org\n", 1)
    )
    status, output = run_config_check(config)
    assert status == 0, output
    assert "smtp-host: warning" not in output, output


#: What another account runs against a debug server: Werkzeug's debugger PIN, made from
#: what that account can read too (the server's user and cgroup from /proc, the machine
#: id, the MAC address, the path of srcore), then the console, unlocked with it.
_UNLOCK_THE_CONSOLE = r"""
import hashlib, http.cookiejar, json, pwd, re, sys, urllib.parse, urllib.request, uuid
port, pid, appfile = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
uid = int(re.search(r"Uid:\s+(\d+)", open(f"/proc/{pid}/status").read()).group(1))
machine = b""
for name in ("/etc/machine-id", "/proc/sys/kernel/random/boot_id"):
    try:
        value = open(name, "rb").readline().strip()
    except OSError:
        continue
    if value:
        machine += value
        break
machine += open(f"/proc/{pid}/cgroup", "rb").readline().strip()
bits = (pwd.getpwuid(uid).pw_name, "srcore.app", "SrcoreApp", appfile, str(uuid.getnode()))
h = hashlib.sha1()
for bit in (*bits, machine):
    h.update(bit if isinstance(bit, bytes) else bit.encode())
h.update(b"cookiesaltpinsalt")
pin = f"{int(h.hexdigest(), 16):09d}"[:9]
jar = urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar())
opener = urllib.request.build_opener(jar)
base = f"http://127.0.0.1:{port}/console"
page = opener.open(base, timeout=10).read().decode()
secret = re.search(r'SECRET = "([^"]+)"', page).group(1)
opener.open(f"{base}?__debugger__=yes&cmd=pinauth&pin={pin}&s={secret}", timeout=10)
cmd = urllib.parse.quote("import os; print('ran as uid', os.getuid())")
print(opener.open(f"{base}?__debugger__=yes&cmd={cmd}&frm=0&s={secret}", timeout=10).read())
"""


def test_another_account_cannot_run_code_through_a_debug_servers_console(
    checkout: Path, outsider: pwd.struct_passwd
) -> None:
    """``srcore dev`` (and ``srcore serve --debug``) ran Werkzeug's debugger with its
    Python console on 127.0.0.1, locked by a PIN that any account of the machine can
    compute: the second account ran code as the developer. Tracebacks are still shown;
    the console is gone (404)."""
    import srcore.app

    config = _demo_network(checkout / "var")
    port = free_port()
    environ = {k: v for k, v in os.environ.items() if not k.startswith("SRCORE")}
    argv = [sys.executable, "-m", "srcore", "--config", str(config), "serve", "todo"]
    argv += ["--debug", "--no-reload", "--bind", f"127.0.0.1:{port}"]
    server = subprocess.Popen(
        argv, env=environ, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        import time
        import urllib.error
        import urllib.request

        for _ in range(200):  # up to 20 s for the server to answer
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2).close()
                break
            except (urllib.error.URLError, OSError):
                time.sleep(0.1)
        script = checkout / "unlock.py"
        script.write_text(_UNLOCK_THE_CONSOLE)
        script.chmod(0o644)
        code = (
            "import runpy, sys\n"
            f"sys.argv = ['unlock', '{port}', '{server.pid}', {srcore.app.__file__!r}]\n"
            f"runpy.run_path({str(script)!r})\n"
        )
        done = _as(outsider, code)
        assert "ran as uid" not in done.stdout, done.stdout
        assert "HTTP Error 404" in done.stderr, done.stderr
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_another_client_of_redis_cannot_unsuspend_an_account_in_the_services(
    tmp_path: Path,
) -> None:
    """The operator guide's ``redis-url = redis://127.0.0.1:6379/0`` has no password, so
    every account of the host reaches it. The processes of a service passed revocations to
    each other on a channel there, unsigned: another account published an ``unsuspend``
    of a suspended account with a seq no real event would beat, and every process of the
    service let the account in again. A message not signed with the service's key is now
    ignored (and logged); the service's own still arrive."""
    import time

    import redis

    from srcore.auth.revocation import MemoryRevocationStore, make_fanout
    from srcore.identity.protocol import RevocationEvent

    url = f"redis://127.0.0.1:6379/{14}"
    try:
        redis.Redis.from_url(url, socket_timeout=2).ping()
        reachable = True
    except redis.RedisError:
        reachable = False
    require_or_skip(reachable, "Redis on 127.0.0.1:6379")
    service = f"outsider{os.getpid()}"
    secret = "the service's secret-key, shared by its processes"
    listener, sender = MemoryRevocationStore(), MemoryRevocationStore()
    hears = make_fanout(url, service, listener, secret=secret)
    says = make_fanout(url, service, sender, secret=secret)
    assert hears is not None and says is not None
    hears.ensure_started()
    try:
        assert hears.subscribed.wait(10)

        def suspended() -> bool:
            return not listener.session_valid(7, time.time())

        assert says.publish([RevocationEvent(5, "suspend", "7")])
        deadline = time.monotonic() + 10
        while not suspended() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert suspended()
        forged = '{"events": [{"seq": 999999999, "kind": "unsuspend", "subject": "7"}]}'
        attacker = redis.Redis.from_url(url, socket_timeout=2)
        attacker.publish(hears.channel, forged)
        attacker.publish(hears.channel, "0" * 64 + "." + forged)
        attacker.close()
        # A message of the service's after the forged ones: once it is heard, they were.
        assert says.publish([RevocationEvent(6, "token", "later", None, int(time.time()) + 60)])
        deadline = time.monotonic() + 10
        while listener.last_seq < 6 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert listener.last_seq == 6
        assert suspended()
    finally:
        hears.close()


def test_config_check_warns_of_a_database_url_file_with_its_password_readable_by_all(
    tmp_path: Path, umask_022: None
) -> None:
    """operators.md: "A password belongs in a file, not in the INI: ``database-url-file``".
    ``database-url`` is no secret key, so that file was not looked at: one with the
    password in its URL is named like a key file."""
    url_file = tmp_path / "todo-database-url"
    url_file.write_text("postgresql+psycopg://srcore:hunter2@db.internal/todo\n")
    config = tmp_path / "config.ini"
    config.write_text(
        "[global]\nenvironment = production\nsmtp-host = mail.example.org\n\n[todo]\n"
        f"origin = https://todo.example.org\nsecret-key-file = {tmp_path / 'key'}\n"
        f"database-url-file = {url_file}\n"
    )
    (tmp_path / "key").write_text("k" * 64)
    (tmp_path / "key").chmod(0o600)
    from srcore.config import load_config

    warned = [str(w) for w in load_config(config).warnings if "(mode " in w.message]
    assert warned == [
        f"{config}:8 [todo] database-url-file: warning: {url_file} holds secrets and every "
        f"user of this machine can read it (mode 0644): chmod o-rwx {url_file}"
    ]
    url_file.write_text("postgresql+psycopg://srcore@/todo\n")  # peer auth: no password
    assert [w for w in load_config(config).warnings if "(mode " in w.message] == []
