"""An operator's mistakes outside the INI text itself: a database that cannot be opened, a
config path that is a directory, a ``*_FILE`` variable naming a bad file, Ctrl-C during a
migration, a README that cannot be read. Each gives one message naming what to look at,
a nonzero status and nothing half-done; never a traceback or SQLAlchemy's own text."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from alembic.runtime.migration import HeadMaintainer
from click.testing import CliRunner, Result
from sqlalchemy import create_engine, inspect

from srcore.app import migration_target
from srcore.cli import _add_commands, cli
from srcore.config import ConfigError, find_config_path, load_config
from srcore.migrate import current
from srcore.testing import free_port, write_config, write_network_config


@pytest.fixture(autouse=True, scope="module")
def _commands() -> None:
    _add_commands()


def _todo(tmp_path: Path, url: str) -> Path:
    return write_config(tmp_path / "todo.ini", service_id="todo", database_url=url)


def _run(config: Path, *args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(cli, ["--config", str(config), *args], prog_name="srcore", env=env)


def _clean(result: Result) -> str:
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    assert "sqlalche.me" not in result.output
    assert "OperationalError" not in result.output
    return result.output


# -- a database that cannot be opened -----------------------------------------------------


@pytest.mark.parametrize(
    "command",
    [
        ["migrate", "todo", "upgrade"],
        ["migrate", "todo", "current"],
        ["migrate", "todo", "history"],
        ["migrate", "todo", "downgrade", "base"],
        ["migrate", "--all", "upgrade"],
        ["worker", "todo", "--once"],
    ],
)
def test_a_sqlite_file_in_a_missing_directory_names_the_directory(
    tmp_path: Path, command: list[str]
) -> None:
    missing = tmp_path / "no-such-dir"
    config = _todo(tmp_path, f"sqlite:///{missing / 'todo.db'}")
    output = _clean(_run(config, *command))
    assert f"cannot open the database of todo (sqlite:///{missing / 'todo.db'})" in output
    assert f"the directory {missing} does not exist" in output
    assert "[todo] database-url" in output
    assert not missing.exists()


@pytest.mark.parametrize("command", [["migrate", "todo", "upgrade"], ["worker", "todo", "--once"]])
def test_a_server_that_is_down_is_named_with_the_key_to_fix(
    tmp_path: Path, command: list[str]
) -> None:
    port = free_port()
    config = _todo(tmp_path, f"postgresql://srcore:hunter2@127.0.0.1:{port}/todo")
    output = _clean(_run(config, *command))
    shown = rf"postgresql(\+psycopg)?://srcore:\*\*\*@127\.0\.0\.1:{port}/todo"
    assert re.search(rf"cannot open the database of todo \({shown}\): ", output), output
    assert "Connection refused" in output
    assert "Check that the server is up and the database exists" in output
    assert "SRCORE__TODO__DATABASE_URL" in output
    assert "hunter2" not in output


def test_a_database_that_does_not_exist_is_named(tmp_path: Path, postgres_module_url: str) -> None:
    url = f"{postgres_module_url}_never_created"
    config = _todo(tmp_path, url)
    output = _clean(_run(config, "migrate", "todo", "current"))
    name = url.rsplit("/", 1)[1]
    assert f'database "{name}" does not exist' in output
    assert "nothing was changed" in output


# -- Ctrl-C during a migration ------------------------------------------------------------


def test_ctrl_c_in_the_middle_of_a_lineage_rolls_it_back_and_says_so(
    tmp_path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Interrupted after the core lineage's second script, inside its transaction: the
    lineage stays at no revision with none of its tables, and the command says why."""
    steps = 0
    record = HeadMaintainer.update_to_step

    def interrupted(self: HeadMaintainer, step: object) -> None:
        nonlocal steps
        record(self, step)
        steps += 1
        if steps == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(HeadMaintainer, "update_to_step", interrupted)
    config = _todo(tmp_path, database_url)
    result = _run(config, "migrate", "todo", "upgrade")
    monkeypatch.undo()

    assert result.exit_code == 130, result.output
    assert "Traceback" not in result.output and "Aborted!" not in result.output
    assert "interrupted: each lineage is upgraded or downgraded in one transaction" in (
        result.output
    )
    assert current(migration_target("todo", config)) == {"srcore": None, "todo": None}
    engine = create_engine(database_url)
    try:
        assert not {"user", "webhook"} & set(inspect(engine).get_table_names())
    finally:
        engine.dispose()
    # And the next run finishes the job.
    again = _run(config, "migrate", "todo", "upgrade")
    assert again.exit_code == 0, again.output
    assert re.search(r"^todo: todo_\w+ \(head\)$", again.output, re.M)


# -- the config path and value files ------------------------------------------------------


def test_a_config_path_that_is_a_directory_says_so(tmp_path: Path) -> None:
    for environ, suffix in (({}, ""), ({"SRCORE_CONFIG": str(tmp_path)}, " (from $SRCORE_CONFIG)")):
        explicit = tmp_path if not environ else None
        with pytest.raises(ConfigError) as caught:
            find_config_path(explicit, environ=environ)
        (problem,) = caught.value.problems
        assert problem.message == (
            "is a directory, not a config file: name the file in it (config.ini)" + suffix
        )
    result = CliRunner().invoke(
        cli, ["config", "check"], prog_name="srcore", env={"SRCORE_CONFIG": str(tmp_path)}
    )
    assert result.exit_code != 0
    assert "is a directory" in result.output
    assert "no such config file" not in result.output


def test_a_file_named_by_the_environment_is_reported_as_the_environment_s(
    tmp_path: Path,
) -> None:
    config = _todo(tmp_path, f"sqlite:///{tmp_path / 'todo.db'}")
    missing = tmp_path / "no-such-secret"
    environ = {"SRCORE__TODO__SECRET_KEY_FILE": str(missing)}
    with pytest.raises(ConfigError) as caught:
        load_config(config, environ=environ)
    (problem,) = caught.value.errors
    assert (problem.section, problem.key) == ("todo", "secret-key")
    assert problem.message == (
        f"cannot read {missing}: no such file (from env SRCORE__TODO__SECRET_KEY_FILE)"
    )
    (tmp_path / "port").write_text("80x\n")
    environ = {"SRCORE__GLOBAL__SMTP_PORT_FILE": str(tmp_path / "port")}
    with pytest.raises(ConfigError) as caught:
        load_config(config, environ=environ)
    (problem,) = caught.value.errors
    assert problem.message.endswith("(from env SRCORE__GLOBAL__SMTP_PORT_FILE)")
    result = _run(config, "config", "check", env={"SRCORE__TODO__SECRET_KEY_FILE": str(missing)})
    assert result.exit_code == 1
    assert "(from env SRCORE__TODO__SECRET_KEY_FILE)" in result.output


# -- srcore webhooks docs -------------------------------------------------------------------


def test_webhooks_docs_names_a_readme_it_cannot_read(tmp_path: Path) -> None:
    missing = tmp_path / "missing" / "README.md"
    undecodable = tmp_path / "README.md"
    undecodable.write_bytes(b"\xff\xfe# todo\n")
    for readme, reason in ((missing, "No such file or directory"), (undecodable, "not UTF-8 text")):
        result = CliRunner().invoke(
            cli, ["webhooks", "docs", "todo", "--readme", str(readme)], prog_name="srcore"
        )
        assert result.exit_code == 1, result.output
        assert result.output.strip() == f"Error: cannot read {readme}: {reason}"


# -- config check and the SQLite directory ------------------------------------------------


def test_config_check_refuses_a_sqlite_directory_that_does_not_exist(tmp_path: Path) -> None:
    """The web app would start and answer every request 503, and migrate could not run."""
    missing = tmp_path / "nonexistent" / "dir"
    config = _todo(tmp_path, f"sqlite:///{missing / 'todo.db'}")
    result = _run(config, "config", "check")
    assert result.exit_code == 1, result.output
    assert "OK" not in result.output
    lines = config.read_text().splitlines()
    line = next(n for n, text in enumerate(lines, 1) if text.startswith("database-url"))
    assert f"{config}:{line} [todo] database-url: the directory {missing} does not exist" in (
        result.output
    )
    assert "1 error; the config cannot be used." in result.output
    assert not missing.exists()


def test_config_check_resolves_a_relative_sqlite_path_before_looking(tmp_path: Path) -> None:
    config = _todo(tmp_path, "sqlite:///var/todo.db")
    result = _run(config, "config", "check")
    assert result.exit_code == 1, result.output
    assert f"[todo] database-url: the directory {tmp_path / 'var'} does not exist" in (
        result.output
    )
    (tmp_path / "var").mkdir()
    result = _run(config, "config", "check")
    assert result.exit_code == 0, result.output
    assert "OK: 1 service (todo)" in result.output
    # From the environment a relative path is the working directory's, and is named so.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(elsewhere)
        result = _run(
            config, "config", "check", env={"SRCORE__TODO__DATABASE_URL": "sqlite:///var/t.db"}
        )
    assert result.exit_code == 1, result.output
    assert f"the directory {elsewhere / 'var'} does not exist" in result.output
    assert "(from env SRCORE__TODO__DATABASE_URL)" in result.output


def test_config_check_refuses_a_sqlite_directory_that_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "var").write_text("")
    config = _todo(tmp_path, "sqlite:///var/todo.db")
    result = _run(config, "config", "check")
    assert result.exit_code == 1, result.output
    assert f"{tmp_path / 'var'} is not a directory" in result.output
    for url in ("sqlite://", "sqlite:///:memory:", f"sqlite:///{tmp_path / 'todo.db'}"):
        assert _run(_todo(tmp_path, url), "config", "check").exit_code == 0


# -- commands that only read do not create a database --------------------------------------


@pytest.mark.parametrize(
    "command",
    [
        ["migrate", "todo", "current"],
        ["migrate", "todo", "history"],
        ["migrate", "--all", "current"],
    ],
)
def test_reading_a_sqlite_file_that_does_not_exist_says_so_and_creates_nothing(
    tmp_path: Path, command: list[str]
) -> None:
    typo = tmp_path / "tood.db"
    config = _todo(tmp_path, f"sqlite:///{typo}")
    output = _clean(_run(config, *command))
    assert f"cannot open the database of todo (sqlite:///{typo}): " in output
    assert f"the database file {typo} does not exist" in output
    assert "[todo] database-url (or SRCORE__TODO__DATABASE_URL, which wins)" in output
    assert "nothing was changed" in output
    assert "(none)" not in output
    assert not typo.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["todo.ini"]


def test_upgrade_still_creates_the_file_and_current_then_reads_it(tmp_path: Path) -> None:
    database = tmp_path / "da#ta%x" / "todo.db"  # quoted into a read-only URI
    database.parent.mkdir()
    config = _todo(tmp_path, f"sqlite:///{database}")
    result = _run(config, "migrate", "todo", "upgrade")
    assert result.exit_code == 0, result.output
    assert re.search(r"^todo: todo_\w+ \(head\)$", result.output, re.M)
    mtime = database.stat().st_mtime_ns
    for command in (["current"], ["history"]):
        result = _run(config, "migrate", "todo", *command)
        assert result.exit_code == 0, result.output
        assert "(head" in result.output and "(none)" not in result.output
    assert database.stat().st_mtime_ns == mtime
    assert sorted(p.name for p in database.parent.iterdir()) == ["todo.db"]
    # --all upgrade counts from nothing on a file it creates.
    fresh = tmp_path / "fresh.db"
    result = _run(_todo(tmp_path, f"sqlite:///{fresh}"), "migrate", "--all", "upgrade")
    assert result.exit_code == 0, result.output
    assert re.search(
        r"^\[1/1\] todo: upgrading \.\.\. done in [0-9.]+ s \(\d+ revisions\)$", result.output, re.M
    ), result.output


# -- srcore --config new-service ------------------------------------------------------------


def test_new_service_honours_the_top_level_config_option(tmp_path: Path) -> None:
    """``srcore --config FILE new-service`` used to make the package and leave FILE alone,
    exit 0, even with no FILE: it is the command's own ``--config``."""
    missing = tmp_path / "missing.ini"
    result = CliRunner().invoke(
        cli,
        ["--config", str(missing), "new-service", "demo-svc", "--dir", str(tmp_path / "src")],
        prog_name="srcore",
    )
    assert result.exit_code == 2, result.output
    assert f"srcore new-service: {missing} is not a file" in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == []

    config = write_network_config(tmp_path / "config.ini", {"meta": free_port()})
    other = tmp_path / "other.ini"
    other.write_text(config.read_text())
    result = CliRunner().invoke(
        cli,
        [
            "--config",
            str(config),
            "new-service",
            "demo-svc",
            "--dir",
            str(tmp_path / "src"),
            "--config",
            str(other),
        ],
        prog_name="srcore",
    )
    assert result.exit_code == 2, result.output
    assert "two config files" in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.ini", "other.ini"]

    result = CliRunner().invoke(
        cli,
        ["--config", str(config), "new-service", "demo-svc", "--dir", str(tmp_path / "src")],
        prog_name="srcore",
    )
    assert result.exit_code == 0, result.output
    assert f"added [demo-svc] to {config}" in result.output
    assert "\n[demo-svc]\n" in config.read_text()
    assert "[demo-svc]" not in other.read_text()


def test_new_service_says_it_leaves_the_environment_s_config_alone(tmp_path: Path) -> None:
    config = write_network_config(tmp_path / "config.ini", {"meta": free_port()})
    before = config.read_text()
    result = CliRunner().invoke(
        cli,
        ["new-service", "demo-svc", "--dir", str(tmp_path / "src")],
        prog_name="srcore",
        env={"SRCORE_CONFIG": str(config)},
    )
    assert result.exit_code == 0, result.output
    assert config.read_text() == before
    assert (tmp_path / "src" / "demo-svc" / "pyproject.toml").is_file()
    assert result.output.splitlines()[-1] == (
        f"note: {config} (from $SRCORE_CONFIG) was not changed; to add the service to it, "
        f"pass --config {config}"
    )
