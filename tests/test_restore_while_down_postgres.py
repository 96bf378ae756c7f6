"""meta restored while a service was down, the service's database on PostgreSQL; and a push
that comes before a process's first pull has compared the kept seqs with meta.

The service's processes starting together each find the kept seq gone and each reset the
seqs under row locks taken in the order a batch of events takes them: the end state is
meta's, and nothing deadlocks. A push of the restored meta's numbering arriving first would
move an account's seq past the check (meta's worker sends the pushes it held back as soon
as the service answers again), so it is refused (503, meta sends it again) until the check.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from srcore import testdb
from srcore.webhooks.models import Account, WebhookBase
from tests.conftest import require_postgres
from tests.fake_meta import META, FakeMeta, build_service
from tests.test_backup_restore import Meta, pg_meta  # noqa: F401 (the fixture)
from tests.test_restore_while_down import _alice, _lose_an_unsuspension, _pg_restorer
from tests.test_webhooks_accounts import emitted, event, push, status, subscription

#: How long a thread of these tests may take before the test fails.
JOIN_TIMEOUT = 60


def build_on(root: Path, url: str, fake: FakeMeta) -> Any:
    """The sample service on the database *url* (build_service's, which takes SQLite)."""
    import sample_service

    from srcore.auth.oauth_client import build_meta_link
    from srcore.config import load_config
    from srcore.manifest import load_manifest

    path = root / "config.ini"
    path.write_text(
        "[global]\nenvironment = development\nrevocation-pull-interval = 0s\n\n"
        f"[meta]\norigin = {META}\ndatabase-url = sqlite:///{root / 'meta.db'}\n"
        f"secret-key = {secrets.token_urlsafe(40)}\n\n"
        f"[sample]\norigin = http://sample.test\ndatabase-url = {url}\n"
        f"secret-key = {secrets.token_urlsafe(40)}\n"
        f"oauth-client-id = {fake.client_id}\noauth-client-secret = {fake.client_secret}\n",
        encoding="utf-8",
    )
    config = load_config(path, specs=dict(load_manifest("sample_service").config))
    link = build_meta_link(config, "sample", http=fake.session())
    app = sample_service.create_app(config=config, identity=link)
    app.config["TESTING"] = True
    st = app.extensions["srcore"]
    st.metadata.create_all(st.db.engine)
    WebhookBase.metadata.create_all(st.db.engine)
    return app


class PgService:
    """The service's processes on one PostgreSQL database (each :meth:`start` a new one)."""

    def __init__(self, root: Path, url: str, meta: Meta) -> None:
        self.root, self.url, self.meta = root, url, meta
        root.mkdir()
        self.app: Any = None
        self.others: list[Any] = []

    def process(self) -> Any:
        app = build_on(self.root, self.url, FakeMeta())
        app.extensions["srcore"].identity.puller.fetch = self.meta.fetch
        self.others.append(app)
        return app

    def start(self) -> Any:
        self.stop()
        self.app = self.process()
        return self.app

    def pull(self) -> None:
        self.app.extensions["srcore"].identity.puller.pull_once()

    def stop(self) -> None:
        for app in self.others:
            app.extensions["srcore"].db.dispose()
        self.others.clear()
        self.app = None

    def account(self, user_id: int) -> tuple[bool, int]:
        row = status(self.app, Account, user_id)
        return row.suspended, row.seq


@pytest.fixture
def pg_service(tmp_path: Path, pg_meta: Meta) -> Iterator[PgService]:  # noqa: F811
    require_postgres()
    url = testdb.create_test_database(prefix="srcore_restore_service")
    service = PgService(tmp_path / "service", url, pg_meta)
    try:
        yield service
    finally:
        service.stop()
        testdb.drop_test_database(url)


def test_processes_starting_together_on_postgresql_end_where_meta_is(
    pg_meta: Meta,  # noqa: F811
    pg_service: PgService,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    alice = _alice(pg_meta)
    alices = _lose_an_unsuspension(pg_meta, pg_service, alice, _pg_restorer(pg_meta, tmp_path))
    pg_meta.suspend(alice, suspended=True)
    pg_meta.revoke_token("after-the-restore")
    processes = [pg_service.process() for _ in range(3)]
    failed: list[BaseException] = []
    go = threading.Barrier(len(processes), timeout=JOIN_TIMEOUT)

    def first_pull(app: Any) -> None:
        try:
            go.wait()
            app.extensions["srcore"].identity.puller.pull_once()
        except BaseException as exc:  # reported by the test below
            failed.append(exc)

    threads = [threading.Thread(target=first_pull, args=(app,)) for app in processes]
    with caplog.at_level("ERROR"):
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(JOIN_TIMEOUT)
    assert not any(thread.is_alive() for thread in threads)
    assert failed == []
    assert [r.getMessage() for r in caplog.records if r.levelname == "ERROR"] == []
    pg_service.app = processes[0]
    assert pg_service.account(alice)[0] is True
    assert emitted(pg_service.app) == {}
    pg_meta.suspend(alice, suspended=False)
    pg_service.pull()
    assert emitted(pg_service.app) == {alices: "pending"}


def test_a_push_before_the_first_pulls_check_is_sent_again(tmp_path: Path) -> None:
    """meta restored while the service was down (its list holds seqs 1 and 2, alice's row
    the lost unsuspension's 12); its worker pushes the new suspension (seq 2) to a process
    whose first pull has not read meta yet."""
    fake = FakeMeta()
    app = build_service(tmp_path, fake, global_extra="revocation-pull-interval = 3600s\n")
    puller = app.extensions["srcore"].identity.puller
    answer, fetch = threading.Event(), puller.fetch

    def slow_fetch(since: int) -> Any:
        assert answer.wait(JOIN_TIMEOUT)
        return fetch(since)

    puller.fetch, puller.first_wait = slow_fetch, 0.2
    try:
        alices, bobs = subscription(app, 7), subscription(app, 8)
        with app.extensions["srcore"].db.transaction() as session:
            session.add(Account(user_id=7, suspended=False, seq=12))
        fake.add_event("token", "dumped", expires_at=int(time.time()) + 600)
        fake.add_event("suspend", "7")
        headers, body = fake.push([event(2, "suspend", 7)])
        refused = app.test_client().post("/_srcore/events", data=body, headers=headers)
        assert refused.status_code == 503, refused.get_data(as_text=True)
        assert "compared" in refused.get_data(as_text=True)
        answer.set()
        puller.first_wait = JOIN_TIMEOUT
        assert puller.kept_checked()
        push(app, fake, event(2, "suspend", 7))  # meta sends it again
        assert status(app, Account, 7).suspended
        assert emitted(app) == {bobs: "pending"}
        assert alices not in emitted(app)
    finally:
        answer.set()
        puller.stop()
        app.extensions["srcore"].db.dispose()
