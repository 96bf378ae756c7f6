"""srcore's pytest plugin is opt-in: installing srcore adds no fixture to anyone's tests.

Fixtures named ``app``, ``client``, ``db`` and ``user`` are common names; a plugin loaded
through an entry point would put them into every pytest run of any environment srcore is
installed in. A suite asks for them with ``pytest_plugins = ["srcore.testing"]``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
OPT_IN = 'pytest_plugins = ["srcore.testing"]'


def _pytest(directory: Path, *options: str) -> subprocess.CompletedProcess[str]:
    drop = ("PYTEST_", "SRCORE_", "CI")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *options, str(directory)],
        cwd=directory,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def test_srcore_registers_no_pytest_entry_point() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert "pytest11" not in pyproject["project"].get("entry-points", {})
    installed = [
        ep for ep in metadata.entry_points(group="pytest11") if ep.value == "srcore.testing"
    ]
    assert installed == []


def test_a_suite_without_the_opt_in_sees_no_srcore_fixture(tmp_path: Path) -> None:
    (tmp_path / "test_alone.py").write_text("def test_uses_app(app):\n    pass\n")
    result = _pytest(tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "fixture 'app' not found" in result.stdout


def test_a_conftest_that_opts_in_gets_the_fixtures(tmp_path: Path) -> None:
    (tmp_path / "conftest.py").write_text(OPT_IN + "\n")
    (tmp_path / "test_opted.py").write_text(
        "def test_fixtures(request):\n"
        "    key = request.getfixturevalue('srcore_signing_key')\n"
        "    assert key.kid == 'srcore-test'\n"
        "def test_markers(pytestconfig):\n"
        "    assert any(m.startswith('browser:') for m in pytestconfig.getini('markers'))\n"
    )
    result = _pytest(tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 passed" in result.stdout


@pytest.mark.parametrize(
    "conftest",
    [
        "tests/conftest.py",
        "example_services/todo/tests/conftest.py",
        "example_services/meta/tests/conftest.py",
        "example_services/paste/tests/conftest.py",
        "srcore/scaffold/skeleton/tests/conftest.py.tmpl",
    ],
)
def test_every_suite_and_the_new_service_template_opt_in(conftest: str) -> None:
    assert OPT_IN in (ROOT / conftest).read_text(encoding="utf-8")


def test_without_psycopg_the_postgresql_runs_skip_and_say_which_extra(tmp_path: Path) -> None:
    (tmp_path / "conftest.py").write_text(
        "import sys\nsys.modules['psycopg'] = None  # as if srcore[postgres] were not installed\n"
        + OPT_IN
        + "\n"
    )
    (tmp_path / "test_backends.py").write_text("def test_backend(srcore_backend):\n    pass\n")
    result = _pytest(tmp_path, "-rs")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed, 1 skipped" in result.stdout
    assert "pip install 'srcore[postgres]'" in result.stdout


def test_before_first_write_runs_the_change_once_between_read_and_write(
    app: Any, user: Any
) -> None:
    """The other request's change commits after the view read and before its first write."""
    from sqlalchemy import select

    from srcore.testing import before_first_write

    st = app.extensions["srcore"]
    user_model = st.user_model
    seen: list[str] = []

    def rename() -> None:
        with st.db.transaction() as other:
            other.get(user_model, user.id).username = "renamed"
        seen.append("change")

    with before_first_write(app) as change_meanwhile:
        change_meanwhile(rename)
        with st.db.transaction() as session:
            read = session.scalar(select(user_model.username).where(user_model.id == user.id))
            seen.append(f"read {read}")
            session.get(user_model, user.id).email = "new@example.org"
            session.flush()
            seen.append("write")
        with st.db.transaction() as session:  # nothing left to run
            session.get(user_model, user.id).email = "again@example.org"
    assert seen == [f"read {user.username}", "change", "write"]
