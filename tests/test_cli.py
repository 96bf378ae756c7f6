"""The ``srcore`` command: every --help has an example; long commands report progress.

``srcore migrate --all upgrade`` and ``srcore worker`` run here on real SQLite configs of
the example services (meta, todo, paste), in process through Click's runner and, for the
worker that runs until a signal, as a real process.
"""

from __future__ import annotations

import os
import re
import secrets
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from click.testing import CliRunner, Result
from sqlalchemy import create_engine, inspect

from srcore import migrate
from srcore.app import migration_target
from srcore.cli import _add_commands, cli
from srcore.migrate import RevisionInfo
from srcore.migrate_cli import applied_between
from srcore.testing import free_port, write_config
from srcore.worker_cli import _redact

SERVICES = ("meta", "paste", "todo")
#: The ``srcore`` command as a child process runs it.
SRCORE = (sys.executable, "-c", "from srcore.cli import main; main()")


@pytest.fixture(autouse=True, scope="module")
def _commands() -> None:
    _add_commands()


def _network(tmp_path: Path, *, urls: dict[str, str] | None = None, extra: str = "") -> Path:
    """A config with meta, paste and todo on SQLite files in *tmp_path* (or *urls*)."""
    urls = urls or {}
    databases = {s: urls.get(s, f"sqlite:///{tmp_path / (s + '.db')}") for s in SERVICES}
    sections = ""
    for number, service in enumerate(SERVICES[1:], 1):
        sections += (
            f"\n[{service}]\norigin = http://127.0.0.1:{5990 + number}\n"
            f"database-url = {databases[service]}\n"
            f"secret-key = {secrets.token_urlsafe(48)}\n"
            f"oauth-client-id = {service}\n"
            f"oauth-client-secret = {secrets.token_urlsafe(48)}\n"
        )
    return write_config(
        tmp_path / "config.ini",
        service_id="meta",
        database_url=databases["meta"],
        origin="http://127.0.0.1:5990",
        extra=sections + extra,
    )


def _run(config: Path, *args: str) -> Result:
    return CliRunner().invoke(cli, ["--config", str(config), *args], prog_name="srcore")


def _tables(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


# -- every command's --help ---------------------------------------------------------------


def _commands_with_argv(
    command: click.Command, argv: list[str]
) -> Iterator[tuple[list[str], click.Command]]:
    """Every command under *command* with the argv that reaches it.

    A group's required arguments (``migrate``'s SERVICE) come before its subcommand, so
    they get a value on the way down.
    """
    yield argv, command
    if isinstance(command, click.Group):
        given = [
            "todo"
            for p in command.params
            if isinstance(p, click.Argument) and p.required and p.nargs == 1
        ]
        for name, sub in sorted(command.commands.items()):
            yield from _commands_with_argv(sub, [*argv, *given, name])


def test_every_command_answers_help_with_an_example() -> None:
    seen = []
    for argv, command in _commands_with_argv(cli, []):
        result = CliRunner().invoke(cli, [*argv, "--help"], prog_name="srcore")
        shown = " ".join(["srcore", *argv])
        assert result.exit_code == 0, f"{shown} --help: {result.output}"
        assert "Example" in result.output, f"{shown} --help has no example"
        # The help of this very command, not of a parent that swallowed the words.
        name = re.escape(argv[-1]) if argv else "srcore"
        assert re.search(rf"^Usage: (srcore )?.*\b{name} \[OPTIONS\]", result.output, re.M), (
            result.output
        )
        seen.append(shown)
    assert {"srcore", "srcore worker", "srcore migrate todo upgrade", "srcore config check"} <= set(
        seen
    )
    assert len(seen) >= 15, seen


def test_migrate_help_shows_all_in_usage_and_examples() -> None:
    result = CliRunner().invoke(cli, ["migrate", "--help"], prog_name="srcore")
    assert result.exit_code == 0
    assert "Usage: srcore migrate [OPTIONS] (SERVICE | --all) COMMAND [ARGS]..." in result.output
    assert "srcore migrate --all upgrade" in result.output
    result = CliRunner().invoke(cli, ["migrate", "--all", "upgrade", "--help"], prog_name="srcore")
    assert result.exit_code == 0
    assert "srcore migrate --all upgrade" in result.output
    assert "one-line summary" in result.output


# -- srcore migrate --all -----------------------------------------------------------------


def _progress(output: str) -> list[tuple[int, int, str, str]]:
    return [
        (int(a), int(b), service, what)
        for a, b, service, what in re.findall(
            r"^\[(\d+)/(\d+)\] ([a-z]+): upgrading \.\.\. done in [0-9.]+ s \((.+)\)$",
            output,
            re.M,
        )
    ]


def test_migrate_all_goes_through_every_service_with_progress_and_a_summary(
    tmp_path: Path,
) -> None:
    config = _network(tmp_path)
    # todo is migrated already: it has nothing left to do.
    migrate.upgrade_all(migration_target("todo", config))

    result = _run(config, "migrate", "--all", "upgrade")
    assert result.exit_code == 0, result.output
    progress = _progress(result.output)
    assert [(a, b, s) for a, b, s, _ in progress] == [
        (1, 3, "meta"),
        (2, 3, "paste"),
        (3, 3, "todo"),
    ]
    counts = {}
    for _, _, service, what in progress:
        found = re.fullmatch(r"(\d+) revisions?", what)
        counts[service] = int(found.group(1)) if found else what
    assert counts["todo"] == "up to date"
    # meta and paste ran the core's three scripts and at least one of their own.
    assert isinstance(counts["meta"], int) and counts["meta"] >= 4
    assert isinstance(counts["paste"], int) and counts["paste"] >= 4
    total = counts["meta"] + counts["paste"]
    last = result.output.rstrip("\n").splitlines()[-1]
    assert re.fullmatch(rf"migrated 3 services \({total} revisions applied\) in [0-9.]+ s", last)
    for service in SERVICES:
        target = migration_target(service, config)
        assert migrate.current(target) == migrate.heads(target)

    again = _run(config, "migrate", "--all", "upgrade")
    assert again.exit_code == 0, again.output
    assert [what for *_, what in _progress(again.output)] == ["up to date"] * 3
    assert re.search(
        r"^migrated 3 services \(0 revisions applied\) in [0-9.]+ s$", again.output, re.M
    )

    current = _run(config, "migrate", "--all", "current")
    assert current.exit_code == 0, current.output
    assert re.findall(r"^\[(\w+)\]$", current.output, re.M) == list(SERVICES)
    assert current.output.count("(head)") == 6


def test_migrate_all_stops_at_the_first_failure_and_says_so(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-directory" / "paste.db"
    config = _network(tmp_path, urls={"paste": f"sqlite:///{missing}"})
    result = _run(config, "migrate", "--all", "upgrade")
    assert result.exit_code == 1, result.output
    assert re.search(r"^\[1/3\] meta: upgrading \.\.\. done in ", result.output, re.M)
    assert re.search(r"^\[2/3\] paste: upgrading \.\.\. failed$", result.output, re.M)
    assert re.search(
        r"^migrated 1 of 3 services \(\d+ revisions applied\) in [0-9.]+ s; paste failed$",
        result.output,
        re.M,
    )
    assert "[3/3]" not in result.output
    assert f"the directory {missing.parent} does not exist" in result.output
    assert "Traceback" not in result.output
    assert _tables(f"sqlite:///{tmp_path / 'todo.db'}") == set()


def test_migrate_all_refuses_services_that_are_not_installed(tmp_path: Path) -> None:
    extra = (
        "\n[nosuch]\norigin = http://127.0.0.1:5999\n"
        f"database-url = sqlite:///{tmp_path / 'nosuch.db'}\n"
        f"secret-key = {secrets.token_urlsafe(48)}\n"
    )
    config = _network(tmp_path, extra=extra)
    result = _run(config, "migrate", "--all", "upgrade")
    assert result.exit_code == 1, result.output
    assert "not installed: nosuch" in result.output
    assert "nothing was migrated" in result.output
    assert (
        not (tmp_path / "meta.db").exists() or _tables(f"sqlite:///{tmp_path / 'meta.db'}") == set()
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--all", "downgrade", "base"], "--all works with upgrade and current"),
        (["--all", "history"], "--all works with upgrade and current"),
        (["--all", "upgrade", "todo_0001"], "--all upgrades every service to its heads"),
        (["--all", "todo", "upgrade"], "--all takes the place of SERVICE"),
    ],
)
def test_migrate_all_usage_errors(tmp_path: Path, args: list[str], message: str) -> None:
    config = _network(tmp_path)
    result = _run(config, "migrate", *args)
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert not (tmp_path / "meta.db").exists()


def test_one_service_still_takes_its_name(tmp_path: Path) -> None:
    config = _network(tmp_path)
    result = _run(config, "migrate", "todo", "upgrade")
    assert result.exit_code == 0, result.output
    assert re.search(r"^todo: todo_\w+ \(head\)$", result.output, re.M)
    assert _tables(f"sqlite:///{tmp_path / 'meta.db'}") == set()


def _info(lineage: str, revision: str, *down: str) -> RevisionInfo:
    return RevisionInfo(lineage, revision, down, "", False, Path(f"{revision}.py"))


def test_applied_between_counts_each_script_once_across_branches() -> None:
    infos = [
        _info("srcore", "c1"),
        _info("srcore", "c2", "c1"),
        _info("a", "r1"),
        _info("a", "left", "r1"),
        _info("a", "right", "r1"),
        _info("a", "merge", "left", "right"),
        _info("a", "r5", "merge"),
    ]
    nothing = {"srcore": None, "a": None}
    assert applied_between(infos, nothing, {"srcore": "c2", "a": "r5"}) == 7
    assert applied_between(infos, {"srcore": "c1", "a": "left"}, {"srcore": "c2", "a": "r5"}) == 4
    assert (
        applied_between(infos, {"srcore": "c2", "a": "left,right"}, {"srcore": "c2", "a": "merge"})
        == 1
    )
    assert applied_between(infos, {"srcore": "c2", "a": "r5"}, {"srcore": "c2", "a": "r5"}) == 0


# -- srcore worker start-up ---------------------------------------------------------------


def _todo(tmp_path: Path, *, extra: str = "", url: str | None = None) -> Path:
    return write_config(
        tmp_path / "todo.ini",
        service_id="todo",
        database_url=url or f"sqlite:///{tmp_path / 'todo.db'}",
        extra=extra,
    )


_STEPS = [
    r"srcore worker todo: \[1/4\] config: .*todo\.ini",
    r"srcore worker todo: \[2/4\] database: sqlite:///.*todo\.db \(connected in [0-9.]+ s\)",
    r"srcore worker todo: \[3/4\] migrations: at head \(srcore srcore_\w+, todo todo_\w+\)",
    r"srcore worker todo: \[4/4\] dispatcher: local \(no broker: this worker polls the database\)",
    r"srcore worker: todo ready in [0-9.]+ s: sqlite, local dispatcher, 16 requests in "
    r"flight at most, polling every 1 s, private targets allowed: none, one pass",
    r"handled 0 row\(s\)",
]


def test_worker_reports_each_start_up_step_then_one_ready_line(tmp_path: Path) -> None:
    config = _todo(tmp_path)
    migrate.upgrade_all(migration_target("todo", config))
    result = _run(config, "worker", "todo", "--once")
    assert result.exit_code == 0, result.output
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    assert len(lines) == len(_STEPS), lines
    for line, pattern in zip(lines, _STEPS, strict=True):
        assert re.fullmatch(pattern, line), (line, pattern)


def test_worker_refuses_a_database_without_the_core_tables(tmp_path: Path) -> None:
    config = _todo(tmp_path)
    sqlite3.connect(tmp_path / "todo.db").close()  # there, and empty
    result = _run(config, "worker", "todo", "--once")
    assert result.exit_code == 1, result.output
    assert "[2/4] database:" in result.stdout
    assert "ready" not in result.output
    assert re.search(
        r"^srcore worker todo: the database is not migrated: srcore is at no revision, its "
        r"head is srcore_\w+; run: srcore migrate todo upgrade$",
        result.stderr,
        re.M,
    )


def test_worker_refuses_a_missing_sqlite_file_and_creates_none(tmp_path: Path) -> None:
    """A misspelt path: connecting would leave an empty database there."""
    config = _todo(tmp_path)
    result = _run(config, "worker", "todo", "--once")
    assert result.exit_code == 1, result.output
    assert "[2/4] database:" not in result.stdout
    database = tmp_path / "todo.db"
    assert f"the database file {database} does not exist" in result.stderr
    assert "`srcore migrate todo upgrade` creates it" in result.stderr
    assert "[todo] database-url" in result.stderr
    assert not database.exists()


def test_worker_starts_with_the_service_lineage_behind_and_says_how_to_fix_it(
    tmp_path: Path,
) -> None:
    config = _todo(tmp_path)
    migrate.upgrade(migration_target("todo", config), lineage=migrate.CORE_LINEAGE)
    result = _run(config, "worker", "todo", "--once")
    assert result.exit_code == 0, result.output
    assert re.search(
        r"^srcore worker todo: \[3/4\] migrations: todo is at no revision, its head is "
        r"todo_\w+: run: srcore migrate todo upgrade$",
        result.stdout,
        re.M,
    )
    assert re.search(r"^srcore worker: todo ready in ", result.stdout, re.M)


def test_worker_says_which_database_it_cannot_reach_without_its_password(
    tmp_path: Path,
) -> None:
    url = f"postgresql://srcore:hunter2@127.0.0.1:{free_port()}/nowhere"
    config = _todo(tmp_path, url=url)
    result = _run(config, "worker", "todo", "--once")
    assert result.exit_code == 1, result.output
    assert re.search(
        rf"^srcore worker todo: cannot open the database of todo \(postgresql\+psycopg://"
        rf"srcore:\*\*\*@127\.0\.0\.1:{url.rsplit(':', 1)[1].split('/')[0]}/nowhere\): ",
        result.stderr,
        re.M,
    )
    assert "hunter2" not in result.output
    assert "ready" not in result.output


def test_worker_checks_the_broker_and_hides_its_password(tmp_path: Path) -> None:
    port = free_port()
    config = _todo(tmp_path, extra="")
    text = config.read_text().replace(
        "environment = development\n",
        f"environment = development\nwebhooks-broker = redis://:hunter2@127.0.0.1:{port}/0\n",
    )
    config.write_text(text)
    migrate.upgrade_all(migration_target("todo", config))
    result = _run(config, "worker", "todo", "--once")
    assert result.exit_code == 0, result.output
    assert re.search(
        rf"^srcore worker todo: \[4/4\] dispatcher: celery, broker redis://:\*\*\*@127\.0\.0\.1:"
        rf"{port}/0 NOT reachable \(.+\); this worker polls the database as well$",
        result.stdout,
        re.M,
    )
    assert re.search(
        r"^srcore worker: todo ready in .*: sqlite, celery dispatcher, ", result.stdout, re.M
    )
    assert "hunter2" not in result.output


def test_redact_hides_only_the_password() -> None:
    assert _redact("redis://user:pw@host:6379/0") == "redis://user:***@host:6379/0"
    assert _redact("amqp://:p%40ss@rabbit/") == "amqp://:***@rabbit/"
    assert _redact("redis://host:6379/0") == "redis://host:6379/0"
    # "@", ":" and "%" in the password, raw or percent-encoded.
    assert _redact("redis://:p@ss:w%rd@127.0.0.1:6379/0") == "redis://:***@127.0.0.1:6379/0"
    assert _redact("amqp://w:p%40ss%3Aw%25rd@rabbit//") == "amqp://w:***@rabbit//"


def test_a_running_worker_is_ready_after_its_steps_and_stops_on_sigterm(tmp_path: Path) -> None:
    config = _todo(tmp_path)
    migrate.upgrade_all(migration_target("todo", config))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    process = subprocess.Popen(
        [*SRCORE, "--config", str(config), "worker", "todo", "--poll-interval", "0.1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    assert process.stdout is not None
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(process.stdout or ()), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 60
        while not any(line.startswith("srcore worker: todo ready") for line in lines):
            assert process.poll() is None, lines
            assert time.monotonic() < deadline, f"not ready within 60 s: {lines}"
            time.sleep(0.05)
        # Each line reached the pipe as it was written: the steps came before "ready".
        ready = next(i for i, line in enumerate(lines) if line.startswith("srcore worker: todo"))
        assert [line.split("] ")[0] for line in lines[:ready]] == [
            f"srcore worker todo: [{n}/4" for n in range(1, 5)
        ]
        assert "polling every 0.1 s" in lines[ready]
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
            reader.join(timeout=10)
            process.stdout.close()
    assert process.returncode == 0
    assert lines[-1] == "srcore worker: stopped\n", lines
