"""A service made by ``srcore new-service`` passes the checks its author's first CI run
makes, as generated: ``ruff check``, ``ruff format --check`` and ``mypy --strict``, under
the settings of its own ``pyproject.toml``, whatever it is called.

Its tests passing as generated is tests/test_scaffold.py's acceptance test; the tutorial's
own changes (its section 7) and the checks after them are tests/test_tutorial.py's literal
run. Here the projects are generated once per module and checked by the ruff and mypy of
this environment, as subprocesses run in the project's directory, outside this checkout,
so that only the project's own settings apply.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from srcore.scaffold import ScaffoldError, create_service
from srcore.scaffold.generate import check_migration, package_name

BIN = Path(sys.executable).parent
#: Each subprocess is bounded; mypy with a cold cache takes 15 s on 2 idle cores, more on busy ones.
TIMEOUT = 300
#: One word, the shortest, digits, dashes, and the longest id with dashes and digits: the
#: names end up in lines of code, whose length the formatter judges.
NAMES = ("notes", "qz", "blog2", "my-notes", "a1-b2-c3-d4-e5-f6-g7-h8-i9-j10-k")


@pytest.fixture(scope="module")
def projects(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The generated projects by service id, in a directory outside this checkout."""
    root = tmp_path_factory.mktemp("services")
    assert max(len(name) for name in NAMES) == 32
    return {name: create_service(name, root, installed=()).path for name in NAMES}


def _env() -> dict[str, str]:
    """This environment without the variables that would point the tools elsewhere."""
    return {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("MYPY", "RUFF_", "PYTHON", "SRCORE_", "PYTEST_"))
    }


def _run(project: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / argv[0]), *argv[1:]],
        cwd=project,
        capture_output=True,
        text=True,
        env=_env(),
        timeout=TIMEOUT,
        check=False,
    )


@pytest.mark.parametrize("name", NAMES)
def test_ruff_check_passes_as_generated(projects: dict[str, Path], name: str) -> None:
    result = _run(projects[name], "ruff", "check", "--no-cache", "--output-format", "concise")
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("name", NAMES)
def test_ruff_format_check_passes_as_generated(projects: dict[str, Path], name: str) -> None:
    result = _run(projects[name], "ruff", "format", "--check", "--no-cache")
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.fullmatch(r"\d+ files already formatted\n", result.stdout), result.stdout


def test_the_project_carries_the_settings_a_service_author_expects(
    projects: dict[str, Path],
) -> None:
    """The checks above and below are the project's own: its pyproject.toml says how."""
    project = tomllib.loads((projects["my-notes"] / "pyproject.toml").read_text())
    tool = project["tool"]
    assert tool["ruff"]["line-length"] == 100
    assert {"E", "F", "W", "I", "B", "UP", "S"} <= set(tool["ruff"]["lint"]["select"])
    assert "ignore" not in tool["ruff"]["lint"]
    assert tool["ruff"]["lint"]["isort"]["known-first-party"] == ["my_notes"]
    assert tool["mypy"]["strict"] is True
    assert tool["mypy"]["files"] == ["my_notes", "tests"]
    assert "overrides" not in tool["mypy"]
    lint = project["dependency-groups"]["lint"]
    assert [re.split(r"[<>=]", tool_)[0] for tool_ in lint] == ["ruff", "mypy"]
    # No blanket silencing in the code either.
    for path in projects["my-notes"].rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        assert "# type: ignore" not in text and "noqa" not in text, path


def test_mypy_strict_passes_as_generated(projects: dict[str, Path], tmp_path: Path) -> None:
    """Once, on the name with a dash and digits: the package and its tests, strict."""
    project = projects["a1-b2-c3-d4-e5-f6-g7-h8-i9-j10-k"]
    result = _run(project, "mypy", "--cache-dir", str(tmp_path / "mypy-cache"))
    assert result.returncode == 0, result.stdout + result.stderr
    # The package (5 modules and the first migration) and the tests (2), all of them.
    assert "Success: no issues found in 8 source files" in result.stdout, result.stdout


def test_the_first_migration_is_checked_against_the_models(
    projects: dict[str, Path],
) -> None:
    """The first migration is the skeleton's, laid out for ruff: new-service checks that it
    creates exactly the models' tables, and refuses to write the package if it does not."""
    project = projects["blog2"]
    package = project / package_name("blog2")
    check_migration(package, "blog2")  # as generated: nothing left to migrate
    models = package / "models.py"
    text = models.read_text(encoding="utf-8")
    title = "    title: Mapped[str] = mapped_column(String(TITLE_MAX))\n"
    models.write_text(text.replace(title, title + "    extra: Mapped[int]\n"))
    try:
        with pytest.raises(ScaffoldError, match=r"does not match the models.*extra"):
            check_migration(package, "blog2")
    finally:
        models.write_text(text)
