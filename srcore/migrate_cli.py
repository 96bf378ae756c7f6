"""The ``migrate`` command: ``srcore migrate SERVICE upgrade|downgrade|current|history|revision``.

SERVICE is resolved to a :class:`~srcore.migrate.MigrationTarget` by a loader taking
``(service_id, config_path)``: ``srcore.app.migration_target`` unless the invoking
context's ``obj`` is a dict with a ``"target_loader"``. The config path is this command's
``--config``, else the ``"config_path"`` of that dict, else the root command's ``--config``.

``srcore migrate --all upgrade`` (and ``current``) goes through every service of the
config file in its order instead of one SERVICE (the ``"services"`` of that dict, when
given, replaces the file's list).
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import signal
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import click
from alembic.util import CommandError
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from srcore import migrate
from srcore.migrate import CORE_LINEAGE, MigrationTarget

__all__ = ["TargetLoader", "applied_between", "migrate_command"]

TargetLoader = Callable[[str, str | None], MigrationTarget]


def _default_loader() -> TargetLoader:
    module = importlib.import_module("srcore.app")
    return cast(TargetLoader, module.migration_target)


@dataclass
class _State:
    service_id: str | None
    config_path: str | None
    loader: TargetLoader | None
    #: With ``--all``: the services to go through (None: the config file's).
    services: Sequence[str] | None = None
    every: bool = False
    _targets: dict[str, MigrationTarget] = field(default_factory=dict)

    def target(self, service_id: str | None = None) -> MigrationTarget:
        name = service_id or self.service_id
        if name is None:
            command = click.get_current_context().info_name
            raise click.UsageError(
                f"--all works with upgrade and current; name a SERVICE for {command}"
            )
        if name not in self._targets:
            from srcore.config import ConfigError

            loader = self.loader or _default_loader()
            try:
                self._targets[name] = loader(name, self.config_path)
            except (ConfigError, ValueError, FileNotFoundError) as exc:
                raise click.ClickException(str(exc)) from exc
        return self._targets[name]

    def all_services(self) -> list[str]:
        """The services ``--all`` means, checked to be installed before any is touched."""
        if self.services is not None:
            return list(self.services)
        from srcore.config import ConfigError, find_config_path
        from srcore.manifest import ENTRY_POINT_GROUP, load_network_config

        try:
            services = load_network_config(find_config_path(self.config_path)).services
        except ConfigError as exc:
            raise click.ClickException(str(exc)) from exc
        if self.loader is None:
            from importlib import metadata

            installed = {ep.name for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)}
            absent = [s for s in services if s not in installed]
            if absent:
                raise click.ClickException(
                    f"not installed: {', '.join(absent)} (configured: {', '.join(services)}); "
                    "nothing was migrated"
                )
        if not services:
            raise click.ClickException("the config file has no service sections")
        return services


def _state() -> _State:
    return cast(_State, click.get_current_context().find_object(_State))


class _Terminated(KeyboardInterrupt):
    """SIGTERM during a migration (``docker stop``, systemd): taken as Ctrl-C is. Without a
    handler it killed the command, and as a container's PID 1 was dropped until the
    SIGKILL."""


def _terminated(_signum: int, _frame: object) -> None:
    raise _Terminated


class _Interrupted(click.ClickException):
    """Ctrl-C or SIGINT during a migration: said as such, with status 130 like the shell's."""

    exit_code = 130

    def __init__(self) -> None:
        super().__init__(
            "interrupted: each lineage is upgraded or downgraded in one transaction, so the "
            "one under way was rolled back and every lineage is at a revision `current` "
            "shows; run the command again to go on"
        )


class _Stopped(_Interrupted):
    """SIGTERM during a migration: said as Ctrl-C is, with status 143 like the shell's."""

    exit_code = 143


def _run(fn: Callable[[], Any], target: MigrationTarget | None = None) -> Any:
    try:
        return fn()
    except KeyboardInterrupt as exc:
        raise (_Stopped() if isinstance(exc, _Terminated) else _Interrupted()) from None
    except (migrate.DatabaseUnreachable, migrate.WrongDatabase, migrate.DowngradeRefused) as exc:
        raise click.ClickException(f"{exc}; nothing was changed") from exc
    except migrate.MigrationStopped as exc:
        raise click.ClickException(str(exc)) from exc
    except Exception as exc:
        script = migrate.failed_script(target, exc) if target is not None else None
        if script is not None and target is not None:
            raise click.ClickException(_script_failed(target, script, exc)) from exc
        if isinstance(exc, (CommandError, SQLAlchemyError, FileNotFoundError, ValueError)):
            raise click.ClickException(str(exc).strip()) from exc
        raise


def _upgrade(target: MigrationTarget, revision: str = "heads") -> int:
    """:func:`migrate.upgrade`, refusing first (:class:`migrate.WrongDatabase`) a database
    that holds another service's lineage: each service has its own. A missing SQLite file
    is not refused: the upgrade creates it."""
    with contextlib.suppress(migrate.DatabaseMissing):
        migrate.identify(target)
    return migrate.upgrade(target, revision)


def _downgrade(target: MigrationTarget, revision: str, lineage: str | None) -> None:
    """:func:`migrate.downgrade`, refusing first another service's database (as
    :func:`_upgrade`) or a missing SQLite file (there is nothing to downgrade)."""
    migrate.identify(target)
    migrate.downgrade(target, revision, lineage=lineage)


def _script_failed(target: MigrationTarget, script: migrate.RevisionInfo, exc: Exception) -> str:
    """One line for a migration script that raised: which one, what it said, and where its
    lineage was left (its transaction was rolled back)."""
    if isinstance(exc, DBAPIError):
        reason = " ".join(str(exc.orig).split())
        statement = " ".join(str(exc.statement or "").split())
        if statement:
            cut = statement if len(statement) <= 200 else statement[:199] + "…"
            reason += f" (in: {cut})"
    else:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        if not isinstance(exc, RuntimeError):
            reason = f"{type(exc).__name__}: {reason}"
    try:
        at = migrate.current(target).get(script.lineage) or "no revision"
    except Exception:  # the database went away meanwhile: the rollback holds all the same
        at = "the revision `current` shows"
    return (
        f"the migration {script.revision} of {script.lineage} ({script.path.name}) in the "
        f"database of {target.service_id} failed: {reason}. It was rolled back, and "
        f"{script.lineage} was left where it was ({at}; each lineage runs in one transaction): "
        "run the command again once that is dealt with"
    )


def _echo_current(target: MigrationTarget) -> None:
    applied = _run(lambda: migrate.current(target))
    heads = _run(lambda: migrate.heads(target))
    for lineage, rev in applied.items():
        state = "(head)" if rev is not None and rev == heads.get(lineage) else ""
        click.echo(f"{lineage}: {rev or '(none)'} {state}".rstrip())
    try:
        migrate.identify(target)
    except migrate.WrongDatabase as exc:
        raise click.ClickException(str(exc)) from exc


_ALL = "srcore.migrate.all"


class _MigrateGroup(click.Group):
    """A group whose SERVICE argument ``--all`` replaces.

    Click fills a group's arguments before it looks for the subcommand, so with ``--all``
    the subcommand's name would be taken for SERVICE; the argument is left out of the
    parse instead when ``--all`` comes before the subcommand.
    """

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        first = next((i for i, arg in enumerate(args) if arg in self.commands), len(args))
        ctx.meta[_ALL] = "--all" in args[:first]
        return super().parse_args(ctx, args)

    def get_params(self, ctx: click.Context) -> list[click.Parameter]:
        params = super().get_params(ctx)
        if ctx.meta.get(_ALL):
            return [p for p in params if p.name != "service"]
        return params

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        if ctx.meta.get(_ALL) and args and args[0] not in self.commands:
            raise click.UsageError(
                f"--all takes the place of SERVICE: drop {args[0]!r} or --all", ctx
            )
        return super().resolve_command(ctx, args)

    def collect_usage_pieces(self, ctx: click.Context) -> list[str]:
        pieces = super().collect_usage_pieces(ctx)
        return ["(SERVICE | --all)" if p == "SERVICE" else p for p in pieces]


@click.group(
    "migrate",
    cls=_MigrateGroup,
    epilog="Example:\n\n\b\n  srcore migrate todo upgrade\n"
    "  srcore --config /etc/srcore/config.ini migrate todo current\n"
    "  srcore migrate --all upgrade",
)
@click.argument("service")
@click.option(
    "--all",
    "every",
    is_flag=True,
    help="Every service of the config file, in its order, instead of SERVICE "
    "(upgrade and current).",
)
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="Config file (default: $SRCORE_CONFIG, ./config.ini, /etc/srcore/config.ini).",
)
@click.pass_context
def migrate_command(
    ctx: click.Context, config_path: str | None, every: bool, service: str | None = None
) -> None:
    """Run the database migrations of SERVICE (the core's lineage, then the service's)."""
    parent = ctx.obj
    loader: TargetLoader | None = None
    services: Sequence[str] | None = None
    if isinstance(parent, dict):
        loader = parent.get("target_loader")
        services = parent.get("services")
        config_path = config_path or parent.get("config_path")
    root = ctx.find_root()
    if config_path is None and root is not ctx:
        config_path = root.params.get("config")
    ctx.obj = _State(None if every else service, config_path, loader, services, every)
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _terminated)
        if previous is not None:  # put back when the command ends (callers in-process)
            ctx.call_on_close(functools.partial(signal.signal, signal.SIGTERM, previous))


@migrate_command.command(
    "upgrade",
    epilog="Example:\n\n\b\n  srcore migrate todo upgrade\n"
    "  srcore migrate meta upgrade 0001_accounts\n  srcore migrate --all upgrade",
)
@click.argument("revision", default="heads")
def upgrade_command(revision: str) -> None:
    """Upgrade the core lineage to its head, then the service to REVISION (default: heads).

    With --all, every service of the config to its heads: one progress line per service,
    then a one-line summary.
    """
    state = _state()
    if state.every:
        if revision != "heads":
            raise click.UsageError("--all upgrades every service to its heads: no REVISION")
        _upgrade_every(state)
        return
    target = state.target()
    _run(lambda: _upgrade(target, revision), target)
    _echo_current(target)


def _ancestors(revisions: str | None, parents: dict[str, tuple[str, ...]]) -> set[str]:
    """*revisions* (comma-separated heads, as :func:`migrate.current` gives) and every
    revision below them."""
    seen: set[str] = set()
    stack = [r for r in (revisions or "").split(",") if r]
    while stack:
        revision = stack.pop()
        if revision not in seen:
            seen.add(revision)
            stack.extend(parents.get(revision, ()))
    return seen


def applied_between(
    infos: Sequence[migrate.RevisionInfo],
    before: dict[str, str | None],
    after: dict[str, str | None],
) -> int:
    """How many scripts an upgrade from *before* to *after* ran, over every lineage.

    Counted on the scripts' graph rather than by position, so branches and merges count
    each script once.
    """
    count = 0
    for lineage in after:
        parents = {i.revision: i.down_revision for i in infos if i.lineage == lineage}
        done = _ancestors(after[lineage], parents) - _ancestors(before.get(lineage), parents)
        count += len(done)
    return count


def _upgrade_counting(target: MigrationTarget) -> int:
    """Upgrade both lineages of *target* to their heads; how many scripts this run applied
    (none of those another run applied while this one waited for it)."""
    return cast(int, _run(lambda: _upgrade(target), target))


def _upgrade_every(state: _State) -> None:
    """Upgrade each service in turn, saying which and how far, and stop at the first failure.

    The line of a service is written in two halves around its migration, so a slow one
    shows what it is waiting for.
    """
    services = state.all_services()
    started = time.monotonic()
    total = 0
    for number, service in enumerate(services, 1):
        click.echo(f"[{number}/{len(services)}] {service}: upgrading ... ", nl=False)
        began = time.monotonic()
        try:
            count = _upgrade_counting(state.target(service))
        except click.ClickException:
            click.echo("failed")
            click.echo(
                f"migrated {number - 1} of {_plural(len(services), 'service')} "
                f"({_plural(total, 'revision')} applied) in {time.monotonic() - started:.1f} s;"
                f" {service} failed"
            )
            raise
        total += count
        what = _plural(count, "revision") if count else "up to date"
        click.echo(f"done in {time.monotonic() - began:.1f} s ({what})")
    click.echo(
        f"migrated {_plural(len(services), 'service')} ({_plural(total, 'revision')} applied) "
        f"in {time.monotonic() - started:.1f} s"
    )


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


@migrate_command.command(
    "downgrade",
    epilog="Example:\n\n\b\n  srcore migrate meta downgrade 0001_accounts\n"
    "  srcore migrate todo downgrade -1       (one revision back)\n"
    "  srcore migrate todo downgrade base",
    # Alembic's relative revision (-1) reads as an option otherwise: "No such option '-1'".
    context_settings={"ignore_unknown_options": True},
)
@click.argument("revision")
@click.option("--core", is_flag=True, help=f"Downgrade the core lineage ({CORE_LINEAGE}).")
def downgrade_command(revision: str, core: bool) -> None:
    """Downgrade the service's lineage (or the core's) to REVISION ("base": everything)."""
    target = _state().target()
    lineage = CORE_LINEAGE if core else None
    _run(lambda: _downgrade(target, revision, lineage), target)
    _echo_current(target)


@migrate_command.command(
    "current",
    epilog="Example:\n\n\b\n  srcore migrate todo current\n  srcore migrate --all current",
)
def current_command() -> None:
    """Show the applied revision of each lineage (of every service with --all)."""
    state = _state()
    if not state.every:
        _echo_current(state.target())
        return
    for service in state.all_services():
        click.echo(f"[{service}]")
        _echo_current(state.target(service))


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
