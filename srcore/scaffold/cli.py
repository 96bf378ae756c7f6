"""The ``srcore new-service`` command."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import click

__all__ = ["new_service_command"]


def _shown(path: Path) -> str:
    """*path* relative to the working directory when inside it, as ``./name``."""
    try:
        relative = path.resolve().relative_to(Path.cwd().resolve())
    except ValueError:
        return str(path)
    return "." if str(relative) == "." else f".{os.sep}{relative}"


def _next_steps(name: str, path: Path, config: Path, *, meta_client: bool) -> list[str]:
    """What is left before the new service answers in its network, in order.

    A running meta knows the OAuth clients of the config it started with: until it is
    restarted, a login to the new service ends on meta's "client does not exist" page,
    which does not say why.
    """
    package = path.name.replace("-", "_")
    steps = [
        f"  next: pip install -e {_shown(path)}   (registers {package} with srcore)",
        f"        srcore --config {config} migrate {name} upgrade",
        f"        srcore --config {config} serve {name}",
    ]
    if meta_client:
        steps.append(
            f"        restart meta and the other services of {config} that are running: meta"
            f" reads [{name}]'s OAuth client, and each service its navigation, when it starts"
        )
    return steps


def _network_config(ctx: click.Context, own: Path | None) -> tuple[Path | None, str | None]:
    """The config file to add the new section to, and a note to print after: this
    command's ``--config``, else the one ``srcore --config`` names, which means the same
    network file.

    One named only by ``$SRCORE_CONFIG`` is left alone, since making a package should not
    change the file a shell happens to point at; the note says so and how to add it.
    """
    root = ctx.find_root()
    given = root.params.get("config")
    if given is None or root is ctx:
        return own, None
    if root.get_parameter_source("config") is not click.core.ParameterSource.COMMANDLINE:
        if own is not None:
            return own, None
        return None, (
            f"note: {given} (from $SRCORE_CONFIG) was not changed; to add the service to "
            f"it, pass --config {given}"
        )
    if own is not None and Path(given).absolute() != own.absolute():
        raise click.UsageError(
            f"two config files: srcore --config {given} and new-service --config {own}; name one"
        )
    return Path(given), None


@click.command(
    "new-service",
    epilog="Example: srcore new-service paste --dir example_services --config var/config.ini",
)
@click.argument("name")
@click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("."),
    show_default=True,
    help="Where to create the service's directory (DIR/NAME).",
)
@click.option(
    "--config",
    "config",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="A network config file to append a [NAME] section to (comments are kept).",
)
@click.option(
    "--port",
    type=click.IntRange(1, 65535),
    default=None,
    help="The new origin's port, or the first free one after it "
    "(default: after the highest port in --config).",
)
@click.pass_context
def new_service_command(
    ctx: click.Context, name: str, directory: Path, config: Path | None, port: int | None
) -> None:
    """Create a complete service package NAME and, with --config, add it to a network.

    `srcore --config FILE new-service NAME` is the same as `--config FILE` after NAME.

    The package has a pyproject.toml registering the service, an app factory, a manifest
    (a config key, the scope `items`, the event `item:created`), a model with its first
    migration, a page, an API and tests. Its tests, `ruff check`, `ruff format --check`
    and `mypy` (strict; the settings are in its pyproject.toml) pass as generated.
    Install it with `pip install -e DIR/NAME`.
    """
    from srcore.scaffold.generate import (
        ScaffoldError,
        check_name,
        create_service,
        installed_service_ids,
    )
    from srcore.scaffold.netconfig import PendingSection, prepare_service_section

    def refuse(message: str) -> None:
        click.echo(f"srcore new-service: {message}", err=True)
        ctx.exit(2)

    try:
        config, note = _network_config(ctx, config)
    except click.UsageError as exc:
        refuse(exc.message)
        return
    if port is not None and config is None:
        refuse("--port sets the port of the section added to --config: name the config too")
        return
    started = time.monotonic()
    installed = installed_service_ids()
    # Everything that can refuse is asked before the first file is written: a refusal
    # leaves no half-made package behind, nor a package missing from the config.
    pending: PendingSection | None = None
    try:
        check_name(name, installed=installed, directory=directory / name)
        if config is not None:
            if not config.is_file():
                raise ScaffoldError(
                    f"{config} is not a file: create the config first (srcore init)"
                )
            pending = prepare_service_section(config, name, port=port)
    except ScaffoldError as exc:
        refuse(str(exc))
        return
    click.echo(f"creating service {name} in {_shown(directory / name)}")
    try:
        created = create_service(name, directory, installed=installed, progress=click.echo)
    except ScaffoldError as exc:
        refuse(str(exc))
        return
    summary = f"created {name} in {_shown(created.path)}: {len(created.files)} files"
    if pending is not None:
        click.echo(f"  adding [{name}] to {config}")
        try:
            added = pending.write()
        except ScaffoldError as exc:
            # All or nothing: a package missing from the config would be "taken here" on
            # the next try.
            shutil.rmtree(created.path, ignore_errors=True)
            refuse(f"{exc}; {_shown(created.path)} was removed")
            return
        summary += f"; added [{name}] to {config} (port {added.port})"
        steps = _next_steps(
            name, created.path, pending.config, meta_client="oauth-client-id" in added.text
        )
        for line in steps:
            click.echo(line)
    click.echo(f"{summary} ({time.monotonic() - started:.1f} s)")
    if note is not None:
        click.echo(note, err=True)
