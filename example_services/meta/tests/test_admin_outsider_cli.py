"""``python -m meta.admin`` run by a hurried operator: arguments that are not text (bytes
a terminal in another encoding sends, control characters), and the account's name shown
back. Each is one ``Error:`` line and exit status 1, and nothing is written."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import pytest
from sqlalchemy import select

from srcore.db import UserType

GOOD_PASSWORD = "correct horse battery staple"
#: What Python makes of an argument holding the byte 0xff (not UTF-8): a lone surrogate.
NOT_UTF8 = b"al\xffce".decode("utf-8", "surrogateescape")


def _run(*args: str, config: Any, input: str | None = None) -> Any:
    from click.testing import CliRunner
    from meta.admin.cli import main

    return CliRunner().invoke(main, [*args, "--config", str(config)], input=input)


def _one_error_line(result: Any) -> str:
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    (line,) = result.output.splitlines()
    assert line.startswith("Error: "), line
    return line


@pytest.mark.parametrize("command", ["make-admin", "remove-admin"])
@pytest.mark.parametrize("name", [NOT_UTF8, "al\x1bice", "al\x00ice"])
def test_a_username_that_is_not_text_is_one_line(
    srcore_database: Any, accounts: Any, command: str, name: str
) -> None:
    alice = accounts.make("alice", user_type=UserType.admin)
    line = _one_error_line(_run(command, name, config=srcore_database.config_path))
    assert "USERNAME" in line and "not allowed" in line, line
    assert accounts.get(alice.id).user_type == UserType.admin


@pytest.mark.parametrize("name", [NOT_UTF8, "deploy\x1b[31m", "a\u202eb", "x" * 129])
def test_a_token_name_the_security_page_would_refuse_is_refused(
    app: Any, srcore_database: Any, accounts: Any, name: str
) -> None:
    from meta.oauth.models import PersonalAccessToken

    accounts.make("alice")
    result = _run(
        "create-token",
        "alice",
        "meta/profile:RO",
        "--name",
        name,
        config=srcore_database.config_path,
    )
    line = _one_error_line(result)
    assert "--name" in line, line
    with app.extensions["srcore"].db.transaction() as session:
        assert session.scalars(select(PersonalAccessToken)).all() == []


def test_a_token_for_a_username_that_is_not_text_is_one_line(
    srcore_database: Any, accounts: Any
) -> None:
    accounts.make("alice")
    result = _run("create-token", NOT_UTF8, "meta/profile:RO", config=srcore_database.config_path)
    assert "USERNAME" in _one_error_line(result)


@pytest.mark.parametrize("errors", ["strict", "surrogateescape"])
def test_a_password_that_is_not_text_is_one_line(
    app: Any, srcore_database: Any, errors: str
) -> None:
    """A password file in another encoding, read as a UTF-8 locale reads it (strictly) or
    as the C locale does (its bytes escaped): refused, not hashed in an encoding nobody
    types at the login form."""
    from meta.models import User

    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "meta.admin",
            "create-user",
            "carol",
            "carol@example.org",
            "--password-stdin",
            "--config",
            str(srcore_database.config_path),
        ],
        input=GOOD_PASSWORD.encode() + b"\xff\n",
        capture_output=True,
        env=dict(os.environ, PYTHONIOENCODING=f"utf-8:{errors}"),
        timeout=60,
        check=False,
    )
    err = done.stderr.decode("utf-8", "replace")
    assert done.returncode == 1, err
    (line,) = err.splitlines()
    assert line.startswith("Error: ") and "password" in line, line
    with app.extensions["srcore"].db.transaction() as session:
        assert session.scalar(select(User).where(User.username == "carol")) is None


def test_bytes_from_a_latin1_terminal_are_one_line_in_a_real_process(
    srcore_database: Any, accounts: Any
) -> None:
    """The module run as the README says, with the raw byte in its argv."""
    accounts.make("alice", user_type=UserType.admin)
    env = dict(os.environ, PYTHONIOENCODING="utf-8")
    done = subprocess.run(
        [
            sys.executable.encode(),
            b"-m",
            b"meta.admin",
            b"remove-admin",
            b"al\xe9ce",
            b"--config",
            os.fsencode(srcore_database.config_path),
        ],
        capture_output=True,
        env=env,
        timeout=60,
        check=False,
    )
    err = done.stderr.decode("utf-8", "replace")
    assert done.returncode == 1, err
    assert "Traceback" not in err
    (line,) = err.splitlines()
    assert line.startswith("Error: USERNAME"), line


def test_when_every_admin_is_suspended_the_operator_gets_one_back(
    app: Any, accounts: Any, login: Any, csrf: Any, srcore_database: Any
) -> None:
    """root2's account is taken over and suspends root1, the only other admin; the
    operator takes root2's right away. Nobody can reach /admin/users now, and make-admin
    refuses a suspended account: ``unsuspend`` is the way back, logged, and the refusal
    names it."""
    from meta.models import AuditEntry

    root1 = accounts.make("root1", user_type=UserType.admin)
    accounts.make("root2", user_type=UserType.admin)
    taken_over = app.test_client()
    assert login(taken_over, "root2").status_code == 302
    page = f"/admin/users/{root1.id}"
    sent = csrf.post(taken_over, f"{page}/suspend", {"notice": "Mine now."}, page=page)
    assert sent.status_code == 302
    config = srcore_database.config_path
    assert _run("remove-admin", "root2", config=config).exit_code == 0
    refused = _one_error_line(_run("make-admin", "root1", config=config))
    assert "python -m meta.admin unsuspend root1" in refused
    done = _run("unsuspend", "ROOT1", config=config)
    assert done.exit_code == 0, done.output
    assert done.output == f"root1 (id {root1.id}) is no longer suspended (active)\n"
    assert _run("unsuspend", "root1", config=config).output.endswith("is not suspended\n")
    assert _run("make-admin", "root1", config=config).exit_code == 0
    client = app.test_client()
    assert login(client, "root1").status_code == 302
    assert client.get("/admin/users").status_code == 200
    with app.extensions["srcore"].db.transaction() as session:
        (entry,) = session.scalars(
            select(AuditEntry).where(
                AuditEntry.user_id == root1.id, AuditEntry.kind == "account-unsuspended"
            )
        )
        assert (entry.actor_id, entry.detail) == (None, "on the command line")
    assert "no account is called" in _one_error_line(_run("unsuspend", "nobody", config=config))
