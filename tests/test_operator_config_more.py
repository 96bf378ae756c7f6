"""An operator running several services from one config file: sections whose environment
variables would be the same, and overrides the environment cannot carry as meant.

Each mistake is refused or warned about with a message naming the file, line, section,
key or variable, never a traceback.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from srcore.config import ConfigError, Key, Problem, load_config, read_config

ORIGIN_A = "http://127.0.0.1:5001"
ORIGIN_B = "http://127.0.0.1:5002"


def _section(name: str, origin: str, key: str) -> str:
    return f"[{name}]\norigin = {origin}\ndatabase-url = sqlite:///{name}.db\nsecret-key = {key}\n"


def _file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.ini"
    path.write_text(text, encoding="utf-8")
    return path


def _errors(path: Path, **kwargs: object) -> list[Problem]:
    with pytest.raises(ConfigError) as info:
        load_config(path, **kwargs)  # type: ignore[arg-type]
    return info.value.errors


@pytest.mark.parametrize("installed", [None, ["a-b"]])
def test_two_sections_one_env_prefix_are_refused(
    tmp_path: Path, installed: list[str] | None
) -> None:
    """SRCORE__A_B__ORIGIN would set both [a-b] and [a_b]: an override meant for one
    would silently apply to the other."""
    path = _file(
        tmp_path, _section("a-b", ORIGIN_A, "k" * 40) + _section("a_b", ORIGIN_B, "l" * 40)
    )
    environ = {"SRCORE__A_B__ORIGIN": "http://127.0.0.1:5003"}
    (error,) = _errors(path, specs={}, installed=installed, environ=environ)
    assert (error.file, error.line, error.section) == (str(path), 5, "a_b")
    assert "[a-b]" in error.message
    assert "SRCORE__A_B__<KEY>" in error.message


def test_a_section_and_a_sub_section_with_one_env_prefix_are_refused(tmp_path: Path) -> None:
    text = (
        _section("a", ORIGIN_A, "k" * 40)
        + "\n[a::b]\nhost = x\n\n"
        + _section("a__b", ORIGIN_B, "l" * 40)
    )
    path = _file(tmp_path, text)
    (error,) = _errors(path, specs={"a::b": (Key("host"),)}, environ={})
    assert (error.line, error.section) == (6, "a::b")
    assert "[a__b] (line 9)" in error.message
    assert "SRCORE__A__B__<KEY>" in error.message


def test_sections_of_distinct_env_prefixes_still_load(tmp_path: Path) -> None:
    path = _file(tmp_path, _section("a-b", ORIGIN_A, "k" * 40) + _section("ab", ORIGIN_B, "l" * 40))
    environ = {"SRCORE__A_B__ORIGIN": "http://127.0.0.1:5003"}
    cfg = load_config(path, specs={}, environ=environ)
    assert cfg.section("a-b")["origin"] == "http://127.0.0.1:5003"
    assert cfg.section("ab")["origin"] == ORIGIN_B


@pytest.mark.parametrize(
    ("var", "key"),
    [("SRCORE__GLOBAL__SITE_NAME", "site-name"), ("SRCORE__A__SECRET_KEY", "secret-key")],
)
def test_an_env_value_that_is_not_utf8_is_refused_naming_the_variable(
    tmp_path: Path, var: str, key: str
) -> None:
    """Python keeps such bytes as lone surrogates, which failed every page (a 500 from
    encoding the response) or every signature far from the variable."""
    path = _file(tmp_path, _section("a", ORIGIN_A, "k" * 40))
    (error,) = _errors(path, specs={}, environ={var: "\udcff\udcfe" * 20})
    assert error.key == key
    assert f"environment variable {var} is not UTF-8" in error.message


def test_miscased_env_variables_are_warned_about_with_the_right_name(tmp_path: Path) -> None:
    """The environment is case-sensitive; these overrides set nothing."""
    path = _file(tmp_path, _section("a", ORIGIN_A, "k" * 40))
    environ = {"SRCORE__a__origin": "http://x.invalid", "srcore__a__origin": "http://y.invalid"}
    cfg = load_config(path, specs={}, environ=environ)
    assert cfg.section("a")["origin"] == ORIGIN_A
    messages = sorted(w.message for w in cfg.warnings if "environment variable" in w.message)
    assert messages == [
        f"environment variable {var} is ignored: srcore reads only upper-case SRCORE__ "
        "names: did you mean SRCORE__A__ORIGIN?"
        for var in sorted(environ)
    ]


def test_an_env_name_that_is_not_utf8_is_warned_about_printably(tmp_path: Path) -> None:
    path = _file(tmp_path, _section("a", ORIGIN_A, "k" * 40))
    _, found = read_config(path, specs={}, environ={"SRCORE__A__ORIGI\udcff": "x"})
    (warning,) = [p for p in found if "environment variable" in p.message]
    assert warning.severity == "warning"
    assert "SRCORE__A__ORIGI\\udcff" in warning.message
    str(warning).encode("utf-8")  # printable anywhere


def test_a_second_byte_order_mark_is_shown_in_the_message(tmp_path: Path) -> None:
    path = tmp_path / "config.ini"
    path.write_bytes(b"\xef\xbb\xbf\xef\xbb\xbf" + _section("a", ORIGIN_A, "k" * 40).encode())
    (error,) = _errors(path, specs={}, environ={})
    assert error.line == 1
    assert "text before the first [section] header: '\\ufeff[a]'" in error.message


def test_config_show_and_check_say_what_is_wrong_with_odd_overrides(tmp_path: Path) -> None:
    """The command line, with bytes no str can hold: a clear message each, exit 1 for
    errors, no traceback."""
    path = _file(tmp_path, _section("a", ORIGIN_A, "k" * 40))
    base = {k.encode(): v.encode() for k, v in os.environ.items() if not k.startswith("SRCORE")}
    cases = [
        ({b"SRCORE__GLOBAL__SITE_NAME": b"\xff\xfe"}, 1, "is not UTF-8"),
        ({b"SRCORE__GLOBAL__SITE_NAME": b"two\nlines"}, 1, "has a line break"),
        ({b"SRCORE__A__ORIGIN": b""}, 1, "[a] origin: required, but empty"),
        ({b"SRCORE__A__ORIGI\xff": b"x"}, 0, "SRCORE__A__ORIGI\\udcff"),
        ({b"SRCORE__a__origin": b"x"}, 0, "did you mean SRCORE__A__ORIGIN?"),
    ]
    script = (
        "from srcore.config import Key;"
        "from srcore.config_cli import make_config_command;"
        "make_config_command(specs={})(prog_name='srcore')"
    )
    for extra, status, said in cases:
        for command in ("check", "show"):
            env = {**base, b"SRCORE_CONFIG": str(path).encode(), **extra}
            result = subprocess.run(
                [sys.executable, "-c", script, command],
                env=env,
                capture_output=True,
                timeout=60,
                check=False,
            )
            err = result.stderr.decode("utf-8")
            assert result.returncode == status, (extra, command, err)
            assert said in err, (extra, command, err)
            assert "Traceback" not in err, err
