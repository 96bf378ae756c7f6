"""A PostgreSQL server whose disk fills, for real: a throw-away cluster of its own.

The cluster's data directory lies on a tmpfs of a few tens of megabytes mounted for the
test (root only: elsewhere the test is skipped, and under CI it fails), filled by a file
the test writes, then removes to give the space back. Its write-ahead log lies outside
that disk: PostgreSQL stops (a PANIC) when it cannot write its log, which is an outage
(connections cut, answered as the database being unavailable), whereas a full data disk
fails each write that needs a new block with ``disk_full`` (SQLSTATE 53100) and serves
everything else. That is the failure tested here: it was answered and logged as the
database being "busy". PostgreSQL's other shortages (class 53), which no test machine
runs into at will, are raised by a view, as psycopg raises them.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pwd
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool
from test_db_pressure import make_todo
from test_storage_faults import fill

from srcore.testing import free_port, require_or_skip

pytestmark = pytest.mark.slow

#: Where Debian's PostgreSQL 15 keeps its programs.
PG_BIN = Path("/usr/lib/postgresql/15/bin")
#: The user PostgreSQL runs as: initdb refuses root.
PG_USER = "postgres"
#: Seconds any one command on the cluster (initdb, start, stop, mount) may take.
COMMAND_TIMEOUT = 120
#: Writes sent while the disk is full, at most, until one needs a block it cannot have.
WRITES = 12


def _can_run_a_cluster() -> bool:
    if os.geteuid() != 0 or shutil.which("mount") is None or shutil.which("runuser") is None:
        return False
    try:
        pwd.getpwnam(PG_USER)
    except KeyError:
        return False
    return (PG_BIN / "initdb").is_file() and (PG_BIN / "pg_ctl").is_file()


def _as_postgres(*argv: str) -> None:
    subprocess.run(
        ["runuser", "-u", PG_USER, "--", *argv],
        check=True,
        timeout=COMMAND_TIMEOUT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


@contextlib.contextmanager
def postgres_on_a_small_disk(size: str = "48m") -> Iterator[tuple[str, Path, Path]]:
    """A PostgreSQL 15 cluster on 127.0.0.1 at a free port (and a socket in a temporary
    directory) whose data directory is on a tmpfs of *size*; yields the URL of its
    maintenance database, the mount point and the server's log. Stopped, unmounted and
    removed afterwards, whatever happened."""
    require_or_skip(
        _can_run_a_cluster(),
        f"root, mount, runuser, the {PG_USER} user and PostgreSQL 15 in {PG_BIN}, "
        "to run a cluster on a small disk",
    )
    owner = pwd.getpwnam(PG_USER)
    base = Path(tempfile.mkdtemp(prefix="srcore-pg-full-"))  # short: the socket's path
    disk, data, wal, sockets = base / "disk", base / "disk" / "data", base / "wal", base / "s"
    log = base / "server.log"
    mounted = started = False
    try:
        for path in (disk, wal, sockets):
            path.mkdir()
        for path in (base, wal, sockets):
            os.chown(path, owner.pw_uid, owner.pw_gid)
        options = f"size={size},mode=0700,uid={owner.pw_uid},gid={owner.pw_gid}"
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(disk)],
            check=True,
            timeout=COMMAND_TIMEOUT,
        )
        mounted = True
        _as_postgres(
            str(PG_BIN / "initdb"),
            "-D",
            str(data),
            "--waldir",
            str(wal / "pg_wal"),
            "-U",
            PG_USER,
            "--auth=trust",
            "--no-sync",
            "--encoding=UTF8",
            "--locale=C",
        )
        port = free_port()
        settings = (
            f"-c listen_addresses=127.0.0.1 -c port={port} "
            f"-c unix_socket_directories={sockets} -c fsync=off -c autovacuum=off"
        )
        started = True
        _as_postgres(
            str(PG_BIN / "pg_ctl"), "-D", str(data), "-l", str(log), "-w", "-t", "60",
            "-o", settings, "start",
        )  # fmt: skip
        yield f"postgresql://{PG_USER}@127.0.0.1:{port}/postgres", disk, log
    finally:
        if started:
            subprocess.run(
                ["runuser", "-u", PG_USER, "--", str(PG_BIN / "pg_ctl"), "-D", str(data),
                 "-m", "immediate", "-w", "-t", "60", "stop"],
                check=False,
                timeout=COMMAND_TIMEOUT,
                capture_output=True,
            )  # fmt: skip
        if mounted:
            subprocess.run(["umount", "--lazy", str(disk)], check=False, timeout=COMMAND_TIMEOUT)
        shutil.rmtree(base, ignore_errors=True)


def _create_database(maintenance_url: str, name: str) -> str:
    engine = create_engine(
        maintenance_url.replace("postgresql://", "postgresql+psycopg://", 1),
        poolclass=NullPool,
        isolation_level="AUTOCOMMIT",
    )
    try:
        with engine.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
    finally:
        engine.dispose()
    return maintenance_url.rsplit("/", 1)[0] + "/" + name


def test_a_full_database_disk_is_said_as_such_nothing_is_half_written_and_writes_come_back(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """PostgreSQL refuses a write that needs a block of a full disk with ``disk_full``.
    It was answered "The database is busy right now" and logged as ``database busy ...
    (SQLSTATE 53100)``, which sends an operator after the connection count. Now the
    client is told there is no room to save, with Retry-After; the log says the database
    server's disk is full and to make room; the ticket and its webhook event are written
    together or not at all; and once there is room, the next write is served by the same
    app, with no restart."""
    with postgres_on_a_small_disk() as (maintenance_url, disk, server_log):
        url = _create_database(maintenance_url, "todo_full")
        service = make_todo(tmp_path, url)
        try:
            _fill_write_and_free(service, disk, server_log, caplog)
        finally:
            service.app.extensions["srcore"].db.dispose()


def _fill_write_and_free(
    service: Any, disk: Path, server_log: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from todo.models import Ticket

    from srcore.webhooks.models import OutboxRow

    client = service.app.test_client()
    tickets = "/api/trackers/bugs/tickets"
    first = client.post(tickets, json={"title": "first"}, headers=service.headers)
    assert first.status_code == 201, first.get_data(as_text=True)
    filler = fill(disk)
    answers = []
    with caplog.at_level(logging.WARNING, logger="srcore"):
        for index in range(WRITES):  # until one needs a block: each a new page or two
            body = {"title": f"t{index}", "description": secrets.token_hex(8000)}
            answer = client.post(tickets, json=body, headers=service.headers)
            answers.append(answer.status_code)
            if answer.status_code != 201:
                break
    assert answer.status_code == 503, (answers, answer.get_data(as_text=True))
    assert answer.headers["Retry-After"] == "5"
    reason = answer.get_json()["errors"][0]["reason"]
    assert reason == "The database has no room left to save this. Try again later."
    said = [r for r in caplog.records if r.getMessage().startswith("database ")]
    assert len(said) == 1, [record.getMessage() for record in said]
    line = said[0].getMessage()
    assert said[0].levelno == logging.ERROR
    assert line.startswith(
        "database disk full on POST /api/trackers/bugs/tickets: the database server's "
        "disk is full (PostgreSQL, SQLSTATE 53100: "
    ), line
    assert "No space left on device" in line and "Make room on the disk" in line, line
    assert "busy" not in line and said[0].exc_info is None, line
    assert "No space left on device" in server_log.read_text(encoding="utf-8")
    written = answers.count(201) + 1
    assert client.get(tickets, headers=service.headers).status_code == 200
    assert (service.count(Ticket), service.count(OutboxRow)) == (written, written)

    filler.unlink()
    again = client.post(tickets, json={"title": "again"}, headers=service.headers)
    assert again.status_code == 201, again.get_data(as_text=True)
    assert again.get_json()["number"] == written + 1
    assert (service.count(Ticket), service.count(OutboxRow)) == (written + 1,) * 2


@pytest.mark.parametrize(
    ("sqlstate", "words", "level", "reason"),
    [
        ("53100", "disk full", logging.ERROR, "The database has no room left to save this."),
        ("53200", "out of memory", logging.ERROR, "The database is short of resources"),
        ("53300", "busy", logging.WARNING, "The database is busy right now."),
        ("53400", "at a configured limit", logging.ERROR, "The database is short of resources"),
        ("53000", "short of resources", logging.ERROR, "The database is short of resources"),
    ],
)
def test_each_shortage_of_the_server_is_named_in_the_log_and_a_503(
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    sqlstate: str,
    words: str,
    level: int,
    reason: str,
) -> None:
    """PostgreSQL's class 53 was one "database busy" whatever ran out: each is now named
    (only a want of connection slots is load), always a 503 with Retry-After."""
    import psycopg
    import sample_service
    from sqlalchemy.exc import OperationalError

    from srcore.testing import write_config

    config = write_config(
        tmp_path / "config.ini",
        service_id="sample",
        database_url=f"sqlite:///{tmp_path / 'sample.db'}",
    )
    app = sample_service.create_app(config=config)
    said = "the server's own words"

    @app.post("/api/short")
    def short() -> str:
        orig = psycopg.errors.lookup(sqlstate)(said)
        raise OperationalError("INSERT INTO t VALUES (%(x)s)", {"x": "secret"}, orig)

    with caplog.at_level(logging.WARNING, logger="srcore"):
        answer = app.test_client().post("/api/short")
    assert answer.status_code == 503
    assert answer.headers["Retry-After"] == "5"
    assert answer.get_json()["errors"][0]["reason"].startswith(reason)
    (line,) = [r for r in caplog.records if r.getMessage().startswith("database ")]
    assert line.levelno == level and line.exc_info is None
    message = line.getMessage()
    assert message.startswith(f"database {words} on POST /api/short: "), message
    assert f"(PostgreSQL, SQLSTATE {sqlstate}: {said})" in message, message
    assert "secret" not in message
