"""A JSON body's key that nothing reads is a 400 naming it, with nothing changed.

A client that misspells a field (``{"titel": "x"}`` to PATCH a ticket) or sends one the
operation does not take (``{"status": "resolved"}`` to open a ticket) used to get a 2xx
and believe its change was made. Every JSON-body operation of meta, todo and paste (the
routes under ``/api/`` that take a body, found in the url map and the OpenAPI document)
is called with otherwise good bodies plus unknown keys: each answer is a 400 whose errors
name every unknown key, no row of the database changed, and the same body without them
then succeeds. Form posts from the pages keep ignoring what they do not read.
"""

from __future__ import annotations

import json
import re
import warnings
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import MetaData, select
from sqlalchemy.exc import SAWarning

from srcore.testing import create_user
from srcore.validation import (
    MAX_UNKNOWN_NAME,
    MAX_UNKNOWN_NAMED,
    Validation,
    ValidationFailed,
    error_body,
)

SERVICES = ["meta", "todo", "paste"]

#: Unknown keys sent with every body: a misspelling, a made-up one, one holding an object.
#: (A key that is a field elsewhere, a status for a new ticket, is tested with todo below.)
EXTRA = {"titel": "lost", "colour": "red", "x-unknown": {"nested": True}}


@pytest.fixture(scope="module", params=SERVICES)
def srcore_service(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


def _full_scope(app: Flask) -> str:
    manifest = app.extensions["srcore"].manifest
    return " ".join(f"{manifest.id}/{scope.name}:RW" for scope in manifest.scopes)


def _token(app: Flask, make_token: Any) -> tuple[str, dict[str, Any]]:
    """A token of alice's with every scope of the service, and the path values of her rows."""
    service = app.extensions["srcore"].service_id
    alice = create_user(app, "alice", **({"password_hash": "x"} if service == "meta" else {}))
    if service == "meta":
        from meta.oauth.pats import create_token

        from srcore.db import session

        with app.app_context():
            _row, token = create_token(
                session.merge(alice), name="seeded", scope=_full_scope(app), days=1
            )
            session.commit()
        return token, {}
    if service == "todo":
        from todo import logic
        from todo.models import Tracker

        with app.extensions["srcore"].db.transaction() as session:
            tracker = Tracker(owner_id=alice.id, name="bugs")
            session.add(tracker)
            session.flush()
            logic.create_ticket(session, tracker, session.merge(alice), {"title": "crash"})
        return make_token(_full_scope(app), user=alice), {"name": "bugs", "number": "1"}
    return make_token(_full_scope(app), user=alice), {}


def _snapshot(app: Flask) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table, in a stable order."""
    engine = app.extensions["srcore"].db.engine
    meta = MetaData()
    with warnings.catch_warnings():  # an expression index is no row
        warnings.simplefilter("ignore", SAWarning)
        meta.reflect(engine)
    rows: dict[str, list[tuple[Any, ...]]] = {}
    with engine.connect() as conn:
        for table in meta.sorted_tables:
            found = [tuple(map(repr, row)) for row in conn.execute(select(table))]
            rows[table.name] = sorted(found)
    return rows


def _good_bodies(app: Flask) -> dict[str, dict[str, Any]]:
    """A body each JSON-body operation accepts (with :data:`EXTRA` it must refuse)."""
    manifest = app.extensions["srcore"].manifest
    event = manifest.user_events[0].name
    scope = f"{manifest.id}/{manifest.scopes[0].name}:RO"
    return {
        "POST /api/webhooks": {"url": "https://hooks.example.invalid/a", "events": [event]},
        "PATCH /api/webhooks/{subscription_id}": {"enabled": False},
        "POST /api/webhooks/{subscription_id}/rotate": {"overlap": 0},
        "POST /api/tokens": {"name": "second", "scopes": [scope]},
        "POST /api/trackers": {"name": "other"},
        "PATCH /api/trackers/{name}": {"description": "changed"},
        "POST /api/trackers/{name}/tickets": {"title": "new one"},
        "PATCH /api/trackers/{name}/tickets/{number}": {"title": "renamed"},
        "POST /api/trackers/{name}/tickets/{number}/comments": {"text": "a comment"},
        "POST /api/pastes": {"text": "hello"},
    }


def _body_operations(app: Flask) -> dict[str, str]:
    """The JSON-body operations, label to path template, checked against the url map:
    every write route under /api/ is described, and those with a body are returned."""
    client = app.test_client()
    document = client.get("/api/openapi.json").get_json()
    described: dict[str, bool] = {}
    templates: dict[str, str] = {}
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if method.upper() in {"POST", "PUT", "PATCH", "DELETE"}:
                label = f"{method.upper()} {path}"
                described[label] = "requestBody" in operation
                templates[label] = path
                if "requestBody" in operation:
                    schema = operation["requestBody"]["content"]["application/json"]["schema"]
                    assert schema["additionalProperties"] is False, label
    routed = set()
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith("/api/"):
            continue
        path = re.sub(r"<(?:[^<>]*:)?(\w+)>", r"{\1}", rule.rule)
        for method in (rule.methods or set()) & {"POST", "PUT", "PATCH", "DELETE"}:
            routed.add(f"{method} {path}")
    assert routed <= set(described), routed - set(described)
    return {label: templates[label] for label, body in described.items() if body}


@pytest.fixture
def called(app: Flask, make_token: Any) -> tuple[Any, dict[str, str], dict[str, Any]]:
    from srcore.outbound.targets import set_resolver

    set_resolver(app, lambda host, port, timeout: None)
    token, values = _token(app, make_token)
    client = app.test_client()
    headers = {"Authorization": f"Bearer {token}"}
    event = app.extensions["srcore"].manifest.user_events[0].name
    made = client.post(
        "/api/webhooks",
        json={"url": "https://hooks.example.invalid/seeded", "events": [event]},
        headers=headers,
    )
    assert made.status_code == 201, made.get_data(as_text=True)
    values["subscription_id"] = str(made.get_json()["id"])
    return client, headers, values


def _path(template: str, values: dict[str, Any]) -> str:
    for name, value in values.items():
        template = template.replace("{" + name + "}", value)
    assert "{" not in template, template
    return template


def test_every_json_body_operation_refuses_unknown_keys_and_changes_nothing(
    app: Flask, called: tuple[Any, dict[str, str], dict[str, Any]]
) -> None:
    client, headers, values = called
    operations = _body_operations(app)
    good = _good_bodies(app)
    assert set(operations) <= set(good), set(operations) - set(good)
    assert any(label.startswith("POST /api/webhooks") for label in operations)
    before = _snapshot(app)
    for label, template in sorted(operations.items()):
        method = label.split()[0]
        body = {**good[label], **EXTRA}
        answer = client.open(_path(template, values), method=method, json=body, headers=headers)
        assert answer.status_code == 400, (label, answer.get_data(as_text=True))
        errors = answer.get_json()["errors"]
        named = {err.get("field") for err in errors}
        assert named == set(EXTRA), (label, errors)
        for err in errors:
            assert "Unknown field" in err["reason"] and err["field"] in err["reason"]
    assert _snapshot(app) == before
    # The bodies were good but for the unknown keys: without them, each succeeds.
    for label, template in sorted(operations.items()):
        method = label.split()[0]
        answer = client.open(
            _path(template, values), method=method, json=good[label], headers=headers
        )
        assert 200 <= answer.status_code < 300, (label, answer.get_data(as_text=True))


def test_a_single_misspelled_key_is_named_beside_the_other_problems(
    app: Flask, called: tuple[Any, dict[str, str], dict[str, Any]]
) -> None:
    client, headers, values = called
    before = _snapshot(app)
    path = _path("/api/webhooks/{subscription_id}", values)
    # PATCH may not change the resource: that key has its own error, not a second one.
    answer = client.patch(path, json={"enabld": False, "resource": "x:1"}, headers=headers)
    assert answer.status_code == 400
    errors = answer.get_json()["errors"]
    assert [err["field"] for err in errors] == ["resource", "enabld"]
    assert "cannot change" in errors[0]["reason"]
    assert _snapshot(app) == before


@pytest.mark.parametrize("srcore_service", ["todo"], indirect=True)
def test_todo_conditionally_read_and_nested_fields(
    app: Flask, called: tuple[Any, dict[str, str], dict[str, Any]]
) -> None:
    client, headers, values = called
    before = _snapshot(app)
    ticket = _path("/api/trackers/{name}/tickets/{number}", values)
    # resolution is a field of a ticket's status: sent with an open one, it is wrong, not
    # unknown; a nested object where text goes is refused for what it is.
    answer = client.patch(ticket, json={"status": "open", "resolution": "fixed"}, headers=headers)
    assert answer.status_code == 400
    assert [err["field"] for err in answer.get_json()["errors"]] == ["resolution"]
    assert "Unknown" not in answer.get_data(as_text=True)
    answer = client.patch(ticket, json={"title": {"titel": "x"}}, headers=headers)
    assert answer.status_code == 400
    assert [err["field"] for err in answer.get_json()["errors"]] == ["title"]
    # the outsider's two examples
    answer = client.patch(ticket, json={"titel": "x"}, headers=headers)
    assert answer.status_code == 400
    assert answer.get_json()["errors"][0]["field"] == "titel"
    tickets = _path("/api/trackers/{name}/tickets", values)
    answer = client.post(tickets, json={"title": "t", "status": "closed"}, headers=headers)
    assert answer.status_code == 400
    assert [err["field"] for err in answer.get_json()["errors"]] == ["status"]
    assert _snapshot(app) == before


@pytest.mark.parametrize("srcore_service", ["todo"], indirect=True)
def test_todo_form_posts_still_ignore_what_they_do_not_read(app: Flask) -> None:
    from srcore.testing import log_in_client

    alice = create_user(app, "alice")
    client = log_in_client(app.test_client(), alice)
    page = client.get("/create")
    assert page.status_code == 200
    found = re.search(r'name="csrf_token" value="([^"]+)"', page.get_data(as_text=True))
    assert found is not None
    # a browser sends the CSRF token and the submit button beside the fields
    form = {"csrf_token": found.group(1), "name": "formed", "submit": "Create", "titel": "x"}
    answer = client.post("/create", data=form)
    assert answer.status_code in (302, 303), answer.get_data(as_text=True)


# -- the rule itself, on Validation --------------------------------------------------------


def _json_request(app: Flask, body: object) -> Any:
    return app.test_request_context("/", method="POST", json=body)


def test_validation_reads_decide_what_is_known(app: Flask) -> None:
    with _json_request(app, {"a": "1", "b": "2", "c": "3", "d": None}):
        valid = Validation()
        assert "b" in valid  # asking whether a key is there reads nothing
        valid.require("a")
        valid.known("c")  # read only when some other field has a value
        assert valid.unknown_fields() == ["b", "d"]
        with pytest.raises(ValidationFailed) as raised:
            valid.raise_if_invalid()
    body = error_body(raised.value.validation.errors)
    assert [item.get("field") for item in body["errors"]] == ["b", "d"]
    assert raised.value.status == 400


def test_validation_names_a_bounded_number_of_unknown_fields(app: Flask) -> None:
    many = {f"k{i}": i for i in range(MAX_UNKNOWN_NAMED + 5)}
    long_key = "y" * 10_000
    with _json_request(app, {long_key: 1, **many}):
        valid = Validation()
        with pytest.raises(ValidationFailed) as raised:
            valid.raise_if_invalid()
    errors = raised.value.validation.errors
    assert len(errors) == MAX_UNKNOWN_NAMED + 1
    assert errors[0].field is not None and len(errors[0].field) <= MAX_UNKNOWN_NAME
    assert errors[-1].field is None and "6 more unknown fields" in errors[-1].reason
    assert len(json.dumps(error_body(errors))) < 20_000


def test_forms_query_strings_and_given_data_have_no_unknown_fields(app: Flask) -> None:
    with app.test_request_context("/", method="POST", data={"a": "1", "csrf_token": "t"}):
        valid = Validation()
        valid.require("a")
        valid.raise_if_invalid()
    with app.test_request_context("/?a=1&b=2", method="GET"):
        valid = Validation()
        valid.require("a")
        valid.raise_if_invalid()
    valid = Validation(data={"a": "1", "b": "2"})
    valid.require("a")
    valid.raise_if_invalid()
