"""The audit log: each security event, performed the way a user or an admin does it, leaves
its entry (with the client's address and browser); users see their own, admins everyone's
through filters; old entries are pruned; entries go out as an internal webhook."""

from __future__ import annotations

import json
import re
from datetime import timedelta
from typing import Any

import jsonschema
import pytest
from oauth_helpers import authorize_url, oauth_app, pkce, register_client
from sqlalchemy import select

from srcore.manifest import load_manifest
from srcore.openapi.schema import json_schema
from srcore.testing import log_in_client

__all__ = ["oauth_app"]  # fixtures used by this module

AGENT = "AuditTest/1.0 (X11)"
NEW_PASSWORD = "a brand new passphrase"


def entries(app: Any, user_id: int | None = None, kind: str | None = None) -> list[Any]:
    from meta.models import AuditEntry

    with app.extensions["srcore"].db.transaction() as session:
        stmt = select(AuditEntry).order_by(AuditEntry.id)
        if user_id is not None:
            stmt = stmt.where(AuditEntry.user_id == user_id)
        if kind is not None:
            stmt = stmt.where(AuditEntry.kind == kind)
        rows = list(session.scalars(stmt))
        session.expunge_all()
        return rows


def browser(app: Any) -> Any:
    client = app.test_client()
    client.environ_base["HTTP_USER_AGENT"] = AGENT
    return client


def logged_in(app: Any, user: Any) -> Any:
    return log_in_client(browser(app), user)


def _token(client: Any, path: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', client.get(path).get_data(as_text=True))
    assert match, path
    return match.group(1)


def post(client: Any, path: str, data: dict[str, str], page: str) -> Any:
    return client.post(path, data={**data, "csrf_token": _token(client, page)})


def only(app: Any, user_id: int | None, kind: str) -> Any:
    found = entries(app, user_id, kind)
    assert len(found) == 1, (kind, [(e.kind, e.detail) for e in entries(app)])
    return found[0]


# -- each event ---------------------------------------------------------------------------------


def test_a_login_is_recorded_with_address_and_browser(
    app: Any, accounts: Any, password: str
) -> None:
    alice = accounts.make("alice")
    client = browser(app)
    response = post(client, "/login", {"login": "alice", "password": password}, "/login")
    assert response.status_code == 302
    entry = only(app, alice.id, "login")
    assert entry.address == "127.0.0.1"
    assert entry.user_agent == AGENT
    assert entry.detail == "with password"
    assert entry.actor_id is None


def test_failed_logins_are_recorded_also_for_unknown_names(app: Any, accounts: Any) -> None:
    alice = accounts.make("alice")
    client = browser(app)
    assert post(client, "/login", {"login": "alice", "password": "wrong!"}, "/login").status_code
    assert only(app, alice.id, "login-failed").detail == "wrong password"
    post(client, "/login", {"login": "nobody", "password": "wrong!"}, "/login")
    anonymous = [e for e in entries(app, kind="login-failed") if e.user_id is None]
    assert [e.detail for e in anonymous] == ["no such account"]
    assert entries(app, alice.id, "login") == []


def test_logging_out_is_recorded(app: Any, accounts: Any) -> None:
    alice = accounts.make("alice")
    client = logged_in(app, alice)
    assert post(client, "/logout", {}, "/profile").status_code == 302
    client = logged_in(app, alice)
    assert post(client, "/logout/everywhere", {}, "/profile").status_code == 302
    assert [e.detail for e in entries(app, alice.id, "logout")] == ["", "everywhere"]


def test_a_password_change_is_recorded(app: Any, accounts: Any, password: str) -> None:
    alice = accounts.make("alice")
    client = logged_in(app, alice)
    data = {"current_password": password, "password": NEW_PASSWORD}
    assert post(client, "/password", data, "/password").status_code == 302
    assert only(app, alice.id, "password-changed").detail == ""


def test_a_password_reset_is_recorded(app: Any, accounts: Any, smtp_sink: Any, csrf: Any) -> None:
    alice = accounts.make("alice")
    csrf.post(app.test_client(), "/forgot", {"email": "alice@example.org"})
    link = smtp_sink.last_link("alice@example.org", "/reset/")
    client = browser(app)
    assert post(client, link, {"password": NEW_PASSWORD}, link).status_code == 302
    assert only(app, alice.id, "password-changed").detail == "with a reset link"


def test_an_email_change_is_recorded_when_confirmed(
    app: Any, accounts: Any, password: str, smtp_sink: Any
) -> None:
    alice = accounts.make("alice")
    client = logged_in(app, alice)
    data = {"email": "new@example.org", "current_password": password}
    assert post(client, "/email", data, "/email").status_code == 302
    assert entries(app, alice.id, "email-changed") == []  # not before the link is followed
    assert client.get(smtp_sink.last_link("new@example.org", "/confirm/")).status_code == 302
    assert only(app, alice.id, "email-changed").detail == "to new@example.org"


def test_tokens_made_and_revoked_are_recorded(app: Any, accounts: Any) -> None:
    from meta.models import User
    from meta.oauth.models import PersonalAccessToken

    alice = accounts.make("alice")
    client = logged_in(app, alice)
    data = {"name": "laptop", "scopes": "meta/profile:RO", "expires": "30"}
    assert post(client, "/security/tokens", data, "/security").status_code == 200
    assert only(app, alice.id, "token-created").detail == "laptop"
    with app.extensions["srcore"].db.transaction() as session:
        token_id = session.scalar(select(PersonalAccessToken.id))
        assert session.get(User, alice.id) is not None
    revoke = f"/security/tokens/{token_id}/revoke"
    assert post(client, revoke, {}, "/security").status_code == 302
    assert only(app, alice.id, "token-revoked").detail == "laptop"


def test_authorizing_and_revoking_an_application_is_recorded(oauth_app: Any, accounts: Any) -> None:
    gadget = register_client(oauth_app, accounts, confidential=True)
    alice = accounts.make("alice")
    client = logged_in(oauth_app, alice)
    url = authorize_url(
        gadget["id"], "https://app.example/cb", scope="meta/profile:RO", challenge=pkce()[1]
    )
    approved = post(client, url, {"decision": "approve"}, url)
    assert approved.status_code == 302
    assert only(oauth_app, alice.id, "app-authorized").detail == "Gadget"
    revoke = f"/security/applications/{gadget['id']}/revoke"
    assert post(client, revoke, {}, "/security").status_code == 302
    assert only(oauth_app, alice.id, "app-revoked").detail == "Gadget"


def test_suspension_by_an_admin_is_recorded_with_the_admin(app: Any, accounts: Any) -> None:
    from srcore.db import UserType

    admin = accounts.make("root1", user_type=UserType.admin)
    alice = accounts.make("alice")
    client = logged_in(app, admin)
    page = f"/admin/users/{alice.id}"
    response = post(client, f"{page}/suspend", {"notice": "Spam."}, page)
    assert response.status_code == 302
    entry = only(app, alice.id, "account-suspended")
    assert (entry.actor_id, entry.detail) == (admin.id, "Spam.")
    assert post(client, f"{page}/unsuspend", {}, page).status_code == 302
    assert only(app, alice.id, "account-unsuspended").actor_id == admin.id


def test_the_operator_granting_and_removing_admin_rights_is_recorded(
    app: Any, accounts: Any, srcore_database: Any
) -> None:
    from click.testing import CliRunner
    from meta.admin.cli import main

    alice = accounts.make("alice")
    config = str(srcore_database.config_path)
    for command in ("make-admin", "make-admin", "remove-admin", "remove-admin"):
        result = CliRunner().invoke(main, [command, "alice", "--config", config])
        assert result.exit_code == 0, result.output
    # Only the changes: repeating a command changes nothing and records nothing.
    assert [e.detail for e in entries(app, alice.id, "role-changed")] == [
        "made an admin on the command line",
        "no longer an admin (command line)",
    ]


# -- reading it ---------------------------------------------------------------------------------


def test_users_see_their_own_entries_on_the_security_page(
    app: Any, accounts: Any, password: str
) -> None:
    bob = accounts.make("bob")
    accounts.make("alice")
    post(browser(app), "/login", {"login": "bob", "password": "wrong!"}, "/login")
    client = browser(app)
    post(client, "/login", {"login": "alice", "password": password}, "/login")
    page = client.get("/security").get_data(as_text=True)
    section = page.split('id="activity"', 1)[1]
    assert "Logged in" in section and AGENT in section and "127.0.0.1" in section
    assert "Failed login" not in section  # bob's
    full = client.get("/security/activity")
    assert full.status_code == 200 and "Logged in" in full.get_data(as_text=True)
    assert client.get("/security/activity?page=0").status_code == 400
    assert entries(app, bob.id, "login-failed")


def test_admins_filter_the_log_by_account_kind_and_dates(app: Any, accounts: Any) -> None:
    from meta import audit
    from meta.models import AuditEntry

    from srcore.db import UserType, utcnow

    admin = accounts.make("root1", user_type=UserType.admin)
    alice, bob = accounts.make("alice"), accounts.make("bob")
    now = utcnow()
    with app.extensions["srcore"].db.transaction() as session:
        for days in range(60):
            session.add(
                AuditEntry(
                    created=now - timedelta(days=days),
                    user_id=alice.id if days % 2 else bob.id,
                    kind=str(audit.Kind.login if days % 3 else audit.Kind.login_failed),
                    detail=f"day {days}",
                )
            )
    client = logged_in(app, admin)
    everything = client.get("/admin/audit").get_data(as_text=True)
    assert "60 entries" in everything
    assert 'aria-label="Pagination"' in everything  # 50 a page
    page2 = client.get("/admin/audit?page=2").get_data(as_text=True)
    assert "day 59" in page2 and "day 0<" not in page2
    alices = client.get("/admin/audit?user=alice").get_data(as_text=True)
    assert "30 entries" in alices and ">alice</a>" in alices and ">bob</a>" not in alices
    failed = client.get("/admin/audit?kind=login-failed").get_data(as_text=True)
    assert "20 entries" in failed
    day = (now - timedelta(days=10)).date().isoformat()
    one_day = client.get(f"/admin/audit?since={day}&until={day}").get_data(as_text=True)
    assert "1 entry" in one_day and "day 10<" in one_day
    for bad in (
        "user=nobody",
        "kind=nothing",
        "since=yesterday",
        "since=2026-02-01&until=2026-01-01",
    ):
        assert client.get(f"/admin/audit?{bad}").status_code == 400, bad
    # Page links carry the filters only, never url_for's own arguments.
    odd = client.get("/admin/audit?since=2000-01-01&_scheme=javascript&_anchor=x&page=1")
    assert odd.status_code == 200
    links = re.findall(r'href="(/admin/audit\?[^"]*)"', odd.get_data(as_text=True))
    assert links and all("_scheme" not in link and "_anchor" not in link for link in links)
    assert any("since=2000-01-01" in link and "page=2" in link for link in links), links
    assert logged_in(app, alice).get("/admin/audit").status_code == 404


# -- retention and export ---------------------------------------------------------------------


def test_old_entries_are_pruned_when_new_ones_are_written(
    app: Any, accounts: Any, password: str
) -> None:
    from meta.models import AuditEntry

    from srcore.db import utcnow

    alice = accounts.make("alice")
    keep = timedelta(days=365)  # [meta] audit-retention's default
    with app.extensions["srcore"].db.transaction() as session:
        session.add(
            AuditEntry(created=utcnow() - keep - timedelta(days=1), user_id=alice.id, kind="login")
        )
        session.add(
            AuditEntry(created=utcnow() - keep + timedelta(days=1), user_id=alice.id, kind="logout")
        )
    post(browser(app), "/login", {"login": "alice", "password": password}, "/login")
    assert [e.kind for e in entries(app, alice.id)] == ["logout", "login"]


def test_a_prune_that_rolled_back_does_not_count_as_done(app: Any, accounts: Any) -> None:
    from meta import audit
    from meta.models import AuditEntry

    from srcore.db import session as db
    from srcore.db import utcnow

    alice = accounts.make("alice")
    old = utcnow() - timedelta(days=366)  # past [meta] audit-retention's default
    with app.extensions["srcore"].db.transaction() as session:
        session.add(AuditEntry(created=old, user_id=alice.id, kind="login"))
    with app.app_context():
        audit.record(db, audit.Kind.logout, alice.id)
        db.rollback()
        audit.record(db, audit.Kind.logout, alice.id)
        db.commit()
    assert [e.kind for e in entries(app, alice.id)] == ["logout"]


def test_prune_deletes_only_what_is_older_than_the_retention(app: Any) -> None:
    from meta import audit
    from meta.models import AuditEntry

    from srcore.db import utcnow

    now = utcnow()
    with app.extensions["srcore"].db.transaction() as session:
        for days in (1, 9, 11, 40):
            session.add(AuditEntry(created=now - timedelta(days=days), kind="login"))
    with app.extensions["srcore"].db.transaction() as session:
        assert audit.prune(session, now=now, retention=timedelta(days=10)) == 2
    assert sorted(e.created for e in entries(app)) == sorted(
        now - timedelta(days=d) for d in (1, 9)
    )


@pytest.fixture
def audited_network(
    srcore_database: Any, tmp_path: Any, monkeypatch: pytest.MonkeyPatch, app: Any
) -> Any:
    """meta in a network whose todo service is named in ``[meta] audit-subscribers``."""
    import meta
    from argon2 import PasswordHasher
    from meta_constants import FAST_HASHER
    from oauth_helpers import network_config

    monkeypatch.setenv("SRCORE__META__AUDIT_SUBSCRIBERS", "todo")
    path = tmp_path / "network.ini"
    path.write_text(network_config(srcore_database.config_path.read_text()), encoding="utf-8")
    application = meta.create_app(config=path, password_hasher=PasswordHasher(**FAST_HASHER))
    application.config["TESTING"] = True
    yield application
    application.extensions["srcore"].db.dispose()


def test_entries_go_to_the_named_services_only_as_an_internal_webhook(
    audited_network: Any, accounts: Any, password: str
) -> None:
    from srcore.webhooks.models import OutboxRow, Subscription

    alice = accounts.make("alice")
    client = browser(audited_network)
    post(client, "/login", {"login": "alice", "password": password}, "/login")
    entry = only(audited_network, alice.id, "login")
    with audited_network.extensions["srcore"].db.transaction() as session:
        sent = [row for row in session.scalars(select(OutboxRow)) if row.event == "audit:recorded"]
        assert len(sent) == 1
        data = json.loads(sent[0].payload)
        assert data["id"] == entry.id and data["kind"] == "login"
        assert data["user_agent"] == AGENT
        # What is sent is what service.yaml declares as the event's payload.
        event = load_manifest("meta").event("audit:recorded")
        assert event is not None and event.audience == "internal"
        jsonschema.validate(data, json_schema(event.payload_type()))
        todo = session.scalar(select(Subscription).where(Subscription.owner_client == "todo"))
        assert todo is not None and todo.trusted
        assert "audit:recorded" in todo.events.split()


def test_without_subscribers_nothing_goes_to_the_outbox(
    oauth_app: Any, accounts: Any, password: str
) -> None:
    from srcore.webhooks.models import OutboxRow

    accounts.make("alice")
    post(browser(oauth_app), "/login", {"login": "alice", "password": password}, "/login")
    with oauth_app.extensions["srcore"].db.transaction() as session:
        events = [row.event for row in session.scalars(select(OutboxRow))]
        assert "audit:recorded" not in events
    targets = oauth_app.extensions["meta.oauth"].network.targets
    assert [t.service_id for t in targets] == ["todo"]
    assert "audit:recorded" not in targets[0].events.split()


@pytest.mark.parametrize(
    ("agent", "summary"),
    [
        (
            "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0",
            "Firefox on Linux",
        ),
        (
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
            "Chrome/131.0.0.0 Safari/537.36 Edg/131.0.0.0",
            "Edge on Windows",
        ),
        (
            "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 "
            "(KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1",
            "Safari on iOS",
        ),
        ("curl/8.11.0", "curl"),
        ("SomeBot", "SomeBot"),
    ],
)
def test_user_agents_are_summed_up_in_a_few_words(agent: str, summary: str) -> None:
    from meta.audit import agent_summary

    assert agent_summary(agent) == summary
