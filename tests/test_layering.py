"""srcore's import layers, as the contracts in pyproject.toml's [tool.importlinter] say.

The CLI > the app > the features (webhooks, then auth, mail, metrics) > the base: a module
never imports one above it, not even inside a function (a deferred import is still a
dependency, and the cycles it closes are the ones a refactor trips over). Within a
package, too, modules import each other one way only.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _lint_imports(cwd: Path, config: Path) -> subprocess.CompletedProcess[str]:
    script = Path(sys.executable).parent / "lint-imports"
    assert script.is_file(), "import-linter is missing: pip install --group dev"
    return subprocess.run(
        [str(script), "--no-cache", "--no-logo", str(config)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def test_the_layers_hold() -> None:
    result = _lint_imports(ROOT, ROOT / "pyproject.toml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_module_of_srcore_has_a_layer() -> None:
    """A new module is placed in a layer, so the contract sees what it imports."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    (layers,) = [c["layers"] for c in config["contracts"] if c["id"] == "layers"]
    listed = {
        name.strip().strip("()") for layer in layers for name in layer.replace("|", ":").split(":")
    }
    modules = {
        f"srcore.{path.stem}"
        for path in (ROOT / "srcore").iterdir()
        if (path.suffix == ".py" and path.name != "__init__.py")
        or (path.is_dir() and (path / "__init__.py").is_file())
    }
    assert sorted(modules - listed) == []


def _with_import(tmp_path: Path, module: str, target: str) -> subprocess.CompletedProcess[str]:
    """Lint a copy of srcore whose *module* imports *target* inside a function."""
    shutil.copytree(
        ROOT / "srcore", tmp_path / "srcore", ignore=shutil.ignore_patterns("__pycache__")
    )
    path = tmp_path / Path(*module.split(".")).with_suffix(".py")
    path.write_text(path.read_text() + f"\n\ndef _added() -> None:\n    import {target}\n")
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return _lint_imports(tmp_path, tmp_path / "pyproject.toml")


def test_a_back_import_breaks_the_layers(tmp_path: Path) -> None:
    """The contract sees an import running back up, even one hidden in a function."""
    result = _with_import(tmp_path, "srcore.config.keys", "srcore.app")
    assert result.returncode != 0
    assert "srcore.config.keys -> srcore.app" in result.stdout


def test_a_cycle_inside_a_package_breaks_the_contracts(tmp_path: Path) -> None:
    result = _with_import(tmp_path, "srcore.config.keys", "srcore.config.loader")
    assert result.returncode != 0
    assert "No cycles are allowed in srcore.config" in result.stdout
