"""Acceptance: every form POST route of todo is rejected without a CSRF token.

The routes are enumerated from ``app.url_map``, so a new form route is covered the day it
is added (and a route with an unknown URL parameter fails here until it is given one).
"""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select
from todo.models import Base

from srcore.app import API_PREFIX
from srcore.testing import log_in_client
from srcore.webhooks.models import WebhookBase

UNSAFE = {"POST", "PUT", "PATCH", "DELETE"}
# Not forms: the API takes bearer tokens, /_srcore/ takes meta's signed pushes.
MACHINE_PREFIXES = (API_PREFIX, "/_srcore/")
# A body every form route would accept: with a token, each of these requests succeeds.
VALID_BODY = {
    "name": "bugs",
    "description": "changed",
    "visibility": "private",
    "title": "A new ticket",
    "text": "A comment",
    "status": "resolved",
    "resolution": "fixed",
    "confirm": "bugs",
    # srcore's webhook form (/webhooks/new), which every service has
    "url": "https://hooks.example.org/todo",
    "events": "ticket:created",
}
# ... except that a new tracker needs a name of its own.
OVERRIDES = {"todo.create_tracker": {"name": "another"}}
CSRF_REASON = "missing its security token"
#: What a successful POST answers, where it is not a redirect: a new webhook's page shows
#: its secret once, so it is rendered rather than redirected to.
SUCCESS = {"srcore_webhooks.new": 201}


def form_routes(routes: list[tuple[str, str, str]]) -> list[tuple[str, str, str]]:
    """The unsafe non-API routes; destructive ones last, so the control requests below
    still find the rows they need."""
    found = [
        (endpoint, method, path)
        for endpoint, method, path in routes
        if method in UNSAFE and not path.startswith(MACHINE_PREFIXES)
    ]
    found.sort(key=lambda r: (r[0] == "srcore_logout", r[0] == "todo.delete_tracker", r[0]))
    return found


def snapshot(app: Any) -> dict[str, list[tuple[Any, ...]]]:
    with app.extensions["srcore"].db.transaction() as session:
        return {
            table.name: [
                tuple(row) for row in session.execute(select(table).order_by(*table.primary_key))
            ]
            for table in [*Base.metadata.sorted_tables, *WebhookBase.metadata.sorted_tables]
            if table.name != "srcore_webhook_outbox"  # events are tested elsewhere
        }


@pytest.fixture
def rows(make, user, tracker, ticket):
    make.comment(ticket, user)


def test_csrf_is_enforced_under_testing(app):
    assert app.config["TESTING"] is True
    assert app.config.get("WTF_CSRF_ENABLED", True) is not False


def test_the_form_routes_are_all_found(routes):
    endpoints = {endpoint for endpoint, _, _ in form_routes(routes)}
    assert {
        "todo.create_tracker",
        "todo.tracker_settings",
        "todo.delete_tracker",
        "todo.new_ticket",
        "todo.comment",
        "todo.ticket_status",
        "srcore_logout",
        "srcore_webhooks.new",
    } <= endpoints


@pytest.mark.usefixtures("rows")
def test_every_form_post_is_rejected_without_a_csrf_token(app, user, csrf, routes):
    routes = form_routes(routes)
    client = log_in_client(app.test_client(), user)
    before = snapshot(app)
    for endpoint, method, path in routes:
        body = {**VALID_BODY, **OVERRIDES.get(endpoint, {})}
        for kind in ("form", "json", "bad-token", "token-of-another-session"):
            if kind == "form":
                response = client.open(path, method=method, data=body)
            elif kind == "json":
                response = client.open(path, method=method, json=body)
            elif kind == "bad-token":
                response = client.open(path, method=method, data={**body, "csrf_token": "forged"})
            else:
                other = log_in_client(app.test_client(), user)
                token = csrf.token(other)
                response = client.open(path, method=method, data={**body, "csrf_token": token})
            assert response.status_code == 400, (endpoint, kind, response.status_code)
            assert CSRF_REASON in response.get_data(as_text=True), (endpoint, kind)
            assert snapshot(app) == before, (endpoint, kind)
    # still logged in: the failed logout did not end the session
    assert client.get("/create").status_code == 200

    anonymous = app.test_client()
    for endpoint, method, path in routes:
        response = anonymous.open(path, method=method, data=VALID_BODY)
        assert response.status_code == 400, endpoint
    assert snapshot(app) == before

    # Control: the same requests with the session's token do get through.
    token = csrf.token(client)
    for endpoint, method, path in routes:
        body = {**VALID_BODY, **OVERRIDES.get(endpoint, {}), "csrf_token": token}
        response = client.open(path, method=method, data=body)
        expected = SUCCESS.get(endpoint, 302)
        assert response.status_code == expected, (endpoint, response.status_code)
    assert snapshot(app) != before
