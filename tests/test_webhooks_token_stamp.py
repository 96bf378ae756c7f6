"""A webhook belongs to the application whose token set it up.

A user may let several applications (OAuth clients) and personal tokens manage their
webhooks. Each token sees and changes only the webhooks its own client set up, so one
application cannot read another's receiver URLs nor point them elsewhere; the user sees all
of them on the web pages. meta's revocation of the token, the grant or the client that set a
webhook up disables it, so an application whose access was ended stops receiving events.
"""

from __future__ import annotations

import re
import time
from datetime import timedelta
from typing import Any

import pytest

from srcore.db import utcnow
from srcore.identity.protocol import RevocationEvent
from srcore.outbound.targets import set_resolver
from srcore.webhooks import subscriptions
from srcore.webhooks.accounts import after_revocations
from srcore.webhooks.models import Delivery, DeliveryStatus, Subscription
from srcore.webhooks.outbox import insert_event

SCOPES = "sample/things:RW"
HOOK = "https://hooks.example.org/"
_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
pytestmark = pytest.mark.usefixtures("clean_webhooks")


@pytest.fixture(autouse=True)
def _no_dns(app: Any) -> None:
    set_resolver(app, lambda host, port, timeout: None)  # no lookup leaves the machine


@pytest.fixture
def token(make_token: Any, user: Any) -> Any:
    """Headers of a token of *client*, in *grant*, with the id *jti*, for alice."""

    def headers(client: str, grant: str = "", jti: str = "") -> dict[str, str]:
        claims = {"grant": grant or f"grant-of-{client}", "jti": jti or f"jti-of-{client}"}
        return {
            "Authorization": f"Bearer {make_token(SCOPES, user=user, client_id=client, **claims)}"
        }

    return headers


def create(client: Any, headers: dict[str, str], path: str) -> int:
    made = client.post(
        "/api/webhooks", json={"url": HOOK + path, "events": ["thing:created"]}, headers=headers
    )
    assert made.status_code == 201, made.get_data(as_text=True)
    return int(made.get_json()["id"])


def create_on_the_page(user_client: Any, path: str) -> int:
    page = user_client.get("/webhooks/new")
    csrf = _CSRF.search(page.get_data(as_text=True))
    assert csrf, "no CSRF token"
    form = {"csrf_token": csrf.group(1), "url": HOOK + path, "events": "thing:created"}
    made = user_client.post("/webhooks/new", data=form)
    assert made.status_code == 201, made.get_data(as_text=True)[:2000]
    found = re.search(r"/webhooks/(\d+)/", made.get_data(as_text=True))
    assert found
    return int(found.group(1))


def row(app: Any, sid: int) -> Subscription:
    with app.extensions["srcore"].db.transaction() as session:
        sub = session.get(Subscription, sid)
        assert sub is not None
        session.expunge(sub)
        return sub


def old_webhook(app: Any, user: Any) -> int:
    """A webhook of *user*'s made before srcore_0007 recorded which client made it."""
    from srcore.webhooks.models import ANY_CLIENT

    with app.extensions["srcore"].db.transaction() as session:
        legacy = Subscription(
            owner_id=user.id,
            client_id=ANY_CLIENT,
            url=HOOK + "legacy",
            events="thing:created",
            scopes=SCOPES,
            secret="whsec_" + "A" * 32,
        )
        session.add(legacy)
        session.flush()
        return legacy.id


def revoke(app: Any, seq: int, kind: str, subject: str, **times: int) -> None:
    """What the service does with meta's event, pushed or pulled."""
    after_revocations(app, [RevocationEvent(seq, kind, subject, **times)])


def test_a_token_sees_only_the_webhooks_its_own_client_set_up(
    app: Any, client: Any, user_client: Any, token: Any
) -> None:
    first, second = token("first-app"), token("second-app")
    firsts = create(client, first, "first")
    seconds = create(client, second, "second")
    on_page = create_on_the_page(user_client, "page")
    for headers, mine in ((first, firsts), (second, seconds)):
        listing = client.get("/api/webhooks", headers=headers).get_json()
        assert [hook["id"] for hook in listing["results"]] == [mine]
    for other in (seconds, on_page):
        hook = f"/api/webhooks/{other}"
        assert client.get(hook, headers=first).status_code == 404
        assert client.patch(hook, json={"url": HOOK + "stolen"}, headers=first).status_code == 404
        assert client.post(f"{hook}/rotate", json={}, headers=first).status_code == 404
        assert client.post(f"{hook}/ping", headers=first).status_code == 404
        assert client.get(f"{hook}/deliveries", headers=first).status_code == 404
        assert client.delete(hook, headers=first).status_code == 404
        assert row(app, other).url != HOOK + "stolen"
    # Another token of the same client (a refreshed one) manages it.
    again = token("first-app", jti="refreshed")
    assert (
        client.patch(f"/api/webhooks/{firsts}", json={"enabled": False}, headers=again).status_code
        == 200
    )
    # The user sees them all.
    page = user_client.get("/webhooks").get_data(as_text=True)
    assert all(HOOK + path in page for path in ("first", "second", "page"))


def test_the_webhook_cap_counts_those_of_every_application(
    client: Any, token: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(subscriptions, "MAX_SUBSCRIPTIONS", 2)
    create(client, token("first-app"), "one")
    create(client, token("second-app"), "two")
    refused = client.post(
        "/api/webhooks",
        json={"url": HOOK + "three", "events": ["thing:created"]},
        headers=token("third-app"),
    )
    assert refused.status_code == 400, refused.get_data(as_text=True)
    assert "2 webhooks" in refused.get_data(as_text=True)


@pytest.mark.parametrize(
    ("kind", "subject"),
    [("grant", "grant-of-first-app"), ("token", "jti-of-first-app"), ("client", "first-app")],
)
def test_revoking_what_set_a_webhook_up_disables_it(
    app: Any, client: Any, user_client: Any, token: Any, kind: str, subject: str
) -> None:
    firsts = create(client, token("first-app"), "first")
    seconds = create(client, token("second-app"), "second")
    on_page = create_on_the_page(user_client, "page")
    with app.extensions["srcore"].db.transaction() as session:
        outbox_id = insert_event(session, "thing:created", {"id": 1, "name": "one"})
        waiting = Delivery(subscription_id=firsts, outbox_id=outbox_id)
        session.add(waiting)
        session.flush()
        waiting_id = waiting.id
    times = {"not_before": int(time.time()) + 1} if kind == "client" else {}
    revoke(app, 1, kind, subject, **times)

    revoked = row(app, firsts)
    assert not revoked.enabled
    assert "revoked" in (revoked.disabled_reason or "")
    # Its owner's alone now: no token of the application sees it, nor sets it up again.
    assert (revoked.client_id, revoked.grant_id, revoked.token_id) == (None, None, None)
    renewed = token("first-app", grant="new-grant", jti="new-token")
    assert client.get(f"/api/webhooks/{firsts}", headers=renewed).status_code == 404
    assert row(app, seconds).enabled and row(app, on_page).enabled
    with app.extensions["srcore"].db.transaction() as session:
        assert session.get(Delivery, waiting_id).status == DeliveryStatus.cancelled  # type: ignore[union-attr]
    # The page says why.
    assert "revoked" in user_client.get(f"/webhooks/{firsts}").get_data(as_text=True)


def test_a_webhook_enabled_again_outlives_a_replay_of_the_revocation(
    app: Any, client: Any, user_client: Any, token: Any
) -> None:
    """meta's events arrive twice (pushed, then pulled): once the owner has looked at the
    webhook and enabled it again, hearing the same revocation again changes nothing."""
    firsts = create(client, token("first-app"), "first")
    with app.extensions["srcore"].db.transaction() as session:
        hour_ago = utcnow() - timedelta(hours=1)
        session.get(Subscription, firsts).confirmed_at = hour_ago  # type: ignore[union-attr]
    events = [
        RevocationEvent(1, "grant", "grant-of-first-app"),
        RevocationEvent(2, "token", "jti-of-first-app"),
        RevocationEvent(3, "client", "first-app", not_before=int(time.time()) - 60),
    ]
    after_revocations(app, events)
    assert not row(app, firsts).enabled
    page = user_client.get(f"/webhooks/{firsts}")
    csrf = _CSRF.search(page.get_data(as_text=True))
    assert csrf
    enabled = user_client.post(f"/webhooks/{firsts}/enable", data={"csrf_token": csrf.group(1)})
    assert enabled.status_code == 302
    after_revocations(app, events)
    assert row(app, firsts).enabled


def test_the_latest_token_to_set_a_webhook_up_is_the_one_that_counts(
    app: Any, client: Any, user_client: Any, token: Any
) -> None:
    """A change made with a token of a new grant (the user authorised the application again)
    moves the webhook to that grant; a change on the pages leaves it the application's."""
    firsts = create(client, token("first-app"), "first")
    renewed = token("first-app", grant="second-grant", jti="second-token")
    assert (
        client.patch(
            f"/api/webhooks/{firsts}", json={"url": HOOK + "moved"}, headers=renewed
        ).status_code
        == 200
    )
    revoke(app, 1, "grant", "grant-of-first-app")
    assert row(app, firsts).enabled
    page = user_client.get(f"/webhooks/{firsts}/edit")
    csrf = _CSRF.search(page.get_data(as_text=True))
    assert csrf
    form = {"csrf_token": csrf.group(1), "url": HOOK + "by-hand", "events": "thing:created"}
    assert user_client.post(f"/webhooks/{firsts}/edit", data=form).status_code == 302
    revoke(app, 2, "grant", "second-grant")
    assert not row(app, firsts).enabled


def test_events_about_other_grants_tokens_and_clients_disable_nothing(
    app: Any, client: Any, token: Any
) -> None:
    firsts = create(client, token("first-app"), "first")
    revoke(app, 1, "grant", "grant-of-first-app-2")
    revoke(app, 2, "token", "jti-of-first")
    revoke(app, 3, "client", "first", not_before=int(time.time()) + 1)
    revoke(app, 4, "session", "first-app", not_before=int(time.time()) + 1)
    assert row(app, firsts).enabled


def test_after_a_password_change_an_application_sets_up_a_new_webhook_that_ends_with_it(
    app: Any, client: Any, user_client: Any, token: Any
) -> None:
    """meta ends the account's grants (then all it issued) on a password change: the
    application's webhook is disabled and its owner's alone; enabled again, it is theirs,
    and the application, authorised again, sets up a new one, which ends with that access."""
    old = create(client, token("first-app"), "old")
    revoke(app, 1, "grant", "grant-of-first-app")
    page = user_client.get(f"/webhooks/{old}")
    csrf = _CSRF.search(page.get_data(as_text=True))
    assert csrf
    assert (
        user_client.post(f"/webhooks/{old}/enable", data={"csrf_token": csrf.group(1)}).status_code
        == 302
    )
    again = token("first-app", grant="second-grant", jti="second-token")
    assert client.get("/api/webhooks", headers=again).get_json()["results"] == []
    new = create(client, again, "new")
    revoke(app, 2, "grant", "second-grant")
    assert not row(app, new).enabled
    assert row(app, old).enabled  # its owner's choice, made after being told


def test_an_old_webhook_of_a_user_is_seen_by_each_token_until_one_sets_it_up(
    app: Any, client: Any, token: Any, user: Any
) -> None:
    sid = old_webhook(app, user)
    first, second = token("first-app"), token("second-app")
    for headers in (first, second):
        assert client.get(f"/api/webhooks/{sid}", headers=headers).status_code == 200
    assert (
        client.patch(f"/api/webhooks/{sid}", json={"enabled": True}, headers=first).status_code
        == 200
    )
    assert client.get(f"/api/webhooks/{sid}", headers=second).status_code == 404
    revoke(app, 1, "grant", "grant-of-first-app")
    assert not row(app, sid).enabled


def test_a_revocation_locks_all_its_owners_webhooks_at_once(
    app: Any, client: Any, user_client: Any, token: Any
) -> None:
    """A transaction may apply several revocation batches (a caller applying each as it
    goes: the grants, then the account): the first to touch an account locks all of its
    webhooks in id order, so the transaction never takes one after a later one while the
    delivery worker, which locks them in id order too, waits for it."""
    from sqlalchemy import select
    from sqlalchemy.exc import OperationalError

    from srcore.webhooks.accounts import apply_with_change

    on_page = create_on_the_page(user_client, "page")
    firsts = create(client, token("first-app"), "first")
    assert on_page < firsts
    db = app.extensions["srcore"].db
    with db.session() as session:
        apply_with_change(app, session, [RevocationEvent(1, "grant", "grant-of-first-app")])
        if db.engine.dialect.name == "postgresql":
            with db.engine.connect() as other:
                held = select(Subscription.id).where(Subscription.id == on_page)
                with pytest.raises(OperationalError, match="could not obtain lock"):
                    other.execute(held.with_for_update(nowait=True))
        session.commit()
    assert not row(app, firsts).enabled and row(app, on_page).enabled


def test_a_service_subscribers_webhook_lives_as_long_as_its_client(
    app: Any, client: Any, make_token: Any
) -> None:
    """A service (no user) subscribes with short-lived client tokens: revoking one of them
    leaves its webhooks alone; deleting the client disables them, and they stay its own."""
    service = {"Authorization": f"Bearer {make_token(SCOPES, client_id='builds', jti='svc-1')}"}
    sid = create(client, service, "builds")
    revoke(app, 1, "token", "svc-1")
    assert row(app, sid).enabled
    revoke(app, 2, "client", "builds", not_before=int(time.time()) + 1)
    assert not row(app, sid).enabled
    later = {"Authorization": f"Bearer {make_token(SCOPES, client_id='builds', jti='svc-2')}"}
    assert client.get(f"/api/webhooks/{sid}", headers=later).status_code == 200


def test_rotating_an_old_webhooks_secret_sets_it_up_for_that_client(
    app: Any, client: Any, token: Any, user: Any
) -> None:
    sid = old_webhook(app, user)
    rotated = client.post(f"/api/webhooks/{sid}/rotate", json={}, headers=token("first-app"))
    assert rotated.status_code == 200, rotated.get_data(as_text=True)
    assert client.get(f"/api/webhooks/{sid}", headers=token("second-app")).status_code == 404
    assert row(app, sid).grant_id == "grant-of-first-app"
