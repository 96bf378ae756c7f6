from __future__ import annotations

import configparser
import io
from collections.abc import Mapping, Sequence
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from srcore.config import (
    GLOBAL_KEYS,
    SERVICE_KEYS,
    Config,
    ConfigError,
    Key,
    Problem,
    env_name,
    find_config_path,
    format_duration,
    format_value,
    load_config,
    parse_duration,
    parse_value,
)
from srcore.config import scan as cfgscan

KEY_A = "a" * 40
KEY_B = "b" * 40

MINIMAL = f"""\
[meta]
origin = http://127.0.0.1:5000
database-url = sqlite:///var/meta.db
secret-key = {KEY_A}

[todo]
origin = http://127.0.0.1:5001
database-url = postgresql+psycopg://localhost/todo
secret-key = {KEY_B}
oauth-client-id = todo-client
oauth-client-secret = hush
"""

REPO = Path(__file__).resolve().parent.parent


def load(
    tmp_path: Path,
    text: str,
    *,
    specs: Mapping[str, Sequence[Key]] | None = None,
    environ: dict[str, str] | None = None,
) -> Config:
    path = tmp_path / "config.ini"
    path.write_text(text, encoding="utf-8")
    return load_config(path, specs=specs or {}, environ=environ or {})


def problems(tmp_path: Path, text: str, **kwargs: object) -> list[Problem]:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, text, **kwargs)  # type: ignore[arg-type]
    return info.value.problems


def errors(tmp_path: Path, text: str, **kwargs: object) -> list[str]:
    return [str(p) for p in problems(tmp_path, text, **kwargs) if p.severity == "error"]


# -- a valid file ---------------------------------------------------------------------------


def test_minimal_file_loads_with_defaults(tmp_path: Path) -> None:
    cfg = load(tmp_path, MINIMAL)
    assert cfg.path == tmp_path / "config.ini"
    assert cfg.services == ["meta", "todo"]
    assert cfg.has_service("todo")
    assert not cfg.has_service("global")
    assert not cfg.has_service("paste")
    assert cfg.warnings == []
    assert cfg.global_["site-name"] == "srcore network"
    assert cfg.global_["environment"] == "development"
    assert cfg.global_["allow-private-webhook-targets"] == ()
    assert cfg.global_.source("site-name") == "default"
    todo = cfg.section("todo")
    assert todo["origin"] == "http://127.0.0.1:5001"
    assert todo["secret-key"] == KEY_B
    assert todo["max-content-length"] == 16 * 1024 * 1024
    assert todo["proxy-fix-trusted-hops"] == 0
    assert todo["metrics-path"] == ""
    assert todo["session-lifetime"] == timedelta(days=30)
    assert todo["internal-origin"] is None
    assert todo.source("origin") == f"{tmp_path / 'config.ini'}:7"
    assert set(todo) == {k.name for k in SERVICE_KEYS}


def test_section_errors_and_repr(tmp_path: Path) -> None:
    cfg = load(tmp_path, MINIMAL)
    with pytest.raises(KeyError, match=r"has no \[paste\] section"):
        cfg.section("paste")
    with pytest.raises(KeyError, match="declares no key 'nope'"):
        cfg.section("todo")["nope"]
    assert KEY_B not in repr(cfg.section("todo"))
    assert "********" in repr(cfg.section("todo"))
    assert cfg.section("todo").spec("secret-key").secret


def test_global_section_and_service_specs(tmp_path: Path) -> None:
    specs = {
        "todo": (Key("tickets-per-page", type="int", default=25, help="Tickets a page."),),
        "todo::mail": (Key("smtp-host", required=True),),
    }
    text = (
        "[global]\nsite-name = Example\nenvironment = production\n\n"
        + MINIMAL
        + "tickets-per-page = 50\n\n[todo::mail]\nsmtp-host = mail.example.org\n"
    )
    cfg = load(tmp_path, text, specs=specs)
    assert cfg.global_["site-name"] == "Example"
    assert cfg.global_["environment"] == "production"
    assert cfg.section("todo")["tickets-per-page"] == 50
    assert cfg.section("meta").get("tickets-per-page") is None
    assert cfg.section("todo::mail")["smtp-host"] == "mail.example.org"
    assert cfg.services == ["meta", "todo"]
    assert cfg.sections == ["global", "meta", "todo", "todo::mail"]


def test_service_may_redeclare_core_key(tmp_path: Path) -> None:
    specs = {"todo": (Key("metrics-path", default="/metrics"),)}
    cfg = load(tmp_path, MINIMAL, specs=specs)
    assert cfg.section("todo")["metrics-path"] == "/metrics"
    assert cfg.section("meta")["metrics-path"] == ""


def test_comments_and_continuation_lines(tmp_path: Path) -> None:
    text = (
        "# leading comment\n[global]\nsite-name = My Net   ; inline comment\n"
        "allow-private-webhook-targets = 10.0.0.0/8,\n    192.168.0.0/16\n"
        "    fd00::/8  # and a comment\n\n" + MINIMAL
    )
    cfg = load(tmp_path, text)
    assert cfg.global_["site-name"] == "My Net"
    assert cfg.global_["allow-private-webhook-targets"] == (
        "10.0.0.0/8",
        "192.168.0.0/16",
        "fd00::/8",
    )


# -- types ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "text", "expected"),
    [
        (Key("k"), "hello world", "hello world"),
        (Key("k", type="int"), "42", 42),
        (Key("k", type="int"), " -7 ", -7),
        (Key("k", type="bool"), "yes", True),
        (Key("k", type="bool"), "Off", False),
        (Key("k", type="bool"), "1", True),
        (Key("k", type="duration"), "30s", timedelta(seconds=30)),
        (Key("k", type="duration"), "5m", timedelta(minutes=5)),
        (Key("k", type="duration"), "1h", timedelta(hours=1)),
        (Key("k", type="duration"), "2d", timedelta(days=2)),
        (Key("k", type="duration"), "1h30m", timedelta(hours=1, minutes=30)),
        (Key("k", type="duration"), "1d 2h 3m 4s", timedelta(days=1, seconds=7384)),
        (Key("k", type="url"), "https://example.org/x?y", "https://example.org/x?y"),
        (Key("k", type="url"), "sqlite:///var/x.db", "sqlite:///var/x.db"),
        (Key("k", type="url"), "sqlite://", "sqlite://"),
        (Key("k", type="url"), "redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
        (Key("k", type="url"), "postgresql+psycopg://u@h/db", "postgresql+psycopg://u@h/db"),
        (Key("k", type="path"), "/var/lib/x", Path("/var/lib/x")),
        (Key("k", type="enum", choices=("a", "b")), "b", "b"),
        (Key("k", type="list"), "a, b,,c", ("a", "b", "c")),
        (Key("k", type="list"), "a\nb, c\n", ("a", "b", "c")),
    ],
)
def test_parse_value(key: Key, text: str, expected: object) -> None:
    assert parse_value(key, text) == expected


@pytest.mark.parametrize(
    ("key", "text", "message"),
    [
        (Key("k", type="int"), "12x", "not a whole number"),
        (Key("k", type="int"), "1.5", "not a whole number"),
        (Key("k", type="int"), "9" * 40, "not a whole number"),
        (Key("k", type="bool"), "maybe", "not a yes/no value"),
        (Key("k", type="duration"), "30", "not a duration"),
        (Key("k", type="duration"), "1m1h", "not a duration"),
        (Key("k", type="duration"), "99999999999999d", "too long"),
        (Key("k", type="url"), "example.org", "expected scheme://"),
        (Key("k", type="url"), "localhost:5000", "expected scheme://"),
        (Key("k", type="url"), "http:///path", "has no host"),
        (Key("k", type="url"), "http://a b", "whitespace"),
        (Key("k", type="url"), "http://host:99999", "not a URL"),
        (Key("k", type="url"), "http://[::1", "not a URL"),
        (Key("k", type="enum", choices=("debug", "info")), "inf", "did you mean 'info'"),
    ],
)
def test_parse_value_rejects(key: Key, text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_value(key, text)


@given(st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=10**6)))
def test_duration_round_trip(value: timedelta) -> None:
    whole = timedelta(seconds=int(value.total_seconds()))
    assert parse_duration(format_duration(whole)) == whole


def test_format_value() -> None:
    assert format_value(Key("k", type="bool"), True) == "true"
    assert format_value(Key("k", type="list"), ("a", "b")) == "a, b"
    assert format_value(Key("k", type="duration"), timedelta(minutes=90)) == "1h30m"
    assert format_value(Key("k", secret=True), "x") == "********"
    assert format_value(Key("k", secret=True), "x", redact=False) == "x"
    assert format_value(Key("k", secret=True), None) == ""


def test_key_declaration_is_checked() -> None:
    with pytest.raises(ValueError, match="type must be one of"):
        Key("k", type="float")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="needs choices"):
        Key("k", type="enum")
    with pytest.raises(ValueError, match="not a choice"):
        Key("k", type="enum", choices=("a",), default="b")
    with pytest.raises(ValueError, match="lower-case"):
        Key("Bad Name")
    assert Key("k", type="duration", default="5m").default == timedelta(minutes=5)
    assert Key("k", type="list", default="a, b").default == ("a", "b")
    assert Key("k", type="path", default="/x").default == Path("/x")


def test_bad_values_in_file_are_reported_with_lines(tmp_path: Path) -> None:
    specs = {
        "todo": (
            Key("per-page", type="int"),
            Key("notify", type="bool"),
            Key("grace", type="duration"),
            Key("mode", type="enum", choices=("fast", "slow")),
        )
    }
    text = MINIMAL + "per-page = many\nnotify = perhaps\ngrace = 5 minutes\nmode = fats\n"
    lines = errors(tmp_path, text, specs=specs)
    file = tmp_path / "config.ini"
    assert lines == [
        f"{file}:12 [todo] per-page: not a whole number: 'many'",
        f"{file}:13 [todo] notify: not a yes/no value: 'perhaps' (use true or false)",
        f"{file}:14 [todo] grace: not a duration: '5 minutes' "
        "(use a number and a unit: 30s, 5m, 1h, 2d, or 1h30m)",
        f"{file}:15 [todo] mode: 'fats' is not one of fast, slow; did you mean 'fast'?",
    ]


def test_core_key_checks(tmp_path: Path) -> None:
    text = (
        "[global]\nredis-url = http://x\nsmtp-port = 70000\nsmtp-from = nobody\n"
        "allow-private-webhook-targets = 10.0.0.1/8, lan\n\n"
        + MINIMAL.replace(KEY_A, "short").replace(
            "http://127.0.0.1:5001", "http://127.0.0.1:5001/todo"
        )
        + "metrics-path = metrics\nproxy-fix-trusted-hops = -1\n"
    )
    found = {(p.section, p.key): p.message for p in problems(tmp_path, text)}
    assert "redis://" in found[("global", "redis-url")]
    assert "not a TCP port" in found[("global", "smtp-port")]
    assert "not a mail address" in found[("global", "smtp-from")]
    assert "CIDR" in found[("global", "allow-private-webhook-targets")]
    assert "too short (5 characters" in found[("meta", "secret-key")]
    assert "srcore keygen" in found[("meta", "secret-key")]
    assert "use http://127.0.0.1:5001" in found[("todo", "origin")]
    assert "starting with '/'" in found[("todo", "metrics-path")]
    assert "at least 0" in found[("todo", "proxy-fix-trusted-hops")]


# -- required, unknown, structure -----------------------------------------------------------


def test_missing_required_key_points_at_section_header(tmp_path: Path) -> None:
    text = MINIMAL.replace(f"secret-key = {KEY_B}\n", "")
    (problem,) = [p for p in problems(tmp_path, text) if p.severity == "error"]
    assert problem.line == 6
    assert (problem.section, problem.key) == ("todo", "secret-key")
    assert "required, but not set" in problem.message
    assert "SRCORE__TODO__SECRET_KEY" in problem.message


def test_empty_value_means_unset(tmp_path: Path) -> None:
    cfg = load(tmp_path, "[global]\nredis-url =\nsite-name =\n" + MINIMAL)
    assert cfg.global_["redis-url"] is None
    assert cfg.global_["site-name"] == "srcore network"
    text = MINIMAL.replace(f"secret-key = {KEY_B}", "secret-key =")
    (problem,) = [p for p in problems(tmp_path, text) if p.severity == "error"]
    assert (problem.line, problem.message) == (9, "required, but empty")


def test_required_key_of_absent_subsection_has_no_line(tmp_path: Path) -> None:
    specs = {"todo::mail": (Key("smtp-host", required=True),)}
    (problem,) = problems(tmp_path, MINIMAL, specs=specs)
    assert (problem.line, problem.section, problem.key) == (None, "todo::mail", "smtp-host")


def test_absent_subsection_gets_defaults(tmp_path: Path) -> None:
    specs = {"todo::mail": (Key("smtp-host", default="localhost"),)}
    cfg = load(tmp_path, MINIMAL, specs=specs)
    assert cfg.section("todo::mail")["smtp-host"] == "localhost"
    assert "todo::mail" not in cfg.services


def test_unknown_keys_warn_with_suggestion(tmp_path: Path) -> None:
    cfg = load(tmp_path, MINIMAL + "databse-url = x\nfrobnicate = 1\nsecret-kye-file = /x\n")
    text = [str(w) for w in cfg.warnings]
    file = tmp_path / "config.ini"
    assert text == [
        f"{file}:12 [todo] databse-url: warning: unknown key, ignored; "
        "did you mean 'database-url'?",
        f"{file}:13 [todo] frobnicate: warning: unknown key, ignored",
        f"{file}:14 [todo] secret-kye-file: warning: unknown key, ignored; "
        "did you mean 'secret-key'?",
    ]


def test_unknown_subsections_warn(tmp_path: Path) -> None:
    specs = {"todo::mail": (Key("smtp-host"),)}
    text = MINIMAL + "\n[todo::mial]\nx = 1\n\n[paste::mail]\ny = 2\n\n[global::x]\n"
    cfg = load(tmp_path, text, specs=specs)
    messages = {w.section: w.message for w in cfg.warnings}
    assert "did you mean 'todo::mail'?" in messages["todo::mial"]
    assert "sub-section of [paste], which is not in this file" in messages["paste::mail"]
    assert "[global] has no sub-sections" in messages["global::x"]
    assert all(w.severity == "warning" for w in cfg.warnings)


def test_structure_errors_are_all_reported_at_once(tmp_path: Path) -> None:
    text = (
        "stray = 1\n"  # 1: before any section
        "[global]\n"  # 2
        "site-name = A\n"  # 3
        "site-name = B\n"  # 4: duplicate key
        "just words\n"  # 5: not key = value
        "= value\n"  # 6: no key name
        "[Todo Service]\n"  # 7: bad section name
        "[global]\n"  # 8: duplicate section
        "[meta] trailing\n"  # 9: text after header
        "origin = http://127.0.0.1:5000\n"
        "database-url = sqlite://\n"
        f"secret-key = {KEY_A}\n"
    )
    found = [(p.line, p.message.split(":")[0]) for p in problems(tmp_path, text)]
    assert found == [
        (1, "text before the first [section] header"),
        (4, "duplicate key"),
        (5, "not a 'key = value' line"),
        (6, "no key name before '='"),
        (7, "not a valid section name"),
        (8, "duplicate section"),
        (9, "text after the header"),
    ]


def test_unreadable_and_undecodable_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "missing.ini", specs={}, environ={})
    path = tmp_path / "config.ini"
    path.write_bytes(b"[global]\nsite-name = ok\nbad = \xff\xfe\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, specs={}, environ={})
    (problem,) = info.value.problems
    assert problem.line == 3
    assert "not UTF-8" in problem.message


def test_crlf_and_bom_are_accepted(tmp_path: Path) -> None:
    path = tmp_path / "config.ini"
    path.write_bytes(b"\xef\xbb\xbf" + MINIMAL.replace("\n", "\r\n").encode())
    cfg = load_config(path, specs={}, environ={})
    assert cfg.section("todo").source("origin").endswith(":7")


# -- network facts --------------------------------------------------------------------------


def test_services_may_not_share_secret_key_origin_or_client(tmp_path: Path) -> None:
    text = (
        MINIMAL.replace(KEY_B, KEY_A)
        .replace("127.0.0.1:5001", "127.0.0.1:5000")
        .replace("todo-client", "c")
        + "\n[paste]\norigin = http://127.0.0.1:5002\ndatabase-url = sqlite://\n"
        f"secret-key = {'c' * 40}\noauth-client-id = c\noauth-client-secret = s\n"
    )
    found = {(p.section, p.key): str(p) for p in problems(tmp_path, text)}
    assert "same as in [meta]" in found[("todo", "secret-key")]
    assert "srcore keygen" in found[("todo", "secret-key")]
    assert "same as in [meta]" in found[("todo", "origin")]
    assert "same as in [todo]" in found[("paste", "oauth-client-id")]


def test_meta_and_client_warnings(tmp_path: Path) -> None:
    no_meta = MINIMAL.split("[todo]")[1]
    cfg = load(tmp_path, "[todo]" + no_meta)
    assert [w.message for w in cfg.warnings] == [
        "no [meta] section: users log in to every service through meta"
    ]
    no_client = MINIMAL.replace("oauth-client-id = todo-client\n", "").replace(
        "oauth-client-secret = hush\n", ""
    )
    (warning,) = load(tmp_path, no_client).warnings
    assert (warning.section, warning.key, warning.line) == ("todo", "oauth-client-id", 6)
    text = MINIMAL.replace("oauth-client-secret = hush\n", "")
    (problem,) = problems(tmp_path, text)
    assert problem.message == "not set, but oauth-client-id is"


# -- environment and files ------------------------------------------------------------------


def test_env_name_scheme() -> None:
    assert env_name("todo", "database-url") == "SRCORE__TODO__DATABASE_URL"
    assert env_name("todo::mail", "smtp-host") == "SRCORE__TODO__MAIL__SMTP_HOST"
    assert env_name("global", "site-name") == "SRCORE__GLOBAL__SITE_NAME"


def test_env_overrides_file_and_defaults(tmp_path: Path) -> None:
    specs = {"todo::mail": (Key("smtp-host"),)}
    environ = {
        "SRCORE__TODO__DATABASE_URL": "sqlite:///other.db",
        "SRCORE__GLOBAL__SITE_NAME": "From Env",
        "SRCORE__TODO__MAIL__SMTP_HOST": "mx.example.org",
        "SRCORE__TODO__PROXY_FIX_TRUSTED_HOPS": "2",
        "SRCORE_CONFIG": "/ignored/because/a/path/is/given",
    }
    cfg = load(tmp_path, MINIMAL, specs=specs, environ=environ)
    todo = cfg.section("todo")
    assert todo["database-url"] == "sqlite:///other.db"
    assert todo.source("database-url") == "env SRCORE__TODO__DATABASE_URL"
    assert todo["proxy-fix-trusted-hops"] == 2
    assert cfg.global_["site-name"] == "From Env"
    assert cfg.section("todo::mail")["smtp-host"] == "mx.example.org"
    assert cfg.section("todo::mail").source("smtp-host") == "env SRCORE__TODO__MAIL__SMTP_HOST"
    assert cfg.warnings == []


def test_env_bad_value_names_the_variable(tmp_path: Path) -> None:
    environ = {"SRCORE__TODO__MAX_CONTENT_LENGTH": "lots"}
    (problem,) = problems(tmp_path, MINIMAL, environ=environ)
    assert problem.line is None
    assert (problem.section, problem.key) == ("todo", "max-content-length")
    assert "(from env SRCORE__TODO__MAX_CONTENT_LENGTH)" in problem.message


def test_env_can_supply_a_required_key(tmp_path: Path) -> None:
    text = MINIMAL.replace(f"secret-key = {KEY_B}\n", "")
    cfg = load(tmp_path, text, environ={"SRCORE__TODO__SECRET_KEY": KEY_B})
    assert cfg.section("todo")["secret-key"] == KEY_B


def test_unknown_env_vars_warn(tmp_path: Path) -> None:
    environ = {"SRCORE__TODO__DATABSE_URL": "x", "SRCORE__PASTE__ORIGIN": "x"}
    cfg = load(tmp_path, MINIMAL, environ=environ)
    messages = [w.message for w in cfg.warnings]
    assert messages == [
        "environment variable SRCORE__PASTE__ORIGIN names no section of this file "
        "(it has global, meta, todo)",
        "environment variable SRCORE__TODO__DATABSE_URL names no key of [todo]; "
        "did you mean 'SRCORE__TODO__DATABASE_URL'?",
    ]
    assert all(w.line is None for w in cfg.warnings)


def test_secret_from_file(tmp_path: Path) -> None:
    secret = tmp_path / "secrets" / "todo-key"
    secret.parent.mkdir()
    secret.write_text(KEY_B + "\n")
    text = MINIMAL.replace(f"secret-key = {KEY_B}", "secret-key-file = secrets/todo-key")
    todo = load(tmp_path, text).section("todo")
    assert todo["secret-key"] == KEY_B
    assert todo.source("secret-key") == f"file {secret}"


def test_secret_from_file_named_by_env(tmp_path: Path) -> None:
    secret = tmp_path / "key"
    secret.write_text(KEY_B + "\r\n")
    text = MINIMAL.replace(f"secret-key = {KEY_B}\n", "")
    environ = {"SRCORE__TODO__SECRET_KEY_FILE": str(secret)}
    todo = load(tmp_path, text, environ=environ).section("todo")
    assert todo["secret-key"] == KEY_B
    assert todo.source("secret-key") == f"file {secret}"


def test_secret_file_problems_name_the_file(tmp_path: Path) -> None:
    (tmp_path / "empty").write_text("\n")
    (tmp_path / "dir").mkdir()
    missing = tmp_path / "missing"
    text = (
        MINIMAL.replace(f"secret-key = {KEY_A}", f"secret-key-file = {missing}")
        .replace(f"secret-key = {KEY_B}", "secret-key-file = empty")
        .replace("oauth-client-secret = hush", "oauth-client-secret-file = dir")
    )
    found = {(p.section, p.key): (p.line, p.message) for p in problems(tmp_path, text)}
    assert found[("meta", "secret-key-file")] == (4, f"cannot read {missing}: no such file")
    assert found[("todo", "secret-key-file")] == (9, f"{tmp_path / 'empty'} is empty")
    line, message = found[("todo", "oauth-client-secret-file")]
    assert (line, message) == (11, f"cannot read {tmp_path / 'dir'}: not a regular file")
    assert len(found) == 3  # no extra "required" complaints for keys whose file failed


def test_value_and_file_both_set(tmp_path: Path) -> None:
    text = MINIMAL + "secret-key-file = /somewhere\n"
    (problem,) = problems(tmp_path, text)
    assert problem.key == "secret-key-file"
    assert "both secret-key (line 9) and secret-key-file are set" in problem.message
    environ = {"SRCORE__TODO__ORIGIN": "http://x", "SRCORE__TODO__ORIGIN_FILE": "/x"}
    (problem,) = problems(tmp_path, MINIMAL, environ=environ)
    assert "both SRCORE__TODO__ORIGIN and SRCORE__TODO__ORIGIN_FILE" in problem.message


def test_source_of_a_file_value_with_bad_content(tmp_path: Path) -> None:
    (tmp_path / "port").write_text("not-a-port\n")
    text = "[global]\nsmtp-port-file = port\n" + MINIMAL
    (problem,) = problems(tmp_path, text)
    assert problem.line == 2
    assert problem.key == "smtp-port"
    assert problem.message.endswith("(from smtp-port-file)")


# -- finding the file -----------------------------------------------------------------------


def test_find_config_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    explicit = tmp_path / "x.ini"
    explicit.write_text("")
    assert find_config_path(explicit, environ={}) == explicit
    assert find_config_path(None, environ={"SRCORE_CONFIG": str(explicit)}) == explicit
    with pytest.raises(ConfigError, match="no such config file"):
        find_config_path(tmp_path / "nope.ini", environ={})
    with pytest.raises(ConfigError, match=r"from \$SRCORE_CONFIG"):
        find_config_path(None, environ={"SRCORE_CONFIG": str(tmp_path / "nope.ini")})
    if not Path("/etc/srcore/config.ini").is_file():
        with pytest.raises(ConfigError) as info:
            find_config_path(None, environ={})
        message = str(info.value)
        assert "--config" in message
        assert "$SRCORE_CONFIG" in message
        assert "config.ini" in message
        assert "/etc/srcore/config.ini" in message
    (tmp_path / "config.ini").write_text(MINIMAL)
    assert find_config_path(None, environ={}) == Path("config.ini")
    assert load_config(specs={}, environ={}).services == ["meta", "todo"]


def test_problem_and_error_text() -> None:
    p = Problem("c.ini", 3, "todo", "origin", "bad")
    assert str(p) == "c.ini:3 [todo] origin: bad"
    assert str(Problem("c.ini", None, None, None, "gone")) == "c.ini: gone"
    assert str(Problem("", None, None, None, "nothing")) == "nothing"
    w = Problem("c.ini", 1, "todo", None, "odd", "warning")
    assert str(w) == "c.ini:1 [todo]: warning: odd"
    error = ConfigError([p, w])
    assert error.errors == [p]
    assert str(error).splitlines() == ["1 error in the config:", f"  {p}", f"  {w}"]
    assert str(ConfigError([p])) == str(p)


# -- the example file -----------------------------------------------------------------------


def test_example_file_documents_every_core_key() -> None:
    text = (REPO / "config.example.ini").read_text()
    parser = configparser.RawConfigParser(
        interpolation=None, inline_comment_prefixes=("#", ";"), default_section="\n"
    )
    parser.read_string(text)
    assert set(parser["global"]) == {k.name for k in GLOBAL_KEYS}
    assert set(parser["meta"]) | set(parser["todo"]) == {k.name for k in SERVICE_KEYS}
    assert parser.sections() == ["global", "meta", "todo"]


def test_example_file_only_lacks_secret_keys() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(REPO / "config.example.ini", specs={}, environ={})
    assert [(p.section, p.key, p.message) for p in info.value.errors] == [
        ("meta", "secret-key", "required, but empty"),
        ("todo", "secret-key", "required, but empty"),
    ]
    environ = {"SRCORE__META__SECRET_KEY": KEY_A, "SRCORE__TODO__SECRET_KEY": KEY_B}
    cfg = load_config(REPO / "config.example.ini", specs={}, environ=environ)
    assert cfg.services == ["meta", "todo"]
    assert [w.key for w in cfg.warnings] == ["oauth-client-id"]


def test_every_core_key_has_help() -> None:
    for key in GLOBAL_KEYS + SERVICE_KEYS:
        assert key.help.endswith("."), key.name
        assert len(key.help) > 20, key.name


# -- fuzzing --------------------------------------------------------------------------------

SPECS = {
    "todo": (
        Key("per-page", type="int", default=25),
        Key("flag", type="bool"),
        Key("grace", type="duration"),
        Key("mode", type="enum", choices=("a", "b")),
        Key("dirs", type="list"),
        Key("home", type="path"),
    ),
    "todo::mail": (Key("smtp-host", required=True),),
}

_names = st.sampled_from(
    ["global", "meta", "todo", "todo::mail", "todo::x", "paste::y", "Bad Name", "global::z"]
)
_keys = st.sampled_from(
    [k.name for k in GLOBAL_KEYS + SERVICE_KEYS]
    + ["per-page", "flag", "grace", "mode", "dirs", "home", "secret-key-file", "nope", ""]
)
_values = st.one_of(
    st.text(max_size=30),
    st.sampled_from(
        ["", "1", "-1", "yes", "1h30m", "http://x", "http://", "a, b", "sqlite://", "a" * 40]
    ),
)
_line = st.one_of(
    st.builds(lambda n: f"[{n}]", _names),
    st.builds(lambda k, v, sep: f"{k}{sep}{v}", _keys, _values, st.sampled_from(["=", " = ", ":"])),
    st.builds(lambda v: f"    {v}", _values),
    st.sampled_from(["", "; comment", "# comment", "[", "]", "==", "[]"]),
)
_ini = st.lists(_line, max_size=25).map("\n".join)
_environ = st.dictionaries(
    st.sampled_from(
        [
            "SRCORE__TODO__ORIGIN",
            "SRCORE__TODO__SECRET_KEY_FILE",
            "SRCORE__TODO__MAIL__SMTP_HOST",
            "SRCORE__GLOBAL__SMTP_PORT",
            "SRCORE__X",
            "SRCORE__",
        ]
    ),
    _values,
    max_size=3,
)


def _never_crashes(tmp_path: Path, text: str, environ: dict[str, str]) -> None:
    error: ConfigError | None = None
    try:
        cfg = load(tmp_path, text, specs=SPECS, environ=environ)
    except ConfigError as exc:
        error = exc
    else:
        assert "global" in cfg.sections
    if error is not None:
        assert error.errors
        assert all(str(problem) for problem in error.problems)


@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(max_size=400))
def test_fuzz_arbitrary_text(tmp_path: Path, text: str) -> None:
    _never_crashes(tmp_path, text, {})


@settings(max_examples=100, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=200))
def test_fuzz_arbitrary_bytes(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "config.ini"
    path.write_bytes(data)
    error: ConfigError | None = None
    try:
        load_config(path, specs=SPECS, environ={})
    except ConfigError as exc:
        error = exc
    assert error is None or error.errors


@settings(max_examples=500, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=_ini, environ=_environ)
def test_fuzz_ini_shaped_text(tmp_path: Path, text: str, environ: dict[str, str]) -> None:
    _never_crashes(tmp_path, text, environ)


@settings(max_examples=500)
@given(text=st.one_of(_ini, st.text(max_size=200)))
def test_scanner_agrees_with_configparser(text: str) -> None:
    """Where configparser accepts a file, the line-keeping scanner reads the same thing."""
    parser = cfgscan._new_parser()
    try:
        parser.read_string(text)
    except configparser.Error:
        return
    scanned = cfgscan._scan(text, "f")
    assert list(scanned.sections) == parser.sections()
    for name in parser.sections():
        assert scanned.values[name] == dict(parser.items(name))
        for key in parser[name]:
            line = io.StringIO(text).readlines()[scanned.lines[(name, key)] - 1]
            assert line.split("=")[0].split(":")[0].strip().lower() == key


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("/", "must not be / (the service's front page)"),
        ("/healthz", "under /healthz, which every service answers itself"),
        ("/api/metrics", "under /api, which every service answers itself"),
        ("/webhooks/", "under /webhooks"),
        ("/.well-known/metrics", "under /.well-known"),
    ],
)
def test_metrics_path_may_not_hide_a_page_every_service_has(
    tmp_path: Path, value: str, says: str
) -> None:
    """Served there, the metrics would replace that page, with nothing said."""
    found = {
        (p.section, p.key): p.message
        for p in problems(tmp_path, MINIMAL + f"metrics-path = {value}\n")
    }
    assert says in found[("todo", "metrics-path")]
    for fine in ("/metrics", "/internal/metrics", "/apis"):
        section = load(tmp_path, MINIMAL + f"metrics-path = {fine}\n").section("todo")
        assert section["metrics-path"] == fine
