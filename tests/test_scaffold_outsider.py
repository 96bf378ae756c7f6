"""``srcore new-service`` and ``srcore init`` as a newcomer uses them: the names they pick,
the directories they run in, and a file that is not the network's config.

Every name is either refused before anything is written, with a name to pick instead, or
makes a service that works; a run that cannot finish leaves nothing half-written.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import sysconfig
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from click.testing import CliRunner

from srcore.cli import _add_commands, cli
from srcore.config import load_config
from srcore.resources import resource_dir
from srcore.scaffold import ScaffoldError, add_service_section, check_name, render_files
from srcore.scaffold import generate as generate_module
from srcore.scaffold.generate import create_service
from srcore.testing import write_config

SRCORE = Path(sys.executable).parent / "srcore"
#: A bound on every command run here: generating, migrating, a generated suite.
TIMEOUT = 300


def _never(_name: str) -> bool:
    return False


def _invoke(*args: str):
    _add_commands()
    return CliRunner().invoke(cli, list(args), prog_name="srcore")


def _network(directory: Path) -> Path:
    """A config of meta alone, as ``srcore init meta`` writes it."""
    directory.mkdir(parents=True, exist_ok=True)
    result = _invoke(
        "init", "--path", str(directory / "config.ini"), "--first-port", "6100", "meta"
    )
    assert result.exit_code == 0, result.output
    return directory / "config.ini"


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "SRCORE_"))}


# -- names: refused up front, naming one to pick instead ---------------------------------


@pytest.mark.parametrize(
    ("name", "says", "instead"),
    [
        # A trailing newline passed `^...$`: a directory "nl\n" was made.
        ("nl\n", "not a valid service id", "did you mean 'nl'?"),
        ("My_Blog", "not a valid service id", "did you mean 'my-blog'?"),
        ("my blog", "not a valid service id", "did you mean 'my-blog'?"),
        ("Café", "not a valid service id", "did you mean 'cafe'?"),
        ("b" * 40, "not a valid service id", f"did you mean {'b' * 32!r}?"),
        # The package would be the generated service's own tests/ directory.
        ("tests", "keeps its tests in tests/", "'tests-service'"),
        # pytest imports tests/conftest.py as `conftest`: every service's tests broke.
        ("conftest", "module 'conftest'", "'conftest-service'"),
        # Two blueprints called 'api' in the app: its factory raised.
        ("api", "blueprint is called 'api'", "'api-service'"),
        # srcore's blueprints and endpoints are srcore_*.
        ("srcore-webhooks", "reserved", "such as 'webhooks-service'"),
        # templates/webhooks/index.html replaced srcore's own /webhooks page.
        ("webhooks", "srcore's shared templates/webhooks/", "'webhooks-service'"),
        # "did you mean [global]?": every service refused the file once it was added.
        ("globals", "did you mean [global]?", "'globals-service'"),
        ("local", "did you mean [global]?", "'local-service'"),
        # "did you mean [meta]?": meta refused the file where beta was not installed.
        ("beta", "did you mean [meta]?", "'beta-service'"),
        # Extras and test tools need not be installed yet when a service is generated.
        ("celery", "srcore or a service's tests may install", "'celery-service'"),
        ("xdist", "srcore or a service's tests may install", "'xdist-service'"),
        ("json", "standard library", "'json-service'"),
        ("class", "Python keyword", "'class-service'"),
        ("todo", "already installed", "'todo-service'"),
    ],
)
def test_a_name_that_cannot_work_is_refused_before_anything_is_written(
    name, says, instead, tmp_path
):
    config = _network(tmp_path / "net")
    before = config.read_text()
    result = _invoke("new-service", name, "--dir", str(tmp_path / "src"), "--config", str(config))
    assert result.exit_code == 2, result.output
    (line,) = result.output.splitlines()
    assert line.startswith("srcore new-service: "), line
    assert says in line and instead in line, line
    assert not (tmp_path / "src").exists()
    assert config.read_text() == before


def test_the_suggested_name_is_free(tmp_path):
    (tmp_path / "json-service").mkdir()
    with pytest.raises(ScaffoldError, match="such as 'my-json'") as caught:
        check_name("json", directory=tmp_path / "json", importable=_never)
    assert "\n" not in str(caught.value)


def _skeleton_dependencies() -> list[str]:
    project = tomllib.loads(render_files("demo-svc")["pyproject.toml"])
    groups = project["dependency-groups"].values()
    return [*project["build-system"]["requires"], *(tool for group in groups for tool in group)]


def _optional_dependencies() -> list[str]:
    requires = metadata.requires("srcore") or []
    return [r for r in requires if "extra ==" in r]


def test_every_module_an_extra_or_a_test_tool_installs_is_refused():
    """A service named after one is refused even where it is not installed yet."""
    modules = metadata.packages_distributions()
    by_distribution: dict[str, set[str]] = {}
    for module, distributions in modules.items():
        for distribution in distributions:
            by_distribution.setdefault(distribution.lower().replace("_", "-"), set()).add(module)
    checked = []
    for requirement in [*_optional_dependencies(), *_skeleton_dependencies()]:
        distribution = re.split(r"[\s\[<>=!~;]", requirement, maxsplit=1)[0].lower()
        for module in by_distribution.get(distribution.replace("_", "-"), ()):
            if module.startswith("_") or not module.isidentifier():
                continue
            with pytest.raises(ScaffoldError):
                check_name(module.replace("_", "-"), importable=_never)
            checked.append(module)
    assert {"celery", "redis", "psycopg", "gunicorn", "pytest", "xdist", "mypy"} <= set(checked)


def test_no_name_collides_with_a_blueprint_or_a_shared_template_of_the_app(tmp_path):
    """The blueprints srcore and the skeleton register beside the service's own, and the
    shared template directories, are names no new service can take."""
    import todo

    config = write_config(
        tmp_path / "config.ini", service_id="meta", database_url=f"sqlite:///{tmp_path}/m.db"
    )
    add_service_section(config, "todo")
    app = todo.create_app(config=config)
    try:
        blueprints = set(app.blueprints) - {"todo"}
    finally:
        app.extensions["srcore"].db.dispose()
    assert {"api", "srcore_webhooks"} <= blueprints
    shared = {p.name for p in resource_dir("templates").iterdir() if p.is_dir()}
    assert "webhooks" in shared
    for name in blueprints | shared:
        with pytest.raises(ScaffoldError):
            check_name(name.replace("_", "-"), importable=_never)


# -- where it is written: twice, not writable, half-way failures ---------------------------


def test_a_second_run_into_the_same_directory_changes_nothing(tmp_path):
    config = _network(tmp_path)
    first = _invoke("new-service", "blog", "--dir", str(tmp_path), "--config", str(config))
    assert first.exit_code == 0, first.output
    files = {p: p.read_bytes() for p in (tmp_path / "blog").rglob("*") if p.is_file()}
    text = config.read_text()
    again = _invoke("new-service", "blog", "--dir", str(tmp_path), "--config", str(config))
    assert again.exit_code == 2
    assert "already exists" in again.output and "'blog-service'" in again.output
    assert {p: p.read_bytes() for p in (tmp_path / "blog").rglob("*") if p.is_file()} == files
    assert config.read_text() == text


def test_a_config_that_has_the_section_already_is_refused_before_the_package(tmp_path):
    """The package was written, then the section refused: the next try said "taken here"."""
    config = _network(tmp_path / "net")
    config.write_text(config.read_text() + "\n[blog]\norigin = http://127.0.0.1:6200\n")
    result = _invoke("new-service", "blog", "--dir", str(tmp_path / "src"), "--config", str(config))
    assert result.exit_code == 2
    assert "already has a [blog] section" in result.output
    assert not (tmp_path / "src").exists()


def test_a_directory_that_cannot_be_written_is_a_message_not_a_traceback(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    result = _invoke("new-service", "blog", "--dir", str(blocker / "src"))
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "srcore new-service: cannot create" in result.output
    assert "Not a directory" in result.output
    init = _invoke("init", "--path", str(blocker / "config.ini"), "meta")
    assert init.exit_code == 1, init.output
    assert isinstance(init.exception, SystemExit)
    assert f"cannot write {blocker / 'config.ini'}" in init.output


def test_a_failure_half_way_leaves_nothing_behind(tmp_path, monkeypatch):
    def broken(*_args, **_kwargs):
        raise ScaffoldError("the migration could not be checked")

    monkeypatch.setattr(generate_module, "check_migration", broken)
    with pytest.raises(ScaffoldError, match="could not be checked"):
        create_service("blog", tmp_path / "deep" / "src", installed=())
    assert list(tmp_path.iterdir()) == []
    monkeypatch.undo()
    made = create_service("blog", tmp_path / "deep" / "src", installed=())
    assert made.path == tmp_path / "deep" / "src" / "blog"
    assert sorted(p.name for p in (tmp_path / "deep" / "src").iterdir()) == ["blog"]
    assert all(path.is_file() for path in made.files)
    assert oct((made.path).stat().st_mode & 0o777) == oct(0o777 & ~_umask())


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def test_port_without_a_config_is_refused(tmp_path):
    result = _invoke("new-service", "blog", "--dir", str(tmp_path), "--port", "7000")
    assert result.exit_code == 2
    assert "--port" in result.output and "--config" in result.output
    assert list(tmp_path.iterdir()) == []


# -- a path with spaces --------------------------------------------------------------------


def test_init_and_new_service_in_a_path_with_spaces_make_a_config_that_loads(tmp_path):
    """`database-url = sqlite:////x/with space/meta.db` was refused: "contains whitespace"."""
    where = tmp_path / "my network" / "100% done?#"
    config = _network(where)
    added = _invoke("new-service", "blog", "--dir", str(where / "src"), "--config", str(config))
    assert added.exit_code == 0, added.output
    loaded = load_config(config)
    for service in ("meta", "blog"):
        url = loaded.section(service)["database-url"]
        from sqlalchemy.engine import make_url

        assert make_url(str(url)).database == str(where.resolve() / f"{service}.db")


# -- a config with no service --------------------------------------------------------------


@pytest.mark.parametrize("text", ["", "; nothing yet\n", "[global]\nsite-name = x\n"])
def test_a_config_without_a_service_fails_the_check_and_says_why(text, tmp_path):
    path = tmp_path / "wrong.ini"
    path.write_text(text)
    result = _invoke("--config", str(path), "config", "check")
    assert result.exit_code == 1
    assert "OK" not in result.output
    assert f"{path}: no service section" in result.output
    assert "srcore init" in result.output


# -- acceptance: a service in a path with spaces works end to end --------------------------


def _venv_with_this_environment(path: Path) -> Path:
    subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", str(path)], check=True, timeout=TIMEOUT
    )
    python = path / "bin" / "python"
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    ).stdout.strip()
    parent = sysconfig.get_paths()["purelib"]
    (Path(site) / "_srcore_parent_env.pth").write_text(
        f"import site; site.addsitedir({parent!r})\n"
    )
    return python


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        list(args), cwd=cwd, capture_output=True, text=True, env=_env(), timeout=TIMEOUT
    )


@pytest.mark.slow
def test_a_service_made_in_a_path_with_spaces_migrates_serves_and_passes_its_tests(tmp_path):
    work = tmp_path / "my work"
    work.mkdir()
    made = _run(str(SRCORE), "init", "--first-port", "6300", "meta", cwd=work)
    assert made.returncode == 0, made.stderr
    made = _run(
        str(SRCORE), "new-service", "blog2", "--dir", "my src", "--config", "config.ini", cwd=work
    )
    assert made.returncode == 0, made.stdout + made.stderr
    python = _venv_with_this_environment(tmp_path / "venv")
    installed = _run(
        sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet", "--no-deps",
        "--no-build-isolation", "--no-index", str(work / "my src" / "blog2"), cwd=work,
    )  # fmt: skip
    assert installed.returncode == 0, installed.stderr
    check = _run(str(python), "-m", "srcore", "config", "check", cwd=work)
    assert check.returncode == 0, check.stdout + check.stderr
    assert check.stdout.startswith("OK: 2 services (meta, blog2)")
    migrated = _run(str(python), "-m", "srcore", "migrate", "--all", "upgrade", cwd=work)
    assert migrated.returncode == 0, migrated.stdout + migrated.stderr
    preflight = _run(
        str(python), "-c",
        "import sys; from srcore.cli import _preflight; "
        "_preflight('blog2', 'config.ini', lambda line: print(line)); print('ready')",
        cwd=work,
    )  # fmt: skip
    assert preflight.returncode == 0, preflight.stderr
    assert preflight.stdout == "ready\n"
    tests = _run(
        str(python), "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist",
        cwd=work / "my src" / "blog2",
    )  # fmt: skip
    assert tests.returncode == 0, tests.stdout[-5000:] + tests.stderr[-2000:]
    assert " passed" in tests.stdout
