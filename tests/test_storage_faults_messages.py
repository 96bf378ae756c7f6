"""What ``srcore config check``, ``srcore serve`` and ``srcore migrate`` say when the
storage under an SQLite database is at fault, run as operators run them.

One line each, naming the path, with the fix that matches the cause: a ``chown`` for files
of another user (``sudo srcore migrate`` made them root's), room for a full disk, the key
for a path that is wrong; a non-zero exit where the command cannot do its work, and never
a traceback or a statement of a migration script. The disks, users and servers are those
of :mod:`test_storage_faults` (tests needing root fail under CI rather than skip).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_storage_faults import _srcore, fill, get, small_filesystem, unwritable

from srcore.testing import free_port, require_or_skip, write_config

pytestmark = pytest.mark.slow

#: Another user's id: the files it owns are not this user's (``nobody``).
OTHER_UID = 65534


def _run(config: Path, *args: str, as_root: bool = False) -> subprocess.CompletedProcess[str]:
    """``srcore ARGS`` on *config*, as the service's user unless *as_root* (an operator's
    sudo): without the power to write files of other users."""
    argv = [sys.executable, "-c", "from srcore.cli import main; main()", *args]
    env = dict(os.environ, SRCORE_CONFIG=str(config), PYTHONUNBUFFERED="1")
    return subprocess.run(
        argv if as_root else _srcore(*args), env=env, capture_output=True, text=True, timeout=120
    )


def _said(result: subprocess.CompletedProcess[str]) -> list[str]:
    """What the command said on stderr, without the config's warnings (a test config has
    no [meta] section)."""
    assert "Traceback" not in result.stderr, result.stderr
    assert "[SQL:" not in result.stderr, result.stderr
    return [line for line in result.stderr.splitlines() if "warning:" not in line]


def _todo(tmp_path: Path, database: Path) -> Path:
    return write_config(
        tmp_path / "config.ini", service_id="todo", database_url=f"sqlite:///{database}"
    )


def _migrated(tmp_path: Path, database: Path, revision: str = "heads") -> Path:
    config = _todo(tmp_path, database)
    done = _run(config, "migrate", "todo", "upgrade", revision, as_root=True)
    assert done.returncode == 0, done.stderr
    return config


def _require_root() -> None:
    require_or_skip(os.geteuid() == 0, "root, to give files to another user")


@contextlib.contextmanager
def served_in_wal_mode(database: Path) -> Iterator[list[Path]]:
    """The database in WAL mode and open, as a running service holds it: its ``-wal`` and
    ``-shm`` files are there. Yields the three files."""
    with contextlib.closing(sqlite3.connect(database)) as connection:
        connection.execute("PRAGMA journal_mode = WAL")
        connection.execute("CREATE TABLE IF NOT EXISTS held (x)")  # the -wal has a frame
        files = [database, Path(f"{database}-wal"), Path(f"{database}-shm")]
        assert all(path.exists() for path in files)
        yield files


def test_files_of_another_user_fail_config_check_in_one_line_naming_them_and_chown(
    tmp_path: Path,
) -> None:
    """The database and its -wal and -shm files belong to another user (an operator ran
    ``srcore migrate`` as root): ``config check`` said OK, and the service could not
    write. It now fails, naming the files and the chown that gives them back."""
    _require_root()
    data = tmp_path / "data"
    data.mkdir()
    config = _migrated(tmp_path, data / "todo.db")
    with served_in_wal_mode(data / "todo.db") as files:
        for path in files:
            os.chmod(path, 0o644)  # readable by all, as made before srcore made them 0600
            os.chown(path, OTHER_UID, OTHER_UID)
        checked = _run(config, "config", "check")
    assert checked.returncode == 1, checked.stderr
    problem, summary = _said(checked)
    assert problem.startswith(f"{config}:"), problem
    assert "[todo] database-url:" in problem
    names = " ".join(map(str, files))
    assert f"the database's files {', '.join(map(str, files))} belong to nobody" in problem
    assert f"cannot write them: give them to the service's user (chown root: {names})" in problem
    assert summary == "1 error; the config cannot be used."


def test_sudo_config_check_sees_a_database_of_root_in_the_directory_of_the_service(
    tmp_path: Path,
) -> None:
    """Root can write anything, so ``sudo srcore config check`` saw nothing wrong with a
    database that ``sudo srcore migrate`` left to root in the service's directory. The
    directory's owner is the service's user: a file of another owner is named."""
    _require_root()
    data = tmp_path / "data"
    data.mkdir()
    config = _migrated(tmp_path, data / "todo.db")
    os.chown(data, OTHER_UID, OTHER_UID)  # the service's user's directory; the file is root's
    checked = _run(config, "config", "check", as_root=True)
    assert checked.returncode == 1, checked.stderr
    (problem, _summary) = _said(checked)
    assert f"the database file {data / 'todo.db'} belongs to root" in problem, problem
    assert f"(chown nobody: {data / 'todo.db'})" in problem


def test_serve_says_its_database_cannot_be_written_and_serves(tmp_path: Path) -> None:
    """``srcore serve`` said nothing of a database it cannot write: the first writes'
    503s were the only sign. It now says so in one line, with the chown, and serves."""
    _require_root()
    data = tmp_path / "data"
    data.mkdir()
    config = _migrated(tmp_path, data / "todo.db")
    with contextlib.closing(sqlite3.connect(data / "todo.db")) as served:
        served.execute("PRAGMA journal_mode = WAL")  # as the service leaves it, once it ran
    os.chmod(data / "todo.db", 0o644)  # readable by all, as made before srcore made it 0600
    os.chown(data / "todo.db", OTHER_UID, OTHER_UID)
    from srcore.supervisor import Program, Supervisor

    port = free_port()
    serve = _srcore("serve", "todo", "--bind", f"127.0.0.1:{port}", "--workers", "1")
    env = dict(os.environ, SRCORE_CONFIG=str(config), PYTHONUNBUFFERED="1")
    with (
        open(tmp_path / "serve.log", "w+", encoding="utf-8") as log,
        Supervisor(log, name="storage-messages", stop_timeout=10) as supervisor,
    ):
        child = supervisor.start(Program("serve", tuple(serve), env))
        line = supervisor.wait_for_line(child, "serving anyway", timeout=60)
        assert "the database of todo cannot be written" in line, line
        # Its -wal and -shm files, made as serve read it, are given to the file's owner.
        assert f"files {data / 'todo.db'}, " in line, line
        assert "belong to nobody, and this user cannot write them" in line, line
        assert f"(chown root: {data / 'todo.db'} " in line, line
        assert "what writes answers 503" in line, line
        supervisor.wait_until(
            lambda: get(f"http://127.0.0.1:{port}/healthz") == 200, child, timeout=60
        )
        assert get(f"http://127.0.0.1:{port}/") == 200  # reads are served
    assert "Traceback" not in (tmp_path / "serve.log").read_text(encoding="utf-8")


def test_an_unwritable_directory_is_answered_with_chown_not_with_fix_database_url(
    tmp_path: Path,
) -> None:
    """The advice for a directory this user cannot write was "Fix [todo] database-url":
    the path is right, the owner is wrong. The advice now matches the cause."""
    data = tmp_path / "data"
    data.mkdir()
    config = _migrated(tmp_path, data / "todo.db")
    with contextlib.closing(sqlite3.connect(data / "todo.db")) as served:
        served.execute("PRAGMA journal_mode = WAL")
    with unwritable(data):
        shown = _run(config, "migrate", "todo", "current")
        checked = _run(config, "config", "check")
    assert shown.returncode == 1
    (line,) = _said(shown)
    assert f"the directory {data} is not writable by this user" in line, line
    assert "database-url" not in line, line
    assert f"Give it to the service's user (chown {_me()}: {data})" in line, line
    assert checked.returncode == 1
    assert f"the directory {data} is not writable by this user" in checked.stderr


def _me() -> str:
    import pwd

    return pwd.getpwuid(os.geteuid()).pw_name


def test_a_migration_stopped_by_a_full_disk_says_it_was_left_where_it_was(
    tmp_path: Path,
) -> None:
    """``srcore migrate`` stopped by a full disk printed SQLite's error with the statement
    of a migration script. It now says in one line that the lineage was rolled back to
    where it was, and to make room and run it again; run again with room, it finishes."""
    with small_filesystem(tmp_path / "disk", "512k") as disk:
        config = _migrated(tmp_path, disk / "todo.db", "todo_0001")
        filler = fill(disk)
        stopped = _run(config, "migrate", "todo", "upgrade", as_root=True)
        assert stopped.returncode == 1
        (line,) = _said(stopped)
        assert line.startswith("Error: the migrations of todo in the database of todo"), line
        assert "stopped: database or disk is full." in line, line
        assert "todo was left where it was (todo_0001; each lineage runs in one transaction)" in (
            line
        )
        assert f"make room on the file system of {disk}, and run it again" in line, line
        assert "CREATE TABLE" not in line
        current = _run(config, "migrate", "todo", "current", as_root=True)
        assert "todo: todo_0001" in current.stdout, current.stdout + current.stderr
        filler.unlink()
        again = _run(config, "migrate", "todo", "upgrade", as_root=True)
        assert again.returncode == 0, again.stderr
        assert "todo: todo_0003 (head)" in again.stdout


@pytest.mark.parametrize(
    "command", [("migrate", "todo", "upgrade"), ("migrate", "todo", "current")]
)
def test_migrate_on_a_path_that_is_no_database_says_what_it_is(
    tmp_path: Path, command: tuple[str, ...]
) -> None:
    """A text file and a directory where the database should be: ``migrate upgrade`` said
    "unable to open database file" for the directory and ``current`` that it did not
    exist; both now say what is there, and that the key is what to fix."""
    text = tmp_path / "text.db"
    text.write_text("not a database\n", encoding="utf-8")
    folder = tmp_path / "folder.db"
    folder.mkdir()
    for path, said in (
        (text, f"{text} is not an SQLite database (it does not start as one)"),
        (folder, f"{folder} is a directory, not an SQLite database file"),
    ):
        result = _run(_todo(tmp_path, path), *command, as_root=True)
        assert result.returncode == 1, result.stdout
        (line,) = _said(result)
        assert said in line, line
        assert "Fix [todo] database-url" in line, line
        assert "does not exist" not in line, line
    assert text.read_text(encoding="utf-8") == "not a database\n"
    assert list(folder.iterdir()) == []


def test_config_check_fails_for_a_path_that_cannot_hold_the_database(tmp_path: Path) -> None:
    """``config check`` said OK for a database-url naming a text file or a directory
    (it named only a directory that does not exist, as it still does)."""
    text = tmp_path / "text.db"
    text.write_text("not a database\n", encoding="utf-8")
    folder = tmp_path / "folder.db"
    folder.mkdir()
    for path, said in (
        (text, f"{text} is not an SQLite database (it does not start as one): fix the path"),
        (folder, f"{folder} is a directory, not an SQLite database file: fix the path"),
        (
            tmp_path / "nowhere" / "todo.db",
            f"the directory {tmp_path / 'nowhere'} does not exist: create it",
        ),
    ):
        checked = _run(_todo(tmp_path, path), "config", "check", as_root=True)
        assert checked.returncode == 1, checked.stdout
        problem, summary = _said(checked)
        assert "[todo] database-url: " + said in problem, problem
        assert summary == "1 error; the config cannot be used."
    assert not (tmp_path / "nowhere").exists()


def test_each_lineage_runs_in_one_transaction(database_url: str, tmp_path: Path) -> None:
    """What the message above and operators.md promise, on SQLite and PostgreSQL: a
    lineage whose second script fails is left where it was, the first script undone."""
    from sqlalchemy import MetaData, create_engine, inspect
    from sqlalchemy.exc import DBAPIError

    from srcore import migrate

    versions = tmp_path / "t" / "migrations" / "versions"
    versions.mkdir(parents=True)
    for number, body in (
        ("0001", "op.create_table('first', sa.Column('id', sa.Integer, primary_key=True))"),
        ("0002", "op.execute('SELECT * FROM no_such_table')"),
    ):
        down = "None" if number == "0001" else "'t_0001'"
        (versions / f"t_{number}.py").write_text(
            "import sqlalchemy as sa\nfrom alembic import op\n\n"
            f"revision = 't_{number}'\ndown_revision = {down}\n"
            "branch_labels = None\ndepends_on = None\n\n\n"
            f"def upgrade() -> None:\n    {body}\n\n\ndef downgrade() -> None:\n    pass\n",
            encoding="utf-8",
        )
    target = migrate.MigrationTarget("t", database_url, MetaData(), versions)
    migrate.upgrade(target, lineage=migrate.CORE_LINEAGE)
    with pytest.raises(DBAPIError, match="no_such_table"):
        migrate.upgrade(target)
    assert migrate.current(target)["t"] is None
    engine = create_engine(database_url)
    try:
        assert "first" not in inspect(engine).get_table_names()
    finally:
        engine.dispose()
