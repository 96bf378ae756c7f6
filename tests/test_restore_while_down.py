"""meta restored from a dump while every process of a service was down.

No process is left that pulled from the old numbering to see it go back, but the service's
database keeps seqs of it: a webhook account's row holds the seq of the suspension event
that set it. The lost events' seqs are handed out again by the restored meta, so a new
suspension numbered below a lost unsuspension was ignored, and the suspended account's
webhooks kept being delivered. A process's first pull now compares the newest seq kept
with meta's event at that seq; a normal restart, where they agree, changes nothing.

A real meta (PostgreSQL, ``pg_dump``/``pg_restore``; SQLite, ``sqlite3 .backup``) and a
service whose processes are apps built on one SQLite file, one after the other.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from srcore.webhooks.accounts import after_rewind_while_down, newest_kept
from srcore.webhooks.models import Account, Delivery, DeliveryStatus
from tests.fake_meta import FakeMeta, build_service
from tests.test_backup_restore import (
    PASSWORD,
    Meta,
    _run,
    pg_dump,
    pg_meta,  # noqa: F401 (the fixture)
    pg_restore,
    sqlite_meta,  # noqa: F401 (the fixture)
)
from tests.test_webhooks_accounts import emitted, pending_delivery, status, subscription


class Service:
    """A service's database, and its processes: each :meth:`start` is a new one."""

    def __init__(self, root: Path, meta: Meta) -> None:
        self.root, self.meta = root, meta
        root.mkdir()
        self.app: Any = None

    def start(self) -> Any:
        self.stop()
        self.app = build_service(self.root, FakeMeta())
        self.app.extensions["srcore"].identity.puller.fetch = self.meta.fetch
        return self.app

    def pull(self) -> None:
        self.app.extensions["srcore"].identity.puller.pull_once()

    def stop(self) -> None:
        if self.app is not None:
            self.app.extensions["srcore"].db.dispose()
            self.app = None

    def account(self, user_id: int) -> tuple[bool, int]:
        row = status(self.app, Account, user_id)
        return row.suspended, row.seq


@pytest.fixture
def service_of(tmp_path: Path) -> Iterator[Any]:
    started: list[Service] = []

    def make(meta: Meta) -> Service:
        started.append(Service(tmp_path / "service", meta))
        return started[-1]

    yield make
    for service in started:
        service.stop()


def _alice(meta: Meta) -> int:
    from meta.admin.cli import create_user

    create_user(str(meta.config), "alice", "alice@example.org", PASSWORD)
    return meta.user_id("alice")


def _lose_an_unsuspension(meta: Meta, service: Service, alice: int, restore: Any) -> int:
    """Dump meta; suspend and unsuspend alice (the service applies both); stop the service;
    restore the dump. Returns alice's subscription."""
    app = service.start()
    alices = subscription(app, alice)
    meta.revoke_token("before-the-dump")
    service.pull()
    restore_from = restore("dump")
    meta.suspend(alice, suspended=True)
    meta.suspend(alice, suspended=False)
    service.pull()
    assert service.account(alice)[0] is False
    assert emitted(app) == {alices: "pending"}
    service.stop()  # every process of the service is down
    restore_from()
    return alices


def _pg_restorer(meta: Meta, tmp_path: Path) -> Any:
    def dump(_: str) -> Any:
        path = tmp_path / "meta.dump"
        pg_dump(meta.url, path)

        def restore() -> None:
            meta.stop()
            pg_restore(meta.url, path)
            meta.start()

        return restore

    return dump


def _sqlite_restorer(meta: Meta, tmp_path: Path) -> Any:
    live = Path(meta.url.removeprefix("sqlite:///"))

    def dump(_: str) -> Any:
        backup = tmp_path / "meta-backup.db"
        sqlite = shutil.which("sqlite3")
        assert sqlite is not None, "the sqlite3 command (Debian: apt install sqlite3)"
        _run([sqlite, str(live), f".backup '{backup}'"])

        def restore() -> None:
            meta.stop()
            for suffix in ("", "-wal", "-shm"):
                Path(f"{live}{suffix}").unlink(missing_ok=True)
            shutil.copyfile(backup, live)
            meta.start()

        return restore

    return dump


@pytest.mark.parametrize("passed", [False, True], ids=["meta-behind", "meta-past-it"])
def test_a_suspension_by_a_meta_restored_while_the_service_was_down_stops_deliveries(
    pg_meta: Meta,  # noqa: F811
    service_of: Any,
    tmp_path: Path,
    passed: bool,
) -> None:
    alice = _alice(pg_meta)
    service = service_of(pg_meta)
    alices = _lose_an_unsuspension(pg_meta, service, alice, _pg_restorer(pg_meta, tmp_path))
    # The restored meta suspends alice again: its events take the lost ones' seqs, below
    # the lost unsuspension's (or, with more events since, up to and past it).
    pg_meta.suspend(alice, suspended=True)
    if passed:
        for n in range(3):
            pg_meta.revoke_token(f"after-the-restore-{n}")
    app = service.start()
    service.pull()
    assert service.account(alice)[0] is True
    assert emitted(app) == {}
    # Once: a process started next finds what the first left and changes nothing.
    suspended, seq = service.account(alice)
    service.start()
    service.pull()
    assert service.account(alice) == (suspended, seq)
    # meta lets alice back in: her webhooks go out again.
    pg_meta.suspend(alice, suspended=False)
    service.pull()
    assert emitted(service.app) == {alices: "pending"}


def test_a_meta_restored_on_sqlite_while_the_service_was_down(
    sqlite_meta: Meta,  # noqa: F811
    service_of: Any,
    tmp_path: Path,
) -> None:
    alice = _alice(sqlite_meta)
    service = service_of(sqlite_meta)
    restorer = _sqlite_restorer(sqlite_meta, tmp_path)
    _lose_an_unsuspension(sqlite_meta, service, alice, restorer)
    sqlite_meta.suspend(alice, suspended=True)
    app = service.start()
    service.pull()
    assert service.account(alice)[0] is True
    assert emitted(app) == {}


def test_processes_starting_together_after_the_restore_act_once(
    pg_meta: Meta,  # noqa: F811
    service_of: Any,
    tmp_path: Path,
) -> None:
    """Each process's first pull finds the kept seq gone; the one that acts second finds
    the row moved on, and neither resets the seq the first one's reading set."""
    alice = _alice(pg_meta)
    service = service_of(pg_meta)
    _lose_an_unsuspension(pg_meta, service, alice, _pg_restorer(pg_meta, tmp_path))
    pg_meta.suspend(alice, suspended=True)
    second = build_service(tmp_path / "service", FakeMeta())
    try:
        stale = newest_kept(second)  # read before the first process acts
        assert stale is not None and stale.kind == "unsuspend"
        app = service.start()
        service.pull()
        now = service.account(alice)
        assert now[0] is True and now[1] < stale.seq
        after_rewind_while_down(second, stale, None)
        assert service.account(alice) == now
        assert emitted(app) == {}
    finally:
        second.extensions["srcore"].db.dispose()


def test_a_normal_restart_cancels_no_delivery(
    pg_meta: Meta,  # noqa: F811
    service_of: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """alice was suspended and let back in long ago; a delivery to her subscription waits.
    Restarting the service reads meta's whole list again, her old suspension included (in
    a page of its own here, away from its end): it counts for nothing, nothing is cancelled."""
    from meta.oauth import endpoints

    monkeypatch.setattr(endpoints, "PULL_BATCH", 2)
    alice = _alice(pg_meta)
    service = service_of(pg_meta)
    app = service.start()
    alices = subscription(app, alice)
    pg_meta.suspend(alice, suspended=True)
    pg_meta.suspend(alice, suspended=False)
    pg_meta.revoke_token("later")
    service.pull()
    kept = service.account(alice)
    assert kept[0] is False
    for _ in range(2):  # a restart, and a worker started after it
        service.start()
        waiting = pending_delivery(service.app, alices)
        service.pull()
        assert status(service.app, Delivery, waiting).status == DeliveryStatus.pending
        assert service.account(alice) == kept
    with service.app.extensions["srcore"].db.transaction() as session:
        statuses = set(session.scalars(select(Delivery.status)))
    assert DeliveryStatus.cancelled not in statuses
