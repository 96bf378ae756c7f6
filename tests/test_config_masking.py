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


#: Passwords with the characters that break naive URL parsing, raw as an operator may type
#: them and percent-encoded as they should be.
AWKWARD = {
    "raw": ("p@ss:w%rd", "p@ss:w%rd"),
    "encoded": ("p%40ss%3Aw%25rd", "p@ss:w%rd"),
    "raw-slash": ("p@s/s:w%rd", "p@s/s:w%rd"),
}


@pytest.mark.parametrize("form", sorted(AWKWARD))
def test_show_and_check_never_print_a_password_with_at_percent_colon(
    tmp_path: Path, form: str
) -> None:
    written, decoded = AWKWARD[form]
    text = (
        GOOD.replace("redispw77", written)
        .replace("brokerpw55", written)
        .replace("hunter2db", written)
    )
    path = tmp_path / "config.ini"
    path.write_text(text, encoding="utf-8")
    for command in ("show", "check"):
        _code, out = _run(path, command)
        pieces = {"w%rd", "p@ss", "ss:w", "w%25rd", "p%40ss", "s/s", "%3Aw"}
        for secret in {written, decoded, *pieces}:
            assert secret not in out, (command, out)
    _code, out = _run(path, "show")
    if form == "raw-slash":
        # Redis's client would take the part after the raw '/' for the database: refused.
        assert "redis-url: an '@' follows the host: percent-encode" in out
    else:
        assert "redis://:***@127.0.0.1:6379/0" in out
    assert "amqp://worker:***@127.0.0.1:5672//" in out


@pytest.mark.parametrize(
    "url",
    [
        "redis://:p@ss:w%rd@127.0.0.1:6379/0",
        "redis://:p%40ss%3Aw%25rd@127.0.0.1:6379/0",
        "amqp://worker:p@ss:w%rd@127.0.0.1:5672//",
        "amqp://worker:p%40ss%3Aw%25rd@127.0.0.1:5672//",
        "postgresql+psycopg://todo:p@ss:w%rd@db.example.org/todo",
        "postgresql+psycopg://todo:p%40ss%3Aw%25rd@db.example.org/todo",
        # SQLAlchemy parses these at the first "@" and would show the rest as the path.
        "postgresql+psycopg://todo:p@s/s:w%rd@db.example.org/todo",
        "redis://:p@s/s:w%rd@127.0.0.1:6379/0",
    ],
)
def test_mask_url_with_at_percent_colon_in_the_password(url: str) -> None:
    from srcore.config import mask_url

    scheme, _, rest = url.partition("://")
    user = rest.split(":", 1)[0]
    host = rest.rpartition("@")[2]
    assert mask_url(url) == f"{scheme}://{user}:***@{host}"


def test_a_database_password_with_a_raw_at_is_refused_without_printing_it(
    tmp_path: Path,
) -> None:
    """SQLAlchemy ends a password at its first "@": the service would connect to the
    wrong host and show the rest of the password as the path, so the URL is refused."""
    path = tmp_path / "config.ini"
    path.write_text(GOOD.replace("hunter2db", "p@s/s:w%rd"), encoding="utf-8")
    code, out = _run(path, "check")
    assert code == 1, out
    assert "database-url" in out and "%40" in out
    assert not any(piece in out for piece in ("p@s", "s/s", "w%rd", "%3Aw")), out
