"""Generate a new service package from the skeleton shipped in ``srcore/scaffold/skeleton``.

Plain functions over plain values: :func:`check_name` says why a name cannot be used,
:func:`render_files` turns the skeleton into ``{relative path: text}``, and
:func:`create_service` writes them and generates the first migration for real (Alembic
autogenerate against a throw-away SQLite database), so it matches the models exactly.
"""

from __future__ import annotations

import importlib.util
import keyword
import re
import sys
import tempfile
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

__all__ = [
    "RESERVED_NAMES",
    "NewService",
    "ScaffoldError",
    "check_name",
    "create_service",
    "generate_migration",
    "installed_service_ids",
    "package_name",
    "render_files",
    "title_of",
]

#: A service id: what ``service.yaml``, config sections and scopes accept.
SERVICE_ID = re.compile(r"^[a-z][a-z0-9-]{0,30}[a-z0-9]$")
#: Names a service cannot have: config's shared section and the core's migration lineage.
RESERVED_NAMES = frozenset({"global", "srcore"})
_PLACEHOLDER = re.compile(r"@@[a-z]+@@")
_SKELETON = "skeleton"
_TEMPLATE_SUFFIX = ".tmpl"


class ScaffoldError(ValueError):
    """A service cannot be generated; the message says why, in one line."""


@dataclass(frozen=True)
class NewService:
    """What :func:`create_service` wrote."""

    service_id: str
    package: str
    path: Path
    files: tuple[Path, ...]


def package_name(service_id: str) -> str:
    """The Python package of a service: its id with ``-`` turned into ``_``."""
    return service_id.replace("-", "_")


def title_of(service_id: str) -> str:
    """The human name a new service starts with: ``demo-svc`` -> ``Demo Svc``."""
    return service_id.replace("-", " ").title()


def installed_service_ids() -> set[str]:
    """The ids of the services installed in this environment (``srcore.services``)."""
    from importlib import metadata

    from srcore.manifest import ENTRY_POINT_GROUP

    return {ep.name for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)}


def check_name(
    name: str,
    *,
    installed: Iterable[str] = (),
    directory: Path | None = None,
    importable: Callable[[str], bool] | None = None,
) -> None:
    """Raise :class:`ScaffoldError` if *name* cannot be a new service's id.

    *installed* are the ids already taken; *directory* is where the package would be
    written (it must not exist yet); *importable* says whether a module of that name is
    already importable (default: :func:`importlib.util.find_spec`).
    """
    if not SERVICE_ID.match(name):
        raise ScaffoldError(
            f"{name!r} is not a valid service id: use 2 to 32 lower-case letters, digits and "
            "'-', starting with a letter and ending with a letter or digit"
        )
    if "--" in name:
        raise ScaffoldError(f"{name!r} is not a valid service id: '--' is not allowed")
    if name in RESERVED_NAMES:
        raise ScaffoldError(f"{name!r} is reserved: srcore uses it for itself")
    package = package_name(name)
    if keyword.iskeyword(package) or keyword.issoftkeyword(package):
        raise ScaffoldError(f"{name!r} cannot be a service: {package!r} is a Python keyword")
    if package in sys.stdlib_module_names:
        raise ScaffoldError(
            f"{name!r} cannot be a service: {package!r} is a module of Python's standard library"
        )
    if name in set(installed):
        raise ScaffoldError(f"{name!r} is taken: a service with this id is already installed")
    if importable is None:
        importable = _importable
    if importable(package):
        raise ScaffoldError(
            f"{name!r} cannot be a service: a module called {package!r} is already installed"
        )
    if directory is not None and directory.exists():
        raise ScaffoldError(f"{name!r} is taken here: {directory} already exists")


def _importable(package: str) -> bool:
    try:
        return importlib.util.find_spec(package) is not None
    except (ImportError, ValueError):
        return True


def _skeleton_files() -> list[tuple[str, str]]:
    """(relative path with placeholders, template text) of every skeleton file."""
    root = resources.files("srcore.scaffold") / _SKELETON
    found: list[tuple[str, str]] = []

    def walk(node: resources.abc.Traversable, prefix: str) -> None:
        for child in sorted(node.iterdir(), key=lambda c: c.name):
            if child.name == "__pycache__":
                continue
            if child.is_dir():
                walk(child, f"{prefix}{child.name}/")
            elif child.name.endswith(_TEMPLATE_SUFFIX):
                name = child.name.removesuffix(_TEMPLATE_SUFFIX)
                found.append((prefix + name, child.read_text(encoding="utf-8")))

    walk(root, "")
    return found


def render_files(service_id: str, *, title: str | None = None) -> dict[str, str]:
    """The text of every file of a new service, by path relative to its directory."""
    package = package_name(service_id)
    values = {"id": service_id, "pkg": package, "title": title or title_of(service_id)}

    def fill(text: str) -> str:
        for key, value in values.items():
            text = text.replace(f"@@{key}@@", value)
        left = _PLACEHOLDER.search(text)
        if left:
            raise RuntimeError(f"skeleton placeholder {left.group()} has no value")
        return text

    files: dict[str, str] = {}
    for path, text in _skeleton_files():
        path = path.replace("__pkg__", package).replace("__id__", service_id)
        files[path] = fill(text)
    return files


def generate_migration(
    package_dir: Path, service_id: str, *, message: str = "create tables"
) -> Path:
    """Write the first migration of a service whose package is at *package_dir*.

    The models module is loaded from its file (the package need not be installed) and
    Alembic's autogenerate compares it with an empty SQLite database that has the core's
    lineage applied, so the script holds exactly the service's own tables.
    """
    from srcore import migrate

    models_file = package_dir / "models.py"
    module_name = f"_srcore_scaffold_models_{uuid.uuid4().hex}"
    spec = importlib.util.spec_from_file_location(module_name, models_file)
    if spec is None or spec.loader is None:
        raise ScaffoldError(f"cannot load {models_file}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # dataclass-like machinery looks modules up by name
    try:
        spec.loader.exec_module(module)
        metadata = module.Base.metadata
        with tempfile.TemporaryDirectory(prefix="srcore-new-service-") as tmp:
            target = migrate.MigrationTarget(
                service_id=service_id,
                database_url=f"sqlite:///{Path(tmp) / 'scaffold.db'}",
                metadata=metadata,
                versions_dir=package_dir / "migrations" / "versions",
            )
            migrate.upgrade(target, lineage=migrate.CORE_LINEAGE)
            return migrate.revision(target, message, autogenerate=True)
    finally:
        sys.modules.pop(module_name, None)


def _tidy(script: Path) -> None:
    """Strip trailing blanks from a generated script and format it with ruff if installed."""
    import subprocess

    text = script.read_text(encoding="utf-8")
    # Alembic adds the imports of srcore's column types right below its own; srcore is a
    # separate import block in a service's sources.
    text = text.replace(
        "from alembic import op\nimport srcore", "from alembic import op\n\nimport srcore"
    )
    script.write_text("\n".join(line.rstrip() for line in text.splitlines()) + "\n")
    if importlib.util.find_spec("ruff") is None:
        return
    subprocess.run(  # noqa: S603 - fixed command line on a file written here
        [sys.executable, "-m", "ruff", "format", "--quiet", "--line-length", "100", str(script)],
        check=False,
        capture_output=True,
    )


def create_service(
    service_id: str,
    directory: Path,
    *,
    installed: Iterable[str] | None = None,
    progress: Callable[[str], None] | None = None,
) -> NewService:
    """Write a new service package into ``directory/service_id`` and return what was written.

    Refuses (:class:`ScaffoldError`) a bad or taken name before writing anything.
    """
    say = progress or (lambda _line: None)
    target = directory / service_id
    check_name(
        service_id,
        installed=installed_service_ids() if installed is None else installed,
        directory=target,
    )
    package = package_name(service_id)
    written: list[Path] = []
    for relative, text in render_files(service_id).items():
        path = target / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        written.append(path)
        say(f"  wrote {relative}")
    say("  generating the first migration (autogenerate against a temporary SQLite database)")
    migration = generate_migration(target / package, service_id)
    written.append(migration)
    _tidy(migration)
    say(f"  wrote {migration.resolve().relative_to(target.resolve())}")
    return NewService(service_id, package, target, tuple(written))
