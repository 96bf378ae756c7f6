"""``srcore init`` writes a config full of fresh secrets: readable by its owner only from
the first byte, never created through a file or link someone else put there."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from srcore.cli import cli


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def no_chmod(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Whatever init does after creating the file comes too late for a reader who opened
    it in between: only the mode it was created with counts."""
    monkeypatch.setattr(Path, "chmod", lambda self, mode: None)
    monkeypatch.setattr(os, "chmod", lambda *args, **kw: None)
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_init_creates_the_config_owner_only(tmp_path: Path, no_chmod: None) -> None:
    path = tmp_path / "config.ini"
    result = CliRunner().invoke(cli, ["init", "--path", str(path), "todo"])
    assert result.exit_code == 0, result.output
    assert "secret-key = " in path.read_text()
    assert _mode(path) == 0o600


def test_force_replaces_a_readable_file_with_an_owner_only_one(
    tmp_path: Path, no_chmod: None
) -> None:
    path = tmp_path / "config.ini"
    path.write_text("old")
    assert _mode(path) == 0o644
    result = CliRunner().invoke(cli, ["init", "--force", "--path", str(path), "todo"])
    assert result.exit_code == 0, result.output
    assert "secret-key = " in path.read_text()
    assert _mode(path) == 0o600


def test_init_refuses_an_existing_file_or_link(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere.ini"
    target.write_text("keep")
    link = tmp_path / "config.ini"
    link.symlink_to(target)
    result = CliRunner().invoke(cli, ["init", "--path", str(link), "todo"])
    assert result.exit_code == 2
    assert "exists" in result.output
    assert target.read_text() == "keep"
    dangling = tmp_path / "dangling.ini"
    dangling.symlink_to(tmp_path / "nowhere.ini")
    result = CliRunner().invoke(cli, ["init", "--path", str(dangling), "todo"])
    assert result.exit_code == 2
    assert not (tmp_path / "nowhere.ini").exists()


@pytest.mark.parametrize(
    ("first_port", "services"),
    [("0", ["meta"]), ("-5", ["meta"]), ("65535", ["meta", "todo"]), ("70000", ["meta"])],
)
def test_init_refuses_a_first_port_that_leaves_a_service_no_port(
    tmp_path: Path, first_port: str, services: list[str]
) -> None:
    """Each service gets the port after the one before: a first port that would give one a
    number no TCP port has is refused, before anything is written (the config it wrote
    could not be used)."""
    config = tmp_path / "config.ini"
    args = ["init", "--path", str(config), "--first-port", first_port, *services]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2, result.output
    assert f"--first-port {first_port}:" in result.output and "give one from 1 to" in result.output
    assert not config.exists()


def test_init_takes_the_last_first_port_that_fits(tmp_path: Path) -> None:
    config = tmp_path / "config.ini"
    args = ["init", "--path", str(config), "--first-port", "65534", "meta", "todo"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    text = config.read_text(encoding="utf-8")
    assert "http://127.0.0.1:65534" in text and "http://127.0.0.1:65535" in text


@pytest.mark.parametrize("option", ["--workers", "--threads"])
@pytest.mark.parametrize("value", ["0", "-2"])
def test_serve_refuses_no_workers_or_threads(option: str, value: str) -> None:
    result = CliRunner().invoke(cli, ["serve", "todo", option, value])
    assert result.exit_code == 2
    assert option in result.output and "x>=1" in result.output
