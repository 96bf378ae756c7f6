"""Commands for operators, run on the host with access to the config file.

    python -m meta.admin make-admin USERNAME [--config PATH]
    python -m meta.admin remove-admin USERNAME [--config PATH]

There is no "first account is admin" rule: whoever registers first on a fresh network is
not to be trusted with it. The operator names admins here.
"""

from __future__ import annotations

import click
from sqlalchemy import select

from srcore.db import UserType

__all__ = ["main", "set_admin"]


def set_admin(config: str | None, username: str, *, admin: bool) -> str:
    """Make *username* an admin (or an ordinary active account); return what happened."""
    from meta import create_app
    from meta.models import User

    app = create_app(config=config)
    database = app.srcore.db
    try:
        with database.transaction() as session:
            user = session.scalar(select(User).where(User.username == username.lower()))
            if user is None:
                raise click.ClickException(f"no account is called {username!r}")
            if user.is_suspended:
                raise click.ClickException(f"{username} is suspended; unsuspend it first")
            if admin:
                user.user_type = UserType.admin
                return f"{user.username} (id {user.id}) is an admin now"
            if user.user_type == UserType.admin:
                user.user_type = UserType.active
            return f"{user.username} (id {user.id}) is not an admin"
    finally:
        database.dispose()


_config_option = click.option(
    "--config",
    "config",
    type=click.Path(dir_okay=False),
    default=None,
    help="The network's config file (default: $SRCORE_CONFIG, ./config.ini, "
    "/etc/srcore/config.ini).",
)


@click.group()
def main() -> None:
    """Administer meta's accounts."""


@main.command("make-admin")
@click.argument("username")
@_config_option
def make_admin(username: str, config: str | None) -> None:
    """Give USERNAME the admin role (access to /admin/users)."""
    click.echo(set_admin(config, username, admin=True))


@main.command("remove-admin")
@click.argument("username")
@_config_option
def remove_admin(username: str, config: str | None) -> None:
    """Take the admin role away from USERNAME."""
    click.echo(set_admin(config, username, admin=False))
