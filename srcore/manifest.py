"""Service manifests: the one place a service declares what it adds to the network.

Each service package carries a ``service.yaml`` beside its ``__init__.py``. It names the
service, declares the config keys it reads, the OAuth scopes it enforces and the webhook
events it emits. The app factory, ``srcore config check``, meta's consent screen and the
docs all read the same declaration, so no scope or key is spelled twice.

Installed services are found through the ``srcore.services`` entry point group, whose
values are package names (``todo = "todo"``). Nothing here runs at import time.
"""

from __future__ import annotations

import functools
import importlib
import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from importlib import metadata, resources
from typing import Any, Literal, get_args

from srcore.config import (
    Config,
    ConfigError,
    Key,
    Problem,
    find_config_path,
    load_config,
    parse_duration,
    read_config,
)
from srcore.config.declarations import within

__all__ = [
    "AUDIENCES",
    "Audience",
    "Event",
    "Manifest",
    "ManifestError",
    "Scope",
    "discover",
    "load_manifest",
    "load_network_config",
    "parse_manifest",
    "read_network_config",
    "service_package",
]

ENTRY_POINT_GROUP = "srcore.services"
_SERVICE_ID = re.compile(r"^[a-z][a-z0-9-]{0,30}[a-z0-9]$")
_SCOPE_NAME = re.compile(r"^[a-z][a-z0-9_-]*$")
_EVENT_NAME = re.compile(r"^[a-z][a-z0-9_]*:[a-z][a-z0-9_]*$")
_PAYLOAD = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


#: Who may receive an event (see :class:`Event`).
Audience = Literal["owner", "readers", "public", "internal"]
AUDIENCES: tuple[Audience, ...] = get_args(Audience)


class ManifestError(ValueError):
    """A ``service.yaml`` that cannot be used; the message names the file and the entry."""


@dataclass(frozen=True)
class Scope:
    """An OAuth scope a service enforces, e.g. ``tickets`` of ``todo``."""

    name: str
    description: str


@dataclass(frozen=True)
class Event:
    """A webhook event a service emits, the scope a subscriber needs to receive it and
    who may receive it at all (its *audience*), judged from what the event recorded when
    it was emitted (its owner, its resource's visibility), never from today's rows:

    ``owner`` (the default)
        only subscriptions of the user who owns what the event is about;
    ``readers``
        the owner, and every subscriber when the resource was public (unlisted and
        private resources stay the owner's);
    ``public``
        every subscriber holding the scope (only for events about public things);
    ``internal``
        the network's own first-party subscriptions only: users cannot subscribe to it.

    *payload* names the ``TypedDict`` of the event's data as ``module:Name``: the function
    that builds the data returns it, and the event catalog publishes its JSON Schema
    (:mod:`srcore.webhooks.catalog`), so the code and its documentation cannot drift apart.
    """

    name: str
    scope: str
    description: str
    audience: Audience = "owner"
    payload: str | None = None

    def payload_type(self) -> Any:
        """The ``TypedDict`` *payload* names, imported (None: any JSON object)."""
        if self.payload is None:
            return None
        module_name, _, name = self.payload.partition(":")
        try:
            return getattr(importlib.import_module(module_name), name)
        except (ImportError, AttributeError) as exc:
            raise ManifestError(
                f"event {self.name!r}: payload {self.payload} cannot be imported ({exc})"
            ) from None


@dataclass(frozen=True)
class Manifest:
    """The parsed, validated contents of one ``service.yaml``."""

    id: str
    name: str
    description: str
    package: str
    config: Mapping[str, tuple[Any, ...]] = field(default_factory=dict)
    scopes: tuple[Scope, ...] = ()
    events: tuple[Event, ...] = ()

    def scope(self, name: str) -> Scope | None:
        """Return the declared scope called *name*, or ``None``."""
        for scope in self.scopes:
            if scope.name == name:
                return scope
        return None

    @property
    def user_events(self) -> tuple[Event, ...]:
        """The events users and other services may subscribe to (not ``internal``)."""
        return tuple(event for event in self.events if event.audience != "internal")

    def event(self, name: str) -> Event | None:
        """Return the declared event called *name*, or ``None``."""
        for event in self.events:
            if event.name == name:
                return event
        return None


def _require(data: Mapping[str, Any], name: str, where: str) -> Any:
    if name not in data:
        raise ManifestError(f"{where}: missing '{name}'")
    return data[name]


def _text(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise ManifestError(f"{where}: expected text, got {type(value).__name__}")
    return value


def _parse_duration(value: Any, where: str) -> timedelta:
    try:
        return parse_duration(str(value))
    except ValueError as exc:
        raise ManifestError(f"{where}: {exc}") from None


def _bound(value: Any, key_type: str, where: str) -> int | timedelta:
    if key_type == "duration":
        return _parse_duration(value, where)
    if key_type == "int" and isinstance(value, int) and not isinstance(value, bool):
        return value
    raise ManifestError(f"{where}: min and max are whole numbers of an int key or durations")


def _bounds_check(entry: Mapping[str, Any], key_type: str, default: Any, where: str) -> Any:
    """The check of a key's ``min`` and ``max`` (both or neither): a value outside them is
    the operator's mistake, reported by ``srcore config check`` naming the key, where it
    would otherwise reach the service (an empty page, a date past the calendar's end)."""
    if "min" not in entry and "max" not in entry:
        return None
    if "min" not in entry or "max" not in entry:
        raise ManifestError(f"{where}: give both min and max, or neither")
    low = _bound(entry["min"], key_type, f"{where}.min")
    high = _bound(entry["max"], key_type, f"{where}.max")
    if low > high:  # type: ignore[operator]
        raise ManifestError(f"{where}: min is more than max")
    check = within(low, high)
    wrong = None if default is None else check(default)
    if wrong:
        raise ManifestError(f"{where}.default: {wrong}")
    return check


def _parse_key(entry: Any, where: str) -> Any:
    if not isinstance(entry, Mapping):
        raise ManifestError(f"{where}: each key must be a mapping with at least 'name'")
    allowed = {"name", "type", "default", "required", "secret", "help", "choices", "min", "max"}
    unknown = sorted(set(entry) - allowed)
    if unknown:
        raise ManifestError(f"{where}: unknown field(s) {', '.join(unknown)}")
    name = _text(_require(entry, "name", where), f"{where}.name")
    key_type = _text(entry.get("type", "str"), f"{where}.type")
    default = entry.get("default")
    if key_type == "duration" and default is not None:
        default = _parse_duration(default, f"{where}.default")
    elif key_type == "list" and isinstance(default, list):
        default = tuple(str(item) for item in default)
    choices = entry.get("choices", ())
    if not isinstance(choices, list | tuple):
        raise ManifestError(f"{where}.choices: expected a list")
    check = _bounds_check(entry, key_type, default, where)
    try:
        return Key(
            name=name,
            type=key_type,  # type: ignore[arg-type]
            default=default,
            required=bool(entry.get("required", False)),
            secret=bool(entry.get("secret", False)),
            help=_text(entry.get("help", ""), f"{where}.help"),
            choices=tuple(str(c) for c in choices),
            check=check,
        )
    except (TypeError, ValueError) as exc:
        raise ManifestError(f"{where}: {exc}") from None


def parse_manifest(data: Any, *, package: str, source: str = "service.yaml") -> Manifest:
    """Validate the already-loaded YAML *data* of a manifest and build a :class:`Manifest`.

    Every check names *source* and the offending entry, since the author reading the error
    is looking at that file.
    """
    if not isinstance(data, Mapping):
        raise ManifestError(f"{source}: expected a mapping at the top level")
    service_id = _text(_require(data, "id", source), f"{source}: id")
    if not _SERVICE_ID.match(service_id) or service_id == "global":
        raise ManifestError(
            f"{source}: id {service_id!r} must be 2-32 lower-case letters, digits or '-', "
            "starting with a letter, and not 'global'"
        )
    name = _text(data.get("name", service_id), f"{source}: name")
    description = _text(data.get("description", ""), f"{source}: description")

    config: dict[str, tuple[Any, ...]] = {}
    raw_config = data.get("config") or {}
    if not isinstance(raw_config, Mapping):
        raise ManifestError(f"{source}: config must map section names to lists of keys")
    for section, keys in raw_config.items():
        where = f"{source}: config[{section}]"
        if section != service_id and not str(section).startswith(f"{service_id}::"):
            raise ManifestError(
                f"{where}: a service may only declare [{service_id}] and "
                f"[{service_id}::...] sections"
            )
        if not isinstance(keys, list):
            raise ManifestError(f"{where}: expected a list of keys")
        config[str(section)] = tuple(
            _parse_key(entry, f"{where}[{i}]") for i, entry in enumerate(keys)
        )

    scopes: list[Scope] = []
    for i, entry in enumerate(data.get("scopes") or []):
        where = f"{source}: scopes[{i}]"
        if not isinstance(entry, Mapping):
            raise ManifestError(f"{where}: expected a mapping with name and description")
        scope_name = _text(_require(entry, "name", where), f"{where}.name")
        if not _SCOPE_NAME.match(scope_name):
            raise ManifestError(f"{where}: scope name {scope_name!r} must be lower-case")
        if any(s.name == scope_name for s in scopes):
            raise ManifestError(f"{where}: scope {scope_name!r} declared twice")
        scopes.append(
            Scope(scope_name, _text(_require(entry, "description", where), f"{where}.description"))
        )

    events: list[Event] = []
    for i, entry in enumerate(data.get("events") or []):
        where = f"{source}: events[{i}]"
        if not isinstance(entry, Mapping):
            raise ManifestError(f"{where}: expected a mapping with name, scope and description")
        event_name = _text(_require(entry, "name", where), f"{where}.name")
        if not _EVENT_NAME.match(event_name):
            raise ManifestError(f"{where}: event name {event_name!r} must look like 'thing:verb'")
        scope_name = _text(_require(entry, "scope", where), f"{where}.scope")
        if not any(s.name == scope_name for s in scopes):
            raise ManifestError(f"{where}: scope {scope_name!r} is not declared under scopes")
        if any(e.name == event_name for e in events):
            raise ManifestError(f"{where}: event {event_name!r} declared twice")
        audience = _text(entry.get("audience", "owner"), f"{where}.audience")
        if audience not in AUDIENCES:
            raise ManifestError(
                f"{where}: audience {audience!r} must be one of {', '.join(AUDIENCES)}"
            )
        payload = entry.get("payload")
        if payload is not None and not (isinstance(payload, str) and _PAYLOAD.match(payload)):
            raise ManifestError(
                f"{where}: payload {payload!r} must name a TypedDict as 'module:Name'"
            )
        events.append(
            Event(
                event_name,
                scope_name,
                _text(entry.get("description", ""), f"{where}.description"),
                audience,
                payload,
            )
        )

    return Manifest(
        id=service_id,
        name=name,
        description=description,
        package=package,
        config=config,
        scopes=tuple(scopes),
        events=tuple(events),
    )


@functools.cache
def load_manifest(package: str) -> Manifest:
    """Read and validate ``service.yaml`` from the installed package *package*.

    Cached per process: an installed package's manifest does not change while it runs.
    """
    import yaml

    try:
        text = (resources.files(package) / "service.yaml").read_text(encoding="utf-8")
    except (ModuleNotFoundError, FileNotFoundError) as exc:
        raise ManifestError(f"{package}: cannot read service.yaml ({exc})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ManifestError(f"{package}/service.yaml: not valid YAML: {exc}") from None
    return parse_manifest(data, package=package, source=f"{package}/service.yaml")


def service_package(service_id: str) -> str:
    """The package of the installed service *service_id* (its entry point's value).

    Raises :class:`ManifestError` naming the installed services when there is none, so
    every command that takes a service id refuses a wrong one the same way.
    """
    packages = {ep.name: ep.value for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)}
    if service_id not in packages:
        known = ", ".join(sorted(packages)) or "none"
        # The usual cause is a package installed in another environment than the one this
        # command runs in (a service made with new-service, not yet installed here).
        raise ManifestError(
            f"no installed service is called {service_id!r} (installed: {known}); install"
            f" its package into this environment ({sys.executable} -m pip install -e DIR),"
            f" which registers it under the {ENTRY_POINT_GROUP!r} entry point"
        )
    return packages[service_id]


def discover() -> dict[str, Manifest]:
    """Return the manifests of every installed service, by service id.

    A service whose manifest is broken raises :class:`ManifestError`: an operator must see
    it rather than have the service silently missing from the network.
    """
    found: dict[str, Manifest] = {}
    for entry in metadata.entry_points(group=ENTRY_POINT_GROUP):
        manifest = load_manifest(entry.value)
        if manifest.id != entry.name:
            raise ManifestError(
                f"{entry.value}/service.yaml: id {manifest.id!r} does not match the entry "
                f"point name {entry.name!r}"
            )
        found[manifest.id] = manifest
    return found


def _network_keys(
    path: str | os.PathLike[str] | None, environ: Mapping[str, str] | None
) -> tuple[dict[str, tuple[Key, ...]], list[str]]:
    """The keys every installed service declares, by section, and the services' ids."""
    try:
        manifests = discover()
    except (ImportError, ValueError) as exc:
        file = str(find_config_path(path, environ=environ))
        message = f"cannot read the installed services: {exc}"
        raise ConfigError([Problem(file, None, None, None, message)]) from None
    specs: dict[str, tuple[Key, ...]] = {}
    for manifest in manifests.values():
        for name, keys in manifest.config.items():
            specs[name] = specs.get(name, ()) + tuple(keys)
    return specs, sorted(manifests)


def load_network_config(
    path: str | os.PathLike[str] | None = None, *, environ: Mapping[str, str] | None = None
) -> Config:
    """Load the config file with the keys of every service installed here.

    What the commands that act for the whole network read (``srcore serve``, ``dev``,
    ``migrate --all``): a section named like no installed service is reported, and each
    installed service's own keys are typed. A service building its app reads only its own
    declarations (:func:`srcore.create_app`).
    """
    specs, installed = _network_keys(path, environ)
    return load_config(path, specs=specs, installed=installed, environ=environ)


def read_network_config(
    path: str | os.PathLike[str] | None = None, *, environ: Mapping[str, str] | None = None
) -> tuple[Config, list[Problem]]:
    """:func:`srcore.config.read_config` with the keys of every service installed here."""
    specs, installed = _network_keys(path, environ)
    return read_config(path, specs=specs, installed=installed, environ=environ)
