"""docs/operators.md's systemd unit runs ``srcore serve %i --bind ${BIND}``: with no
``BIND`` for a service (its environment file missing), systemd passes one empty argument,
which gunicorn would take as every interface on port 8000. The service would be reached
past its proxy, where a client forges the ``X-Forwarded-*`` headers the service trusts
and reads its metrics. ``serve`` refuses such a ``--bind`` instead, naming the fix."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from srcore.cli import cli
from srcore.testing import write_config


class _Exec(Exception):
    """serve went on to replace itself with gunicorn."""


@pytest.fixture
def execs(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """The gunicorn command lines ``serve`` would have run (none is run)."""
    calls: list[list[str]] = []

    def no_exec(_path: str, argv: list[str]) -> None:
        calls.append(argv)
        raise _Exec

    monkeypatch.setattr(os, "execv", no_exec)
    monkeypatch.delenv("SRCORE_CONFIG", raising=False)
    return calls


def _serve(tmp_path: Path, *bind: str) -> tuple[int | None, str, BaseException | None]:
    from srcore import migrate
    from srcore.app import migration_target

    config = write_config(
        tmp_path / "todo.ini", service_id="todo", database_url=f"sqlite:///{tmp_path / 'todo.db'}"
    )
    migrate.upgrade_all(migration_target("todo", config))
    result = CliRunner().invoke(
        cli, ["--config", str(config), "serve", "todo", *bind], prog_name="srcore"
    )
    assert "Traceback" not in result.output
    return result.exit_code, result.stderr, result.exception


@pytest.mark.parametrize("value", ["", "  "])
def test_an_empty_bind_is_refused_not_every_interface(
    tmp_path: Path, execs: list[list[str]], value: str
) -> None:
    code, stderr, _exception = _serve(tmp_path, "--bind", value)
    assert execs == [], "gunicorn would listen on 0.0.0.0:8000"
    assert code == 1
    line = stderr.strip()
    assert "\n" not in line, line
    assert line.startswith("srcore serve todo: --bind is empty"), line
    assert "every interface" in line and "BIND" in line


def test_a_port_alone_is_refused_naming_the_address_to_write(
    tmp_path: Path, execs: list[list[str]]
) -> None:
    code, stderr, _exception = _serve(tmp_path, "--bind", "5001")
    assert execs == [] and code == 1
    assert "write 127.0.0.1:5001" in stderr, stderr


@pytest.mark.parametrize(
    ("given", "bound"),
    [
        (None, "127.0.0.1:"),
        ("127.0.0.1:5001", "127.0.0.1:5001"),
        ("10.0.0.5:5001", "10.0.0.5:5001"),
    ],
)
def test_an_address_given_or_the_default_is_served(
    tmp_path: Path, execs: list[list[str]], given: str | None, bound: str
) -> None:
    _code, _stderr, exception = _serve(tmp_path, *(["--bind", given] if given else []))
    assert isinstance(exception, _Exec), exception
    [argv] = execs
    assert argv[argv.index("--bind") + 1].startswith(bound)


def test_the_metrics_name_the_methods_operators_md_lists(tmp_path: Path) -> None:
    """operators.md, Health checks and metrics: a method other than GET, POST, PUT, PATCH,
    DELETE and OPTIONS counts as ``other``; a HEAD is the GET it is answered as, so a
    dashboard summing GETs sees every read."""
    import re

    import sample_service

    config = write_config(
        tmp_path / "config.ini",
        service_id="sample",
        database_url=f"sqlite:///{tmp_path / 'sample.db'}",
        extra="metrics-path = /internal/metrics\n",
    )
    app = sample_service.create_app(config=config)
    client = app.test_client()
    for method in ("GET", "HEAD", "OPTIONS", "POST", "PROPFIND"):
        client.open("/healthz", method=method)
    body = client.get("/internal/metrics").get_data(as_text=True)
    counted = re.findall(r'^srcore_http_requests_total\{[^}]*method="([^"]+)"', body, re.M)
    assert set(counted) <= {"GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "other"}, counted
    healthz = re.findall(
        r'^srcore_http_requests_total\{method="GET",route="/healthz",[^}]*status="200"\} (\S+)',
        body,
        re.M,
    )
    assert healthz == ["2.0"], body
    app.extensions["srcore"].db.dispose()
