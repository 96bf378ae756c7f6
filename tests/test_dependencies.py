"""Every import of a third-party package is declared by the project that makes it.

Reads srcore's pyproject.toml and each example service's, walks every module of each
package (and each test suite) with :mod:`ast`, and maps each imported top-level name to
the distribution that provides it in this environment. A name that is imported but not
declared installs today only because something else pulls it in; the day that changes,
a fresh install breaks. The optional parts of srcore (its extras) may only be imported
lazily, inside the function that needs them, so that ``pip install srcore`` alone imports.
"""

from __future__ import annotations

import ast
import sys
import tomllib
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
SERVICES = ("todo", "meta", "paste")

#: srcore's modules that exist for one extra: they import it at module level, and only a
#: command that needs the extra imports them.
EXTRA_MODULES = {
    "srcore/gunicorn_worker.py": "server",
    "srcore/gunicorn_logging.py": "server",
}
#: srcore's pytest plugin runs inside pytest; what it imports comes from the test tools.
PLUGIN_PREFIX = "srcore/testing"


@dataclass(frozen=True)
class Import:
    """One ``import x`` / ``from x import y`` of a module, and how it runs."""

    path: str
    line: int
    name: str  # the top-level module name
    lazy: bool  # inside a function: runs only when that function does
    guarded: bool  # inside ``try: ... except ImportError``: optional by design


def _catches_import_error(handler: ast.ExceptHandler) -> bool:
    names: list[ast.expr] = []
    if isinstance(handler.type, ast.Tuple):
        names = list(handler.type.elts)
    elif handler.type is not None:
        names = [handler.type]
    return any(
        isinstance(n, ast.Name) and n.id in {"ImportError", "ModuleNotFoundError"} for n in names
    )


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports_of(path: Path, relative_to: Path) -> Iterator[Import]:
    """The absolute imports of *path* that run (``if TYPE_CHECKING:`` blocks never do)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    shown = path.relative_to(relative_to).as_posix()

    def visit(node: ast.AST, lazy: bool, guarded: bool) -> Iterator[Import]:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                yield from visit(child, lazy, guarded)
            return
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Import(shown, node.lineno, alias.name.split(".")[0], lazy, guarded)
            return
        if isinstance(node, ast.ImportFrom):
            if node.level == 0 and node.module:
                yield Import(shown, node.lineno, node.module.split(".")[0], lazy, guarded)
            return
        if isinstance(node, ast.Try):
            optional = guarded or any(_catches_import_error(h) for h in node.handlers)
            for child in node.body:
                yield from visit(child, lazy, optional)
            for part in (*node.handlers, *node.orelse, *node.finalbody):
                yield from visit(part, lazy, guarded)
            return
        inner = lazy or isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
        for child in ast.iter_child_nodes(node):
            yield from visit(child, inner, guarded)

    yield from visit(tree, False, False)


@dataclass(frozen=True)
class Project:
    """What one pyproject.toml declares, as canonical distribution names."""

    name: str
    dependencies: frozenset[str]
    extras: dict[str, frozenset[str]]
    groups: dict[str, frozenset[str]]

    @classmethod
    def read(cls, path: Path) -> Project:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
        project = data["project"]
        raw_groups = data.get("dependency-groups", {})

        def group(name: str) -> frozenset[str]:
            names: set[str] = set()
            for item in raw_groups[name]:
                if isinstance(item, dict):
                    names |= group(item["include-group"])
                else:
                    names.add(_dist(item))
            return frozenset(names)

        return cls(
            name=canonicalize_name(project["name"]),
            dependencies=frozenset(_dist(r) for r in project.get("dependencies", [])),
            extras={
                extra: frozenset(_dist(r) for r in reqs)
                for extra, reqs in project.get("optional-dependencies", {}).items()
            },
            groups={name: group(name) for name in raw_groups},
        )

    def extra_of(self, dist: str) -> str | None:
        return next((extra for extra, dists in self.extras.items() if dist in dists), None)


def _dist(requirement: str) -> str:
    return canonicalize_name(Requirement(requirement).name)


def _projects() -> dict[str, Project]:
    found = {"srcore": Project.read(ROOT / "pyproject.toml")}
    for service in SERVICES:
        found[service] = Project.read(ROOT / "example_services" / service / "pyproject.toml")
    return found


PROJECTS = _projects()
#: Import names of this repository's own packages, and the project that makes each.
FIRST_PARTY = {"srcore": "srcore", **{s: PROJECTS[s].name for s in SERVICES}}
_PROVIDERS = metadata.packages_distributions()


def distributions(name: str) -> set[str]:
    """The installed distributions that provide top-level module *name*."""
    if name in FIRST_PARTY:
        return {FIRST_PARTY[name]}
    return {canonicalize_name(d) for d in _PROVIDERS.get(name, [])}


def _local_names(directory: Path) -> set[str]:
    """Modules a test suite imports from its own directory (or puts on sys.path)."""
    names = {p.stem for p in directory.rglob("*.py")}
    names |= {p.name for p in directory.iterdir() if p.is_dir()}
    return names | {p.stem for p in (ROOT / "bench").glob("*.py")} | {"tests"}


def _sources(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob("*.py") if "__pycache__" not in p.parts)


def undeclared(
    files: list[Path],
    allowed: frozenset[str],
    *,
    local: Collection[str] = (),
    root: Path = ROOT,
    lazy_only: dict[str, str] | None = None,
    extra_modules: dict[str, str] | None = None,
    plugin: frozenset[str] = frozenset(),
) -> list[str]:
    """One line per import of *files* that no declaration covers."""
    problems = []
    for path in files:
        for imp in imports_of(path, root):
            if imp.guarded or imp.name in sys.stdlib_module_names or imp.name in local:
                continue
            dists = distributions(imp.name)
            where = f"{imp.path}:{imp.line}: import {imp.name}"
            if not dists:
                problems.append(f"{where}: no installed distribution provides it")
                continue
            if dists & allowed:
                continue
            if imp.path.startswith(PLUGIN_PREFIX) and dists & plugin:
                continue
            extra = next((lazy_only[d] for d in dists if lazy_only and d in lazy_only), None)
            if extra is None:
                problems.append(f"{where}: {'/'.join(sorted(dists))} is not declared")
            elif not imp.lazy and (extra_modules or {}).get(imp.path) != extra:
                problems.append(
                    f"{where}: the {extra!r} extra is optional, so import it inside the "
                    "function that needs it"
                )
    return problems


def test_srcore_declares_what_it_imports_and_imports_its_extras_lazily() -> None:
    srcore = PROJECTS["srcore"]
    lazy_only = {dist: extra for extra, dists in srcore.extras.items() for dist in dists}
    problems = undeclared(
        _sources(ROOT / "srcore"),
        srcore.dependencies | {"srcore"},
        lazy_only=lazy_only,
        extra_modules=EXTRA_MODULES,
        plugin=srcore.groups.get("test", frozenset()),
    )
    assert problems == [], "\n".join(problems)


@pytest.mark.parametrize("service", SERVICES)
def test_each_service_declares_what_it_imports(service: str) -> None:
    project = PROJECTS[service]
    package = ROOT / "example_services" / service / service
    problems = undeclared(_sources(package), project.dependencies | {project.name})
    assert problems == [], "\n".join(problems)


@pytest.mark.parametrize("service", SERVICES)
def test_each_service_test_suite_declares_its_tools(service: str) -> None:
    project = PROJECTS[service]
    tests = ROOT / "example_services" / service / "tests"
    allowed = project.dependencies | project.groups.get("test", frozenset()) | {project.name}
    problems = undeclared(_sources(tests), allowed, local=_local_names(tests))
    assert problems == [], "\n".join(problems)


def test_srcore_test_suite_declares_its_tools() -> None:
    """srcore's own suite may use srcore's extras and groups, and the example services
    with what they declare (it runs them end to end)."""
    srcore = PROJECTS["srcore"]
    allowed = set(srcore.dependencies) | {"srcore"}
    for dists in (*srcore.extras.values(), *srcore.groups.values()):
        allowed |= dists
    for service in SERVICES:
        allowed |= PROJECTS[service].dependencies | {PROJECTS[service].name}
    tests = ROOT / "tests"
    problems = undeclared(_sources(tests), frozenset(allowed), local=_local_names(tests))
    assert problems == [], "\n".join(problems)


def test_sqlalchemy_has_one_floor_everywhere() -> None:
    floors = {}
    for name, path in [("srcore", ROOT / "pyproject.toml")] + [
        (s, ROOT / "example_services" / s / "pyproject.toml") for s in SERVICES
    ]:
        for requirement in tomllib.loads(path.read_text())["project"]["dependencies"]:
            parsed = Requirement(requirement)
            if canonicalize_name(parsed.name) == "sqlalchemy":
                floors[name] = str(parsed.specifier)
    assert len(set(floors.values())) == 1, floors


def test_the_walker_sees_lazy_guarded_and_type_only_imports(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text(
        "from typing import TYPE_CHECKING\n"
        "import yaml\n"
        "if TYPE_CHECKING:\n"
        "    import celery\n"
        "try:\n"
        "    import certifi\n"
        "except ImportError:\n"
        "    pass\n"
        "def f():\n"
        "    import redis\n"
    )
    found = {i.name: (i.lazy, i.guarded) for i in imports_of(module, tmp_path)}
    assert found == {
        "typing": (False, False),
        "yaml": (False, False),
        "certifi": (False, True),
        "redis": (True, False),
    }
    problems = undeclared(
        [module], frozenset({"srcore"}), root=tmp_path, lazy_only={"redis": "redis"}
    )
    assert [p.split(": ", 1)[1] for p in problems] == ["import yaml: pyyaml is not declared"]


def test_a_new_service_declares_what_it_imports(tmp_path: Path) -> None:
    """``srcore new-service`` writes a pyproject.toml that covers its own code and tests."""
    from srcore.scaffold import render_files

    for relative, text in render_files("demo-svc").items():
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / relative).write_text(text, encoding="utf-8")
    project = Project.read(tmp_path / "pyproject.toml")
    allowed = project.dependencies | {"srcore"}
    local = {"demo_svc"} | _local_names(tmp_path / "tests")
    problems = undeclared(_sources(tmp_path / "demo_svc"), allowed, local=local, root=tmp_path)
    allowed |= project.groups["test"]
    problems += undeclared(_sources(tmp_path / "tests"), allowed, local=local, root=tmp_path)
    assert problems == [], "\n".join(problems)
    assert "test" not in project.extras, "test tools are a dependency group, not an extra"
