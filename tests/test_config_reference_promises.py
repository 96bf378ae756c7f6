"""What docs/config-reference.md promises an operator, each checked where it takes effect.

The reference is generated from the declarations (``tests/test_docs.py`` keeps it in
sync), so its types and defaults cannot drift; what can is the *effect* each entry
describes and the rules of the file around them. Each test here names the sentence it
holds the code to.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from srcore.config import Config, ConfigError, Problem, load_config
from srcore.testing import write_config
from tests.conftest import run_config_check

TESTS = Path(__file__).resolve().parent

KEY_A = "a" * 40
KEY_B = "b" * 40

NETWORK = f"""\
[meta]
origin = http://127.0.0.1:5000
database-url = sqlite:///meta.db
secret-key = {KEY_A}

[todo]
origin = http://127.0.0.1:5001
database-url = sqlite:///todo.db
secret-key = {KEY_B}
oauth-client-id = todo
oauth-client-secret = hush
"""


def load(tmp_path: Path, text: str, environ: dict[str, str] | None = None) -> Config:
    path = tmp_path / "config.ini"
    path.write_text(text, encoding="utf-8")
    return load_config(path, specs={}, environ=environ or {})


def refused(tmp_path: Path, text: str, environ: dict[str, str] | None = None) -> list[Problem]:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, text, environ)
    return [p for p in info.value.problems if p.severity == "error"]


def build(tmp_path: Path, extra: str = "", *, global_: str = "", environment: str = "") -> Any:
    """The sample service's app on a config with *global_* lines and *extra* [sample] keys."""
    import sample_service

    path = write_config(
        tmp_path / "config.ini",
        service_id="sample",
        database_url=f"sqlite:///{tmp_path / 'sample.db'}",
        extra=extra,
    )
    text = path.read_text()
    if environment:
        text = text.replace("environment = development", f"environment = {environment}")
    path.write_text(text.replace("[global]\n", f"[global]\n{global_}", 1))
    return sample_service.create_app(config=path)


# -- where the file is --------------------------------------------------------------------


def test_a_missing_explicit_file_is_not_replaced_by_config_ini(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Lookup: "An explicit path or $SRCORE_CONFIG must exist; nothing else is tried then." """
    monkeypatch.chdir(tmp_path)
    (tmp_path / "config.ini").write_text(NETWORK)
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "typo.ini", specs={}, environ={})
    with pytest.raises(ConfigError, match=r"\$SRCORE_CONFIG"):
        load_config(specs={}, environ={"SRCORE_CONFIG": str(tmp_path / "typo.ini")})


def test_the_explicit_path_wins_over_srcore_config(tmp_path: Path) -> None:
    """Lookup: "The file named by `srcore --config FILE`, else `$SRCORE_CONFIG`, ..." """
    given, other = tmp_path / "given.ini", tmp_path / "other.ini"
    given.write_text("[global]\nsite-name = Given\n\n" + NETWORK)
    other.write_text("[global]\nsite-name = Other\n\n" + NETWORK)
    config = load_config(given, specs={}, environ={"SRCORE_CONFIG": str(other)})
    assert config.global_["site-name"] == "Given"


# -- values ---------------------------------------------------------------------------------


def test_comment_markers(tmp_path: Path) -> None:
    """Values: "Comments start with ; or # at the beginning of a line or after a space." A # with
    no space before it is part of the value (a URL fragment, "Team#2")."""
    text = (
        "; a comment\n# another\n[global]\n"
        "site-name = Team#2 ; the second team\n"
        "smtp-from = ops@example.org # who sends\n\n" + NETWORK
    )
    config = load(tmp_path, text)
    assert config.global_["site-name"] == "Team#2"
    assert config.global_["smtp-from"] == "ops@example.org"


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("true", True),
        ("false", False),
        ("yes", True),
        ("no", False),
        ("on", True),
        ("off", False),
        ("1", True),
        ("0", False),
    ],
)
def test_every_yes_no_spelling_the_reference_lists(text: str, value: bool) -> None:
    """Types: "yes/no (`true`/`false`, `yes`/`no`, `on`/`off`, `1`/`0`)" """
    from srcore.config import Key, parse_value

    assert parse_value(Key("k", type="bool"), text) is value


def test_a_value_file_is_read_whole_without_its_trailing_newline(tmp_path: Path) -> None:
    """Secrets from files: "the file's content, without its trailing newline, is the value" """
    (tmp_path / "name").write_text("  The Net  \n", encoding="utf-8")
    config = load(tmp_path, "[global]\nsite-name-file = name\n\n" + NETWORK)
    assert config.global_["site-name"] == "  The Net  "


def test_a_value_file_over_64_kib_or_not_utf8_is_refused_naming_it(tmp_path: Path) -> None:
    """Secrets from files: "(at most 64 KiB, UTF-8)": past either, one line naming the file
    and the key."""
    big, latin = tmp_path / "big", tmp_path / "latin"
    big.write_text("x" * (64 * 1024 + 1))
    latin.write_bytes("caf\xe9".encode("latin-1"))
    (just,) = [tmp_path / "just"]
    just.write_text("y" * (64 * 1024))
    assert load(tmp_path, f"[global]\nsite-name-file = {just}\n\n" + NETWORK)
    for path, reason in ((big, "larger than 65536 bytes"), (latin, "not UTF-8 text")):
        (problem,) = refused(tmp_path, f"[global]\nsite-name-file = {path}\n\n" + NETWORK)
        assert (problem.line, problem.section, problem.key) == (2, "global", "site-name-file")
        assert problem.message == f"cannot read {path}: {reason}"


def test_an_environment_file_is_relative_to_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Environment overrides: "`SRCORE__<SECTION>__<KEY>_FILE` reads the value from a file
    (relative to the working directory)", not to the config file's directory."""
    (tmp_path / "conf").mkdir()
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "key").write_text(KEY_A + "x\n")
    (tmp_path / "conf" / "key").write_text(KEY_A + "y\n")
    monkeypatch.chdir(tmp_path / "run")
    environ = {"SRCORE__TODO__SECRET_KEY_FILE": "key"}
    text = NETWORK.replace(f"secret-key = {KEY_B}\n", "")
    config = load(tmp_path / "conf", text, environ)
    assert config.section("todo")["secret-key"] == KEY_A + "x"


# -- [global] -------------------------------------------------------------------------------


def test_site_name_is_in_the_title_and_the_navigation_bar(tmp_path: Path) -> None:
    """site-name: "shown in page titles, the navigation bar and mail" (mail: meta's tests)."""
    text = write_config(
        tmp_path / "config.ini",
        service_id="sample",
        database_url=f"sqlite:///{tmp_path / 'sample.db'}",
    ).read_text()
    (tmp_path / "config.ini").write_text(text.replace("srcore test network", "Zebra Net"))
    import sample_service

    html = sample_service.create_app(config=tmp_path / "config.ini").test_client().get("/").text
    title = html.split("<title>", 1)[1].split("</title>", 1)[0]
    bar = html.split('class="site-header', 1)[1].split("</header>", 1)[0]
    assert "Zebra Net" in title
    assert '<a class="site-name" href="/">Zebra Net</a>' in bar


@pytest.mark.parametrize(
    ("environment", "banner", "relaxed"),
    [("development", True, True), ("staging", True, False), ("production", False, False)],
)
def test_environment_banner_cookies_csrf_and_reloading(
    tmp_path: Path, environment: str, banner: bool, relaxed: bool
) -> None:
    """environment: "Anything but 'production' shows a banner on every page; 'development'
    also relaxes secure-cookie and CSRF-over-TLS requirements and reloads templates." """
    app = build(tmp_path, environment=environment)
    html = app.test_client().get("/").text
    assert ("env-banner" in html) is banner
    assert app.config["SESSION_COOKIE_SECURE"] is not relaxed
    assert app.config["WTF_CSRF_SSL_STRICT"] is not relaxed
    assert app.config["TEMPLATES_AUTO_RELOAD"] is relaxed


_LOGGING_PROBE = textwrap.dedent(
    """
    import logging, sys
    sys.path.insert(0, sys.argv[2])
    import sample_service
    sample_service.create_app(config=sys.argv[1])
    for name in ("srcore.probe", "sample_service.probe"):
        log = logging.getLogger(name)
        log.debug("debug from %s", name)
        log.info("info from %s", name)
        log.warning("warning from %s", name)
    """
)


def _logged(tmp_path: Path, level: str) -> str:
    path = write_config(
        tmp_path / f"{level}.ini",
        service_id="sample",
        database_url=f"sqlite:///{tmp_path / 'sample.db'}",
    )
    path.write_text(path.read_text().replace("[global]\n", f"[global]\nlog-level = {level}\n"))
    environ = {k: v for k, v in os.environ.items() if not k.startswith("SRCORE")}
    done = subprocess.run(
        [sys.executable, "-c", _LOGGING_PROBE, str(path), str(TESTS)],
        capture_output=True,
        text=True,
        timeout=60,
        env=environ,
        check=True,
    )
    return done.stderr


@pytest.mark.parametrize(
    ("level", "shown", "hidden"),
    [
        ("info", ["info", "warning"], ["debug"]),
        ("debug", ["debug", "info", "warning"], []),
        ("warning", ["warning"], ["debug", "info"]),
    ],
)
def test_log_level_applies_to_srcore_and_to_the_service_itself(
    tmp_path: Path, level: str, shown: list[str], hidden: list[str]
) -> None:
    """log-level: "The least severe log messages written by every service." A service's
    own loggers (meta's "account registered") are written at that level too, not only
    srcore's, and nothing below it is."""
    stderr = _logged(tmp_path, level)
    for name in ("srcore.probe", "sample_service.probe"):
        for severity in shown:
            assert f"{severity} from {name}" in stderr, stderr
        for severity in hidden:
            assert f"{severity} from {name}" not in stderr, stderr
        assert stderr.count(f"warning from {name}") == 1, stderr  # not twice


def test_http_timeout_and_internal_origin_shape_the_link_to_meta(tmp_path: Path) -> None:
    """http-timeout: "How long a service waits on another service's HTTP API (token checks,
    manifests)"; internal-origin: "Empty: origin is used"; revocation-pull-interval is
    the puller's, and "0s" has it pull with no rounds."""
    from srcore.auth.link import build_meta_link

    config = load(tmp_path, "[global]\nhttp-timeout = 3s\n\n" + NETWORK)
    link = build_meta_link(config, "todo")
    assert link is not None
    assert link.meta.timeout == 3.0
    assert link.keys.timeout == 3.0
    assert link.meta.internal == "http://127.0.0.1:5000"
    assert link.puller is not None
    assert link.puller.interval == 30.0

    inside = NETWORK.replace(
        "[todo]", "internal-origin = http://10.0.0.5:5000\nrevocation-pull-interval = 0s\n[todo]"
    )
    with pytest.raises(ConfigError, match="revocation-pull-interval belongs in"):
        load(tmp_path, inside)
    inside = "[global]\nrevocation-pull-interval = 0s\n\n" + NETWORK.replace(
        "[todo]", "internal-origin = http://10.0.0.5:5000\n\n[todo]"
    )
    link = build_meta_link(load(tmp_path, inside), "todo")
    assert link is not None
    assert link.meta.internal == "http://10.0.0.5:5000"
    assert link.keys.url == "http://10.0.0.5:5000/oauth/jwks.json"
    assert link.puller is not None
    assert link.puller.interval == 0.0  # "0s": no rounds (never started here: 10.0.0.5)


@pytest.mark.parametrize("value", ["0s", "0ms", "10m", "999999999d"])
def test_an_http_timeout_that_cannot_work_is_refused(tmp_path: Path, value: str) -> None:
    """A timeout of nothing fails every call to meta (every login and first token check);
    one of hours holds a web worker that long. Both are one line naming the key."""
    (problem,) = refused(tmp_path, f"[global]\nhttp-timeout = {value}\n\n" + NETWORK)
    assert (problem.line, problem.section, problem.key) == (2, "global", "http-timeout")
    assert "must be between 100ms and 1m" in problem.message


# -- [<service>] ----------------------------------------------------------------------------


def test_max_content_length_from_the_file_gives_413(tmp_path: Path) -> None:
    """max-content-length: "The largest request body accepted, in bytes; larger requests
    get 413." Set in the file, not in Flask's config by hand."""
    app = build(tmp_path, "max-content-length = 1000\n")
    app.config["WTF_CSRF_ENABLED"] = False
    client = app.test_client()
    assert client.post("/form", data={"x": "1" * 500}).status_code == 200
    response = client.post("/form", data={"x": "1" * 5000})
    assert response.status_code == 413


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ("0s", "must be between 1m and 3650d, not 0s"),
        ("30s", "must be between 1m and 3650d, not 30s"),
        ("999999999d", "must be between 1m and 3650d, not 999999999d"),
    ],
)
def test_a_session_lifetime_nobody_could_log_in_with_is_refused(
    tmp_path: Path, value: str, why: str
) -> None:
    """session-lifetime: a login lasting no time is lost before the next page (the service
    sends the user to meta, which sends them straight back, for ever); one past the
    calendar's end fails every login. Both are refused in one line."""
    (problem,) = refused(tmp_path, NETWORK + f"session-lifetime = {value}\n")
    assert (problem.section, problem.key) == ("todo", "session-lifetime")
    assert problem.message.startswith(why)


def test_the_longest_session_lifetime_still_logs_in(tmp_path: Path) -> None:
    from srcore.testing import create_user, log_in_client

    app = build(tmp_path, "session-lifetime = 3650d\n")
    st = app.extensions["srcore"]
    from srcore.migrate import core_metadata

    st.metadata.create_all(st.db.engine)
    core_metadata().create_all(st.db.engine)  # the ended sessions' table, as migrated
    client = log_in_client(app.test_client(), create_user(app, "alice"))
    assert client.get("/private").status_code == 200
    assert app.permanent_session_lifetime == timedelta(days=3650)


def test_http_timeout_bounds_meta_reading_another_services_manifest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """http-timeout: "How long a service waits on another service's HTTP API (token checks,
    manifests)": meta reads the scopes of a service installed elsewhere from its manifest
    URL, and waits on it as long as the operator said, not a length of its own."""
    import meta
    import requests

    path = tmp_path / "config.ini"
    path.write_text(
        "[global]\nhttp-timeout = 7s\n\n"
        + NETWORK.replace("[todo]", "[elsewhere]").replace("/todo.db", "/elsewhere.db"),
        encoding="utf-8",
    )
    app = meta.create_app(config=path)
    asked: list[object] = []

    def refuse(url: str, **options: object) -> None:
        asked.append((url, options.get("timeout")))
        raise requests.ConnectionError("refused")

    monkeypatch.setattr(requests, "get", refuse)
    found = app.extensions["meta.oauth"].catalog.service("elsewhere")
    assert not found.known
    assert asked == [("http://127.0.0.1:5001/.well-known/srcore-service", 7.0)]


# -- the services' own keys -----------------------------------------------------------------


def _repo_specs() -> dict[str, Any]:
    """The keys meta, paste and todo declare, read from their manifests in this checkout."""
    import yaml

    from srcore.manifest import parse_manifest

    specs: dict[str, Any] = {}
    for path in sorted(TESTS.parent.glob("example_services/*/*/service.yaml")):
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        specs.update(parse_manifest(data, package=path.parent.name, source=str(path)).config)
    return specs


SERVICES = f"""\
[meta]
origin = http://127.0.0.1:5000
database-url = sqlite:///meta.db
secret-key = {"m" * 40}

[todo]
origin = http://127.0.0.1:5001
database-url = sqlite:///todo.db
secret-key = {"t" * 40}
oauth-client-id = todo
oauth-client-secret = hush-todo

[paste]
origin = http://127.0.0.1:5002
database-url = sqlite:///paste.db
secret-key = {"p" * 40}
oauth-client-id = paste
oauth-client-secret = hush-paste
"""


def test_every_key_the_services_declare_loads_with_its_default(tmp_path: Path) -> None:
    path = tmp_path / "config.ini"
    path.write_text(SERVICES, encoding="utf-8")
    config = load_config(path, specs=_repo_specs(), environ={})
    assert config.section("paste")["pastes-per-page"] == 25
    assert config.section("todo")["trackers-per-page"] == 25
    assert config.section("meta")["audit-retention"] == timedelta(days=365)


@pytest.mark.parametrize(
    ("section", "key", "value", "message"),
    [
        ("paste", "pastes-per-page", "0", "must be between 1 and 500, not 0"),
        ("paste", "pastes-per-page", "-3", "must be between 1 and 500, not -3"),
        ("paste", "pastes-per-page", "100000", "must be between 1 and 500, not 100000"),
        ("paste", "max-paste-length", "0", "must be between 1 and 1000000, not 0"),
        ("todo", "tickets-per-page", "0", "must be between 1 and 500, not 0"),
        ("todo", "trackers-per-page", "1000000", "must be between 1 and 500, not 1000000"),
        ("meta", "password-min-length", "0", "must be between 1 and 1024, not 0"),
        ("meta", "password-min-length", "2000", "must be between 1 and 1024, not 2000"),
        ("meta", "login-max-failures", "0", "must be between 1 and 1000, not 0"),
        ("meta", "access-token-lifetime", "0s", "must be between 1m and 30d, not 0s"),
        ("meta", "refresh-token-lifetime", "999999999d", "must be between 1h and 3650d"),
        ("meta", "authorization-code-lifetime", "1h", "must be between 10s and 10m, not 1h"),
        ("meta", "login-lockout", "0s", "must be between 1s and 30d, not 0s"),
        ("meta", "confirmation-lifetime", "0s", "must be between 1m and 365d, not 0s"),
        ("meta", "reset-lifetime", "999999999d", "must be between 1m and 30d"),
        ("meta", "audit-retention", "999999999d", "must be between 1d and 3650d"),
    ],
)
def test_a_service_value_that_cannot_work_is_one_line_naming_the_key(
    tmp_path: Path, section: str, key: str, value: str, message: str
) -> None:
    """A bad value of a service's own key is the operator's to fix, like srcore's: one
    line with file, line, section and key, never a page of 500s (an audit-retention past
    the calendar failed every login; a password-min-length past the longest password
    accepted let nobody register) or a value quietly replaced (a page of 0 pastes)."""
    text = SERVICES.replace(f"[{section}]\n", f"[{section}]\n{key} = {value}\n", 1)
    path = tmp_path / "config.ini"
    path.write_text(text, encoding="utf-8")
    line = text.splitlines().index(f"{key} = {value}") + 1
    with pytest.raises(ConfigError) as info:
        load_config(path, specs=_repo_specs(), environ={})
    (problem,) = [p for p in info.value.problems if p.severity == "error"]
    assert (problem.file, problem.line, problem.section, problem.key) == (
        str(path),
        line,
        section,
        key,
    )
    assert problem.message.startswith(message), problem.message


@pytest.mark.parametrize("value", ["1ms", "500ms", "2d", "999999999d"])
def test_a_revocation_pull_interval_that_cannot_work_is_refused(tmp_path: Path, value: str) -> None:
    """revocation-pull-interval: "0s: push only"; anything else is a pause between pulls.
    A millisecond has every process of every service ask meta all the time; one past the
    calendar stopped the pulling thread with a traceback after its first pull, leaving a
    lost push lost for good. Both are one line naming the key."""
    (problem,) = refused(tmp_path, f"[global]\nrevocation-pull-interval = {value}\n\n" + NETWORK)
    assert (problem.line, problem.section, problem.key) == (2, "global", "revocation-pull-interval")
    assert problem.message.startswith("must be 0s (push only) or between 1s and 1d, not ")


@pytest.mark.parametrize(("value", "seconds"), [("0s", 0.0), ("1s", 1.0), ("1d", 86400.0)])
def test_a_revocation_pull_interval_in_range_is_the_pullers(
    tmp_path: Path, value: str, seconds: float
) -> None:
    from srcore.auth.link import build_meta_link

    config = load(tmp_path, f"[global]\nrevocation-pull-interval = {value}\n\n" + NETWORK)
    link = build_meta_link(config, "todo")
    assert link is not None and link.puller is not None
    assert link.puller.interval == seconds


@pytest.mark.parametrize(
    ("section", "key", "first"),
    [
        ("global", "site-name", "My"),
        ("global", "smtp-host", "mail"),
        ("global", "smtp-user", "ops"),
        ("global", "smtp-from", "ops@example.org"),
        ("global", "security-contact", "security@example.org"),
        ("todo", "oauth-client-id", "todo-client"),
        ("todo", "metrics-path", "/metrics"),
    ],
)
def test_a_line_break_in_a_one_line_value_is_refused(
    tmp_path: Path, section: str, key: str, first: str
) -> None:
    """ "Indented lines continue the value above": a list's next item, but in a one-line
    text it would reach the service whole (a From header with a Bcc line after it, a
    host name with a newline, a site name in every mail's subject: each mail then fails
    to be built). One line naming the key, as for any other bad value."""
    text = NETWORK.replace("oauth-client-id = todo\n", "")
    where = "[global]\n" if section == "global" else "[todo]\n"
    text = ("[global]\n\n" + text).replace(where, f"{where}{key} = {first}\n  Bcc: x@example.org\n")
    (problem,) = refused(tmp_path, text)
    assert (problem.section, problem.key) == (section, key)
    assert problem.line == text.splitlines().index(f"{key} = {first}") + 1
    assert problem.message.startswith("is one line, but the indented line below continues it")
    environ = {f"SRCORE__{section.upper()}__{key.upper().replace('-', '_')}": f"{first}\nx"}
    (problem,) = refused(tmp_path, "[global]\n\n" + NETWORK, environ)
    assert (problem.section, problem.key) == (section, key)


def test_a_global_key_set_for_a_service_in_the_environment_is_refused_naming_the_right_one(
    tmp_path: Path,
) -> None:
    """ "a key of `[global]` in a service's section (or the reverse) is an error, since it
    would be ignored where it stands": set from the environment, as in the file. The
    message names the variable that would work."""
    environ = {"SRCORE__TODO__LOG_LEVEL": "debug", "SRCORE__GLOBAL__ORIGIN": "http://x.example"}
    problems = refused(tmp_path, NETWORK, environ)
    assert sorted(str(p) for p in problems) == [
        f"{tmp_path / 'config.ini'}: environment variable SRCORE__GLOBAL__ORIGIN: origin "
        "belongs in each service's section, not [global]: set SRCORE__<SERVICE>__ORIGIN",
        f"{tmp_path / 'config.ini'}: environment variable SRCORE__TODO__LOG_LEVEL: log-level "
        "belongs in [global]: it applies to every service; set SRCORE__GLOBAL__LOG_LEVEL",
    ]


def test_a_misspelt_environment_variable_is_told_the_close_key(tmp_path: Path) -> None:
    """The hint compares the key's part of the name, not the prefix every variable of
    the section shares (LOG_LEVLE once drew "did you mean SRCORE__TODO__ORIGIN?")."""
    environ = {"SRCORE__TODO__DATABSE_URL": "x", "SRCORE__TODO__LOG_LEVLE": "x"}
    messages = sorted(w.message for w in load(tmp_path, NETWORK, environ).warnings)
    assert messages == [
        "environment variable SRCORE__TODO__DATABSE_URL names no key of [todo]; "
        "did you mean 'SRCORE__TODO__DATABASE_URL'?",
        "environment variable SRCORE__TODO__LOG_LEVLE names no key of [todo]",
    ]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("redis://127.0.0.1:6379/x", "the database of a Redis URL is a number"),
        ("redis://127.0.0.1:6379/0/extra", "the database of a Redis URL is a number"),
    ],
)
def test_a_redis_url_whose_database_is_no_number_is_refused(
    tmp_path: Path, value: str, message: str
) -> None:
    """redis-url, "e.g. redis://127.0.0.1:6379/0": Redis's client reads a database that is
    no number as none and quietly uses database 0, which another program may be using;
    the broker URL was already checked so, the shared Redis was not."""
    (problem,) = refused(tmp_path, f"[global]\nredis-url = {value}\n\n" + NETWORK)
    assert (problem.line, problem.section, problem.key) == (2, "global", "redis-url")
    assert message in problem.message
    assert load(tmp_path, "[global]\nredis-url = redis://127.0.0.1:6379/3\n\n" + NETWORK)


@pytest.mark.parametrize(
    "value",
    [
        "x@",
        "@example.org",
        "Example <noreply@example.org",
        "Example noreply@example.org",
        "a@b@example.org",
        "Ops, Team <ops@example.org>",
    ],
)
def test_an_smtp_from_no_mail_could_carry_is_refused(tmp_path: Path, value: str) -> None:
    """smtp-from: "The sender address of outgoing mail, e.g. 'Example
    <noreply@example.org>'". One that is no single address broke every mail when it was
    built (x@ raised IndexError from the mail library); it is one line naming the key."""
    (problem,) = refused(tmp_path, f"[global]\nsmtp-from = {value}\n\n" + NETWORK)
    assert (problem.line, problem.section, problem.key) == (2, "global", "smtp-from")
    assert problem.message.startswith(f"not a mail address: {value!r}")


@pytest.mark.parametrize(
    "value", ["noreply@example.org", "Example <noreply@example.org>", '"Ops, Team" <o@x.org>']
)
def test_an_smtp_from_that_is_one_address_builds_mail(tmp_path: Path, value: str) -> None:
    from srcore.mail import Mailer

    config = load(tmp_path, f"[global]\nsmtp-from = {value}\n\n" + NETWORK)
    message = Mailer.from_config(config.global_).build("bob@example.org", "Hi", "Body\n")
    assert message["From"] == value


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("mail.example.org:587", "a host name alone: put the port in smtp-port"),
        ("smtp://mail.example.org", "a host name alone, not a URL"),
        ("mail.example.org/relay", "a host name alone"),
    ],
)
def test_an_smtp_host_with_a_port_or_scheme_is_refused(
    tmp_path: Path, value: str, message: str
) -> None:
    """smtp-host: "The SMTP server outgoing mail is sent through", with its port in
    smtp-port. 'host:587' was taken for a host name, and every mail failed to resolve."""
    (problem,) = refused(tmp_path, f"[global]\nsmtp-host = {value}\n\n" + NETWORK)
    assert (problem.line, problem.section, problem.key) == (2, "global", "smtp-host")
    assert message in problem.message
    for good in ("mail.example.org", "127.0.0.1", "::1", "smtp-relay"):
        config = load(tmp_path, f"[global]\nsmtp-host = {good}\n\n" + NETWORK)
        assert config.global_["smtp-host"] == good


# -- what an operator types by mistake ------------------------------------------------------


@pytest.mark.parametrize(
    ("section", "key", "value", "code"),
    [
        ("global", "site-name", "Zebra\x1b[1mNet", "001B"),
        ("global", "site-name", "Zebra\x00Net", "0000"),
        ("global", "smtp-user", "ops\x7f", "007F"),
        ("global", "security-contact", "security\u2028@example.org", "2028"),
        ("todo", "oauth-client-id", "to\x85do", "0085"),
    ],
)
def test_a_control_character_in_a_text_value_is_refused(
    tmp_path: Path, section: str, key: str, value: str, code: str
) -> None:
    """Types: "text (one line without control characters, but for a secret)". An escape
    pasted from a terminal into site-name reached every mail's subject, and every mail
    then failed to be built; a config check said nothing. One line naming the key."""
    text = "[global]\n\n" + NETWORK.replace("oauth-client-id = todo\n", "")
    where = f"[{section}]\n"
    text = text.replace(where, f"{where}{key} = {value}\n", 1)
    (problem,) = refused(tmp_path, text)
    assert (problem.section, problem.key) == (section, key)
    assert problem.line == text.split("\n").index(f"{key} = {value}") + 1
    assert problem.message.startswith(f"has a control character (U+{code})")


def test_a_carriage_return_from_an_environment_file_is_named(tmp_path: Path) -> None:
    """A variable read from an environment file with Windows line ends ends with CR; in
    site-name it broke every mail as any control character does. Named as what it is."""
    environ = {"SRCORE__GLOBAL__SITE_NAME": "Zebra Net\r"}
    (problem,) = refused(tmp_path, NETWORK, environ)
    assert (problem.section, problem.key) == ("global", "site-name")
    assert problem.message.startswith("ends with a carriage return (U+000D)")
    assert "SRCORE__GLOBAL__SITE_NAME" in problem.message


def test_a_secret_may_hold_any_character(tmp_path: Path) -> None:
    """ "text (one line ..., but for a secret)": a password is whatever the server set."""
    config = load(tmp_path, "[global]\nsmtp-password = a\x1bb\u2028c\n\n" + NETWORK)
    assert config.global_["smtp-password"] == "a\x1bb\u2028c"


@pytest.mark.parametrize("value", ["/metrics?job=srcore", "/m%C3%A9trics", "/a<b>", "/x/<int:id>"])
def test_a_metrics_path_no_request_could_reach_is_refused(tmp_path: Path, value: str) -> None:
    """metrics-path: "e.g. /metrics: a plain path". A query or an escape in it made a
    route no scrape ever matched (the scraper got 404 and the operator no metrics); a
    placeholder made every scrape a 500. Refused naming the key and the character."""
    (problem,) = refused(tmp_path, NETWORK + f"metrics-path = {value}\n")
    assert (problem.section, problem.key) == ("todo", "metrics-path")
    assert problem.line == NETWORK.count("\n") + 1
    assert "use a plain path, like /metrics" in problem.message


@pytest.mark.parametrize(
    ("value", "url"), [("/métriques", "/m%C3%A9triques"), ("/ops/metrics", None)]
)
def test_a_plain_metrics_path_serves_the_metrics(
    tmp_path: Path, value: str, url: str | None
) -> None:
    """metrics-path: "The path Prometheus metrics are served at"; any plain path, even
    one with letters beyond ASCII, as a scraper on the service's network asks for it."""
    app = build(tmp_path, f"metrics-path = {value}\n")
    response = app.test_client().get(url or value, environ_base={"REMOTE_ADDR": "127.0.0.1"})
    assert response.status_code == 200
    assert b"srcore_http_requests_total" in response.data


@pytest.mark.parametrize(
    ("key", "value", "hint"),
    [
        ("log-level", "DEBUG", "debug"),
        ("smtp-tls", "STARTTLS", "starttls"),
        ("environment", "Staging", "staging"),
    ],
)
def test_a_choice_in_capitals_is_told_the_choice(
    tmp_path: Path, key: str, value: str, hint: str
) -> None:
    """enums: "one of the listed choices", which are lower case; capitals are refused,
    but the message names the one meant (it named none for DEBUG or STARTTLS)."""
    (problem,) = refused(tmp_path, f"[global]\n{key} = {value}\n\n" + NETWORK)
    assert (problem.line, problem.section, problem.key) == (2, "global", key)
    assert problem.message.endswith(f"did you mean {hint!r}?")


def test_a_key_of_another_service_is_named_with_its_section(tmp_path: Path) -> None:
    """Sections: "Unknown keys are warned about, not fatal (one that another section
    declares, like meta's login-lockout under [todo], is named with its section)": the
    warning said only "unknown key", and the operator kept looking for a typo."""
    path = tmp_path / "config.ini"
    path.write_text(SERVICES + "login-lockout = 5m\n", encoding="utf-8")
    config = load_config(path, specs=_repo_specs(), environ={})
    (warning,) = config.warnings
    assert (warning.section, warning.key) == ("paste", "login-lockout")
    assert (
        warning.message == "unknown key, ignored; login-lockout is a key of [meta]; move it there"
    )
    assert config.section("meta")["login-lockout"] == timedelta(minutes=15)


def test_config_check_says_what_would_stop_a_service_from_starting(tmp_path: Path) -> None:
    """audit-subscribers: "each a section of this file with an oauth-client-secret, or meta
    refuses to start", and ``srcore config check`` "reports every problem at once": a name
    that is no such section passed the check ("OK: 3 services"), and meta then refused to
    start at the restart. The check names the file, section and key as serve does."""
    path = tmp_path / "config.ini"
    path.write_text(
        SERVICES.replace("[meta]\n", "[meta]\naudit-subscribers = todo, tood\n", 1),
        encoding="utf-8",
    )
    status, output = run_config_check(path)
    assert status == 1, output
    assert f"{path}:2 [meta] audit-subscribers: tood: no service of this file" in output
    assert "Traceback" not in output
    path.write_text(
        SERVICES.replace("[meta]\n", "[meta]\naudit-subscribers = todo\n", 1), encoding="utf-8"
    )
    assert run_config_check(path) == (0, f"OK: 3 services (meta, todo, paste) in {path}\n")


def test_a_secret_from_an_environment_file_with_windows_line_ends_is_refused(
    tmp_path: Path,
) -> None:
    """Secrets may hold anything, but a CR at the end is the line end of an environment
    file written on Windows: an oauth-client-secret with it never matched meta's, and
    every login failed with meta saying only "invalid client"."""
    environ = {"SRCORE__TODO__OAUTH_CLIENT_SECRET": "hush\r"}
    (problem,) = refused(tmp_path, NETWORK.replace("oauth-client-secret = hush\n", ""), environ)
    assert (problem.section, problem.key) == ("todo", "oauth-client-secret")
    assert problem.message.startswith("ends with a carriage return (U+000D)")


@pytest.mark.parametrize("value", ["6M", "1h30M"])
def test_a_duration_in_capital_m_is_refused_as_ambiguous(tmp_path: Path, value: str) -> None:
    """Durations: "(`30s`, `5m`, `1h`, `2d`, `1h30m`)". Units were read in any case, so
    refresh-token-lifetime = 6M, meant as six months, quietly lasted six minutes."""
    text = SERVICES.replace("[meta]\n", f"[meta]\nrefresh-token-lifetime = {value}\n", 1)
    path = tmp_path / "config.ini"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(path, specs=_repo_specs(), environ={})
    (problem,) = info.value.errors
    assert (problem.line, problem.section, problem.key) == (2, "meta", "refresh-token-lifetime")
    assert problem.message.startswith(f"ambiguous duration: {value!r}: M is read as minutes")
    path.write_text(text.replace(value, "30D"), encoding="utf-8")
    config = load_config(path, specs=_repo_specs(), environ={})
    assert config.section("meta")["refresh-token-lifetime"] == timedelta(days=30)


@pytest.mark.parametrize("value", ["16MB", "16 MiB", "1000b"])
def test_a_number_of_bytes_written_with_a_unit_is_told_to_drop_it(
    tmp_path: Path, value: str
) -> None:
    """max-content-length: "The largest request body accepted, in bytes": a whole number.
    16MB was refused as "not a whole number" with no word of what was wrong with it."""
    (problem,) = refused(tmp_path, NETWORK + f"max-content-length = {value}\n")
    assert (problem.section, problem.key) == ("todo", "max-content-length")
    assert (
        problem.message == f"not a whole number: {value!r} (write the number alone, without a unit)"
    )
