"""What docs/tutorial.md promises beyond what its literal run (tests/test_tutorial.py) can
see: the run follows the happy path, so a promise about a mistake is checked here."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from srcore.scaffold.generate import create_service

#: The generated suite's one test, run alone: a new venv is not needed for it.
MIGRATIONS_TEST = "test_migrations_match_the_models"


def _run_generated_test(service: Path) -> subprocess.CompletedProcess[str]:
    environ = {
        k: v for k, v in os.environ.items() if not k.startswith(("SRCORE_", "PYTEST_", "PYTHON"))
    }
    environ["PYTHONPATH"] = str(service)
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-k", MIGRATIONS_TEST],
        cwd=service,
        capture_output=True,
        text=True,
        env=environ,
        timeout=300,
    )


def test_a_forgotten_migration_fails_the_generated_tests(tmp_path: Path) -> None:
    """Section 7: "one of them, `test_migrations_match_the_models`, would fail had you
    forgotten the migration". The model gets the tutorial's url column, no migration."""
    service = create_service("bookmarks", tmp_path, installed=[]).path
    passed = _run_generated_test(service)
    assert passed.returncode == 0, passed.stdout[-3000:] + passed.stderr[-2000:]

    models = service / "bookmarks" / "models.py"
    text = models.read_text(encoding="utf-8")
    title = "    title: Mapped[str] = mapped_column(String(TITLE_MAX))\n"
    assert title in text
    url = "    url: Mapped[str | None] = mapped_column(String(2048))\n"
    models.write_text(text.replace(title, title + url), encoding="utf-8")
    failed = _run_generated_test(service)
    assert failed.returncode == 1, failed.stdout[-3000:] + failed.stderr[-2000:]
    assert f"FAILED tests/test_bookmarks.py::{MIGRATIONS_TEST}" in failed.stdout
    assert "'url'" in failed.stdout  # the report names the column left out
