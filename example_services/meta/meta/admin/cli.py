"""Commands for operators, run on the host with access to the config file.

    python -m meta.admin make-admin USERNAME [--config PATH]
    python -m meta.admin remove-admin USERNAME [--config PATH]
    python -m meta.admin unsuspend USERNAME [--config PATH]
    python -m meta.admin create-user USERNAME EMAIL [--password-stdin] [--config PATH]
    python -m meta.admin create-token USERNAME SCOPE... [--name NAME] [--days N] [--config PATH]

There is no "first account is admin" rule: whoever registers first on a fresh network is
not to be trusted with it. The operator names admins here.

``create-user`` and ``create-token`` make a network usable from a script (a tutorial, a
smoke test after a deployment, a bot's account) without a browser: the account is made
with the rules of the register form, and the token is an ordinary personal access token,
listed and revocable on the account's ``/security`` page like one made there.
"""

from __future__ import annotations

import contextlib
import re
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING

import click
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from srcore.db import UserType

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from meta.models import User
    from srcore.app import SrcoreApp
    from srcore.validation import TextKind

__all__ = ["create_token_for", "create_user", "main", "set_admin", "unsuspend"]

#: Longer than any username (30) or address: a name past it is looked up no further.
_USERNAME_MAX = 320


@contextlib.contextmanager
def _meta_app(config: str | None) -> Iterator[SrcoreApp]:
    """meta's app inside an app context; config and database problems become one message.

    The database's connections are closed afterwards, so a command leaves nothing open.
    """
    from sqlalchemy.exc import OperationalError, ProgrammingError
    from sqlalchemy.orm.exc import ObjectDeletedError, StaleDataError

    from meta import create_app
    from srcore.config import ConfigError

    try:
        app = create_app(config=config)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    try:
        with app.app_context():
            yield app
    except (IntegrityError, StaleDataError, ObjectDeletedError):
        # A request (or another operator) changed or deleted the account meanwhile, or
        # took a value the command was writing: the command again says what is now.
        raise click.ClickException(
            "another request changed the account meanwhile; nothing was written. "
            "Run the command again."
        ) from None
    except (OperationalError, ProgrammingError) as exc:
        # The usual cause: a fresh network whose databases were never migrated.
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else type(exc).__name__
        raise click.ClickException(
            f"meta's database cannot be used ({reason}): is the server up, and has "
            "`srcore migrate meta upgrade` run?"
        ) from None
    finally:
        app.srcore.db.dispose()


def _text(value: str, what: str, *, text: TextKind = "line", max_length: int | None = None) -> str:
    """*value* if it is text the web forms would take, else a one-line refusal.

    An argument holding bytes that are not UTF-8 (a terminal or a file in another
    encoding) reaches Python as lone surrogates, which no database can store or even be
    asked about; control characters would be stored where no page shows them. Both are
    refused by name before anything is looked up.
    """
    from srcore.validation import Invalid, coerce_string

    try:
        return coerce_string(value, max_length=max_length, strip=False, text=text)
    except Invalid as exc:
        hint = " (is it UTF-8?)" if _SURROGATE.search(value) else ""
        raise click.ClickException(f"{what}: {exc.reason}{hint}") from None


#: What a byte that is not UTF-8 becomes in ``sys.argv`` and ``sys.stdin``.
_SURROGATE = re.compile("[\ud800-\udfff]")


def _find_user(session: Session, username: str) -> User:
    from meta.models import User

    username = _text(username, "USERNAME", max_length=_USERNAME_MAX)
    user = session.scalar(select(User).where(User.username == username.lower()))
    if user is None:
        raise click.ClickException(f"no account is called {username!r}")
    return user


def set_admin(config: str | None, username: str, *, admin: bool) -> str:
    """Make *username* an admin (or an ordinary active account); return what happened."""
    with _meta_app(config) as app, app.srcore.db.transaction() as session:
        user = _find_user(session, username)
        if user.is_suspended:
            raise click.ClickException(
                f"{user.username} is suspended; unsuspend it first "
                f"(python -m meta.admin unsuspend {user.username})"
            )
        from meta import audit

        if admin:
            if user.user_type != UserType.admin:
                user.user_type = UserType.admin
                audit.record(session, audit.Kind.role_changed, user.id, detail=_BY_OPERATOR[True])
            return f"{user.username} (id {user.id}) is an admin now"
        if user.user_type == UserType.admin:
            user.user_type = UserType.active
            audit.record(session, audit.Kind.role_changed, user.id, detail=_BY_OPERATOR[False])
        return f"{user.username} (id {user.id}) is not an admin"


def unsuspend(config: str | None, username: str) -> str:
    """Lift *username*'s suspension; return what happened.

    The way back when no admin can do it on ``/admin/users``: every admin suspended (two
    suspending each other, or the only other admin's account taken over and used to
    suspend the rest). ``make-admin`` then names an admin again.
    """
    with _meta_app(config) as app, app.srcore.db.transaction() as session:
        from meta import audit, logic

        user = _find_user(session, username)
        if not user.is_suspended:
            return f"{user.username} (id {user.id}) is not suspended"
        logic.unsuspend(session, user)
        audit.record(session, audit.Kind.account_unsuspended, user.id, detail=_UNSUSPENDED)
        return f"{user.username} (id {user.id}) is no longer suspended ({user.user_type.value})"


#: The audit entry of ``unsuspend``.
_UNSUSPENDED = "on the command line"

#: The audit entry of ``make-admin`` and ``remove-admin`` (run on the host: no address).
_BY_OPERATOR = {
    True: "made an admin on the command line",
    False: "no longer an admin (command line)",
}


def create_user(config: str | None, username: str, email: str, password: str) -> str:
    """Make an active account, its address taken as confirmed; return what happened.

    The register form's rules apply (username grammar and reserved names, a free username
    and address, the configured ``password-min-length``). The address counts as confirmed
    because the operator vouches for it: no mail is sent.
    """
    from meta import logic, meta_state
    from meta.settings import meta_settings
    from srcore.db import utcnow
    from srcore.validation import MAX_EMAIL_LENGTH, Validation

    password = _text(password, "the password", text="multiline")
    with _meta_app(config) as app:
        username = username.strip().lower()
        problem = logic.check_username(username, reserved=app.srcore.config.services)
        if problem is not None:
            raise click.ClickException(f"{username!r}: {problem}")
        valid = Validation(data={"email": email}, source="form")
        address = valid.require("email", max_length=MAX_EMAIL_LENGTH, label="The email address")
        if address is None:
            raise click.ClickException(f"{email!r}: {valid.errors[0].reason}")
        problem = logic.email_problem(address)
        if problem is not None:
            raise click.ClickException(f"{email!r}: {problem}")
        address = logic.normalize_email(address)
        min_length = meta_settings(app).password_min_length
        problem = logic.check_password(password, min_length=min_length, username=username)
        if problem is not None:
            raise click.ClickException(f"the password is not acceptable: {problem}")
        password_hash = meta_state(app).passwords.hash(password)
        try:
            with app.srcore.db.transaction() as session:
                _refuse_taken(session, username, address)
                user = logic.create_user(
                    session, username=username, email=address, password_hash=password_hash
                )
                user.user_type = UserType.active
                user.email_confirmed_at = utcnow()
                return f"created {user.username} (id {user.id}), {user.email}, active"
        except IntegrityError:
            # Another registration (or another operator's command) took the name or the
            # address since the check above: say which, as the check would have.
            with app.srcore.db.transaction() as session:
                _refuse_taken(session, username, address)
            raise click.ClickException(
                f"another account took the username {username!r} or the address {address} meanwhile"
            ) from None


def _refuse_taken(session: Session, username: str, address: str) -> None:
    """Refuse, naming it, a username or an address an account has."""
    from meta import logic

    if logic.username_taken(session, username):
        raise click.ClickException(f"the username {username!r} is taken")
    if logic.email_taken(session, address):
        raise click.ClickException(f"another account uses {address}")


def create_token_for(
    config: str | None, username: str, scopes: tuple[str, ...], *, name: str, days: int
) -> tuple[str, str]:
    """Make a personal access token for *username*; return (token, what happened).

    The scopes are checked against the network's services as on the ``/security`` page;
    the token is shown here once, as there.
    """
    from meta.oauth.pats import (
        ACCOUNT_GONE,
        create_token,
        grantable_scope,
        token_name_problem,
        token_refusal,
        too_many_tokens,
    )
    from srcore.db import session

    name = _text(name.strip(), "--name", text="name", max_length=128)
    if not name:
        raise click.ClickException("the token's name must have 1 to 128 characters")
    mixed = token_name_problem(name)
    if mixed is not None:  # the rule of the Security page and the API
        raise click.ClickException(f"--name: {mixed}")
    with _meta_app(config):
        scope, problem = grantable_scope(list(scopes))
        if scope is None:
            raise click.ClickException(f"cannot grant {' '.join(scopes)}: {problem}")
        user = _find_user(session, username)
        if user.is_suspended:
            raise click.ClickException(f"{user.username} is suspended")
        if token_refusal(user) is not None:
            raise click.ClickException(
                f"{user.username} has not confirmed their email address, and an unconfirmed "
                "account gets no tokens"
            )
        too_many = too_many_tokens(user)
        if too_many == ACCOUNT_GONE:
            raise click.ClickException(
                "another request changed the account meanwhile; nothing was written. "
                "Run the command again."
            )
        if too_many is not None:
            raise click.ClickException(f"{user.username}: {too_many}")
        row, token = create_token(user, name=name, scope=scope, days=days)
        session.commit()
        expires = row.expires_at.strftime("%Y-%m-%d")
        return token, (
            f"personal access token {row.name!r} (id {row.id}) for {user.username}: "
            f"{scope}, expires {expires}"
        )


_config_option = click.option(
    "--config",
    "config",
    type=click.Path(dir_okay=False),
    default=None,
    help="The network's config file (default: $SRCORE_CONFIG, ./config.ini, "
    "/etc/srcore/config.ini).",
)


@click.group(epilog="Example: python -m meta.admin make-admin alice --config var/config.ini")
def main() -> None:
    """Administer meta's accounts."""


@main.command("make-admin", epilog="Example: python -m meta.admin make-admin alice")
@click.argument("username")
@_config_option
def make_admin(username: str, config: str | None) -> None:
    """Give USERNAME the admin role (access to /admin/users)."""
    click.echo(set_admin(config, username, admin=True))


@main.command("remove-admin", epilog="Example: python -m meta.admin remove-admin alice")
@click.argument("username")
@_config_option
def remove_admin(username: str, config: str | None) -> None:
    """Take the admin role away from USERNAME."""
    click.echo(set_admin(config, username, admin=False))


@main.command("unsuspend", epilog="Example: python -m meta.admin unsuspend alice")
@click.argument("username")
@_config_option
def unsuspend_command(username: str, config: str | None) -> None:
    """Lift the suspension of USERNAME (an admin's: then make-admin names them again)."""
    click.echo(unsuspend(config, username))


@main.command(
    "create-user",
    epilog="Example: python -m meta.admin create-user alice alice@example.org "
    "--password-stdin < password.txt",
)
@click.argument("username")
@click.argument("email")
@click.option(
    "--password-stdin",
    is_flag=True,
    help="Read the password from the first line of standard input instead of prompting.",
)
@_config_option
def create_user_command(
    username: str, email: str, password_stdin: bool, config: str | None
) -> None:
    """Create the account USERNAME with the address EMAIL, active and confirmed.

    The password is asked for twice, or read with --password-stdin (never from the
    command line, where other users of the machine could read it).
    """
    if password_stdin:
        try:
            password = sys.stdin.readline().rstrip("\r\n")
        except UnicodeDecodeError:
            # A password file in another encoding, read strictly (a UTF-8 locale).
            raise click.ClickException(
                "--password-stdin: the password is not UTF-8 text; nothing was written"
            ) from None
        if not password:
            raise click.ClickException("--password-stdin: standard input has no password")
    else:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    click.echo(create_user(config, username, email, password))


@main.command(
    "create-token",
    epilog="Example: TOKEN=$(python -m meta.admin create-token alice todo/tickets:RW "
    "--name deploy-check --days 1)",
)
@click.argument("username")
@click.argument("scopes", nargs=-1, required=True)
@click.option(
    "--name",
    default="command line",
    show_default=True,
    help="What the token is for, as its owner sees it on /security.",
)
@click.option(
    "--days",
    type=click.IntRange(1, 3650),
    default=365,
    show_default=True,
    help="How many days the token is valid.",
)
@_config_option
def create_token_command(
    username: str, scopes: tuple[str, ...], name: str, days: int, config: str | None
) -> None:
    """Create a personal access token for USERNAME with SCOPES (SERVICE/NAME:RO|RW).

    The token alone goes to standard output, so `TOKEN=$(...)` keeps it; what it is goes
    to standard error. It is shown once: meta keeps only its id.
    """
    token, summary = create_token_for(config, username, scopes, name=name, days=days)
    click.echo(summary, err=True)
    click.echo(token)
