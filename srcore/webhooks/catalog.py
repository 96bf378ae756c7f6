"""The event catalog: every event a subscriber can receive, with a JSON Schema of its data.

A service names each event's ``TypedDict`` in ``service.yaml`` (``payload:
todo.shapes:TrackerJSON``) and builds the data as that type, so ``GET /api/webhooks/events``
and the generated README sections (:mod:`.docs`) describe what the code sends. Besides the
declared events there is ``ping``, a test delivery a subscription's owner asks for.
"""

from __future__ import annotations

import copy
import importlib
from typing import Any, TypedDict, cast

from srcore.manifest import Event, Manifest, ManifestError
from srcore.webhooks.fanout import required_scope

__all__ = [
    "DIALECT",
    "PING",
    "CatalogEntry",
    "DataSchema",
    "PingData",
    "event_catalog",
    "json_schema",
    "payload_type",
]

DIALECT = "https://json-schema.org/draft/2020-12/schema"
#: The built-in test event: sent to one subscription when its owner asks for it.
PING = "ping"
_COMPONENTS = "#/components/schemas/"
PING_DESCRIPTION = (
    "A test event, sent only to the webhook whose owner asked for it (the web page's "
    '"Send test event" button or POST /api/webhooks/<id>/ping); it needs no scope.'
)


class PingData(TypedDict):
    """The data of a ``ping`` event."""

    subscription: int
    message: str


#: A JSON Schema (2020-12) in the words :func:`json_schema` writes it: the keywords
#: :mod:`srcore.openapi.schema` uses, and ``$schema``, ``title`` and ``$defs``. A shape
#: of its own (not "any object") so the catalog's description says what a client gets.
DataSchema = TypedDict(
    "DataSchema",
    {
        "$schema": str,
        "$ref": str,
        "$defs": "dict[str, DataSchema]",
        "title": str,
        "description": str,
        "type": "str | list[str]",
        "format": str,
        "properties": "dict[str, DataSchema]",
        "required": "list[str]",
        "additionalProperties": "bool | DataSchema",
        "items": "DataSchema",
        "anyOf": "list[DataSchema]",
        "enum": "list[str | int | float | bool | None]",
    },
    total=False,
)


class CatalogEntry(TypedDict):
    """An event subscribers can receive: its scope (none for ``ping``), who receives it,
    and the JSON Schema of its ``data``."""

    name: str
    description: str
    scope: str | None
    audience: str
    schema: DataSchema


def json_schema(tp: Any) -> dict[str, Any]:
    """A standalone JSON Schema (2020-12) of type *tp*, read as the OpenAPI description
    reads annotations: a TypedDict's fields inline, the shapes it uses under ``$defs``."""
    from srcore.openapi.schema import SchemaRegistry

    registry = SchemaRegistry()
    schema = registry.schema(tp)
    root = schema.get("$ref", "").removeprefix(_COMPONENTS)
    if root:  # the shape itself, not a reference to it
        schema = dict(registry.components.pop(root), title=root)
    if registry.components:
        schema["$defs"] = dict(sorted(registry.components.items()))
    local: dict[str, Any] = _local_refs(schema, root)
    return local


def _local_refs(value: Any, root: str) -> Any:
    """*value* with OpenAPI's component references made local: ``#/$defs/...``, and
    ``#`` for the *root* shape itself."""
    if isinstance(value, dict):
        found = {key: _local_refs(item, root) for key, item in value.items()}
        ref = found.get("$ref")
        if isinstance(ref, str) and ref.startswith(_COMPONENTS):
            name = ref.removeprefix(_COMPONENTS)
            found["$ref"] = "#" if name == root else "#/$defs/" + name
        return found
    if isinstance(value, list):
        return [_local_refs(item, root) for item in value]
    return value


def payload_type(event: Event) -> Any:
    """The ``TypedDict`` *event* declares as its payload (None: any JSON object)."""
    if event.payload is None:
        return None
    module_name, _, name = event.payload.partition(":")
    try:
        return getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError) as exc:
        raise ManifestError(
            f"event {event.name!r}: payload {event.payload} cannot be imported ({exc})"
        ) from None


def _entry(name: str, description: str, scope: str | None, audience: str, tp: Any) -> CatalogEntry:
    schema = json_schema(tp) if tp is not None else {"type": "object"}
    return {
        "name": name,
        "description": description,
        "scope": scope,
        "audience": audience,
        "schema": cast("DataSchema", {"$schema": DIALECT, **schema}),
    }


#: Catalogs built so far, by service id and declared events.
_built: dict[tuple[str, tuple[Event, ...]], list[CatalogEntry]] = {}


def event_catalog(manifest: Manifest) -> list[CatalogEntry]:
    """The events of *manifest* subscribers can receive, then ``ping``, each with its
    scope, audience and data schema; built once per manifest and process."""
    key = (manifest.id, manifest.events)
    if key not in _built:
        entries = [
            _entry(
                event.name,
                event.description,
                required_scope(manifest, event.name),
                event.audience,
                payload_type(event),
            )
            for event in manifest.user_events
        ]
        entries.append(_entry(PING, PING_DESCRIPTION, None, "owner", PingData))
        _built[key] = entries
    return copy.deepcopy(_built[key])
