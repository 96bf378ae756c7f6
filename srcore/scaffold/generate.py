"""Generate a new service package from the skeleton shipped in ``srcore/scaffold/skeleton``.

Plain functions over plain values: :func:`check_name` says why a name cannot be used,
:func:`render_files` turns the skeleton into ``{relative path: text}``, and
:func:`create_service` writes them and checks the first migration against the models
(Alembic's comparison on a throw-away SQLite database), so it matches them exactly.

The skeleton holds that first migration already laid out as ``ruff format`` lays it out,
rather than Alembic's autogenerate output, whose layout and import order depend on whether
a formatter happened to be installed: the generated code passes ``ruff check``, ``ruff
format --check`` and ``mypy --strict`` as generated, under the settings its
``pyproject.toml`` gives, whatever the service is called.
"""

from __future__ import annotations

import importlib.util
import keyword
import re
import shutil
import sys
import tempfile
import unicodedata
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from importlib import resources
from pathlib import Path

__all__ = [
    "DEPENDENCY_MODULES",
    "RESERVED_NAMES",
    "RESERVED_PREFIX",
    "NewService",
    "ScaffoldError",
    "check_migration",
    "check_name",
    "create_service",
    "installed_service_ids",
    "package_name",
    "render_files",
    "title_of",
]

#: A service id: what ``service.yaml``, config sections and scopes accept.
SERVICE_ID = re.compile(r"[a-z][a-z0-9-]{0,30}[a-z0-9]")
#: Names a service cannot have: config's shared section and the core's migration lineage.
RESERVED_NAMES = frozenset({"global", "srcore"})
#: Ids starting with this are srcore's: its blueprints and endpoints are ``srcore_...``,
#: which a service package of that name would collide with.
RESERVED_PREFIX = "srcore-"
#: Why a package name cannot sit in a generated service or its app, beyond being
#: importable already: the layout's own ``tests/`` directory, pytest's ``conftest``
#: (imported as a top-level module, so a package of that name is shadowed in every
#: installed service's tests), and the app's JSON API blueprint.
_GENERATED_NAMES = {
    "tests": "the generated service keeps its tests in tests/, beside the package",
    "conftest": "pytest imports each tests/conftest.py as the module 'conftest'",
    "api": "the generated app's JSON API blueprint is called 'api'",
}
#: Top-level modules of srcore's optional dependencies (its extras) and of a generated
#: service's build, test and lint tools. They need not be installed when the service is
#: generated, and a package of the same name would break the first install that adds them.
DEPENDENCY_MODULES = frozenset(
    {
        "amqp",
        "ast_serialize",
        "billiard",
        "celery",
        "dateutil",
        "editables",
        "execnet",
        "gunicorn",
        "hatchling",
        "iniconfig",
        "kombu",
        "librt",
        "mypy",
        "mypy_extensions",
        "mypyc",
        "packaging",
        "pathspec",
        "pip",
        "pluggy",
        "psycopg",
        "psycopg_binary",
        "psycopg_c",
        "psycopg_pool",
        "py",
        "pytest",
        "redis",
        "ruff",
        "setuptools",
        "trove_classifiers",
        "vine",
        "wheel",
        "xdist",
    }
)
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
    already importable (default: :func:`importlib.util.find_spec`). The message says
    what is wrong and, when one is free, a name to pick instead.
    """
    taken = set(installed)
    check = importable or _importable
    problem = _name_problem(name, taken, check)
    if problem is None and directory is not None and _exists(directory):
        problem = f"{name!r} is taken here: {directory} already exists"
    if problem is None:
        return
    instead = _instead(name, taken, check, None if directory is None else directory.parent)
    if instead is None:
        raise ScaffoldError(f"{problem}; pick another name")
    raise ScaffoldError(f"{problem}; {instead}")


def _exists(path: Path) -> bool:
    return path.is_symlink() or path.exists()


def _name_problem(name: str, installed: set[str], importable: Callable[[str], bool]) -> str | None:
    """Why *name* cannot be a service's id, or ``None``."""
    if not SERVICE_ID.fullmatch(name):
        return (
            f"{name!r} is not a valid service id: use 2 to 32 lower-case letters, digits and "
            "'-', starting with a letter and ending with a letter or digit"
        )
    if "--" in name:
        return f"{name!r} is not a valid service id: '--' is not allowed"
    if name in RESERVED_NAMES or name.startswith(RESERVED_PREFIX):
        return f"{name!r} is reserved: srcore uses it for itself"
    package = package_name(name)
    if keyword.iskeyword(package) or keyword.issoftkeyword(package):
        return f"{name!r} cannot be a service: {package!r} is a Python keyword"
    if package in sys.stdlib_module_names:
        return f"{name!r} cannot be a service: {package!r} is a module of Python's standard library"
    if package in _GENERATED_NAMES:
        return f"{name!r} cannot be a service: {_GENERATED_NAMES[package]}"
    if package in DEPENDENCY_MODULES:
        return (
            f"{name!r} cannot be a service: {package!r} is a module srcore or a service's tests "
            "may install"
        )
    shared = _shared_template_dirs()
    if name in shared:
        return (
            f"{name!r} cannot be a service: its templates/{name}/ would replace srcore's shared "
            f"templates/{name}/, which every service's pages use"
        )
    if name in installed:
        return f"{name!r} is taken: a service with this id is already installed"
    if importable(package):
        return f"{name!r} cannot be a service: a module called {package!r} is already installed"
    misspelling = _misspelling(name, installed)
    if misspelling is not None:
        return (
            f"{name!r} cannot be a service: wherever it is not installed, srcore takes its "
            f"config section for a misspelling and refuses the file ({misspelling})"
        )
    return None


def _shared_template_dirs() -> set[str]:
    """The directories of srcore's shared templates (``webhooks``, ``macros``)."""
    from srcore.resources import resource_dir

    return {child.name for child in resource_dir("templates").iterdir() if child.is_dir()}


def _misspelling(name: str, installed: set[str]) -> str | None:
    """The config loader's word when it would take a ``[name]`` section for a misspelt
    ``[global]`` or installed service: the section's service would not start, and every
    other service refuses the file wherever the new one is not installed."""
    from srcore.config.loader import _unknown_section

    found = _unknown_section(name, sorted(installed))
    if found is None or not found[1]:
        return None
    return found[0]


def _normalized(name: str) -> str:
    """*name* made into the shape of an id: lower case, ASCII, words joined by ``-``."""
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    words = re.findall(r"[a-z0-9]+", ascii_name.lower())
    joined = "-".join(words).lstrip("0123456789-")
    return joined[:32].rstrip("-")


def _instead(
    name: str, installed: set[str], importable: Callable[[str], bool], parent: Path | None
) -> str | None:
    """What to say the user could pick instead of *name*: the same name written as an id
    when that is all that is wrong, else a free name built from it."""

    def free(candidate: str) -> bool:
        if _name_problem(candidate, installed, importable) is not None:
            return False
        return parent is None or not _exists(parent / candidate)

    base = _normalized(name)
    if base and base != name and free(base):
        return f"did you mean {base!r}?"
    base = base.removeprefix(RESERVED_PREFIX)
    if base and base != name and free(base):
        return f"pick another name, such as {base!r}"
    for candidate in (f"{base}-service", f"my-{base}", f"{base}-app"):
        if base and free(candidate):
            return f"pick another name, such as {candidate!r}"
    return None


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


def render_files(
    service_id: str,
    *,
    title: str | None = None,
    revision: str | None = None,
    created: datetime | None = None,
) -> dict[str, str]:
    """The text of every file of a new service, by path relative to its directory.

    *revision* and *created* are the first migration's Alembic revision id and date
    (default: a fresh id, as Alembic makes them, and now).
    """
    package = package_name(service_id)
    revision = revision or uuid.uuid4().hex[-12:]
    values = {
        "id": service_id,
        "pkg": package,
        "title": title or title_of(service_id),
        "rev": revision,
        "date": str(created or datetime.now()),
    }

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
        path = path.replace("__rev__", revision)
        files[path] = fill(text)
    return files


def check_migration(package_dir: Path, service_id: str) -> None:
    """Raise :class:`ScaffoldError` unless the migrations of the service whose package is
    at *package_dir* create exactly the tables of its models.

    The models module is loaded from its file (the package need not be installed); the
    core's lineage, then the service's, are applied to an empty SQLite database, which
    Alembic's autogenerate comparison must then find equal to the models.
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
        with tempfile.TemporaryDirectory(prefix="srcore-new-service-") as tmp:
            target = migrate.MigrationTarget(
                service_id=service_id,
                database_url=f"sqlite:///{Path(tmp) / 'scaffold.db'}",
                metadata=module.Base.metadata,
                versions_dir=package_dir / "migrations" / "versions",
            )
            migrate.upgrade(target)
            left = migrate.pending_changes(target)
    finally:
        sys.modules.pop(module_name, None)
    if left:
        raise ScaffoldError(
            f"the first migration does not match the models with the SQLAlchemy and Alembic "
            f"installed here ({left[0]!r}); please report it"
        )


def create_service(
    service_id: str,
    directory: Path,
    *,
    installed: Iterable[str] | None = None,
    progress: Callable[[str], None] | None = None,
) -> NewService:
    """Write a new service package into ``directory/service_id`` and return what was written.

    Refuses (:class:`ScaffoldError`) a bad or taken name before writing anything. The
    package is written into a hidden directory beside the target and renamed into place
    when complete, so a failure (a disk full, a directory without write permission, a
    migration that cannot be generated) leaves nothing behind to clean up by hand, and
    a second run can simply try again.
    """
    say = progress or (lambda _line: None)
    target = directory / service_id
    check_name(
        service_id,
        installed=installed_service_ids() if installed is None else installed,
        directory=target,
    )
    made = _missing_parents(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        # Created with the umask's mode, as the renamed directory keeps it.
        work = directory / f".{service_id}.new-{uuid.uuid4().hex[:8]}"
        work.mkdir()
    except OSError as exc:
        _remove_empty(made)
        raise ScaffoldError(f"cannot create {target}: {_reason(exc)}") from None
    try:
        files = _write_package(service_id, work, say)
        if _exists(target):
            raise ScaffoldError(f"{service_id!r} is taken here: {target} was created meanwhile")
        work.rename(target)
    except OSError as exc:
        raise ScaffoldError(f"cannot write the package into {directory}: {_reason(exc)}") from None
    finally:
        if work.exists():
            shutil.rmtree(work, ignore_errors=True)
            _remove_empty(made)
    written = tuple(target / path for path in files)
    return NewService(service_id, package_name(service_id), target, written)


def _write_package(service_id: str, root: Path, say: Callable[[str], None]) -> list[Path]:
    """Write the package's files and first migration under *root*; their relative paths."""
    written: list[Path] = []
    for relative, text in render_files(service_id).items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        written.append(Path(relative))
        say(f"  wrote {relative}")
    say("  checking the first migration against the models (a temporary SQLite database)")
    check_migration(root / package_name(service_id), service_id)
    return written


def _missing_parents(directory: Path) -> list[Path]:
    """The directories from *directory* up that do not exist yet, deepest first."""
    missing = []
    for path in (directory, *directory.parents):
        if _exists(path):
            break
        missing.append(path)
    return missing


def _remove_empty(directories: list[Path]) -> None:
    for path in directories:
        try:
            path.rmdir()
        except OSError:
            return


def _reason(exc: OSError) -> str:
    if exc.filename is not None and exc.strerror:
        return f"{exc.filename}: {exc.strerror}"
    return exc.strerror or str(exc)
