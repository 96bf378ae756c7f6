"""``/admin/users`` and the make-admin command."""

from __future__ import annotations

from typing import Any

import pytest

from srcore.db import UserType

#: The password of the accounts the ``accounts`` fixture makes.
PASSWORD = "correct horse battery"


@pytest.fixture
def admin_client(app: Any, accounts: Any, login: Any) -> Any:
    accounts.make("boss", user_type=UserType.admin)
    client = app.test_client()
    assert login(client, "boss").status_code == 302
    return client


def test_only_admins_see_the_pages(app: Any, client: Any, accounts: Any, login: Any) -> None:
    alice = accounts.make("alice")
    assert client.get("/admin/users").headers["Location"].startswith("/login")
    login(client, "alice")
    for path in ("/admin/users", f"/admin/users/{alice.id}"):
        assert client.get(path).status_code == 404
    assert client.post(f"/admin/users/{alice.id}/suspend").status_code in (400, 404)


def test_list_search_and_pages(app: Any, admin_client: Any, accounts: Any) -> None:
    for i in range(52):
        accounts.make(f"user{i:02d}", email=f"person{i:02d}@example.org")
    page = admin_client.get("/admin/users").get_data(as_text=True)
    assert "53 accounts" in page
    assert "user51" in page and "user00" not in page
    assert "user00" in admin_client.get("/admin/users?page=2").get_data(as_text=True)
    found = admin_client.get("/admin/users?q=PERSON07").get_data(as_text=True)
    assert "1 account " in found and "user07" in found
    assert "0 accounts" in admin_client.get("/admin/users?q=%25").get_data(as_text=True)
    assert admin_client.get("/admin/users?page=0").status_code == 400
    assert admin_client.get("/admin/users/999999").status_code == 404


def test_suspend_and_unsuspend(
    app: Any, admin_client: Any, csrf: Any, accounts: Any, login: Any, monkeypatch: Any
) -> None:
    from meta import signals

    seen: list[tuple[str, int]] = []

    def suspended(user: Any) -> None:
        seen.append(("suspended", user.id))

    def unsuspended(user: Any) -> None:
        seen.append(("unsuspended", user.id))

    # Connected weakly (blinker's default): they go with this test.
    signals.account_suspended.connect(suspended)
    signals.account_unsuspended.connect(unsuspended)
    alice = accounts.make("alice")
    alice_client = app.test_client()
    login(alice_client, "alice")

    page = f"/admin/users/{alice.id}"
    empty = csrf.post(admin_client, f"{page}/suspend", {"notice": ""}, page=page)
    assert empty.status_code == 400
    response = csrf.post(admin_client, f"{page}/suspend", {"notice": "Spam, sorry."}, page=page)
    assert response.status_code == 302
    user = accounts.get(alice.id)
    assert (user.user_type, user.suspension_notice) == (UserType.suspended, "Spam, sorry.")
    assert seen == [("suspended", alice.id)]
    # Alice's session has ended; logging in again shows the notice.
    assert alice_client.get("/profile").status_code == 302
    refused = login(alice_client, "alice")
    assert refused.status_code == 403 and "Spam, sorry." in refused.get_data(as_text=True)

    response = csrf.post(admin_client, f"{page}/unsuspend", {}, page=page)
    assert response.status_code == 302
    user = accounts.get(alice.id)
    assert (user.user_type, user.suspension_notice) == (UserType.active, None)
    assert seen[-1] == ("unsuspended", alice.id)
    assert login(alice_client, "alice", PASSWORD).status_code == 302


def test_admin_cannot_suspend_self(app: Any, admin_client: Any, csrf: Any, accounts: Any) -> None:
    from meta.models import User
    from sqlalchemy import select

    with app.extensions["srcore"].db.transaction() as session:
        boss = session.scalar(select(User).where(User.username == "boss"))
    page = f"/admin/users/{boss.id}"
    response = csrf.post(admin_client, f"{page}/suspend", {"notice": "oops"}, page=page)
    assert response.status_code == 400
    assert accounts.get(boss.id).user_type == UserType.admin


def test_make_admin_command(app: Any, srcore_database: Any, accounts: Any) -> None:
    from click.testing import CliRunner
    from meta.admin.cli import main

    alice = accounts.make("alice")
    runner = CliRunner()
    config = str(srcore_database.config_path)
    result = runner.invoke(main, ["make-admin", "alice", "--config", config])
    assert result.exit_code == 0, result.output
    assert "is an admin now" in result.output
    assert accounts.get(alice.id).user_type == UserType.admin
    result = runner.invoke(main, ["remove-admin", "alice", "--config", config])
    assert accounts.get(alice.id).user_type == UserType.active
    result = runner.invoke(main, ["make-admin", "nobody", "--config", config])
    assert result.exit_code == 1 and "no account is called" in result.output
