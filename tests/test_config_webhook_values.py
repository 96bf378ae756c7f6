"""Hostile values of the ``[global]`` webhook keys, as typed in a hurry: each is refused
when the config is loaded, with one line naming the file, the line, ``[global]``, the key
and what is wrong, and every entry point says that same line: ``srcore config check``,
the app factory, ``srcore worker`` and the Celery app. Before, these were accepted and
went wrong later: a worker that died with a traceback, deliveries never sent or failing
at once, dates past year 9999 when a delivery is recorded, a broker refused at every
commit in the middle of a request."""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest
from click.testing import CliRunner

from srcore.cli import _add_commands, cli
from srcore.config import ConfigError
from srcore.webhooks.celery import default_app
from srcore.webhooks.worker import DEFAULT_LEASE

#: The line of the config file the hostile value is written on.
LINE = 3

#: (key, value, what the problem says): values the config used to accept.
HOSTILE = [
    # A deadline nothing meets, or one past the five minutes a worker holds a delivery
    # (the worker raised ValueError at start; at 4m59s it started and sent nothing).
    ("webhook-timeout", "0s", "must be between 1s and 2m, not 0s"),
    ("webhook-timeout", "1ms", "must be between 1s and 2m, not 1ms"),
    ("webhook-timeout", "4m59s", "must be between 1s and 2m, not 4m59s: a worker holds"),
    ("webhook-timeout", "5m", "must be between 1s and 2m, not 5m"),
    ("webhook-timeout", "30d", "must be between 1s and 2m, not 30d"),
    ("webhook-connect-timeout", "0s", "must be between 100ms and 2m, not 0s"),
    ("webhook-connect-timeout", "1m", "1m is longer than webhook-timeout (15s)"),
    ("webhook-connect-timeout", "100000d", "must be between 100ms and 2m, not 100000d"),
    # A schedule that goes backwards, retries in millennia (past year 9999), or hammers.
    ("webhook-retry-schedule", "1h, 5s, 0s", "must not get shorter, but 1h is followed by 5s"),
    ("webhook-retry-schedule", "0s, 5s, 999999999d", "a delay of 999999999d is longer than 30d"),
    ("webhook-retry-schedule", ", ".join(["1s"] * 1000), "1000 delays, at most 100"),
    ("webhook-retry-schedule", "0s, " + "7" * 5000 + "s", "duration too long: '777"),
    # Polling the database flat out, or never (a wait that long overflows).
    ("webhook-poll-interval", "0s", "must be between 100ms and 10m, not 0s"),
    ("webhook-poll-interval", "1ms", "must be between 100ms and 10m, not 1ms"),
    ("webhook-poll-interval", "999999999d", "must be between 100ms and 10m, not 999999999d"),
    # Dates before year 1 when the log is pruned or a failing subscription judged.
    ("webhook-log-retention", "0s", "must be between 1h and 3650d, not 0s"),
    ("webhook-log-retention", "999999999d", "must be between 1h and 3650d, not 999999999d"),
    ("webhook-disable-after", "0s", "must be between 1h and 3650d, not 0s"),
    ("webhook-disable-after", "999999999d", "must be between 1h and 3650d, not 999999999d"),
    # Numbers a database LIMIT or a thread count cannot be.
    ("webhook-concurrency", "1000000", "must be between 1 and 1024, not 1000000"),
    ("webhook-concurrency", str(10**28), "not a whole number of at most 18 digits"),
    ("webhook-concurrency", str(10**100), "not a whole number of at most 18 digits"),
    ("webhook-celery-slots", "2000", "must be between 1 and 1024, not 2000"),
    ("webhook-celery-slots", str(10**28), "not a whole number of at most 18 digits"),
    # Brokers no Celery transport speaks, and Redis databases that are not numbers.
    ("webhooks-broker", "foo://bar", "no Celery broker speaks foo://"),
    ("webhooks-broker", "http://127.0.0.1:6379/1", "no Celery broker speaks http://"),
    ("webhooks-broker", "reddis://127.0.0.1:6379/1", "did you mean 'redis'?"),
    ("webhooks-broker", "redis://127.0.0.1:6379/abc", "a number, like redis://host:6379/1"),
    (
        "webhooks-broker",
        "redis://127.0.0.1:6379/1\x00",
        "contains a control or invisible character",
    ),
    (
        "webhooks-broker",
        "redis://127.0.0.1:6379/1\u200b",
        "contains a control or invisible character",
    ),
    # Port lists that allow nothing, and digits int() reads but an operator did not type.
    ("webhook-allowed-ports", ",", "allows no port, so every webhook would be refused"),
    ("webhook-allowed-ports", "!443", "allows no port, so every webhook would be refused"),
    ("webhook-allowed-ports", "80, 443, !80, !443", "allows no port"),
    ("webhook-allowed-ports", "\uff14\uff14\uff13", "is not a port or range of ports"),
    ("webhook-allowed-ports", "+443", "'+443' is not a port or range of ports"),
    ("webhook-allowed-ports", "4_43", "'4_43' is not a port or range of ports"),
]


@pytest.fixture(autouse=True, scope="module")
def _commands() -> None:
    _add_commands()


def _config(tmp_path: Path, key: str, value: str) -> Path:
    path = tmp_path / "config.ini"
    path.write_text(
        f"[global]\nsite-name = Test Net\n{key} = {value}\n\n"
        f"[todo]\norigin = http://127.0.0.1:5991\n"
        f"database-url = sqlite:///{tmp_path / 'todo.db'}\n"
        f"secret-key = {secrets.token_urlsafe(48)}\n",
        encoding="utf-8",
    )
    return path


def _ids(case: tuple[str, str, str]) -> str:
    key, value, _ = case
    shown = value if len(value) <= 30 else f"{value[:12]}...({len(value)} characters)"
    return f"{key}={shown!a}"


@pytest.mark.parametrize(("key", "value", "says"), HOSTILE, ids=[_ids(c) for c in HOSTILE])
def test_every_entry_point_refuses_the_value_with_one_located_line(
    tmp_path: Path, key: str, value: str, says: str
) -> None:
    path = _config(tmp_path, key, value)
    runner = CliRunner()

    check = runner.invoke(cli, ["--config", str(path), "config", "check"], prog_name="srcore")
    assert check.exit_code == 1, check.output
    assert "Traceback" not in check.output
    located = f"{path}:{LINE} [global] {key}: "
    lines = [line for line in check.output.splitlines() if line.startswith(located)]
    assert len(lines) == 1, check.output
    problem = lines[0]
    assert says in problem, problem
    assert len(problem) < 400, problem  # a huge value is quoted cut short

    import todo

    with pytest.raises(ConfigError) as built:
        todo.create_app(config=path)
    assert f"  {problem}" in str(built.value).splitlines()

    worker = runner.invoke(cli, ["--config", str(path), "worker", "todo", "--once"])
    assert worker.exit_code == 1, worker.output
    assert isinstance(worker.exception, SystemExit), worker.exception
    assert "Traceback" not in worker.output and "ready" not in worker.output
    assert f"  {problem}" in worker.output.splitlines(), worker.output

    environ = {"SRCORE_SERVICE": "todo", "SRCORE_CONFIG": str(path)}
    with pytest.raises(ConfigError) as celery:
        default_app(environ)
    assert f"  {problem}" in str(celery.value).splitlines()


def test_the_longest_webhook_timeout_leaves_the_worker_lease_room() -> None:
    """A worker sends a claimed delivery only while it can end within the lease; the
    config's bound keeps at least half the lease for a lane's later requests."""
    from srcore.config.declarations import MAX_WEBHOOK_TIMEOUT

    assert 2 * MAX_WEBHOOK_TIMEOUT <= DEFAULT_LEASE
