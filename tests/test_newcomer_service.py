"""What someone writing their first service on srcore is told, checked from the outside:
`srcore new-service`'s output, the generated package's one-item route, the README's way to
a second user in tests, and the tutorial's word on renaming the generated model."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from click.testing import CliRunner

from srcore import migrate
from srcore.cli import _add_commands, cli
from srcore.scaffold.generate import create_service
from tests.conftest import run_probe

ROOT = Path(__file__).resolve().parent.parent

#: A test the newcomer would write in the generated package: it uses the generated
#: conftest and srcore's plugin only, as the README says.
PROBE = """\
from srcore.testing import create_user, log_in_client


def test_probe(app, client, user, make_token):
    alice = {"Authorization": f"Bearer {make_token('shelf/items:RW', user=user)}"}
    made = client.post("/api/items", json={"title": "Mine"}, headers=alice).get_json()
    path = f"/api/items/{made['id']}"
    assert client.get(path, headers=alice).get_json()["title"] == "Mine"
    bob = create_user(app, "bob")
    as_bob = {"Authorization": f"Bearer {make_token('shelf/items:RO', user=bob)}"}
    assert client.get(path, headers=as_bob).status_code == 404
    for too_big in (0, 2**31, 2**63, 10**30):
        assert client.get(f"/api/items/{too_big}", headers=alice).status_code == 404
    log_in_client(client, bob)
    page = client.get("/").get_data(as_text=True)
    assert "bob" in page
    assert "Mine" not in page
"""


def _invoke(*args: str, cwd: Path) -> str:
    _add_commands()
    old = Path.cwd()
    os.chdir(cwd)
    try:
        result = CliRunner().invoke(cli, list(args), prog_name="srcore")
    finally:
        os.chdir(old)
    assert result.exit_code == 0, result.output
    return result.output


def test_new_service_says_what_is_left_before_it_answers_in_the_network(tmp_path: Path) -> None:
    """A meta started before the section was added refuses the new client with "The
    client does not exist on this server", which does not say to restart it."""
    (tmp_path / "config.ini").write_text(
        "[global]\n\n[meta]\norigin = http://127.0.0.1:5000\ndatabase-url = sqlite:///m.db\n"
    )
    output = _invoke("new-service", "shelf", "--config", "config.ini", cwd=tmp_path)
    lines = output.splitlines()
    assert lines[-1].startswith("created shelf in ./shelf: 12 files; added [shelf]")
    steps = "\n".join(lines[lines.index("  adding [shelf] to config.ini") + 1 : -1])
    assert "pip install -e ./shelf" in steps
    assert "srcore --config config.ini migrate shelf upgrade" in steps
    assert "srcore --config config.ini serve shelf" in steps
    assert "restart meta" in steps and "OAuth client" in steps


def test_new_service_without_meta_does_not_ask_to_restart_it(tmp_path: Path) -> None:
    (tmp_path / "config.ini").write_text("[global]\n")
    output = _invoke("new-service", "shelf", "--config", "config.ini", cwd=tmp_path)
    assert "migrate shelf upgrade" in output
    assert "restart meta" not in output


def test_the_generated_item_route_is_a_404_for_others_and_for_impossible_ids(
    tmp_path: Path,
) -> None:
    """The generated README's `GET /api/items/ID` (another's item, or an id no row can
    have, is a 404, never the database's overflow error) and the README's second user in
    tests, in a test the newcomer adds to the generated package."""
    service = create_service("shelf", tmp_path, installed=[]).path
    result = run_probe(service, PROBE)
    assert " passed" in result.stdout


def test_a_renamed_model_leaves_its_old_table_as_the_tutorial_says(tmp_path: Path) -> None:
    """docs/tutorial.md section 4: autogenerate writes the new table and no drop of the
    old one, which the author adds."""
    assert 'add its\n`op.drop_table("item")` yourself' in (ROOT / "docs/tutorial.md").read_text()
    project = create_service("notes", tmp_path, installed=()).path
    models = project / "notes" / "models.py"
    text = models.read_text()
    assert '__tablename__ = "item"' in text
    models.write_text(text.replace('__tablename__ = "item"', '__tablename__ = "note"'))
    name = f"_newcomer_models_{uuid.uuid4().hex}"
    spec = importlib.util.spec_from_file_location(name, models)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    versions = project / "notes" / "migrations" / "versions"
    database = f"sqlite:///{tmp_path / 'db.sqlite'}"
    # The first migration creates "item", as generated.
    first = migrate.MigrationTarget(
        service_id="notes",
        database_url=database,
        metadata=module.Base.metadata,
        versions_dir=versions,
    )
    migrate.upgrade(first)
    script = migrate.revision(first, "rename", autogenerate=True).read_text()
    assert 'op.create_table(\n        "note"' in script or "op.create_table('note'" in script
    assert "drop_table" not in script.split("def downgrade")[0]


def test_downgrade_takes_alembics_relative_revision(tmp_path: Path) -> None:
    """`srcore migrate SERVICE downgrade -1`, as with Alembic, is one revision back; it
    was refused as an unknown option ("No such option '-1'")."""
    from srcore.migrate_cli import migrate_command

    project = create_service("notes", tmp_path, installed=()).path
    name = f"_newcomer_models_{uuid.uuid4().hex}"
    spec = importlib.util.spec_from_file_location(name, project / "notes" / "models.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    target = migrate.MigrationTarget(
        service_id="notes",
        database_url=f"sqlite:///{tmp_path / 'db.sqlite'}",
        metadata=module.Base.metadata,
        versions_dir=project / "notes" / "migrations" / "versions",
    )
    obj = {"target_loader": lambda service_id, config_path: target}
    runner = CliRunner()
    upgraded = runner.invoke(migrate_command, ["notes", "upgrade"], obj=obj)
    assert upgraded.exit_code == 0, upgraded.output
    assert "notes: " in upgraded.output and "(head)" in upgraded.output
    back = runner.invoke(migrate_command, ["notes", "downgrade", "-1"], obj=obj)
    assert back.exit_code == 0, back.output
    assert "notes: (none)" in back.output
    help_text = runner.invoke(migrate_command, ["notes", "downgrade", "--help"], obj=obj).output
    assert "downgrade -1" in help_text


def test_a_route_that_would_hand_an_impossible_id_to_the_database_is_named(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """`/links/<int:link_id>`, the first route a newcomer writes, answers 2**31 with the
    database's overflow error (a 500, on PostgreSQL; 2**63 on SQLite). The app says so
    when the route is added, naming the route and what to write instead."""
    from srcore.app import SrcoreApp
    from srcore.routing import init_app

    app = SrcoreApp("probe")
    init_app(app.url_map)
    with caplog.at_level("WARNING", logger="srcore.routing"):
        app.add_url_rule("/links/<id:link_id>", "fine", lambda link_id: "")
        app.add_url_rule("/pages/<int(max=99):number>", "bounded", lambda number: "")
        assert caplog.records == []
        app.add_url_rule("/api/links/<int:link_id>/edit", "edit", lambda link_id: "")
        app.add_url_rule("/api/links/<int:link_id>/edit", "save", lambda link_id: "")
    (record,) = caplog.records
    message = record.getMessage()
    assert "/api/links/<int:link_id>/edit" in message
    assert "<id:link_id>" in message and "500" in message


def test_the_generated_readme_takes_the_event_docs(tmp_path: Path) -> None:
    """The README says `srcore webhooks docs PACKAGE --readme README.md` writes the events
    into a README; on the generated package's own it stopped at "the markers are
    missing"."""
    service = create_service("shelf", tmp_path, installed=[]).path
    environ = {
        k: v for k, v in os.environ.items() if not k.startswith(("SRCORE_", "PYTEST_", "PYTHON"))
    }
    environ["PYTHONPATH"] = str(service)
    argv = ["webhooks", "docs", "shelf", "--readme", "README.md"]
    result = subprocess.run(
        [sys.executable, "-m", "srcore", *argv],
        cwd=service,
        capture_output=True,
        text=True,
        env=environ,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    readme = (service / "README.md").read_text()
    assert "### `item:created`" in readme
    assert "| `title` | string |" in readme


def test_a_service_not_installed_here_says_how_to_install_it() -> None:
    """`srcore migrate links upgrade` (or serve, worker) in another environment than the
    one the package was installed in said only "no installed service is called 'links'"."""
    from srcore.manifest import ManifestError, service_package

    with pytest.raises(ManifestError) as raised:
        service_package("nosuch-service")
    message = str(raised.value)
    assert message.startswith("no installed service is called 'nosuch-service' (installed: ")
    assert f"{sys.executable} -m pip install -e DIR" in message
    assert "'srcore.services' entry point" in message
