"""The event catalog (``GET /api/webhooks/events``), the JSON Schemas it publishes, and the
``ping`` test delivery, on the sample service (one event, ``thing:created``)."""

from __future__ import annotations

import json
import re
from datetime import datetime
from typing import Any, TypedDict

import jsonschema
import pytest
from sqlalchemy import select

from srcore.manifest import ManifestError, parse_manifest
from srcore.openapi.schema import json_schema
from srcore.testing import create_user, deliver_pending, log_in_client
from srcore.webhooks.catalog import PING, event_catalog
from srcore.webhooks.models import Delivery, DeliveryStatus, OutboxRow, Subscription

HOOK = "https://hooks.example.org/sample"
SCOPES = "sample/things:RW"
_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


@pytest.fixture(autouse=True)
def _empty_webhook_tables(app: Any) -> Any:
    yield
    from srcore.webhooks.models import WebhookBase

    with app.extensions["srcore"].db.transaction() as session:
        for table in reversed(WebhookBase.metadata.sorted_tables):
            session.execute(table.delete())


class Nudges:
    """A dispatcher that remembers what it was told."""

    def __init__(self) -> None:
        self.deliveries: list[int] = []

    def nudge(self, ids: Any) -> None:
        self.deliveries.extend(ids)


@pytest.fixture
def nudges(app: Any) -> Nudges:
    recorder = Nudges()
    app.extensions["srcore.webhooks"].dispatcher = recorder
    return recorder


@pytest.fixture
def bearer(make_token: Any, user: Any) -> Any:
    def headers(scopes: str = SCOPES, who: Any = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {make_token(scopes, user=who or user)}"}

    return headers


def subscribe(client: Any, headers: dict[str, str]) -> int:
    response = client.post(
        "/api/webhooks", json={"url": HOOK, "events": ["thing:created"]}, headers=headers
    )
    assert response.status_code == 201, response.get_data(as_text=True)
    sid: int = response.get_json()["id"]
    return sid


def catalog(client: Any) -> dict[str, Any]:
    response = client.get("/api/webhooks/events")
    assert response.status_code == 200, response.get_data(as_text=True)
    return {entry["name"]: entry for entry in response.get_json()["results"]}


# -- schemas ---------------------------------------------------------------------------------


class Inner(TypedDict):
    """Something inside."""

    id: int


class Outer(TypedDict):
    name: str
    when: datetime
    inner: Inner
    maybe: Inner | None
    below: list[Outer]


def test_a_payload_schema_stands_alone() -> None:
    schema = json_schema(Outer)
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["title"] == "Outer"
    assert schema["additionalProperties"] is False
    assert schema["properties"]["when"] == {"type": "string", "format": "date-time"}
    assert schema["properties"]["inner"] == {"$ref": "#/$defs/Inner"}
    assert list(schema["$defs"]) == ["Inner"]
    assert schema["$defs"]["Inner"]["description"] == "Something inside."
    good = {"name": "a", "when": "2026-01-01T00:00:00+00:00", "inner": {"id": 1}, "maybe": None}
    jsonschema.validate({**good, "below": [{**good, "below": []}]}, schema)
    for bad in ({**good, "below": [{"name": "a"}]}, {**good, "inner": {"id": "1"}}, {**good}):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, schema)


def test_the_manifest_checks_payload_references() -> None:
    def manifest(payload: object) -> Any:
        data = {
            "id": "demo",
            "scopes": [{"name": "things", "description": "Things"}],
            "events": [{"name": "thing:made", "scope": "things", "payload": payload}],
        }
        return parse_manifest(data, package="demo")

    assert manifest("srcore.webhooks.catalog:PingData").events[0].payload == (
        "srcore.webhooks.catalog:PingData"
    )
    for bad in ("Inner", "a b:C", 3, "mod:"):
        with pytest.raises(ManifestError, match="payload"):
            manifest(bad)
    # a reference that does not import is named when the catalog is built
    with pytest.raises(ManifestError, match=r"nowhere\.to\.be\.found:Thing"):
        event_catalog(manifest("nowhere.to.be.found:Thing"))


def test_an_event_without_a_payload_type_is_any_object() -> None:
    data = {
        "id": "demo",
        "scopes": [{"name": "things", "description": "Things"}],
        "events": [{"name": "thing:made", "scope": "things"}],
    }
    [made, ping] = event_catalog(parse_manifest(data, package="demo"))
    assert made["schema"]["type"] == "object"
    assert "properties" not in made["schema"]
    assert ping["name"] == PING


# -- the catalog -----------------------------------------------------------------------------


def test_the_catalog_is_public_json(client: Any) -> None:
    response = client.get("/api/webhooks/events")
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    events = catalog(client)
    assert list(events) == ["thing:created", PING]
    thing = events["thing:created"]
    assert thing["description"] == "A thing was created"
    assert thing["scope"] == "sample/things:RO"
    assert thing["audience"] == "public"
    schema = thing["schema"]
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["properties"]["id"] == {"type": "integer"}
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.validate({"id": 7, "name": "seven"}, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"id": "7", "name": "seven"}, schema)
    assert events[PING]["scope"] is None


def test_the_catalog_answers_other_methods_with_the_usual_error_body(client: Any) -> None:
    response = client.post("/api/webhooks/events", json={})
    assert response.status_code == 405
    assert response.get_json()["errors"][0]["reason"]


# -- ping ------------------------------------------------------------------------------------


def test_ping_makes_one_delivery_for_that_subscription_only(
    app: Any, client: Any, bearer: Any, nudges: Nudges
) -> None:
    bob = create_user(app, "bob")
    sid = subscribe(client, bearer())
    other = subscribe(client, bearer())
    bobs = subscribe(client, bearer(who=bob))
    response = client.post(f"/api/webhooks/{sid}/ping", headers=bearer())
    assert response.status_code == 202, response.get_data(as_text=True)
    body = response.get_json()
    assert (body["event"], body["status"]) == (PING, "pending")
    assert nudges.deliveries == [body["id"]]
    with app.extensions["srcore"].db.transaction() as session:
        [row] = session.scalars(select(OutboxRow)).all()
        assert row.event == PING and row.fanned_out_at is not None
        assert json.loads(row.payload)["subscription"] == sid
        deliveries = session.execute(select(Delivery.subscription_id, Delivery.id)).all()
        assert deliveries == [(sid, body["id"])]
    listed = client.get(f"/api/webhooks/{sid}/deliveries", headers=bearer()).get_json()
    assert [d["event"] for d in listed["results"]] == [PING]

    assert deliver_pending(app) == {sid: [PING]}
    with app.extensions["srcore"].db.transaction() as session:
        delivery = session.get(Delivery, body["id"])
        assert delivery is not None and delivery.status == DeliveryStatus.delivered
        payload = json.loads(session.get(OutboxRow, delivery.outbox_id).payload)  # type: ignore[union-attr]
    jsonschema.validate(payload, catalog(client)[PING]["schema"])
    assert other not in deliver_pending(app) and bobs not in deliver_pending(app)


def test_ping_is_refused_sensibly(app: Any, client: Any, bearer: Any, nudges: Nudges) -> None:
    bob = create_user(app, "bob")
    sid = subscribe(client, bearer())
    # someone else's is not found; a read-only token may not send one
    assert client.post(f"/api/webhooks/{sid}/ping", headers=bearer(who=bob)).status_code == 404
    read_only = client.post(f"/api/webhooks/{sid}/ping", headers=bearer("sample/things:RO"))
    assert read_only.status_code == 403
    assert client.post(f"/api/webhooks/{sid}/ping").status_code == 401
    # one at a time
    assert client.post(f"/api/webhooks/{sid}/ping", headers=bearer()).status_code == 202
    again = client.post(f"/api/webhooks/{sid}/ping", headers=bearer())
    assert again.status_code == 429
    assert int(again.headers["Retry-After"]) > 0
    assert "test event" in again.get_json()["errors"][0]["reason"]
    # a disabled subscription gets nothing
    client.patch(f"/api/webhooks/{sid}", json={"enabled": False}, headers=bearer())
    disabled = client.post(f"/api/webhooks/{sid}/ping", headers=bearer())
    assert disabled.status_code == 409
    assert "disabled" in disabled.get_json()["errors"][0]["reason"]
    assert len(nudges.deliveries) == 1
    with app.extensions["srcore"].db.transaction() as session:
        assert len(session.scalars(select(Delivery)).all()) == 1


def test_the_page_sends_a_test_event(app: Any, client: Any, user: Any, nudges: Nudges) -> None:
    log_in_client(client, user)
    with app.extensions["srcore"].db.transaction() as session:
        sub = Subscription(
            owner_id=user.id, url=HOOK, events="thing:created", scopes=SCOPES, secret="whsec_x"
        )
        session.add(sub)
        session.flush()
        sid = sub.id
    page = client.get(f"/webhooks/{sid}").get_data(as_text=True)
    assert f'action="/webhooks/{sid}/ping"' in page and "Send test event" in page
    token = _CSRF.search(page).group(1)  # type: ignore[union-attr]
    assert client.post(f"/webhooks/{sid}/ping").status_code == 400  # no CSRF token
    response = client.post(f"/webhooks/{sid}/ping", data={"csrf_token": token})
    assert response.status_code == 302
    assert response.headers["Location"].endswith(f"/webhooks/{sid}")
    shown = client.get(f"/webhooks/{sid}").get_data(as_text=True)
    assert "test event" in shown and "<code>ping</code>" in shown
    assert len(nudges.deliveries) == 1
    client.post(f"/webhooks/{sid}/ping", data={"csrf_token": token})
    assert "before sending another" in client.get(f"/webhooks/{sid}").get_data(as_text=True)
    assert len(nudges.deliveries) == 1
    client.post(f"/webhooks/{sid}/disable", data={"csrf_token": token})
    client.post(f"/webhooks/{sid}/ping", data={"csrf_token": token})
    assert "enable it before sending" in client.get(f"/webhooks/{sid}").get_data(as_text=True)
    assert len(nudges.deliveries) == 1
