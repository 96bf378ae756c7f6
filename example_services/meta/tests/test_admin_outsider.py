"""The admin pages from outside: refusals for whoever is not an admin (now), forged and
replayed forms, admins acting on themselves, on other admins and on accounts that change
under them, and hostile bytes in every field."""

from __future__ import annotations

import re
from typing import Any

import pytest
from sqlalchemy import select

from srcore.db import UserType
from srcore.testing import before_first_write

_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def _entries(app: Any, user_id: int, kind: str | None = None) -> list[Any]:
    from meta.models import AuditEntry

    stmt = select(AuditEntry).where(AuditEntry.user_id == user_id).order_by(AuditEntry.id)
    if kind is not None:
        stmt = stmt.where(AuditEntry.kind == kind)
    with app.extensions["srcore"].db.transaction() as session:
        return list(session.scalars(stmt))


def _log_section(response: Any) -> str:
    """The entries table of an ``/admin/audit`` page."""
    page = response.get_data(as_text=True)
    return page[page.index('id="audit-log"') :]


def _token(client: Any, page: str) -> str:
    response = client.get(page)
    assert response.status_code == 200, (page, response.status_code)
    match = _CSRF.search(response.get_data(as_text=True))
    assert match is not None
    return match.group(1)


@pytest.fixture
def boss(app: Any, accounts: Any, login: Any) -> tuple[Any, Any]:
    """An admin and a client logged in as them."""
    user = accounts.make("boss", user_type=UserType.admin)
    client = app.test_client()
    assert login(client, "boss").status_code == 302
    return user, client


ACTIONS = ("suspend", "unsuspend", "factors/reset")


def test_a_demoted_admin_is_refused_at_once_with_a_form_opened_before(
    app: Any, accounts: Any, boss: tuple[Any, Any], srcore_database: Any
) -> None:
    from click.testing import CliRunner
    from meta.admin.cli import main

    _, client = boss
    alice = accounts.make("alice")
    page = f"/admin/users/{alice.id}"
    token = _token(client, page)
    config = str(srcore_database.config_path)
    result = CliRunner().invoke(main, ["remove-admin", "boss", "--config", config])
    assert result.exit_code == 0, result.output
    for path in ("/admin/users", page, "/admin/audit?user=alice"):
        assert client.get(path).status_code == 404
        assert client.head(path).status_code == 404
    for action in ACTIONS:
        sent = client.post(f"{page}/{action}", data={"notice": "late", "csrf_token": token})
        assert sent.status_code == 404, action
    assert accounts.get(alice.id).user_type == UserType.active
    assert _entries(app, alice.id) == []


def test_a_form_sent_after_logout_does_nothing(
    app: Any, accounts: Any, boss: tuple[Any, Any]
) -> None:
    _, client = boss
    alice = accounts.make("alice")
    page = f"/admin/users/{alice.id}"
    token = _token(client, page)
    cookie = client.get_cookie(app.session_interface.get_cookie_name(app))
    assert client.post("/logout", data={"csrf_token": token}).status_code == 302
    replay = app.test_client()
    replay.set_cookie(cookie.key, cookie.value, domain=cookie.domain)
    for action in ACTIONS:
        sent = replay.post(f"{page}/{action}", data={"notice": "replayed", "csrf_token": token})
        assert sent.status_code in (302, 400, 401), (action, sent.status_code)
        assert not sent.headers.get("Location", "/login").startswith("/admin")
    assert accounts.get(alice.id).user_type == UserType.active
    assert _entries(app, alice.id) == []


@pytest.mark.parametrize("forged", [{}, {"csrf_token": "forged"}])
def test_a_forged_cross_site_form_does_nothing(
    app: Any, accounts: Any, boss: tuple[Any, Any], forged: dict[str, str]
) -> None:
    from meta import totp

    _, client = boss
    alice = accounts.make("alice")
    with app.app_context(), app.extensions["srcore"].db.transaction() as session:
        totp.add_factor(session, alice.id, "JBSWY3DPEHPK3PXP", 0)
    headers = {"Origin": "https://evil.invalid", "Sec-Fetch-Site": "cross-site"}
    for action in ACTIONS:
        data = {"notice": "forged", **forged}
        sent = client.post(f"/admin/users/{alice.id}/{action}", data=data, headers=headers)
        assert sent.status_code == 400, action
    assert accounts.get(alice.id).user_type == UserType.active
    assert _entries(app, alice.id) == []


@pytest.mark.parametrize(
    "path",
    [
        "/admin/users/0",
        "/admin/users/-1",
        "/admin/users/abc",
        "/admin/users/01",
        "/admin/users/2147483648",
        "/admin/users/99999999999999999999999",
        "/admin/users/1.5",
    ],
)
def test_ids_that_cannot_exist_are_404_for_every_action(
    boss: tuple[Any, Any], csrf: Any, path: str
) -> None:
    _, client = boss
    assert client.get(path).status_code == 404
    for action in ACTIONS:
        sent = csrf.post(client, f"{path}/{action}", {"notice": "x"}, page="/admin/users")
        assert sent.status_code == 404, action


def test_two_admins_suspending_at_once_make_one_suspension(
    app: Any, accounts: Any, boss: tuple[Any, Any], csrf: Any
) -> None:
    """The second finds it done: one notice, one audit entry, one event for the network."""
    from meta import logic, signals
    from meta.models import User

    admin, client = boss
    other = accounts.make("other", user_type=UserType.admin)
    alice = accounts.make("alice")
    page = f"/admin/users/{alice.id}"
    token = _token(client, page)
    seen: list[int] = []

    def suspended(user: Any) -> None:
        seen.append(user.id)

    signals.account_suspended.connect(suspended)

    def other_admin_suspends() -> None:
        from meta import audit

        with app.extensions["srcore"].db.transaction() as session:
            target = session.get(User, alice.id)
            logic.suspend(session, target, "First notice.")
            audit.record(
                session,
                audit.Kind.account_suspended,
                alice.id,
                actor_id=other.id,
                detail="First notice.",
            )

    with before_first_write(app) as meanwhile:
        meanwhile(other_admin_suspends)
        sent = client.post(f"{page}/suspend", data={"notice": "Second.", "csrf_token": token})
    assert sent.status_code == 400
    assert "already suspended" in sent.get_data(as_text=True)
    assert accounts.get(alice.id).suspension_notice == "First notice."
    assert [e.actor_id for e in _entries(app, alice.id, "account-suspended")] == [other.id]
    assert seen == [alice.id]
    assert admin.id != other.id


def test_two_admins_unsuspending_at_once_record_it_once(
    app: Any, accounts: Any, boss: tuple[Any, Any]
) -> None:
    from meta import logic
    from meta.models import User

    _, client = boss
    alice = accounts.make("alice", user_type=UserType.suspended, suspension_notice="Spam.")
    page = f"/admin/users/{alice.id}"
    token = _token(client, page)

    def other_admin_unsuspends() -> None:
        with app.extensions["srcore"].db.transaction() as session:
            logic.unsuspend(session, session.get(User, alice.id))

    with before_first_write(app) as meanwhile:
        meanwhile(other_admin_unsuspends)
        sent = client.post(f"{page}/unsuspend", data={"csrf_token": token})
    assert sent.status_code == 302
    assert _entries(app, alice.id, "account-unsuspended") == []
    shown = client.get(sent.headers["Location"]).get_data(as_text=True)
    assert "alice was not suspended: nothing changed." in shown


def test_a_second_factor_reset_sent_twice_says_the_second_did_nothing(
    app: Any, accounts: Any, boss: tuple[Any, Any]
) -> None:
    from meta import totp

    _, client = boss
    alice = accounts.make("alice")
    with app.app_context(), app.extensions["srcore"].db.transaction() as session:
        totp.add_factor(session, alice.id, "JBSWY3DPEHPK3PXP", 0)
    page = f"/admin/users/{alice.id}"
    token = _token(client, page)
    said = []
    for _ in range(2):
        sent = client.post(f"{page}/factors/reset", data={"csrf_token": token})
        assert sent.status_code == 302
        said.append(client.get(sent.headers["Location"]).get_data(as_text=True))
    assert "The second factors of alice are reset." in said[0]
    assert "alice had no second factor left to reset: nothing changed." in said[1]
    assert len(_entries(app, alice.id, "factors-reset")) == 1


@pytest.mark.parametrize("action", ACTIONS)
def test_an_account_deleted_meanwhile_is_404_and_nothing_is_written(
    app: Any, accounts: Any, boss: tuple[Any, Any], action: str
) -> None:
    from meta import logic, totp
    from meta.models import User

    _, client = boss
    suspended = action == "unsuspend"
    alice = accounts.make(
        "alice",
        user_type=UserType.suspended if suspended else UserType.active,
        suspension_notice="Spam." if suspended else None,
    )
    with app.app_context(), app.extensions["srcore"].db.transaction() as session:
        totp.add_factor(session, alice.id, "JBSWY3DPEHPK3PXP", 0)
    page = f"/admin/users/{alice.id}"
    token = _token(client, page)

    def owner_deletes() -> None:
        with app.extensions["srcore"].db.transaction() as session:
            logic.delete_user(session, session.get(User, alice.id))

    with before_first_write(app) as meanwhile:
        meanwhile(owner_deletes)
        sent = client.post(f"{page}/{action}", data={"notice": "Late.", "csrf_token": token})
    assert sent.status_code == 404
    assert accounts.get(alice.id) is None
    assert _entries(app, alice.id) == []


def test_suspending_an_admin_records_that_it_is_no_longer_one(
    app: Any, accounts: Any, boss: tuple[Any, Any], csrf: Any
) -> None:
    """A suspension ends the admin right (unsuspending gives an ordinary account back, and
    the operator names admins again): the log says so, naming who did it."""
    admin, client = boss
    other = accounts.make("other", user_type=UserType.admin)
    page = f"/admin/users/{other.id}"
    shown = client.get(page).get_data(as_text=True)
    assert "is an admin" in shown and "make-admin" in shown
    sent = csrf.post(client, f"{page}/suspend", {"notice": "Compromised."}, page=page)
    assert sent.status_code == 302
    (entry,) = _entries(app, other.id, "role-changed")
    assert entry.actor_id == admin.id
    assert "no longer an admin" in entry.detail
    assert csrf.post(client, f"{page}/unsuspend", {}, page=page).status_code == 302
    assert accounts.get(other.id).user_type == UserType.active
    assert len(_entries(app, other.id, "role-changed")) == 1


def test_an_admin_cannot_suspend_or_reset_themselves(
    app: Any, boss: tuple[Any, Any], csrf: Any, accounts: Any
) -> None:
    admin, client = boss
    page = f"/admin/users/{admin.id}"
    own = client.get(page).get_data(as_text=True)
    assert "you cannot suspend it" in own and f"{page}/suspend" not in own
    sent = csrf.post(client, f"{page}/suspend", {"notice": "me"}, page=page)
    assert sent.status_code == 400
    assert "cannot suspend yourself" in sent.get_data(as_text=True)
    assert accounts.get(admin.id).user_type == UserType.admin
    assert client.get("/admin/users").status_code == 200


def test_a_notice_longer_than_the_log_keeps_is_marked_cut_there(
    app: Any, accounts: Any, boss: tuple[Any, Any], csrf: Any
) -> None:
    """The account gets the whole notice; the log its start, which says it is a start."""
    _, client = boss
    alice = accounts.make("alice")
    page = f"/admin/users/{alice.id}"
    notice = "Spam. " + "x" * 1000
    assert csrf.post(client, f"{page}/suspend", {"notice": notice}, page=page).status_code == 302
    assert accounts.get(alice.id).suspension_notice == notice
    (entry,) = _entries(app, alice.id, "account-suspended")
    assert len(entry.detail) == 256
    assert entry.detail == notice[:255] + "\u2026"


def test_a_deleted_accounts_entries_are_found_by_its_id(
    app: Any, accounts: Any, boss: tuple[Any, Any], csrf: Any, login: Any, password: str
) -> None:
    """Its username went with it (and may be someone else's by now): ``#id`` finds the
    entries the log keeps, and the log's "#id" links there."""
    _, client = boss
    alice = accounts.make("alice")
    own = app.test_client()
    assert login(own, "alice").status_code == 302
    gone = csrf.post(own, "/delete", {"current_password": password}, page="/delete")
    assert gone.status_code == 302
    accounts.make("alice", email="new-alice@example.org")  # the name, registered again
    page = client.get(f"/admin/audit?user=%23{alice.id}")
    assert page.status_code == 200
    shown = _log_section(page)
    assert "Account deleted" in shown and "Logged in" in shown
    assert f'href="/admin/audit?user=%23{alice.id}">#{alice.id}</a>' in shown
    assert "Account deleted" not in _log_section(client.get("/admin/audit?user=alice"))
    for bad in ("%230", "%23-1", "%2399999999999", "%23%231", "%23"):
        refused = client.get(f"/admin/audit?user={bad}")
        assert refused.status_code == 400, bad


def test_two_admins_suspending_each_other_at_once_leave_one_admin(
    app: Any, accounts: Any, login: Any, srcore_database: Any
) -> None:
    """Each request holds the other's row and waits (up to a bound) for the other to hold
    its own: were the rows held in any order, both would go on and both admins be
    suspended. Held in the order of their ids, the second waits for the first to commit,
    then finds its admin suspended (404)."""
    import contextlib
    import threading

    from sqlalchemy import event

    one = accounts.make("one", user_type=UserType.admin)
    two = accounts.make("two", user_type=UserType.admin)
    clients = {}
    tokens = {}
    for user, other in ((one, two), (two, one)):
        client = app.test_client()
        assert login(client, user.username).status_code == 302
        clients[user.id] = client
        tokens[user.id] = _token(client, f"/admin/users/{other.id}")
    both_holding = threading.Barrier(2, timeout=3)
    first_hold = threading.local()

    def after_execute(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        holding = statement.lstrip().upper().replace('"', "").startswith("UPDATE USER ")
        if holding and not getattr(first_hold, "done", False):
            first_hold.done = True
            # With the rows held in order, the other request waits on this one's row and
            # never gets here: the barrier breaks and this one goes on.
            with contextlib.suppress(threading.BrokenBarrierError):
                both_holding.wait()

    results: dict[int, int] = {}

    def suspend(user: Any, other: Any) -> None:
        sent = clients[user.id].post(
            f"/admin/users/{other.id}/suspend",
            data={"notice": f"By {user.username}.", "csrf_token": tokens[user.id]},
        )
        results[user.id] = sent.status_code

    engine = app.extensions["srcore"].db.engine
    event.listen(engine, "after_cursor_execute", after_execute)
    try:
        threads = [
            threading.Thread(target=suspend, args=(one, two)),
            threading.Thread(target=suspend, args=(two, one)),
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert not any(thread.is_alive() for thread in threads)
    finally:
        event.remove(engine, "after_cursor_execute", after_execute)
    assert sorted(results.values()) == [302, 404], results
    states = {accounts.get(one.id).user_type, accounts.get(two.id).user_type}
    assert states == {UserType.admin, UserType.suspended}


def test_acting_on_an_account_leaves_the_admins_own_row_as_it_was(
    app: Any, accounts: Any, boss: tuple[Any, Any], csrf: Any
) -> None:
    """Holding the admin's row writes nothing to it: its ``updated`` (which services and
    conditional requests read) stays as it was."""
    admin, client = boss
    alice = accounts.make("alice")
    before = accounts.get(admin.id).updated
    page = f"/admin/users/{alice.id}"
    for action, data in (("suspend", {"notice": "Spam."}), ("unsuspend", {})):
        assert csrf.post(client, f"{page}/{action}", data, page=page).status_code == 302
    assert accounts.get(alice.id).user_type == UserType.active
    assert accounts.get(admin.id).updated == before
