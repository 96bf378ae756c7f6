"""``OPTIONS`` as an anonymous client: every route answers with its methods, logged in or not.

Flask answers ``OPTIONS`` itself (``Allow``, no view run), but a blueprint's
``before_request`` runs first: the webhook pages, guarded there by ``login_required``,
sent the client to log in (or answered 503 with no account service) where every other
route answered ``Allow``. The answer must run no view body and no guard's body.
"""

from __future__ import annotations

import http.client
import importlib
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from flask import Blueprint

from srcore.auth.web import login_required
from srcore.testing import free_port, run_service, write_config

PLACEHOLDER = re.compile(r"<(?:[^>:]*:)?[^>]*>")


def build(tmp_path: Path, service: str) -> Any:
    path = write_config(
        tmp_path / "config.ini",
        service_id=service,
        database_url=f"sqlite:///{tmp_path / 'db.sqlite'}",
    )
    return importlib.import_module(service).create_app(config=path)


def recorded(app: Any) -> list[str]:
    """Every view of *app* records its endpoint when it runs."""
    ran: list[str] = []

    def recording(endpoint: str, view: Callable[..., Any]) -> Callable[..., Any]:
        def run(*args: Any, **kwargs: Any) -> Any:
            ran.append(endpoint)
            return view(*args, **kwargs)

        return run

    for endpoint, view in list(app.view_functions.items()):
        app.view_functions[endpoint] = recording(endpoint, view)
    return ran


@pytest.mark.parametrize("service", ["todo", "meta", "paste"])
def test_every_route_answers_options_with_its_methods(tmp_path: Path, service: str) -> None:
    app = build(tmp_path, service)
    ran = recorded(app)
    client = app.test_client()
    wrong = []
    for rule in app.url_map.iter_rules():
        response = client.open(PLACEHOLDER.sub("1", rule.rule), method="OPTIONS")
        allowed = {m.strip() for m in response.headers.get("Allow", "").split(",")}
        if response.status_code != 200 or not rule.methods <= allowed or response.data:
            wrong.append((rule.rule, response.status_code, response.headers.get("Location")))
    assert wrong == []
    assert ran == []


def test_a_guarded_blueprint_answers_options_without_running_its_guard(tmp_path: Path) -> None:
    import sample_service

    path = write_config(
        tmp_path / "config.ini",
        service_id="sample",
        database_url=f"sqlite:///{tmp_path / 'sample.db'}",
    )
    app = sample_service.create_app(config=path)
    guarded = Blueprint("guarded", __name__, url_prefix="/guarded")
    ran: list[str] = []

    @guarded.before_request
    @login_required
    def guard() -> None:
        ran.append("guard")

    @guarded.route("/page", methods=["GET", "POST"])
    def page() -> str:
        ran.append("page")
        return "page"

    @guarded.route("/own-options", methods=["GET", "OPTIONS"])
    @login_required
    def own_options() -> str:  # answers OPTIONS itself: the login is its business
        ran.append("own-options")
        return "own"

    app.register_blueprint(guarded)
    client = app.test_client()
    response = client.open("/guarded/page", method="OPTIONS")
    assert response.status_code == 200
    assert set(response.headers["Allow"].split(", ")) == {"GET", "HEAD", "POST", "OPTIONS"}
    assert ran == []
    assert client.get("/guarded/page").status_code == 503  # no account service: no login
    assert client.open("/guarded/own-options", method="OPTIONS").status_code == 503
    assert ran == []


def test_under_gunicorn_the_webhook_pages_answer_options(tmp_path: Path) -> None:
    """As a raw client meets the server: ``Allow``, no redirect, no 503."""
    from srcore.app import migration_target
    from srcore.migrate import upgrade_all

    config = write_config(
        tmp_path / "config.ini",
        service_id="todo",
        database_url=f"sqlite:///{tmp_path / 'todo.db'}",
    )
    upgrade_all(migration_target("todo", config))
    port = free_port()
    answers = {}
    with run_service("todo", config, port=port, workers=1, timeout=60):
        for path in ("/webhooks", "/webhooks/new", "/webhooks/7/edit", "/create", "/healthz"):
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            try:
                connection.request("OPTIONS", path)
                response = connection.getresponse()
                response.read()
                allow = set((response.getheader("Allow") or "").split(", "))
                answers[path] = (response.status, allow)
            finally:
                connection.close()
    reads, forms = {"GET", "HEAD", "OPTIONS"}, {"GET", "HEAD", "OPTIONS", "POST"}
    assert answers == {
        "/webhooks": (200, reads),
        "/webhooks/new": (200, forms),
        "/webhooks/7/edit": (200, forms),
        "/create": (200, forms),
        "/healthz": (200, reads),
    }
