"""Packaging: the wheel carries the shared files and works from an empty venv; __all__ is honest."""

from __future__ import annotations

import importlib
import pkgutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import srcore

ROOT = Path(__file__).resolve().parent.parent


def _public_modules() -> list[str]:
    names = ["srcore"]
    for info in pkgutil.walk_packages(srcore.__path__, "srcore."):
        if not info.name.rsplit(".", 1)[-1].startswith("_"):
            names.append(info.name)
    return names


@pytest.mark.parametrize("name", _public_modules())
def test_all_is_honest(name: str) -> None:
    module = importlib.import_module(name)
    exported = getattr(module, "__all__", None)
    assert exported is not None, f"{name} has no __all__"
    for item in exported:
        assert hasattr(module, item), f"{name}.__all__ names missing {item!r}"
    assert len(set(exported)) == len(exported)


def test_import_reads_no_file_and_opens_no_connection(tmp_path: Path) -> None:
    code = (
        "import builtins, socket, sys\n"
        "opened = []\n"
        "real_open = builtins.open\n"
        "def spy(f, *a, **k):\n"
        "    opened.append(str(f)); return real_open(f, *a, **k)\n"
        "builtins.open = spy\n"
        "socket.socket.connect = lambda *a: sys.exit('connect at import')\n"
        "import srcore, srcore.app, srcore.db, srcore.config, srcore.auth, srcore.validation\n"
        "import srcore.migrate, srcore.rendering, srcore.cli, srcore.testing\n"
        "bad = [f for f in opened if f.endswith(('.ini', '.yaml', '.pem', '.key', '.db'))]\n"
        "sys.exit(f'opened at import: {bad}' if bad else 0)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={"SRCORE_CONFIG": str(tmp_path / "missing.ini"), "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.slow
def test_wheel_installs_and_works_in_an_empty_venv(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--outdir", str(dist), str(ROOT)],
        check=True,
        capture_output=True,
    )
    (wheel,) = dist.glob("srcore-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for required in (
        "srcore/py.typed",
        "srcore/templates/layout.html",
        "srcore/static/srcore.css",
        "srcore/migrations_base/env.py",
        "srcore/migrations_base/script.py.mako",
    ):
        assert required in names
    assert any(
        n.startswith("srcore/migrations_base/versions/") and n.endswith(".py") for n in names
    )

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", str(wheel)],
        check=True,
        capture_output=True,
    )
    check = (
        "import srcore.resources as r, pathlib, sys\n"
        "for name in ('templates', 'static', 'migrations_base'):\n"
        "    d = r.resource_dir(name)\n"
        "    assert 'site-packages' in str(d), d\n"
        "assert (r.resource_dir('templates') / 'layout.html').is_file()\n"
        "from srcore.config import load_config\n"
        "print('ok')\n"
    )
    out = subprocess.run([str(python), "-c", check], capture_output=True, text=True, cwd=tmp_path)
    assert out.stdout.strip() == "ok", out.stderr
    help_text = subprocess.run(
        [str(venv / "bin" / "srcore"), "--help"], capture_output=True, text=True
    )
    assert "config" in help_text.stdout and "migrate" in help_text.stdout, help_text.stderr


@pytest.mark.slow
def test_a_service_author_s_mypy_reads_srcore_s_types(tmp_path: Path) -> None:
    """srcore's API is typed for its users too: mypy --strict on a service's module that
    imports it checks the calls against srcore's annotations (the py.typed marker), where
    without it mypy refuses the import as a library without stubs."""
    module = tmp_path / "service_logic.py"
    module.write_text(
        "from srcore.validation import Validation\n\n\n"
        "def title(valid: Validation) -> str | None:\n"
        "    return valid.optional('title', max_length=100)\n\n\n"
        "def wrong(valid: Validation) -> int:\n"
        "    return valid.optional('title', max_length=100)\n"
    )
    found = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--cache-dir", str(tmp_path / "cache"), module],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert "import-untyped" not in found.stdout, found.stdout
    # srcore's own annotations are read: the wrong return type is found, the right one not.
    assert found.stdout.count("error:") == 1, found.stdout
    assert "service_logic.py:9: error: Incompatible return value" in found.stdout, found.stdout
