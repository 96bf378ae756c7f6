"""Database migrations as an operator meets them: ``srcore migrate`` run as a command
(its own process, the operator's config file) on SQLite and PostgreSQL, against the
example network (meta, todo, paste) and against a slow service made here.

- two deploys migrating one network at once both succeed, and each says how many
  scripts it applied itself (the one that waited applied none);
- a migration killed outright (SIGKILL) leaves every lineage at a revision, and running
  it again finishes;
- a database a newer release migrated, a database of another service, and a script that
  refuses to run are each one line naming what is wrong, with no traceback, and change
  nothing; ``srcore serve`` says the same instead of "run srcore migrate ... upgrade";
- after ``upgrade`` every lineage of every service matches its models (autogenerate
  finds nothing), on both backends.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
import time
import uuid
import warnings
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import MetaData, create_engine, inspect, text
from sqlalchemy.pool import NullPool

from srcore import migrate, testdb
from srcore.app import migration_target
from srcore.testing.configs import write_network_config
from tests.conftest import require_postgres

SERVICES = ("meta", "todo", "paste")
BOUND = 120  # seconds any command below may take at most (a hang guard, not a measurement)


def _environ() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("SRCORE")}


def srcore(config: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    """``srcore --config CONFIG ARGV...`` as the operator runs it."""
    return subprocess.run(
        [sys.executable, "-m", "srcore", "--config", str(config), *argv],
        capture_output=True,
        text=True,
        timeout=BOUND,
        env=_environ(),
        check=False,
    )


def _execute(url: str, *statements: str) -> list[list[tuple[object, ...]]]:
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.begin() as connection:
            results = [connection.execute(text(s)) for s in statements]
            return [[tuple(row) for row in r] if r.returns_rows else [] for r in results]
    finally:
        engine.dispose()


def _tables(url: str) -> set[str]:
    engine = create_engine(url, poolclass=NullPool)
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def network(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Path]:
    """A config file of meta, todo and paste, each with its own empty database."""
    config = write_network_config(
        tmp_path / "config.ini", {"meta": 5900, "todo": 5901, "paste": 5902}
    )
    if request.param == "sqlite":
        yield config
        return
    require_postgres()
    urls = {service: testdb.create_test_database() for service in SERVICES}
    body = config.read_text()
    for service, url in urls.items():
        body = body.replace(f"sqlite:///{tmp_path / (service + '.db')}", url)
    config.write_text(body)
    try:
        yield config
    finally:
        for url in urls.values():
            testdb.drop_test_database(url)


def url_of(config: Path, service: str) -> str:
    return str(migration_target(service, config).database_url)


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    """The command failed with status 1 and said why in one line, no traceback."""
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    return lines[0]


# -- two deploys at once -------------------------------------------------------------------


_SUMMARY = re.compile(r"^migrated 3 services \((\d+) revisions? applied\)", re.M)


def test_two_deploys_migrating_at_once_both_succeed_and_apply_each_script_once(
    network: Path,
) -> None:
    argv = [sys.executable, "-m", "srcore", "--config", str(network), "migrate", "--all"]
    runs = [
        subprocess.Popen(
            [*argv, "upgrade"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=_environ(),
        )
        for _ in range(2)
    ]
    outputs = []
    for run in runs:
        out, err = run.communicate(timeout=BOUND)
        assert run.returncode == 0, out + err
        outputs.append(out)
    applied = []
    for out in outputs:
        found = _SUMMARY.search(out)
        assert found, out
        applied.append(int(found.group(1)))
    scripts = sum(len(migrate.history(migration_target(s, network))) for s in SERVICES)
    # Each script ran once; each run counts the ones it ran (the core lineage is in every
    # service's database, so it counts three times over the two).
    assert sum(applied) == scripts, outputs
    for service in SERVICES:
        target = migration_target(service, network)
        assert migrate.current(target) == migrate.heads(target)


# -- killed outright -----------------------------------------------------------------------


_SLOW_SCRIPTS = {
    "slow_0001.py": '''
        """Rows."""
        import sqlalchemy as sa
        from alembic import op

        revision = "slow_0001"
        down_revision = None
        branch_labels = None
        depends_on = None


        def upgrade():
            op.create_table("slow_row", sa.Column("id", sa.Integer, primary_key=True),
                            sa.Column("note", sa.Text, nullable=True))


        def downgrade():
            op.drop_table("slow_row")
        ''',
    "slow_0002.py": '''
        """Fill the rows, then take long (while SLOW_HOLD is set)."""
        import os
        import time
        from pathlib import Path

        import sqlalchemy as sa
        from alembic import op

        revision = "slow_0002"
        down_revision = "slow_0001"
        branch_labels = None
        depends_on = None


        def upgrade():
            rows = [{"id": i, "note": "ünïcode ✓ " * 20} for i in range(1, 2001)]
            table = sa.table("slow_row", sa.column("id"), sa.column("note"))
            op.bulk_insert(table, rows)
            op.add_column("slow_row", sa.Column("seen", sa.Integer, nullable=True))
            Path(os.environ["SLOW_MARKER"]).write_text("inside")
            deadline = time.monotonic() + 60
            hold = os.environ.get("SLOW_HOLD")
            while hold and Path(hold).exists() and time.monotonic() < deadline:
                time.sleep(0.05)


        def downgrade():
            op.drop_column("slow_row", "seen")
            op.execute("DELETE FROM slow_row")
        ''',
}

_RUNNER = """
import sys
from pathlib import Path

from sqlalchemy import MetaData

from srcore import migrate

target = migrate.MigrationTarget("slow", sys.argv[1], MetaData(), Path(sys.argv[2]))
print(migrate.upgrade(target))
"""


def _slow_service(tmp_path: Path) -> Path:
    versions = tmp_path / "slow" / "migrations" / "versions"
    versions.mkdir(parents=True)
    for name, body in _SLOW_SCRIPTS.items():
        (versions / name).write_text(textwrap.dedent(body))
    return versions


def _wait_for(path: Path, run: subprocess.Popen[str], log: Path, what: str) -> None:
    deadline = time.monotonic() + BOUND
    while not path.exists():
        assert run.poll() is None, log.read_text()
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def test_a_migration_killed_outright_leaves_a_revision_and_running_it_again_finishes(
    database_url: str, tmp_path: Path
) -> None:
    versions = _slow_service(tmp_path)
    marker = tmp_path / "inside"
    hold = tmp_path / "hold"
    hold.touch()
    environ = {**_environ(), "SLOW_MARKER": str(marker), "SLOW_HOLD": str(hold)}
    argv = [sys.executable, "-c", _RUNNER, database_url, str(versions)]
    log = tmp_path / "killed.log"
    with log.open("w") as stderr:
        run = subprocess.Popen(argv, env=environ, stderr=stderr, text=True)
        try:
            _wait_for(marker, run, log, "the slow migration never started")
            run.send_signal(signal.SIGKILL)
        finally:
            run.wait(timeout=BOUND)
    target = migrate.MigrationTarget("slow", database_url, MetaData(), versions)
    # The core lineage had committed; the killed one is where it was, none of it applied.
    assert migrate.current(target) == {"srcore": migrate.heads(target)["srcore"], "slow": None}
    assert "slow_row" not in _tables(database_url)
    if database_url.startswith("sqlite"):
        assert _execute(database_url, "PRAGMA integrity_check") == [[("ok",)]]

    hold.unlink()
    done = subprocess.run(argv, env=environ, capture_output=True, text=True, timeout=BOUND)
    assert done.returncode == 0, done.stderr
    assert migrate.current(target)["slow"] == "slow_0002"
    [[(count,)]] = _execute(database_url, "SELECT count(*) FROM slow_row WHERE seen IS NULL")
    assert count == 2000


def test_a_migration_that_waits_for_another_says_for_whom_then_finds_it_applied(
    database_url: str, tmp_path: Path
) -> None:
    """The second of two migrations started together says, once, that it waits and (on
    PostgreSQL) for which session; it goes on when the first commits, and runs nothing."""
    versions = _slow_service(tmp_path)
    hold = tmp_path / "hold"
    hold.touch()
    environ = {**_environ(), "SLOW_MARKER": str(tmp_path / "inside"), "SLOW_HOLD": str(hold)}
    argv = [sys.executable, "-c", _RUNNER, database_url, str(versions)]
    logs = [tmp_path / "first.log", tmp_path / "second.log"]
    with logs[0].open("w") as first_log, logs[1].open("w") as second_log:
        first = subprocess.Popen(argv, env=environ, stderr=first_log, text=True)
        second = None
        try:
            _wait_for(tmp_path / "inside", first, logs[0], "the first never started")
            second = subprocess.Popen(
                argv, env=environ, stdout=subprocess.PIPE, stderr=second_log, text=True
            )
            deadline = time.monotonic() + BOUND
            while "waiting" not in logs[1].read_text():
                assert second.poll() is None, logs[1].read_text()
                assert time.monotonic() < deadline, "the second never said it waits"
                time.sleep(0.05)
            hold.unlink()
            assert first.wait(timeout=BOUND) == 0, logs[0].read_text()
            out, _ = second.communicate(timeout=BOUND)
            assert second.returncode == 0, logs[1].read_text()
        finally:
            for run in (first, second):
                if run is not None and run.poll() is None:
                    run.kill()
                    run.wait(timeout=BOUND)
    said = [line for line in logs[1].read_text().splitlines() if "waiting" in line]
    assert len(said) == 1, said
    if database_url.startswith("postgresql"):
        assert "another migration of the database of slow is under way (server pid" in said[0]
    else:
        assert "being written by another process" in said[0], said
    assert out.split() == ["0"], out  # the first applied both scripts; the second none
    target = migrate.MigrationTarget("slow", database_url, MetaData(), versions)
    assert migrate.current(target)["slow"] == "slow_0002"


# -- databases that are not what the installed code expects ---------------------------------


def test_a_database_a_newer_release_migrated_is_named_as_such_and_left_alone(
    network: Path,
) -> None:
    assert srcore(network, "migrate", "todo", "upgrade").returncode == 0
    url = url_of(network, "todo")
    _execute(url, "UPDATE alembic_version_todo SET version_num = 'todo_9999'")
    for argv in (["upgrade"], ["downgrade", "-1"], ["current"]):
        line = one_line_error(srcore(network, "migrate", "todo", *argv))
        assert "todo_9999" in line and "newer release of todo" in line, line
        assert "Can't locate" not in line
    assert _execute(url, "SELECT version_num FROM alembic_version_todo") == [[("todo_9999",)]]

    from srcore.cli import _preflight

    said: list[str] = []
    _preflight("todo", network, said.append)
    assert len(said) == 1 and "newer release of todo" in said[0], said
    assert "srcore migrate todo upgrade" not in said[0]


def test_another_services_database_is_refused_before_anything_is_created(
    network: Path,
) -> None:
    assert srcore(network, "migrate", "meta", "upgrade").returncode == 0
    meta_url = url_of(network, "meta")
    before = _tables(meta_url)
    body = network.read_text()
    todo_url = url_of(network, "todo")
    network.write_text(body.replace(f"database-url = {todo_url}\n", f"database-url = {meta_url}\n"))
    for argv in (["upgrade"], ["current"], ["downgrade", "base"]):
        line = one_line_error(srcore(network, "migrate", "todo", *argv))
        assert "holds the migrations of meta" in line and "[todo] database-url" in line, line
    line = one_line_error(srcore(network, "migrate", "--all", "current"))
    assert "holds the migrations of meta" in line
    assert _tables(meta_url) == before

    from srcore.cli import _preflight, _ServeRefused

    with pytest.raises(_ServeRefused, match="holds the migrations of meta"):
        _preflight("todo", network, print)


def test_a_script_that_refuses_is_one_line_naming_it_and_leaves_the_lineage_where_it_was(
    network: Path,
) -> None:
    """meta 0007 refuses two accounts sharing an address; the operator sees which script
    said what, and where meta stays, not a traceback."""
    assert srcore(network, "migrate", "meta", "upgrade", "0006_oidc").returncode == 0
    url = url_of(network, "meta")
    _execute(
        url,
        'INSERT INTO "user" (id, username, email, user_type, created, updated) VALUES '
        "(1, 'ann', 'Ann@example.org', 'active', '2026-01-01', '2026-01-01'), "
        "(2, 'anna', 'ann@example.org', 'active', '2026-01-01', '2026-01-01')",
    )
    line = one_line_error(srcore(network, "migrate", "meta", "upgrade"))
    assert "the migration 0007_unique_email of meta" in line, line
    assert "ann@example.org" in line and "left where it was (0006_oidc" in line, line

    result = srcore(network, "migrate", "--all", "upgrade")
    one_line_error(result)
    assert "meta failed" in result.stdout, result.stdout
    target = migration_target("meta", network)
    assert migrate.current(target)["meta"] == "0006_oidc"


# -- models and migrations agree ------------------------------------------------------------


def test_every_lineage_of_every_service_matches_its_models_after_upgrade(network: Path) -> None:
    result = srcore(network, "migrate", "--all", "upgrade")
    assert result.returncode == 0, result.stdout + result.stderr
    for service in SERVICES:
        target = migration_target(service, network)
        assert migrate.pending_changes(target) == [], service
        assert migrate.pending_changes(target, lineage=migrate.CORE_LINEAGE) == [], service


# -- a database full of odd rows, from the first revision to head --------------------------


def _odd_value(column: Any, head: Any, row: int, dialect: str) -> object:
    """A value for *column* (reflected) of row *row*: the longest its type takes, Unicode
    beyond the BMP, the edges of time. *head* is the column at head (its Enum, if any)."""
    from sqlalchemy import types

    kind = column["type"]
    head_type = getattr(head, "type", None)
    if isinstance(head_type, types.Enum) and head_type.enums:
        return head_type.enums[row % len(head_type.enums)]
    if isinstance(kind, types.Boolean):
        return row % 2 == 1
    if isinstance(kind, types.Integer):
        return 2_000_000_000 - row if not isinstance(kind, types.SmallInteger) else 32_000 - row
    if isinstance(kind, types.Numeric | types.Float):
        return 12.5
    if isinstance(kind, types.DateTime):
        moment = [datetime(1970, 1, 1, 0, 0, 0, 1), datetime(2099, 12, 31, 23, 59, 59, 999999)]
        value = moment[row % 2]
        return value.replace(tzinfo=UTC) if kind.timezone and dialect != "sqlite" else value
    if isinstance(kind, types.Date):
        return date(2099, 12, 31)
    if isinstance(kind, types.LargeBinary):
        return bytes(range(256)) * 4
    if isinstance(kind, types.JSON):
        return {"ü": ["\U0001d11e", None, 1, 2.5, True]}
    if isinstance(kind, types.Uuid):
        return uuid.UUID(int=row + 1)
    if isinstance(kind, types.String) and not isinstance(kind, types.Text):
        length = kind.length or 300
        head_length = getattr(head_type, "length", None) or length
        if isinstance(head_type, types.String) and not isinstance(head_type, types.Text):
            length = min(length, head_length)
        stem = f"{row}-é✓\U0001d11e\u202e\u05e7"
        return (stem * (length // len(stem) + 1))[:length]
    return f"{row}\r\nline two é✓\U0001d11e\u202e\u05e7\u05d5\u05d3\x7f " + "ü" * 5000


def _fill_empty_tables(url: str, metadata_at_head: MetaData, filled: dict[str, Any]) -> None:
    """Two rows in every table of the database that has none yet (the first with NULL in
    every nullable column, the second with a value in each), remembered in *filled*."""
    from sqlalchemy import MetaData as Reflected
    from sqlalchemy import select

    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.begin() as connection:
            reflected = Reflected()
            with warnings.catch_warnings():
                # SQLite cannot reflect meta's index on lower(email): not a column's business
                warnings.filterwarnings("ignore", "Skipped unsupported reflection")
                reflected.reflect(connection)
            for table in reflected.sorted_tables:
                if table.name.startswith("alembic_version") or table.name == "sqlite_sequence":
                    continue
                if connection.execute(select(table).limit(1)).first() is not None:
                    continue
                head_table = metadata_at_head.tables.get(table.name)
                foreign = {
                    fk.parent.name: fk.column for fk in table.foreign_keys if fk.parent is not None
                }
                for row in range(2):
                    values: dict[str, object] = {}
                    for column in table.columns:
                        head = head_table.c.get(column.name) if head_table is not None else None
                        if column.name in foreign:
                            parent = foreign[column.name]
                            if column.nullable and row == 0:
                                values[column.name] = None
                            elif parent.table.name == table.name:
                                continue  # set below, once the row's key is known
                            else:
                                keys = connection.execute(select(parent)).scalars().all()
                                values[column.name] = sorted(keys)[row % len(keys)]
                        elif column.primary_key:
                            values[column.name] = _odd_value(
                                {"type": column.type}, head, row, engine.dialect.name
                            )
                            if isinstance(values[column.name], int):
                                values[column.name] = 1_000_000 + row
                        elif column.nullable and row == 0:
                            values[column.name] = None
                        else:
                            values[column.name] = _odd_value(
                                {"type": column.type}, head, row, engine.dialect.name
                            )
                    for name, parent in foreign.items():
                        if parent.table.name == table.name and name not in values:
                            values[name] = values[parent.name]
                    connection.execute(table.insert(), values)
                rows = connection.execute(select(table)).mappings().all()
                filled[table.name] = [dict(r) for r in rows]
    finally:
        engine.dispose()


def _same(before: object, after: object) -> bool:
    if isinstance(before, datetime) and isinstance(after, datetime):
        return before.replace(tzinfo=None) == after.replace(tzinfo=None)  # SQLite rebuilds
    return before == after


@pytest.mark.parametrize("service", SERVICES)
def test_a_database_full_of_odd_rows_keeps_every_row_from_the_first_revision_to_head(
    network: Path, service: str
) -> None:
    """Every table gets rows as soon as a revision creates it (NULLs, the longest strings,
    Unicode past the BMP, the edges of time), one revision at a time from the first of each
    lineage; at head every row is still there with its values, and the service's models
    read every row of every table."""
    import importlib

    from sqlalchemy import select
    from sqlalchemy.orm import Session

    from srcore.auth.ended import EndedSessionBase
    from srcore.once import OnceBase
    from srcore.webhooks.models import WebhookBase

    target = migration_target(service, network)
    url = str(target.database_url)
    at_head = MetaData()
    for table in [*migrate.core_metadata().sorted_tables, *target.metadata.sorted_tables]:
        if table.name not in at_head.tables:
            table.to_metadata(at_head)
    filled: dict[str, Any] = {}
    for info in migrate.history(target):
        lineage = info.lineage if info.lineage == migrate.CORE_LINEAGE else None
        migrate.upgrade(target, info.revision, lineage=lineage)
        _fill_empty_tables(url, at_head, filled)
    assert migrate.current(target) == migrate.heads(target)
    assert set(at_head.tables) <= set(filled), set(at_head.tables) - set(filled)

    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as connection:
            for name, rows in filled.items():
                table = at_head.tables.get(name)
                if table is None:
                    continue  # a table a later revision dropped
                now = [dict(r) for r in connection.execute(select(table)).mappings()]
                assert len(now) == len(rows), name
                keys = [c.name for c in table.primary_key.columns]
                by_key = {tuple(r[k] for k in keys): r for r in now}
                for row in rows:
                    kept = by_key[tuple(row[k] for k in keys)]
                    changed = {
                        column: (value, kept[column])
                        for column, value in row.items()
                        if column in kept and not _same(value, kept[column])
                    }
                    assert not changed, (name, changed)
        models = importlib.import_module(f"{service}.models")
        with Session(engine) as session:
            for base in (models.Base, WebhookBase, EndedSessionBase, OnceBase):
                for mapper in base.registry.mappers:
                    objects = session.scalars(select(mapper.class_)).all()
                    assert len(objects) == 2, mapper.class_
                    for obj in objects:
                        for attribute in mapper.column_attrs:
                            getattr(obj, attribute.key)
    finally:
        engine.dispose()


# -- upgrading while the service writes ------------------------------------------------------


def test_upgrading_while_the_service_writes_loses_nothing_and_answers_201_or_503(
    network: Path,
) -> None:
    """todo takes tickets through its API while ``srcore migrate todo upgrade`` runs from
    todo_0001 (on SQLite todo_0002 and todo_0003 rebuild its tables, a thousand tickets
    copied): every write is answered 201, or 503 with Retry-After (a write that waited
    for the migration's lock past its bound, said in the guide), and every 201 is a
    ticket there afterwards, once."""
    import threading

    import todo
    from joserfc.jwk import KeySet

    from srcore.auth.tokens import StaticKeySource, TokenVerifier
    from srcore.testing.users import TEST_ISSUER, create_user, mint_token

    assert srcore(network, "migrate", "todo", "upgrade", "todo_0001").returncode == 0
    key = _signing_key()
    verifier = TokenVerifier(
        keys=StaticKeySource(KeySet([key])), issuer=TEST_ISSUER, audience="todo"
    )
    app = todo.create_app(config=network, token_verifier=verifier)
    try:
        alice = create_user(app, "alice")
        token = mint_token(
            key, audience="todo", scopes="todo/trackers:RW todo/tickets:RW", user_id=alice.id
        )
        headers = {"Authorization": f"Bearer {token}"}
        client = app.test_client()
        made = client.post("/api/trackers", json={"name": "ops"}, headers=headers)
        assert made.status_code == 201, made.get_data(as_text=True)
        url = url_of(network, "todo")
        _execute(
            url,
            "INSERT INTO ticket (tracker_id, number, submitter_id, title, description, status, "
            "created, updated) SELECT t.id, n, t.owner_id, 'ticket ' || n, 'é✓', 'open', "
            "t.created, t.created FROM tracker t, " + _numbers(url, 1000),
            "UPDATE tracker SET ticket_count = 1000",
        )
        answers: list[tuple[int, str | None, int | None]] = []
        migrated = threading.Event()
        started = threading.Event()

        def write() -> None:
            for n in range(3000):  # bounded: the migration ends long before
                answer = client.post(
                    "/api/trackers/ops/tickets", json={"title": f"during {n}"}, headers=headers
                )
                body = answer.get_json(silent=True) or {}
                answers.append(
                    (answer.status_code, answer.headers.get("Retry-After"), body.get("number"))
                )
                if len(answers) == 20:
                    started.set()
                if migrated.is_set() and len(answers) > 40:
                    return

        writer = threading.Thread(target=write, daemon=True)
        writer.start()
        assert started.wait(BOUND)
        result = srcore(network, "migrate", "todo", "upgrade")
        migrated.set()
        writer.join(BOUND)
        assert not writer.is_alive()
        assert result.returncode == 0, result.stdout + result.stderr
        target = migration_target("todo", network)
        assert migrate.current(target) == migrate.heads(target)
        kinds = {(status, retry is not None) for status, retry, _ in answers}
        assert kinds <= {(201, False), (503, True)}, kinds
        numbers = [number for status, _, number in answers if status == 201]
        [[(count,)]] = _execute(url, "SELECT count(*) FROM ticket WHERE title LIKE 'during %'")
        assert count == len(numbers) == len(set(numbers)), (count, len(numbers))
        [[(total,)]] = _execute(url, "SELECT count(*) FROM ticket")
        assert total == 1000 + len(numbers)
    finally:
        app.extensions["srcore"].db.dispose()


def _signing_key() -> Any:
    from srcore.auth import jose

    return jose.generate_key("srcore-test")


def _numbers(url: str, count: int) -> str:
    """A FROM item giving a column n of 1..count, in the database's own words."""
    if url.startswith("sqlite"):
        return (
            f"(WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < {count}) "
            "SELECT n FROM s) AS s"
        )
    return f"generate_series(1, {count}) AS n"


def test_a_postgresql_database_that_refuses_writes_is_one_line_saying_so(tmp_path: Path) -> None:
    """A database-url naming a standby (here: default_transaction_read_only on for the
    database): upgrade and downgrade say the database refuses writes and what to do, and
    leave every lineage where it was; before, creating the version table was the driver's
    words with the statement, over lines."""
    require_postgres()
    config = write_network_config(tmp_path / "config.ini", {"meta": 5900, "paste": 5902})
    url = testdb.create_test_database()
    try:
        config.write_text(config.read_text().replace(f"sqlite:///{tmp_path / 'paste.db'}", url))
        assert srcore(config, "migrate", "paste", "upgrade", "paste_0001").returncode == 0
        name = url.rsplit("/", 1)[1].split("?")[0]
        admin = testdb.postgres_base_url()
        _execute(admin, f'ALTER DATABASE "{name}" SET default_transaction_read_only = on')
        for argv in (["upgrade"], ["downgrade", "base"]):
            line = one_line_error(srcore(config, "migrate", "paste", *argv))
            assert "the database refuses writes" in line, line
            assert "point database-url at the primary" in line, line
            assert "was left where it was (paste_0001" in line, line
    finally:
        testdb.drop_test_database(url)


# -- downgrades, as the guide offers them ---------------------------------------------------


def test_every_service_goes_down_to_base_and_up_again_and_the_core_never_goes_first(
    network: Path,
) -> None:
    """``srcore migrate SERVICE downgrade REVISION`` (``--core`` for srcore's lineage), as
    the operators' guide offers: each service down to base and up again matches its models.
    The core's lineage is refused base while the service's still refers to its user table
    (SQLite, with foreign keys off in migrations, dropped it under todo's tables)."""
    assert srcore(network, "migrate", "--all", "upgrade").returncode == 0
    for service in SERVICES:
        target = migration_target(service, network)
        heads = migrate.heads(target)
        line = one_line_error(srcore(network, "migrate", service, "downgrade", "--core", "base"))
        assert f"downgrade {service} first" in line, line
        assert migrate.current(target) == heads
        assert "user" in _tables(str(target.database_url))
        for argv in (["downgrade", "base"], ["downgrade", "--core", "base"], ["upgrade"]):
            result = srcore(network, "migrate", service, *argv)
            assert result.returncode == 0, result.stdout + result.stderr
        assert migrate.current(target) == heads
        assert migrate.pending_changes(target) == [], service
        assert migrate.pending_changes(target, lineage=migrate.CORE_LINEAGE) == [], service
