"""Passwords inside URLs never reach the terminal: ``config show`` and every problem
``config check`` prints mask them, whatever the key and however the URL is broken."""

from __future__ import annotations

from pathlib import Path

import click
import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from srcore.config_cli import make_config_command

KEY = "k" * 40
PASSWORDS = ("hunter2db", "redispw77", "brokerpw55", "mailpw99")

GOOD = f"""\
[global]
redis-url = redis://:redispw77@127.0.0.1:6379/0
webhooks-broker = amqp://worker:brokerpw55@127.0.0.1:5672//

[todo]
origin = http://127.0.0.1:5001
database-url = postgresql+psycopg://todo:hunter2db@db.example.org/todo
secret-key = {KEY}
"""


def _run(path: Path, *args: str) -> tuple[int, str]:
    @click.group()
    @click.option("--config", type=click.Path(dir_okay=False))
    def root(config: str | None) -> None:
        pass

    root.add_command(make_config_command(specs={}))
    result = CliRunner().invoke(root, ["--config", str(path), "config", *args], env={})
    return result.exit_code, result.output


def test_show_masks_every_password_in_urls(tmp_path: Path) -> None:
    path = tmp_path / "config.ini"
    path.write_text(GOOD, encoding="utf-8")
    code, out = _run(path, "show")
    assert code == 0, out
    assert "postgresql+psycopg://todo:***@db.example.org/todo" in out
    assert "redis://:***@127.0.0.1:6379/0" in out
    assert "amqp://worker:***@127.0.0.1:5672//" in out
    assert not any(p in out for p in PASSWORDS), out


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("database-url", "postgresql://todo:hunter2db@db.example.org:99x/todo"),
        ("database-url", "postgresql://todo:hunter2db@db example.org/todo"),
        ("origin", "http://todo:hunter2db@127.0.0.1:5001/path"),
    ],
)
def test_check_errors_mask_passwords(tmp_path: Path, key: str, value: str) -> None:
    path = tmp_path / "config.ini"
    text = GOOD.replace(
        next(line for line in GOOD.splitlines() if line.startswith(f"{key} =")), f"{key} = {value}"
    )
    path.write_text(text, encoding="utf-8")
    code, out = _run(path, "check")
    assert code == 1, out
    assert key in out
    assert not any(p in out for p in PASSWORDS), out


def test_check_masks_passwords_from_the_environment(tmp_path: Path) -> None:
    path = tmp_path / "config.ini"
    path.write_text(GOOD, encoding="utf-8")

    @click.group()
    @click.option("--config", type=click.Path(dir_okay=False))
    def root(config: str | None) -> None:
        pass

    root.add_command(make_config_command(specs={}))
    env = {"SRCORE__GLOBAL__REDIS_URL": "redis://:redispw77@127.0.0.1:notaport/0"}
    result = CliRunner().invoke(root, ["--config", str(path), "config", "check"], env=env)
    assert result.exit_code == 1
    assert "redispw77" not in result.output


def test_mask_url() -> None:
    from srcore.config import mask_url

    assert mask_url("sqlite:///var/todo.db") == "sqlite:///var/todo.db"
    assert mask_url("postgresql://u@h/db") == "postgresql://u@h/db"
    assert mask_url("postgresql://u:p%40ss@h/db") == "postgresql://u:***@h/db"
    assert mask_url("rediss://:pw@h:6380/1") == "rediss://:***@h:6380/1"
    assert mask_url("not a url") == "not a url"


@given(
    st.text(
        alphabet=st.characters(blacklist_categories=("Z", "C"), blacklist_characters="@/"),
        min_size=1,
    )
)
def test_mask_urls_hides_any_password_in_text(password: str) -> None:
    from srcore.config import mask_urls

    text = f"bad value 'postgresql://user:{password}@host:1/x' here"
    assert mask_urls(text) == "bad value 'postgresql://user:***@host:1/x' here"
