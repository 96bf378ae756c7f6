"""The ``migrate`` command: ``srcore migrate SERVICE upgrade|downgrade|current|history|revision``.

SERVICE is resolved to a :class:`~srcore.migrate.MigrationTarget` by a loader taking
``(service_id, config_path)``: ``srcore.app.migration_target`` unless the invoking
context's ``obj`` is a dict with a ``"target_loader"``. The config path is this command's
``--config``, else the ``"config_path"`` of that dict, else the root command's ``--config``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import click
from alembic.util import CommandError
from sqlalchemy.exc import SQLAlchemyError

from srcore import migrate
from srcore.migrate import CORE_LINEAGE, MigrationTarget

__all__ = ["TargetLoader", "migrate_command"]

TargetLoader = Callable[[str, str | None], MigrationTarget]


def _default_loader() -> TargetLoader:
    module = importlib.import_module("srcore.app")
    return cast(TargetLoader, module.migration_target)


@dataclass
class _State:
    service_id: str
    config_path: str | None
    loader: TargetLoader | None
    _target: MigrationTarget | None = None

    def target(self) -> MigrationTarget:
        if self._target is None:
            from srcore.config import ConfigError

            loader = self.loader or _default_loader()
            try:
                self._target = loader(self.service_id, self.config_path)
            except (ConfigError, ValueError, FileNotFoundError) as exc:
                raise click.ClickException(str(exc)) from exc
        return self._target


def _state() -> _State:
    return cast(_State, click.get_current_context().find_object(_State))


def _run(fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except (CommandError, SQLAlchemyError, FileNotFoundError, ValueError) as exc:
        raise click.ClickException(str(exc).strip()) from exc


def _echo_current(target: MigrationTarget) -> None:
    applied = _run(lambda: migrate.current(target))
    heads = _run(lambda: migrate.heads(target))
    for lineage, rev in applied.items():
        state = "(head)" if rev is not None and rev == heads.get(lineage) else ""
        click.echo(f"{lineage}: {rev or '(none)'} {state}".rstrip())


@click.group(
    "migrate",
    epilog="Example:\n\n\b\n  srcore migrate todo upgrade\n"
    "  srcore --config /etc/srcore/config.ini migrate todo current",
)
@click.argument("service")
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="Config file (default: $SRCORE_CONFIG, ./config.ini, /etc/srcore/config.ini).",
)
@click.pass_context
def migrate_command(ctx: click.Context, service: str, config_path: str | None) -> None:
    """Run the database migrations of SERVICE (the core's lineage, then the service's)."""
    parent = ctx.obj
    loader: TargetLoader | None = None
    if isinstance(parent, dict):
        loader = parent.get("target_loader")
        config_path = config_path or parent.get("config_path")
    root = ctx.find_root()
    if config_path is None and root is not ctx:
        config_path = root.params.get("config")
    ctx.obj = _State(service, config_path, loader)


@migrate_command.command(
    "upgrade",
    epilog="Example:\n\n\b\n  srcore migrate todo upgrade\n"
    "  srcore migrate meta upgrade 0001_accounts",
)
@click.argument("revision", default="heads")
def upgrade_command(revision: str) -> None:
    """Upgrade the core lineage to its head, then the service to REVISION (default: heads)."""
    target = _state().target()
    _run(lambda: migrate.upgrade(target, revision))
    _echo_current(target)


@migrate_command.command(
    "downgrade",
    epilog="Example:\n\n\b\n  srcore migrate meta downgrade 0001_accounts\n"
    "  srcore migrate todo downgrade base",
)
@click.argument("revision")
@click.option("--core", is_flag=True, help=f"Downgrade the core lineage ({CORE_LINEAGE}).")
def downgrade_command(revision: str, core: bool) -> None:
    """Downgrade the service's lineage (or the core's) to REVISION ("base": everything)."""
    target = _state().target()
    lineage = CORE_LINEAGE if core else None
    _run(lambda: migrate.downgrade(target, revision, lineage=lineage))
    _echo_current(target)


@migrate_command.command("current", epilog="Example:\n\n\b\n  srcore migrate todo current")
def current_command() -> None:
    """Show the applied revision of each lineage."""
    _echo_current(_state().target())


@migrate_command.command("history", epilog="Example:\n\n\b\n  srcore migrate todo history")
def history_command() -> None:
    """List the migration scripts of each lineage, oldest first."""
    target = _state().target()
    applied = _run(lambda: migrate.current(target))
    infos: list[migrate.RevisionInfo] = _run(lambda: migrate.history(target))
    for info in infos:
        down = ",".join(info.down_revision) or "<base>"
        marks = [
            m
            for m, on in (
                ("head", info.is_head),
                ("current", applied.get(info.lineage) == info.revision),
            )
            if on
        ]
        suffix = f" ({', '.join(marks)})" if marks else ""
        click.echo(f"{info.lineage}: {down} -> {info.revision}{suffix}, {info.message}")


@migrate_command.command(
    "revision",
    epilog='Example:\n\n\b\n  srcore migrate todo revision -m "add labels"\n'
    '  srcore migrate todo revision -m "data fix" --empty',
)
@click.option("-m", "--message", required=True, help="What the migration does.")
@click.option(
    "--autogenerate/--empty",
    default=True,
    help="Compare the models with the database (default) or write an empty script.",
)
def revision_command(message: str, autogenerate: bool) -> None:
    """Write a new migration script for the service."""
    target = _state().target()
    path = _run(lambda: migrate.revision(target, message, autogenerate=autogenerate))
    click.echo(f"wrote {path}")
