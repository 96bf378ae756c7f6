"""``python -m meta.admin create-user`` and ``create-token``: an account and a personal
access token from a script, with the register form's rules and clear one-line refusals."""

from __future__ import annotations

from typing import Any

import pytest
from click.testing import CliRunner
from meta_constants import PASSWORD
from sqlalchemy import select

from srcore.db import UserType

GOOD_PASSWORD = "correct horse battery staple"


def _run(*args: str, config: Any, input: str | None = None) -> Any:
    from meta.admin.cli import main

    return CliRunner().invoke(main, [*args, "--config", str(config)], input=input)


def _account(app: Any, username: str) -> Any:
    from meta.models import User

    with app.extensions["srcore"].db.transaction() as session:
        return session.scalar(select(User).where(User.username == username))


def test_create_user_makes_an_active_confirmed_account_that_logs_in(
    app: Any, srcore_database: Any, login: Any
) -> None:
    result = _run(
        "create-user",
        "Alice",
        "Alice@Example.org",
        "--password-stdin",
        config=srcore_database.config_path,
        input=GOOD_PASSWORD + "\n",
    )
    assert result.exit_code == 0, result.output
    user = _account(app, "alice")
    assert result.output == f"created alice (id {user.id}), alice@example.org, active\n"
    assert user.user_type == UserType.active
    assert user.email_confirmed_at is not None
    assert login(app.test_client(), "alice", GOOD_PASSWORD).status_code == 302


def test_create_user_prompts_twice_without_password_stdin(app: Any, srcore_database: Any) -> None:
    result = _run(
        "create-user",
        "bob",
        "bob@example.org",
        config=srcore_database.config_path,
        input=f"{GOOD_PASSWORD}\n{GOOD_PASSWORD}\n",
    )
    assert result.exit_code == 0, result.output
    assert GOOD_PASSWORD not in result.output  # hidden input
    assert _account(app, "bob") is not None


@pytest.mark.parametrize(
    ("username", "email", "password", "says"),
    [
        ("a", "a@example.org", GOOD_PASSWORD, "'a': A username has 2 to 30 characters."),
        ("admin", "x@example.org", GOOD_PASSWORD, "'admin': This username is reserved."),
        ("meta", "x@example.org", GOOD_PASSWORD, "'meta': This username is reserved."),
        ("carol", "not-an-address", GOOD_PASSWORD, "'not-an-address': "),
        ("carol", "c@example.org", "short", "the password is not acceptable: Use at least"),
        ("carol", "c@example.org", "carol", "the password is not acceptable"),
        ("alice", "new@example.org", GOOD_PASSWORD, "the username 'alice' is taken"),
        ("carol", "ALICE@example.org", GOOD_PASSWORD, "another account uses alice@example.org"),
        ("carol", "c@example.org", "", "standard input has no password"),
    ],
)
def test_create_user_refuses_bad_input_in_one_line(
    app: Any,
    srcore_database: Any,
    accounts: Any,
    username: str,
    email: str,
    password: str,
    says: str,
) -> None:
    accounts.make("alice")
    result = _run(
        "create-user",
        username,
        email,
        "--password-stdin",
        config=srcore_database.config_path,
        input=password + "\n",
    )
    assert result.exit_code == 1
    (line,) = result.output.splitlines()
    assert line.startswith("Error: ") and says in line, line
    assert _account(app, "carol") is None


def test_create_token_prints_a_working_token_alone_on_stdout(
    app: Any, srcore_database: Any, accounts: Any
) -> None:
    from meta.oauth.models import PersonalAccessToken

    alice = accounts.make("alice")
    result = _run(
        "create-token",
        "alice",
        "meta/profile:RO",
        "--name",
        "deploy check",
        "--days",
        "2",
        config=srcore_database.config_path,
    )
    assert result.exit_code == 0, result.output
    token = result.stdout.strip()
    assert "\n" not in token and token.count(".") == 2
    assert "personal access token 'deploy check'" in result.stderr
    assert "meta/profile:RO" in result.stderr
    profile = app.test_client().get("/api/profile", headers={"Authorization": f"Bearer {token}"})
    assert profile.status_code == 200, profile.get_json()
    assert profile.get_json()["username"] == "alice"
    with app.extensions["srcore"].db.transaction() as session:
        (row,) = session.scalars(select(PersonalAccessToken)).all()
        assert (row.user_id, row.name, row.scope) == (alice.id, "deploy check", "meta/profile:RO")
    # It is an ordinary personal access token: its owner sees it on /security.


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["nobody", "meta/profile:RO"], "no account is called 'nobody'"),
        (["alice", "nope/items:RW"], "no service called 'nope' is part of this network"),
        (["alice", "meta/nope:RO"], "Meta has no scope called 'nope'"),
        (["alice", "profile"], "invalid scope 'profile'"),
        (["alice", "meta/profile:RO", "--name", " "], "name must have 1 to 128 characters"),
        # A Cyrillic o in a Latin word: the rule of the Security page and the API.
        (["alice", "meta/profile:RO", "--name", "T\u043edo deploy"], "U+043E"),
        (["suspended", "meta/profile:RO"], "suspended is suspended"),
    ],
)
def test_create_token_refuses_bad_input_in_one_line(
    app: Any, srcore_database: Any, accounts: Any, args: list[str], says: str
) -> None:
    accounts.make("alice")
    accounts.make("suspended", user_type=UserType.suspended)
    result = _run("create-token", *args, config=srcore_database.config_path)
    assert result.exit_code == 1
    (line,) = result.output.splitlines()
    assert line.startswith("Error: ") and says in line, line


def test_a_bad_config_is_one_line_not_a_traceback(tmp_path: Any) -> None:
    missing = tmp_path / "missing.ini"
    for args in (["create-token", "alice", "meta/profile:RO"], ["make-admin", "alice"]):
        result = _run(*args, config=missing)
        assert result.exit_code == 1
        assert result.output == f"Error: {missing}: no such config file\n"
    result = _run(
        "create-user",
        "alice",
        "a@example.org",
        "--password-stdin",
        config=missing,
        input=PASSWORD + "\n",
    )
    assert result.output == f"Error: {missing}: no such config file\n"


def test_an_unmigrated_database_is_one_line_not_a_traceback(tmp_path: Any) -> None:
    from srcore.testing import write_config

    config = write_config(
        tmp_path / "config.ini",
        service_id="meta",
        database_url=f"sqlite:///{tmp_path / 'empty.db'}",
    )
    for args in (["create-token", "alice", "meta/profile:RO"], ["make-admin", "alice"]):
        result = _run(*args, config=config)
        assert result.exit_code == 1
        (line,) = result.output.splitlines()
        assert line.startswith("Error: meta's database cannot be used (no such table: user)")
        assert "srcore migrate meta upgrade" in line
