"""``srcore config check``, ``srcore config show`` and ``srcore keygen``.

The config path comes from the root command's ``--config`` option (``None`` means "look
it up", see :func:`srcore.config.find_config_path`).
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import click

from srcore.config import (
    Config,
    ConfigError,
    Key,
    Problem,
    format_value,
    load_config,
    read_config,
)
from srcore.manifest import load_network_config, read_network_config

if TYPE_CHECKING:
    from srcore.manifest import Manifest

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
        if specs is None:
            return load_network_config(_config_path())
        return load_config(_config_path(), specs=specs)
    except ConfigError as exc:
        _echo_problems(exc.problems)
        errors = len(exc.errors)
        click.echo(
            f"{errors} error{'s' if errors != 1 else ''}; the config cannot be used.", err=True
        )
        raise click.get_current_context().exit(1) from None


def _by_line(problem: Problem) -> tuple[bool, int]:
    return problem.line is None, problem.line or 0


def _database_problems(cfg: Config) -> list[Problem]:
    """Each service whose SQLite database this user cannot use where its ``database-url``
    points: no directory, not a database, files or a directory of another user (a
    database made by ``sudo srcore migrate``), each with its fix. Not part of loading the
    file: ``srcore migrate`` and the worker already name such a problem when they open the
    database, and a config is written (``srcore init``, a test) before its data directory
    may exist."""
    from srcore.config.database import sqlite_storage_problem

    problems = []
    for name in cfg.services:
        section = cfg.section(name)
        url = section["database-url"]
        found = sqlite_storage_problem(str(url)) if url else None
        if found is None:
            continue
        message = str(found)
        source = section.source("database-url")
        if not source.startswith(str(cfg.path)) and source != "default":
            message = f"{message} (from {source})"
        problems.append(section.problem("database-url", message))
    return problems


def _app_problems(cfg: Config) -> list[Problem]:
    """What only building a service's app checks, for each installed service of the file
    (meta's audit-subscribers naming a service it sends no events to): built as
    ``srcore serve`` builds it before serving, without serving or connecting. Otherwise
    the check said OK and the service then refused to start. Its log lines are the
    check's own problems again, so none is written."""
    import importlib
    import logging

    from srcore.manifest import ManifestError, discover

    try:
        installed = discover()
    except ManifestError:
        return []  # said by the commands that need the manifests
    problems: list[Problem] = []
    quiet = logging.NullHandler()  # logging "set up": the app adds no handler of its own
    srcore_logger = logging.getLogger("srcore")
    srcore_logger.addHandler(quiet)
    logging.disable(logging.CRITICAL)
    try:
        for name in cfg.services:
            manifest = installed.get(name)
            if manifest is None:
                continue
            try:
                app = importlib.import_module(manifest.package).create_app(config=cfg.path)
            except ConfigError as exc:
                problems.extend(p for p in exc.errors if p not in problems)
            except Exception as exc:  # serving would fail the same way: say how, once
                message = f"{name} cannot be built from this file: {type(exc).__name__}: {exc}"
                problems.append(Problem(str(cfg.path), None, name, None, message))
            else:
                app.extensions["srcore"].db.dispose()
    finally:
        logging.disable(logging.NOTSET)
        srcore_logger.removeHandler(quiet)
    return problems


def _installed_manifests() -> list[Manifest]:
    from srcore.manifest import ManifestError, discover

    try:
        return list(discover().values())
    except ManifestError as exc:
        raise click.ClickException(str(exc)) from None


def make_config_command(
    *,
    specs: Mapping[str, Sequence[Key]] | None = None,
    manifests: Callable[[], Sequence[Manifest]] | None = None,
) -> click.Group:
    """Build the ``config`` group; *specs* replaces the installed services' declarations,
    *manifests* (a callable) the installed services' manifests in ``config reference``."""

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
        """Check the whole config file against every installed service's keys, and
        build each installed service of the file as serve does before serving.

        Prints every problem as FILE:LINE [SECTION] KEY: PROBLEM and exits 1 when there
        are errors; warnings alone exit 0. A file without a single service section is an
        error: no service can start from it, and it is most likely not the network's file.
        """
        cfg = _load(specs)
        if not cfg.services:
            _echo_problems(cfg.warnings)
            click.echo(
                f"{cfg.path}: no service section ([meta], [todo], ...), so no service can "
                "start from this file: is it the network's config? Name that one with "
                "--config or $SRCORE_CONFIG, or write a new one with srcore init",
                err=True,
            )
            raise click.get_current_context().exit(1)
        found = _database_problems(cfg)
        if not found and specs is None:
            found = _app_problems(cfg)
        if found:
            _echo_problems(sorted([*cfg.warnings, *found], key=_by_line))
            plural = "s" if len(found) != 1 else ""
            click.echo(f"{len(found)} error{plural}; the config cannot be used.", err=True)
            raise click.get_current_context().exit(1)
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
        as ********. A file with errors is shown as far as it can be read, a refused value
        as its default, followed by the problems; the exit status is then 1.
        """
        try:
            if specs is None:
                cfg, problems = read_network_config(_config_path())
            else:
                cfg, problems = read_config(_config_path(), specs=specs)
        except ConfigError as exc:
            _echo_problems(exc.problems)
            raise click.get_current_context().exit(1) from None
        refused = any(p.severity == "error" for p in problems)
        # What `config check` finds beyond loading, as the operator looking here expects.
        problems = sorted([*problems, *_database_problems(cfg)], key=_by_line)
        errors = sum(1 for p in problems if p.severity == "error")
        if not errors:
            _echo_problems(problems)
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
        if errors:
            _echo_problems(problems)
            plural = "s" if errors != 1 else ""
            shown = "; refused values are shown as their defaults" if refused else ""
            click.echo(f"{errors} error{plural}{shown}.", err=True)
            raise click.get_current_context().exit(1)

    @config.command(
        "reference",
        epilog="Example:\n\n\b\n  srcore config reference --output docs/config-reference.md\n"
        "  srcore config reference --check docs/config-reference.md",
    )
    @click.option(
        "--output",
        type=click.Path(dir_okay=False, path_type=Path),
        default=None,
        help="Write the reference to FILE instead of standard output.",
    )
    @click.option(
        "--check",
        "check_path",
        type=click.Path(dir_okay=False, exists=True, path_type=Path),
        default=None,
        help="Compare FILE with the reference instead; exit 1 naming what is missing.",
    )
    def reference(output: Path | None, check_path: Path | None) -> None:
        """Print the config reference (Markdown): every key srcore and the installed
        services declare, with type, default, environment variable and help.

        Needs no config file: it reads the declarations, not a network's values.
        """
        from srcore.config.reference import reference_problems, render_reference

        found = (manifests or _installed_manifests)()
        if check_path is not None:
            if output is not None:
                raise click.UsageError("--check and --output do not go together")
            problems = reference_problems(check_path.read_text(encoding="utf-8"), found)
            for problem in problems:
                click.echo(f"{check_path}: {problem}", err=True)
            if problems:
                raise click.get_current_context().exit(1)
            click.echo(f"OK: {check_path} is up to date ({len(found)} services)")
            return
        text = render_reference(found)
        if output is None:
            click.echo(text, nl=False)
            return
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(text, encoding="utf-8")
        ids = ", ".join(sorted(m.id for m in found)) or "no services"
        click.echo(f"wrote {output}: srcore's keys and those of {ids}")

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
