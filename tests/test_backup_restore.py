"""Backups as operators.md prints them, restored as an operator restores them.

PostgreSQL: ``pg_dump --format=custom`` and ``pg_restore --clean --if-exists`` exactly as
the docs print them, on throw-away databases of the test server. SQLite: a copy made while
the service runs (``cp``) against ``sqlite3 DB ".backup FILE"`` and ``VACUUM INTO``.

What a restore of meta must not do: leave the services blind to what the restored meta
revokes. meta numbers its new events from the dump's last seq again; a service that had
read further used to skip them (its pull asked for what came after its own seq) and to
rank a new suspension below an unsuspension that the restore lost.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from srcore import testdb
from srcore.auth.revocation import MemoryRevocationStore, RevocationEvent, RevocationPuller
from srcore.db import normalize_url
from srcore.identity.protocol import PULL_PATH, parse_pull_page
from tests.conftest import require_postgres

TODO_SECRET = "todo-client-secret-for-the-backup-tests-0123456789"
PASSWORD = "correct horse battery staple"
#: Every command here ends well within this (a stuck one fails the test, not the run).
COMMAND_TIMEOUT = 120


def _pg_env(url: str) -> dict[str, str]:
    """The libpq environment for *url*'s server, so the commands read as the docs print them."""
    parsed = normalize_url(url)
    env = dict(os.environ)
    for key, value in (
        ("PGHOST", parsed.host),
        ("PGPORT", parsed.port),
        ("PGUSER", parsed.username),
        ("PGPASSWORD", parsed.password),
    ):
        if value is not None:
            env[key] = str(value)
    return env


def _run(argv: list[str], *, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        argv, capture_output=True, text=True, env=env, timeout=COMMAND_TIMEOUT, check=False
    )
    assert done.returncode == 0, (argv, done.stdout, done.stderr)
    return done


def pg_dump(url: str, dump: Path) -> None:
    """operators.md's ``pg_dump --format=custom --file=... $db``."""
    name = normalize_url(url).database
    assert name
    _run(["pg_dump", "--format=custom", f"--file={dump}", name], env=_pg_env(url))


def pg_restore(url: str, dump: Path) -> None:
    """operators.md's ``pg_restore --clean --if-exists --dbname=... FILE``."""
    name = normalize_url(url).database
    _run(["pg_restore", "--clean", "--if-exists", f"--dbname={name}", str(dump)], env=_pg_env(url))


def srcore_cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return _run([sys.executable, "-m", "srcore", "--config", str(config), *args])


def write_config(path: Path, meta_url: str) -> None:
    path.write_text(
        "\n".join(
            [
                "[global]",
                "environment = development",
                "",
                "[meta]",
                "origin = http://127.0.0.1:5000",
                f"database-url = {meta_url}",
                "secret-key = " + "m" * 48,
                "",
                "[todo]",
                "origin = http://127.0.0.1:5001",
                f"database-url = sqlite:///{path.parent / 'todo.db'}",
                "secret-key = " + "t" * 48,
                "oauth-client-id = todo",
                f"oauth-client-secret = {TODO_SECRET}",
                "",
            ]
        ),
        encoding="utf-8",
    )


@dataclass
class Meta:
    """A migrated meta on its own PostgreSQL database, and the config naming it."""

    url: str
    config: Path
    app: Any = None

    def start(self) -> Any:
        import meta

        self.app = meta.create_app(config=self.config)
        self.app.config["TESTING"] = True
        return self.app

    def stop(self) -> None:
        if self.app is not None:
            self.app.extensions["srcore"].db.dispose()
            self.app = None

    def fetch(self, since: int) -> tuple[list[RevocationEvent], int]:
        """todo's pull, through meta's own endpoint, with todo's client credentials."""
        answer = self.app.test_client().get(
            PULL_PATH, query_string={"since": str(since)}, auth=("todo", TODO_SECRET)
        )
        assert answer.status_code == 200, answer.get_data(as_text=True)
        return parse_pull_page(answer.get_json(), since)

    def user_id(self, username: str) -> int:
        from meta.models import User
        from sqlalchemy import select

        with self.app.extensions["srcore"].db.transaction() as session:
            found = session.scalar(select(User.id).where(User.username == username))
        assert found is not None
        return int(found)

    def suspend(self, user_id: int, *, suspended: bool) -> None:
        from meta import logic
        from meta.models import User

        from srcore.db import session

        with self.app.app_context():
            user = session.get(User, user_id)
            if suspended:
                logic.suspend(session, user, "restore test")
            else:
                logic.unsuspend(session, user)
            session.commit()

    def revoke_token(self, jti: str) -> None:
        from meta.oauth import events

        from srcore.db import session

        with self.app.app_context():
            events.emit(session, "token", jti, expires_at=int(time.time()) + 600)
            session.commit()


@pytest.fixture
def pg_meta(tmp_path: Path) -> Iterator[Meta]:
    require_postgres()
    url = testdb.create_test_database(prefix="srcore_backup")
    config = tmp_path / "config.ini"
    write_config(config, url)
    instance = Meta(url, config)
    try:
        srcore_cli(config, "migrate", "meta", "upgrade")
        instance.start()
        yield instance
    finally:
        instance.stop()
        testdb.drop_test_database(url)


def _token(jti: str, user: int, *, age: int = 5) -> Any:
    """A verified token of *user* issued *age* seconds ago, as todo's verifier makes one."""
    from srcore.auth.tokens import AccessToken

    now = int(time.time())
    return AccessToken(
        subject=user,
        client_id="todo",
        scopes=frozenset(),
        expires_at=now + 600,
        issued_at=now - age,
        jti=jti,
        hash=jti,
        claims={},
    )


def test_a_service_follows_what_a_restored_meta_revokes(pg_meta: Meta, tmp_path: Path) -> None:
    from meta.admin.cli import create_user

    create_user(str(pg_meta.config), "alice", "alice@example.org", PASSWORD)
    alice = pg_meta.user_id("alice")
    store = MemoryRevocationStore()
    todo = RevocationPuller(store, pg_meta.fetch, interval=3600)

    pg_meta.revoke_token("before-the-dump")
    todo.pull_once()
    dump = tmp_path / "meta-yesterday.dump"
    pg_dump(pg_meta.url, dump)

    # After the dump: suspended, then let back in; todo reads both.
    pg_meta.suspend(alice, suspended=True)
    pg_meta.suspend(alice, suspended=False)
    pg_meta.revoke_token("lost")
    todo.pull_once()
    assert store.session_valid(alice, time.time() + 60)  # let back in

    pg_meta.stop()
    pg_restore(pg_meta.url, dump)
    pg_meta.start()

    # The restored meta suspends alice and revokes a token: its new events take the seqs
    # the lost ones had.
    pg_meta.suspend(alice, suspended=True)
    pg_meta.revoke_token("after-the-restore")
    todo.pull_once()
    assert store.is_revoked(_token("after-the-restore", 999))
    assert not store.session_valid(alice, time.time() + 60)
    # Issued after every cut-off: only the suspension refuses it.
    assert store.is_revoked(_token("later", alice, age=-60))
    # What the dump held still counts; meta goes on from here.
    assert store.is_revoked(_token("before-the-dump", 999))
    # A revocation the restore lost: refused by the process that heard of it, not by one
    # that starts after the restore (operators.md says so).
    assert store.is_revoked(_token("lost", 999))
    started_after = MemoryRevocationStore()
    RevocationPuller(started_after, pg_meta.fetch, interval=3600).pull_once()
    assert not started_after.is_revoked(_token("lost", 999))
    assert started_after.is_revoked(_token("after-the-restore", 999))
    assert started_after.is_revoked(_token("later", alice, age=-60))
    pg_meta.suspend(alice, suspended=False)
    todo.pull_once()
    assert store.session_valid(alice, time.time() + 60)
    assert not store.is_revoked(_token("later", alice, age=-60))


def test_a_token_whose_key_the_restore_lost_asks_for_a_new_login(
    pg_meta: Meta, tmp_path: Path
) -> None:
    """operators.md: tokens verify as long as their key is in the dump, otherwise users
    simply log in again: a 401, not a 500."""
    from meta.admin.cli import create_token_for, create_user

    config = str(pg_meta.config)
    create_user(config, "alice", "alice@example.org", PASSWORD)
    kept, _ = create_token_for(config, "alice", ("meta/profile:RO",), name="kept", days=30)
    dump = tmp_path / "meta.dump"
    pg_dump(pg_meta.url, dump)
    # Signing with the new key at once (a plain rotation would still sign with the old).
    _run([sys.executable, "-m", "meta.oauth.keys", "rotate", "--at-once", "--config", config])
    lost, _ = create_token_for(config, "alice", ("meta/profile:RO",), name="lost", days=30)
    answer = pg_meta.app.test_client().get(
        "/api/profile", headers={"Authorization": f"Bearer {lost}"}
    )
    assert answer.status_code == 200, answer.get_data(as_text=True)

    pg_meta.stop()
    pg_restore(pg_meta.url, dump)
    client = pg_meta.start().test_client()
    answer = client.get("/api/profile", headers={"Authorization": f"Bearer {lost}"})
    assert answer.status_code == 401, answer.get_data(as_text=True)
    assert "Bearer" in answer.headers["WWW-Authenticate"]
    answer = client.get("/api/profile", headers={"Authorization": f"Bearer {kept}"})
    assert answer.status_code == 200, answer.get_data(as_text=True)
    assert answer.get_json()["username"] == "alice"


def test_a_dump_restored_into_another_database_is_migrated_there(
    pg_meta: Meta, tmp_path: Path
) -> None:
    """A new server or database name: create it, restore into it, point the config at it;
    ``srcore migrate`` finds it at head and upgrades nothing."""
    from meta.admin.cli import create_user

    create_user(str(pg_meta.config), "alice", "alice@example.org", PASSWORD)
    dump = tmp_path / "meta.dump"
    pg_dump(pg_meta.url, dump)
    elsewhere = testdb.create_test_database(prefix="srcore_backup_moved")
    try:
        pg_restore(elsewhere, dump)
        moved = tmp_path / "moved" / "config.ini"
        moved.parent.mkdir()
        write_config(moved, elsewhere)
        before = srcore_cli(pg_meta.config, "migrate", "meta", "current").stdout
        assert srcore_cli(moved, "migrate", "meta", "current").stdout == before
        srcore_cli(moved, "migrate", "meta", "upgrade")
        assert srcore_cli(moved, "migrate", "meta", "current").stdout == before
        there = Meta(elsewhere, moved)
        try:
            there.start()
            assert there.user_id("alice") == pg_meta.user_id("alice")
        finally:
            there.stop()
    finally:
        testdb.drop_test_database(elsewhere)


# -- SQLite --------------------------------------------------------------------------------


def _usernames(path: Path) -> set[str]:
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as connection:
        return {row[0] for row in connection.execute('SELECT username FROM "user"')}


@pytest.fixture
def sqlite_meta(tmp_path: Path) -> Iterator[Meta]:
    """meta on its SQLite file (the demo's default), running: its connections stay open."""
    live = tmp_path / "live"
    live.mkdir()
    config = live / "config.ini"
    url = f"sqlite:///{live / 'meta.db'}"
    write_config(config, url)
    srcore_cli(config, "migrate", "meta", "upgrade")
    instance = Meta(url, config)
    try:
        instance.start()
        yield instance
    finally:
        instance.stop()


def _write_while_running(meta: Meta) -> None:
    """Accounts made by the running meta: committed, still in its write-ahead log."""
    from srcore.testing import create_user

    for name in ("alice", "bob"):
        create_user(meta.app, name, password_hash="!")
    assert (Path(str(meta.url).removeprefix("sqlite:///") + "-wal")).stat().st_size > 0


def test_sqlite_backup_of_a_running_service_holds_every_commit(
    sqlite_meta: Meta, tmp_path: Path
) -> None:
    """operators.md: ``sqlite3 DB ".backup FILE"`` or ``VACUUM INTO`` while it runs; a
    plain ``cp`` of the file misses what is still in ``meta.db-wal``."""
    _write_while_running(sqlite_meta)
    live = Path(sqlite_meta.url.removeprefix("sqlite:///"))
    backups = tmp_path / "backups"
    backups.mkdir()
    sqlite = shutil.which("sqlite3")
    assert sqlite is not None, "the sqlite3 command (Debian: apt install sqlite3)"
    _run([sqlite, str(live), f".backup '{backups / 'dot-backup.db'}'"])
    _run([sqlite, str(live), f"VACUUM INTO '{backups / 'vacuum-into.db'}'"])
    shutil.copyfile(live, backups / "cp.db")
    assert _usernames(backups / "dot-backup.db") == {"alice", "bob"}
    assert _usernames(backups / "vacuum-into.db") == {"alice", "bob"}
    assert _usernames(backups / "cp.db") == set()  # what a live cp loses

    # Restore: stop meta, put the copy in place (no -wal or -shm of the old file beside
    # it), and it is migrated and serves what the backup held.
    sqlite_meta.stop()
    for suffix in ("", "-wal", "-shm"):
        Path(f"{live}{suffix}").unlink(missing_ok=True)
    shutil.copyfile(backups / "vacuum-into.db", live)
    current = srcore_cli(sqlite_meta.config, "migrate", "meta", "current").stdout
    assert "head" in current, current
    sqlite_meta.start()
    assert sqlite_meta.user_id("bob")
