"""The mistakes operators make in the config file, each caught by ``srcore config check``
as one located line and exit 1, and by the commands that start things as that same line
instead of a traceback."""

from __future__ import annotations

import os
import re
import secrets
from pathlib import Path
from tempfile import TemporaryDirectory

import pytest
from click.testing import CliRunner, Result
from hypothesis import given, settings
from hypothesis import strategies as st

from srcore.cli import _add_commands, cli
from srcore.config import ConfigError, load_config, read_config

KEY_A = "a" * 40
KEY_B = "b" * 40


@pytest.fixture(autouse=True, scope="module")
def _commands() -> None:
    _add_commands()


def _network(tmp_path: Path, *, todo_url: str | None = None, extra: str = "") -> Path:
    url = todo_url or f"sqlite:///{tmp_path / 'todo.db'}"
    path = tmp_path / "config.ini"
    path.write_text(
        "[global]\nsite-name = Test Net\n\n"
        f"[meta]\norigin = http://127.0.0.1:5990\n"
        f"database-url = sqlite:///{tmp_path / 'meta.db'}\nsecret-key = {KEY_A}\n\n"
        f"[todo]\norigin = http://127.0.0.1:5991\ndatabase-url = {url}\n"
        f"secret-key = {KEY_B}\noauth-client-id = todo\n"
        f"oauth-client-secret = {secrets.token_urlsafe(24)}\n" + extra,
        encoding="utf-8",
    )
    return path


def _run(config: Path, *args: str) -> Result:
    return CliRunner().invoke(cli, ["--config", str(config), *args], prog_name="srcore")


def _line_of(path: Path, text: str) -> int:
    lines = path.read_text(encoding="utf-8").splitlines()
    return next(n for n, line in enumerate(lines, 1) if text in line)


def _one_error(result: Result, path: Path, needle: str, at: str | None = None) -> str:
    """The single problem line of a failed check naming *needle*, asserting it is alone
    and located at the line of the file holding *at* (default: *needle*)."""
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if needle in line]
    assert len(lines) == 1, result.output
    assert lines[0].startswith(f"{path}:{_line_of(path, at or needle)} "), result.output
    return lines[0]


# -- the database driver ------------------------------------------------------------------


def test_check_names_a_misspelt_database_driver(tmp_path: Path) -> None:
    config = _network(tmp_path, todo_url="postgresql+pyscopg://localhost/todo")
    line = _one_error(_run(config, "config", "check"), config, "pyscopg")
    assert "[todo] database-url" in line
    assert "did you mean postgresql+psycopg?" in line


def test_check_names_a_driver_that_is_not_installed(tmp_path: Path) -> None:
    config = _network(tmp_path, todo_url="mysql+nosuchdb://localhost/todo")
    line = _one_error(_run(config, "config", "check"), config, "nosuchdb")
    assert "[todo] database-url" in line and "sqlite" in line


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("postgresql://localhost:/todo", "not an SQLAlchemy database URL"),
        ("sqlite://h:/x.db", "not an SQLAlchemy database URL"),
        ("postgresql+a+b://x/todo", "unknown database driver postgresql+a+b"),
    ],
)
def test_check_refuses_what_sqlalchemy_cannot_parse(tmp_path: Path, url: str, message: str) -> None:
    config = _network(tmp_path, todo_url=url)
    line = _one_error(_run(config, "config", "check"), config, message, at=url)
    assert f"[todo] database-url: {message}" in line


def test_check_accepts_the_drivers_the_services_use(tmp_path: Path) -> None:
    for url in ("postgresql://localhost/todo", "postgres://localhost/todo", "sqlite://"):
        config = _network(tmp_path, todo_url=url)
        result = _run(config, "config", "check")
        assert result.exit_code == 0, result.output


@pytest.mark.parametrize(
    "args", [["serve", "todo"], ["worker", "todo"], ["migrate", "todo", "upgrade"]]
)
def test_commands_give_the_driver_message_not_a_traceback(
    tmp_path: Path, args: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_exec(*_args: object) -> None:
        raise AssertionError("serve went on to start gunicorn")

    monkeypatch.setattr(os, "execv", no_exec)
    config = _network(tmp_path, todo_url="postgresql+pyscopg://localhost/todo")
    result = _run(config, *args)
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output and not isinstance(result.exception, AssertionError)
    assert "did you mean postgresql+psycopg?" in result.output
    assert len(result.output.strip().splitlines()) <= 2, result.output


# -- relative SQLite paths ----------------------------------------------------------------


def test_relative_sqlite_path_is_beside_the_config_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    (tmp_path / "etc").mkdir()
    config = _network(tmp_path / "etc")
    text = config.read_text(encoding="utf-8")
    config.write_text(
        text.replace(f"sqlite:///{config.parent / 'todo.db'}", "sqlite:///var/todo.db"),
        encoding="utf-8",
    )
    todo = load_config(config, environ={}).section("todo")
    assert todo["database-url"] == f"sqlite:///{config.parent / 'var' / 'todo.db'}"
    for url in ("sqlite://", "sqlite:///:memory:", f"sqlite:///{tmp_path / 'x.db'}"):
        config.write_text(text.replace(f"sqlite:///{config.parent / 'todo.db'}", url), "utf-8")
        assert load_config(config, environ={}).section("todo")["database-url"] == url


def test_relative_sqlite_path_from_the_environment_stays_with_the_working_directory(
    tmp_path: Path,
) -> None:
    config = _network(tmp_path)
    environ = {"SRCORE__TODO__DATABASE_URL": "sqlite:///t.db"}
    todo = load_config(config, environ=environ).section("todo")
    assert todo["database-url"] == "sqlite:///t.db"


# -- sections -----------------------------------------------------------------------------


def test_misspelt_global_section(tmp_path: Path) -> None:
    config = _network(tmp_path)
    config.write_text(config.read_text().replace("[global]", "[gloabl]"), encoding="utf-8")
    line = _one_error(_run(config, "config", "check"), config, "[gloabl]")
    assert "unknown section [gloabl]: did you mean [global]?" in line
    # A service refuses it too, although it reads only its own declarations.
    with pytest.raises(ConfigError, match=r"did you mean \[global\]"):
        load_config(config, specs={}, environ={})


def test_misspelt_service_section(tmp_path: Path) -> None:
    config = _network(tmp_path, extra="\n[tood]\norigin = http://127.0.0.1:5993\n")
    line = _one_error(_run(config, "config", "check"), config, "[tood]")
    assert "did you mean [todo]?" in line


def test_section_of_a_service_that_is_not_installed(tmp_path: Path) -> None:
    config = _network(
        tmp_path,
        extra=f"\n[nosuch]\norigin = http://127.0.0.1:5993\n"
        f"database-url = sqlite:///{tmp_path / 'n.db'}\nsecret-key = {'c' * 40}\n"
        "oauth-client-id = nosuch\noauth-client-secret = s3cret\n",
    )
    result = _run(config, "config", "check")
    lines = [line for line in result.output.splitlines() if "[nosuch]" in line]
    assert len(lines) == 1, result.output
    assert lines[0].startswith(f"{config}:{_line_of(config, '[nosuch]')} ")
    assert "no installed service is called nosuch (installed: meta, paste, todo)" in lines[0]


# -- indented keys ------------------------------------------------------------------------


@pytest.mark.parametrize("indent", ["\t", "    "])
def test_indented_key_is_not_swallowed_into_the_previous_value(tmp_path: Path, indent: str) -> None:
    config = _network(tmp_path, extra=f"{indent}session-lifetime = 1d\n")
    line = _one_error(_run(config, "config", "check"), config, "session-lifetime")
    assert "[todo] oauth-client-secret" in line and "session-lifetime" in line
    assert "indent" in line
    # The secret it was swallowed into is not shown.
    secret = config.read_text().split("oauth-client-secret = ")[1].split("\n")[0]
    assert secret not in _run(config, "config", "check").output


def test_indented_continuation_without_a_key_is_still_a_value(tmp_path: Path) -> None:
    config = _network(tmp_path)
    text = config.read_text().replace(
        "site-name = Test Net\n",
        "allow-private-webhook-targets = 127.0.0.0/8\n    10.0.0.0/8\nsite-name = Test Net\n",
    )
    config.write_text(text, encoding="utf-8")
    result = _run(config, "config", "check")
    assert result.exit_code == 0, result.output


# -- keys in the wrong section ------------------------------------------------------------


def test_global_key_in_a_service_section(tmp_path: Path) -> None:
    config = _network(tmp_path, extra="smtp-password = hunter2-secret\n")
    line = _one_error(_run(config, "config", "check"), config, "smtp-password")
    assert "[todo] smtp-password" in line and "belongs in [global]" in line
    assert "hunter2" not in line


def test_service_key_in_global(tmp_path: Path) -> None:
    config = _network(tmp_path)
    config.write_text(
        config.read_text().replace("[global]\n", "[global]\nsession-lifetime = 1d\n"),
        encoding="utf-8",
    )
    result = _run(config, "config", "check")
    line = _one_error(result, config, "session-lifetime", at="session-lifetime = 1d")
    assert "[global] session-lifetime" in line and "each service's section" in line


# -- config show --------------------------------------------------------------------------


def test_show_shows_what_it_can_with_the_problems(tmp_path: Path) -> None:
    config = _network(tmp_path, todo_url="postgresql+pyscopg://u:dbpass@localhost/todo")
    config.write_text(
        config.read_text().replace("[global]\n", "[global]\nsmtp-password = hunter2-secret\n"),
        encoding="utf-8",
    )
    result = _run(config, "config", "show")
    assert result.exit_code == 1
    assert "[meta]" in result.output and "[todo]" in result.output
    assert "http://127.0.0.1:5991" in result.output
    assert "did you mean postgresql+psycopg?" in result.output
    assert "refused" in result.output
    assert "hunter2" not in result.output and "dbpass" not in result.output
    assert re.search(r"^oauth-client-secret +=  ?\*{8}\s", result.output, re.M)


@settings(max_examples=200, deadline=None)
@given(
    scheme=st.sampled_from(["sqlite", "postgresql", "postgres", "mysql", "x", "sqlite+pysqlite"]),
    driver=st.sampled_from(["", "+psycopg", "+", "+a+b", "+pyscopg"]),
    rest=st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), max_size=20),
)
def test_any_database_url_is_accepted_or_refused_in_one_line(
    scheme: str, driver: str, rest: str
) -> None:
    with TemporaryDirectory() as tmp:
        path = Path(tmp) / "config.ini"
        path.write_text(
            f"[todo]\norigin = http://127.0.0.1:5991\n"
            f"database-url = {scheme}{driver}://{rest}\nsecret-key = {KEY_B}\n",
            encoding="utf-8",
        )
        _, found = read_config(path, specs={}, environ={})
    assert all(p.line == 3 and "\n" not in str(p) for p in found if p.severity == "error")
