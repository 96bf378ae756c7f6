"""``srcore config check``, ``srcore config show`` and ``srcore keygen``.

The config path comes from the root command's ``--config`` option (``None`` means "look
it up", see :func:`srcore.config.find_config_path`).
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Mapping, Sequence

import click

from srcore.config import (
    Config,
    ConfigError,
    Key,
    Problem,
    format_value,
    load_config,
)

__all__ = ["config_command", "keygen_command", "make_config_command"]

_SERVICE_ID = re.compile(r"^[a-z0-9](?:[a-z0-9_-]*[a-z0-9])?$")


def _config_path() -> str | None:
    value = click.get_current_context().find_root().params.get("config")
    return None if value is None else str(value)


def _echo_problems(problems: Sequence[Problem]) -> None:
    for problem in problems:
        click.echo(str(problem), err=True)


def _load(specs: Mapping[str, Sequence[Key]] | None) -> Config:
    """Load the config or print every problem and exit 1."""
    try:
        return load_config(_config_path(), specs=specs)
    except ConfigError as exc:
        _echo_problems(exc.problems)
        errors = len(exc.errors)
        click.echo(
            f"{errors} error{'s' if errors != 1 else ''}; the config cannot be used.", err=True
        )
        raise click.get_current_context().exit(1) from None


def make_config_command(*, specs: Mapping[str, Sequence[Key]] | None = None) -> click.Group:
    """Build the ``config`` group; *specs* replaces the installed services' declarations."""

    @click.group(
        "config",
        epilog="Example:\n\n\b\n  srcore --config /etc/srcore/config.ini config check",
    )
    def config() -> None:
        """Check or show the shared config file."""

    @config.command(
        "check",
        epilog="Example:\n\n\b\n  srcore --config config.ini config check\n"
        "  SRCORE__TODO__DATABASE_URL=sqlite:///t.db srcore config check",
    )
    def check() -> None:
        """Check the whole config file against every installed service's keys.

        Prints every problem as FILE:LINE [SECTION] KEY: PROBLEM and exits 1 when there
        are errors; warnings alone exit 0.
        """
        cfg = _load(specs)
        _echo_problems(cfg.warnings)
        services = cfg.services
        names = f" ({', '.join(services)})" if services else ""
        warnings = len(cfg.warnings)
        tail = f", {warnings} warning{'s' if warnings != 1 else ''}" if warnings else ""
        plural = "s" if len(services) != 1 else ""
        click.echo(f"OK: {len(services)} service{plural}{names} in {cfg.path}{tail}")

    @config.command(
        "show",
        epilog="Example:\n\n\b\n  srcore config show todo\n"
        "  SRCORE__GLOBAL__LOG_LEVEL=debug srcore config show",
    )
    @click.argument("service", required=False)
    def show(service: str | None) -> None:
        """Show the effective value of every key, and where it came from.

        With SERVICE, only [global], that service and its sub-sections. Secrets are shown
        as ********.
        """
        cfg = _load(specs)
        _echo_problems(cfg.warnings)
        names = cfg.sections
        if service is not None:
            if not cfg.has_service(service):
                known = ", ".join(cfg.services) or "none"
                raise click.ClickException(
                    f"no [{service}] section in {cfg.path} (services: {known})"
                )
            names = [n for n in names if n in ("global", service) or n.startswith(service + "::")]
        blocks = []
        for name in names:
            section = cfg.section(name)
            width = max((len(key) for key in section), default=0)
            rows = []
            for key in section:
                value = format_value(section.spec(key), section[key]).replace("\n", "\n    ")
                rows.append((f"{key.ljust(width)} = {value}".rstrip(), section.source(key)))
            column = min(max((len(text) for text, _ in rows), default=0), 60)
            lines = [f"[{name}]", *(f"{text.ljust(column)}  ; {src}" for text, src in rows)]
            blocks.append("\n".join(lines))
        click.echo("\n\n".join(blocks))

    return config


config_command = make_config_command()


@click.command(
    "keygen",
    epilog="Example:\n\n\b\n  srcore keygen\n  srcore keygen --service todo >> config.ini",
)
@click.option(
    "--service",
    metavar="NAME",
    help="Print a ready [NAME] section with a secret-key and an oauth-client-secret.",
)
def keygen_command(service: str | None) -> None:
    """Print fresh random keys to paste into the config file.

    Each service needs its own secret-key; never copy one between services.
    """
    if service is None:
        click.echo(f"secret-key = {secrets.token_urlsafe(48)}")
        return
    if not _SERVICE_ID.match(service) or service == "global":
        raise click.BadParameter(
            "a service id is lower-case letters, digits, '-' and '_'", param_hint="--service"
        )
    click.echo(f"[{service}]")
    click.echo(f"secret-key = {secrets.token_urlsafe(48)}")
    click.echo(f"oauth-client-secret = {secrets.token_urlsafe(48)}")
