"""``srcore serve`` looks at the database before it starts gunicorn: an SQLite file that is
not there is refused (the first request would create it, empty, at a misspelt path); a
database not migrated, or not reachable now, is said in one line and serving goes on
(requests answer 503 until it can be used, and a database restarting must not stop a
deploy)."""

from __future__ import annotations

import os
import socket
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from srcore import migrate
from srcore.app import migration_target
from srcore.cli import cli
from srcore.testing import write_config


class _Exec(Exception):
    """serve went on to replace itself with gunicorn."""


@pytest.fixture
def execs(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    calls: list[list[str]] = []

    def no_exec(_path: str, argv: list[str]) -> None:
        calls.append(argv)
        raise _Exec

    monkeypatch.setattr(os, "execv", no_exec)
    monkeypatch.delenv("SRCORE_CONFIG", raising=False)
    return calls


def _todo(tmp_path: Path, url: str) -> Path:
    return write_config(tmp_path / "todo.ini", service_id="todo", database_url=url)


def _serve(config: Path) -> Result:
    result = CliRunner().invoke(cli, ["--config", str(config), "serve", "todo"], prog_name="srcore")
    assert "Traceback" not in result.output
    return result


def test_a_missing_sqlite_file_is_refused_and_not_created(
    tmp_path: Path, execs: list[list[str]]
) -> None:
    database = tmp_path / "tood.db"  # the operator meant todo.db
    result = _serve(_todo(tmp_path, f"sqlite:///{database}"))
    assert result.exit_code == 1, result.output
    assert not execs
    assert not database.exists()
    line = result.stderr.strip()
    assert "\n" not in line, line
    assert line.startswith("srcore serve todo: cannot open the database of todo"), line
    assert f"the database file {database} does not exist" in line
    assert "`srcore migrate todo upgrade` creates it" in line
    assert "[todo] database-url" in line


def test_an_unmigrated_database_is_said_and_served(tmp_path: Path, execs: list[list[str]]) -> None:
    database = tmp_path / "todo.db"
    sqlite3.connect(database).close()
    result = _serve(_todo(tmp_path, f"sqlite:///{database}"))
    assert isinstance(result.exception, _Exec), result.output
    assert len(execs) == 1
    line = result.stderr.strip()
    assert line.startswith("srcore serve todo: the database of todo is not migrated (srcore is at")
    assert "todo is at no revision" in line
    assert "run srcore migrate todo upgrade" in line
    assert migrate.current(migration_target("todo", tmp_path / "todo.ini")) == {
        "srcore": None,
        "todo": None,
    }  # only read


def test_a_migrated_database_is_served_without_a_word(
    tmp_path: Path, execs: list[list[str]]
) -> None:
    config = _todo(tmp_path, f"sqlite:///{tmp_path / 'todo.db'}")
    migrate.upgrade_all(migration_target("todo", config))
    result = _serve(config)
    assert isinstance(result.exception, _Exec), result.output
    assert result.stderr == ""


@pytest.fixture
def closed_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


def test_an_unreachable_server_is_said_and_served(
    tmp_path: Path, execs: list[list[str]], closed_port: int
) -> None:
    url = f"postgresql+psycopg://root:hunter2@127.0.0.1:{closed_port}/todo"
    result = _serve(_todo(tmp_path, url))
    assert isinstance(result.exception, _Exec), result.output
    line = result.stderr.strip()
    assert "\n" not in line, line
    assert line.startswith("srcore serve todo: cannot open the database of todo"), line
    assert "serving anyway: requests and /healthz answer 503 until it can be opened" in line
    assert "hunter2" not in line
