"""The package itself: manifest, routes' scopes, migrations and ticket numbering."""

from __future__ import annotations

import importlib
import importlib.resources
import threading
from pathlib import Path

from sqlalchemy import inspect
from todo.models import Base, Ticket, Tracker, User

from srcore import migrate
from srcore.manifest import load_manifest

VERSIONS = Path(str(importlib.resources.files("todo"))) / "migrations" / "versions"


def test_manifest():
    manifest = load_manifest("todo")
    assert manifest.id == "todo"
    assert {s.name for s in manifest.scopes} == {"trackers", "tickets"}
    assert {e.name: e.scope for e in manifest.events} == {
        "tracker:created": "trackers",
        "tracker:updated": "trackers",
        "tracker:deleted": "trackers",
        "ticket:created": "tickets",
        "ticket:updated": "tickets",
        "comment:created": "tickets",
    }
    (key,) = [k for k in manifest.config["todo"] if k.name == "tickets-per-page"]
    assert (key.type, key.default) == ("int", 25)


def test_importing_does_not_build_anything():
    module = importlib.import_module("todo")
    assert callable(module.create_app)
    assert module.__all__ == ["create_app"]


def test_every_api_route_requires_a_token(app, client):
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith("/api/"):
            continue
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            path = rule.rule.replace("<name>", "x").split("<")[0] + "1"
            response = client.open(path, method=method)
            assert response.status_code in (401, 404, 405), (rule.rule, method)


def test_migrations_match_the_models(app, srcore_database):
    target = migrate.MigrationTarget(
        service_id="todo",
        database_url=srcore_database.url,
        metadata=Base.metadata,
        versions_dir=VERSIONS,
    )
    assert migrate.pending_changes(target) == []
    assert migrate.pending_changes(target, lineage="srcore") == []
    assert migrate.current(target) == migrate.heads(target)


def test_service_lineage_does_not_touch_the_user_table():
    scripts = list(VERSIONS.glob("*.py"))
    assert scripts
    for script in scripts:
        source = script.read_text()
        assert 'create_table(\n        "user"' not in source
        assert '"user",' not in source.replace('["user.id"]', "")


def test_user_columns_are_the_cores(app):
    columns = {c.name for c in User.__table__.columns}
    assert all(User.__table__.c[name].info.get("srcore") for name in columns)
    engine = app.extensions["srcore"].db.engine
    assert {c["name"] for c in inspect(engine).get_columns("user")} == columns


def test_concurrent_submissions_get_distinct_numbers(app, make, tracker, user, srcore_backend):
    from todo import logic

    database = app.extensions["srcore"].db
    errors: list[BaseException] = []

    def submit(i: int) -> None:
        try:
            with database.transaction() as session:
                logic.create_ticket(
                    session,
                    session.get(Tracker, tracker.id),
                    session.merge(user),
                    {"title": f"concurrent {i}"},
                )
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=submit, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    with database.transaction() as session:
        numbers = sorted(t.number for t in session.query(Ticket).all())
    assert numbers == list(range(1, 9))
