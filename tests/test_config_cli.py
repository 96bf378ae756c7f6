from __future__ import annotations

import re
from pathlib import Path

import click
import pytest
from click.testing import CliRunner, Result
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from srcore.config import Key
from srcore.config_cli import config_command, keygen_command, make_config_command

KEY_A = "a" * 40
KEY_B = "b" * 40

GOOD = f"""\
[global]
site-name = Test Net

[meta]
origin = http://127.0.0.1:5000
database-url = sqlite:///var/meta.db
secret-key = {KEY_A}

[todo]
origin = http://127.0.0.1:5001
database-url = sqlite:///var/todo.db
secret-key = {KEY_B}
oauth-client-id = todo
oauth-client-secret = very-secret-value
tickets-per-page = 50

[todo::mail]
smtp-host = mx.example.org
"""

SPECS = {
    "todo": (Key("tickets-per-page", type="int", default=25),),
    "todo::mail": (Key("smtp-host"),),
}


def make_root(specs: dict[str, tuple[Key, ...]] | None = None) -> click.Group:
    @click.group()
    @click.option("--config", type=click.Path(dir_okay=False))
    def root(config: str | None) -> None:
        pass

    root.add_command(make_config_command(specs=SPECS if specs is None else specs))
    root.add_command(keygen_command)
    return root


def run(args: list[str], *, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(make_root(), args, env=env or {}, catch_exceptions=True)


@pytest.fixture
def good(tmp_path: Path) -> Path:
    path = tmp_path / "config.ini"
    path.write_text(GOOD)
    (tmp_path / "var").mkdir()  # where its databases go: the check looks for it
    return path


def test_check_ok(good: Path) -> None:
    result = run(["--config", str(good), "config", "check"])
    assert result.exit_code == 0, result.output
    assert result.stdout == f"OK: 2 services (meta, todo) in {good}\n"
    assert result.stderr == ""


def test_check_prints_warnings_but_passes(good: Path) -> None:
    good.write_text(GOOD + "smtp-hots = x\n")
    result = run(["--config", str(good), "config", "check"])
    assert result.exit_code == 0
    assert result.stdout == f"OK: 2 services (meta, todo) in {good}, 1 warning\n"
    assert result.stderr == (
        f"{good}:19 [todo::mail] smtp-hots: warning: unknown key, ignored; "
        "did you mean 'smtp-host'?\n"
    )


def test_five_mistakes_give_five_located_lines_and_exit_1(tmp_path: Path) -> None:
    path = tmp_path / "config.ini"
    path.write_text(
        f"""\
[global]
environment = prod
smtp-port = twenty-five

[meta]
origin = 127.0.0.1:5000
database-url = sqlite:///var/meta.db
secret-key = {KEY_A}

[todo]
origin = http://127.0.0.1:5001
database-url = sqlite:///var/todo.db
oauth-client-id = todo
oauth-client-secret = s
oauth-client-secret = t
"""
    )
    result = run(["--config", str(path), "config", "check"])
    assert result.exit_code == 1
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert lines[-1] == "5 errors; the config cannot be used."
    located = lines[:-1]
    assert len(located) == 5
    for line in located:
        assert re.match(rf"^{re.escape(str(path))}:\d+ \[\w+\] [\w-]+: ", line), line
    assert [line.split(" ", 1)[0].rsplit(":", 1)[1] for line in located] == [
        "2",
        "3",
        "6",
        "10",
        "15",
    ]
    assert "did you mean 'production'?" in located[0]
    assert "required, but not set" in located[3]
    assert "duplicate key" in located[4]


def test_missing_config_file(tmp_path: Path) -> None:
    result = run(["--config", str(tmp_path / "none.ini"), "config", "check"])
    assert result.exit_code == 1
    assert "none.ini: no such config file" in result.stderr
    result = run(["config", "check"], env={"SRCORE_CONFIG": str(tmp_path / "env.ini")})
    assert result.exit_code == 1
    assert "env.ini: no such config file (from $SRCORE_CONFIG)" in result.stderr


def test_config_path_from_environment(good: Path) -> None:
    result = run(["config", "check"], env={"SRCORE_CONFIG": str(good)})
    assert result.exit_code == 0
    assert result.stdout.startswith("OK: 2 services")


def test_show_everything_with_sources_and_redaction(good: Path) -> None:
    env = {"SRCORE__TODO__DATABASE_URL": "sqlite:///elsewhere.db"}
    result = run(["--config", str(good), "config", "show"], env=env)
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert KEY_A not in out
    assert KEY_B not in out
    assert "very-secret-value" not in out
    assert [line for line in out.splitlines() if line.startswith("[")] == [
        "[global]",
        "[meta]",
        "[todo]",
        "[todo::mail]",
    ]
    rows = {line.split(" = ")[0].strip(): line for line in out.splitlines() if " = " in line}
    assert re.search(rf"= Test Net\s+; {re.escape(str(good))}:2$", rows["site-name"])
    assert re.search(r"= development\s+; default$", rows["environment"])
    assert re.search(r"= \*{8}\s+; .*:14$", rows["oauth-client-secret"])
    assert re.search(r"= sqlite:///elsewhere.db\s+; env SRCORE__TODO__DATABASE_URL$", out, re.M)


def test_show_one_service(good: Path) -> None:
    result = run(["--config", str(good), "config", "show", "todo"])
    assert result.exit_code == 0
    headers = [line for line in result.stdout.splitlines() if line.startswith("[")]
    assert headers == ["[global]", "[todo]", "[todo::mail]"]
    assert "tickets-per-page" in result.stdout


def test_show_unknown_service(good: Path) -> None:
    result = run(["--config", str(good), "config", "show", "paste"])
    assert result.exit_code == 1
    assert "no [paste] section" in result.stderr
    assert "services: meta, todo" in result.stderr


def test_show_prints_a_broken_file_with_its_problems(good: Path) -> None:
    good.write_text(GOOD.replace("origin = http://127.0.0.1:5001", "origin = nowhere"))
    result = run(["--config", str(good), "config", "show"])
    assert result.exit_code == 1
    assert f"{good}:10 [todo] origin: not a URL" in result.stderr
    meta, todo = (line for line in result.stdout.splitlines() if line.startswith("origin "))
    assert re.match(rf"origin +=\s+http://127.0.0.1:5000\s+; {re.escape(str(good))}:5$", meta)
    assert todo.endswith(f"; default; {good}:10 refused")
    assert "nowhere" not in result.stdout


def test_show_says_what_check_says_of_a_missing_database_directory(good: Path) -> None:
    """The value is shown as it is (it is not refused), then what is wrong with it."""
    (good.parent / "var").rmdir()
    result = run(["--config", str(good), "config", "show", "todo"])
    assert result.exit_code == 1
    missing = good.parent / "var"
    shown = re.escape(f"sqlite:///{missing / 'todo.db'}")
    assert re.search(rf"^database-url += {shown} ", result.stdout, re.M)
    assert f"[todo] database-url: the directory {missing} does not exist" in result.stderr
    assert result.stderr.strip().endswith("2 errors.")  # meta's database is there too


def test_keygen() -> None:
    result = run(["keygen"])
    assert result.exit_code == 0
    (line,) = result.stdout.splitlines()
    assert re.fullmatch(r"secret-key = [A-Za-z0-9_-]{64}", line)
    assert run(["keygen"]).stdout != result.stdout


def test_keygen_for_a_service(tmp_path: Path) -> None:
    result = run(["keygen", "--service", "paste"])
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert lines[0] == "[paste]"
    assert re.fullmatch(r"secret-key = [A-Za-z0-9_-]{64}", lines[1])
    assert re.fullmatch(r"oauth-client-secret = [A-Za-z0-9_-]{64}", lines[2])
    # The printed block is ready to paste: appended to a file it passes the check.
    path = tmp_path / "config.ini"
    path.write_text(
        GOOD + "\n" + result.stdout + "origin = http://127.0.0.1:5002\n"
        "database-url = sqlite://\noauth-client-id = paste\n"
    )
    (tmp_path / "var").mkdir()
    assert run(["--config", str(path), "config", "check"]).exit_code == 0


def test_keygen_rejects_bad_service_name() -> None:
    result = run(["keygen", "--service", "Not A Name"])
    assert result.exit_code == 2
    assert "--service" in result.stderr


@pytest.mark.parametrize("args", [["config"], ["config", "check"], ["config", "show"], ["keygen"]])
def test_every_command_has_an_example(args: list[str]) -> None:
    result = run([*args, "--help"])
    assert result.exit_code == 0
    assert "Example:" in result.stdout
    assert "  srcore " in result.stdout


def test_exported_group_has_its_commands() -> None:
    assert config_command.name == "config"
    assert sorted(config_command.commands) == ["check", "reference", "show"]
    assert keygen_command.name == "keygen"


@settings(max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    text=st.one_of(
        st.text(max_size=300),
        st.lists(
            st.sampled_from(
                [
                    "[meta]",
                    "[todo]",
                    "[todo::mail]",
                    "[global]",
                    "origin = http://127.0.0.1:5000",
                    "origin = x",
                    "database-url = sqlite://",
                    f"secret-key = {KEY_A}",
                    "secret-key-file = /nonexistent",
                    "tickets-per-page = x",
                    "  continued",
                    "junk",
                    "",
                ]
            ),
            max_size=15,
        ).map("\n".join),
    ),
    command=st.sampled_from([["check"], ["show"], ["show", "todo"]]),
)
def test_fuzz_cli_never_shows_a_traceback(tmp_path: Path, text: str, command: list[str]) -> None:
    path = tmp_path / "config.ini"
    path.write_text(text, encoding="utf-8")
    result = run(["--config", str(path), "config", *command])
    assert result.exit_code in (0, 1), result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output
