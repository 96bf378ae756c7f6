"""``srcore worker``'s ``--poll-interval`` and ``--concurrency`` take only the values the
config file takes for the keys they override, ``webhook-poll-interval`` (100ms to 10m)
and ``webhook-concurrency`` (1 to 1024).

The options used to take any number: ``--poll-interval 0`` (or ``nan``) had an idle
worker poll its database without pause, and ``--concurrency 5000`` asked for more
requests in flight than the config allows. Each value out of range is now Click's usage
error, naming the option and the range, before anything starts.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from srcore import migrate
from srcore.app import migration_target
from srcore.cli import _add_commands, cli
from srcore.config import GLOBAL_KEYS
from srcore.testing import write_config

#: The range each option's usage error states, as Click writes it.
RANGES = {"--poll-interval": "0.1<=x<=600.0", "--concurrency": "1<=x<=1024"}

#: Values the config file refuses for the option's key, as typed on the command line.
REFUSED = [
    ("--poll-interval", "0"),
    ("--poll-interval", "-1"),
    ("--poll-interval", "0.001"),
    ("--poll-interval", "0.099"),
    ("--poll-interval", "600.5"),
    ("--poll-interval", "1e9"),
    ("--poll-interval", "nan"),
    ("--poll-interval", "inf"),
    ("--concurrency", "0"),
    ("--concurrency", "-3"),
    ("--concurrency", "1025"),
    ("--concurrency", "5000"),
]


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite todo: a worker given a value its options take runs one pass."""
    _add_commands()
    directory = tmp_path_factory.mktemp("worker-bounds")
    path = write_config(
        directory / "todo.ini",
        service_id="todo",
        database_url=f"sqlite:///{directory / 'todo.db'}",
    )
    migrate.upgrade_all(migration_target("todo", path))
    return path


def _worker(config: Path, *options: str) -> Result:
    """One pass of ``srcore worker todo`` (``--once``: a value let through never loops)."""
    argv = ["--config", str(config), "worker", "todo", "--once", *options]
    return CliRunner().invoke(cli, argv, prog_name="srcore")


def _ready_line(result: Result) -> str:
    [line] = [x for x in result.stdout.splitlines() if x.startswith("srcore worker: todo ready")]
    return line


@pytest.mark.parametrize(("option", "value"), REFUSED)
def test_a_value_out_of_range_is_a_usage_error_naming_the_option_and_range(
    config: Path, option: str, value: str
) -> None:
    result = _worker(config, option, value)
    assert result.exit_code == 2, result.output
    assert f"Error: Invalid value for '{option}': " in result.output
    assert f" is not in the range {RANGES[option]}." in result.output
    assert "[1/4]" not in result.output and "ready" not in result.output


@pytest.mark.parametrize(
    ("options", "says"),
    [
        (("--poll-interval", "0.1"), "16 requests in flight at most, polling every 0.1 s"),
        (("--poll-interval", "600"), "polling every 600 s"),
        (("--concurrency", "1"), "1 request in flight at most, polling every 1 s"),
        (("--concurrency", "1024"), "1024 requests in flight at most"),
    ],
)
def test_the_bounds_themselves_are_accepted(
    config: Path, options: tuple[str, ...], says: str
) -> None:
    result = _worker(config, *options)
    assert result.exit_code == 0, result.output
    assert says in _ready_line(result)
    assert "handled 0 row(s)" in result.stdout


def _config_refuses(name: str, value: object) -> bool:
    [key] = [key for key in GLOBAL_KEYS if key.name == name]
    assert key.check is not None
    return key.check(value) is not None


@pytest.mark.parametrize(
    ("option", "key", "value", "typed"),
    [
        ("--poll-interval", "webhook-poll-interval", timedelta(milliseconds=99), "0.099"),
        ("--poll-interval", "webhook-poll-interval", timedelta(milliseconds=100), "0.1"),
        ("--poll-interval", "webhook-poll-interval", timedelta(minutes=10), "600"),
        ("--poll-interval", "webhook-poll-interval", timedelta(seconds=600.001), "600.001"),
        ("--concurrency", "webhook-concurrency", 0, "0"),
        ("--concurrency", "webhook-concurrency", 1, "1"),
        ("--concurrency", "webhook-concurrency", 1024, "1024"),
        ("--concurrency", "webhook-concurrency", 1025, "1025"),
    ],
)
def test_the_option_refuses_exactly_what_the_config_key_refuses(
    config: Path, option: str, key: str, value: object, typed: str
) -> None:
    result = _worker(config, option, typed)
    assert result.exit_code in (0, 2), result.output
    assert (result.exit_code == 2) == _config_refuses(key, value), result.output
