"""`srcore migrate SERVICE revision --autogenerate` as a first service's author sees it:
the script it writes passes the service's ruff, and what it prints says nothing is wrong
when nothing is."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from srcore import migrate
from srcore.scaffold.generate import create_service


def test_a_written_migration_prints_no_complaint_ruff_then_fixes(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """`srcore migrate SERVICE revision --autogenerate` printed ruff's E501 for the long
    lines of Alembic's layout, which the format step after it then wrapped: a complaint
    about nothing left in the script."""
    project = create_service("notes", tmp_path, installed=()).path
    models = project / "notes" / "models.py"
    models.write_text(
        models.read_text().replace('__tablename__ = "item"', '__tablename__ = "a_note"')
    )
    name = f"_newcomer_models_{uuid.uuid4().hex}"
    spec = importlib.util.spec_from_file_location(name, models)
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
    migrate.upgrade(target)
    capfd.readouterr()
    script = migrate.revision(target, "a note", autogenerate=True)
    printed = capfd.readouterr()
    assert "E501" not in printed.out + printed.err, printed
    assert "fk_a_note_owner_id_user" in script.read_text()
    for argv in (["check"], ["format", "--check"]):
        result = subprocess.run(
            [str(Path(sys.executable).parent / "ruff"), *argv, "--no-cache", str(script)],
            cwd=project,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stdout + result.stderr
