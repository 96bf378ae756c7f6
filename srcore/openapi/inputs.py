"""The input of an API operation as JSON Schema, read from the functions that read it.

A service reads a request's fields with :class:`~srcore.validation.Validation`, usually in
a small reader (``read_tracker(valid)``) that the view calls. That reader is the one
declaration of the input: :func:`describe_input` runs it against a :class:`Probe`, a
Validation whose ``require()``/``optional()`` record each field asked for (its type,
bounds and whether it is required) and answer with a harmless sample value instead of
reading a request. The Probe mirrors the per-type methods those two dispatch to
(``_string``, ``_strings``, ...), so a new option there needs its twin here.

A field read only when present (``if "name" in valid: valid.require("name")``, the PATCH
pattern) is described as optional. A value read from the raw data (``valid._data.get``)
or named by ``valid.known()`` is described by name, with no type.

A request body takes no other field (``additionalProperties: false``): a JSON body's key
that nothing read is refused with a 400 naming it (:meth:`Validation.finish
<srcore.validation.Validation.finish>`).
"""

from __future__ import annotations

import contextlib
import enum
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from srcore.openapi.schema import SchemaRegistry
from srcore.validation import (
    INT_MAX,
    INT_MIN,
    MAX_EMAIL_LENGTH,
    MAX_LIST_ITEMS,
    MAX_STRING_LENGTH,
    MAX_URL_LENGTH,
    Source,
    Validation,
    ValidationFailed,
)

__all__ = ["FieldSpec", "InputSpec", "Probe", "Reader", "describe_input"]

#: A function that reads fields from a Validation (its result is not used here).
Reader = Callable[[Validation], object]


@dataclass
class FieldSpec:
    """One input field: its JSON Schema and whether a request must send it."""

    name: str
    schema: dict[str, Any]
    required: bool


@dataclass
class InputSpec:
    """The fields a group of readers reads, in the order they read them."""

    fields: dict[str, FieldSpec] = field(default_factory=dict)

    def object_schema(self) -> dict[str, Any]:
        """The fields as one JSON object's schema (a request body): no other key is taken,
        since srcore refuses a JSON body's unknown fields."""
        return {
            "type": "object",
            "properties": {spec.name: spec.schema for spec in self.fields.values()},
            "required": [spec.name for spec in self.fields.values() if spec.required],
            "additionalProperties": False,
        }


class _RawReads(Mapping[str, Any]):
    """The probe's raw data: empty, but every key looked up is noted."""

    def __init__(self, probe: Probe) -> None:
        self._probe = probe

    def __getitem__(self, key: str) -> Any:
        self._probe._record(key, {}, required=False, nullable=True)
        raise KeyError(key)

    def get(self, key: str, default: Any = None) -> Any:
        self._probe._record(key, {}, required=False, nullable=True)
        return default

    def __contains__(self, key: object) -> bool:
        return False

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0


class Probe(Validation):
    """A :class:`Validation` that records what is asked of it instead of reading input."""

    def __init__(self, registry: SchemaRegistry, *, source: Source) -> None:
        super().__init__(data={}, source=source)
        self.registry = registry
        self.spec = InputSpec()
        self._asked: set[str] = set()
        self._data = _RawReads(self)

    def __contains__(self, name: object) -> bool:
        # "Is it sent?": yes, so the reader goes on to read it; read so, it is optional.
        if isinstance(name, str):
            self._asked.add(name)
        return True

    def error(self, reason: str, field: str | None = None) -> None:
        """Errors about sample values say nothing of the input's shape: dropped."""

    def known(self, *fields: str) -> None:
        """Fields taken but not read with these sample values: described by name."""
        for name in fields:
            self._record(name, {}, required=False, nullable=True)

    def _record(self, name: str, schema: dict[str, Any], *, required: bool, nullable: bool) -> None:
        if name in self.spec.fields:
            return
        must = required and name not in self._asked
        if nullable and self.source == "json" and schema:
            schema = _or_null(schema)
        self.spec.fields[name] = FieldSpec(name, schema, must)

    # -- what require()/optional() call for each type, recording

    def _string(
        self,
        field: str,
        *,
        required: bool = False,
        default: str | None = None,
        min_length: int = 0,
        max_length: int | None = None,
        strip: bool = True,
        text: str = "multiline",
        label: str | None = None,
    ) -> str | None:
        schema: dict[str, Any] = {"type": "string"}
        schema["maxLength"] = min(max_length or MAX_STRING_LENGTH, MAX_STRING_LENGTH)
        if min_length:
            schema["minLength"] = min_length
        self._record(field, schema, required=required, nullable=not required)
        return default if default is not None else ""

    def _integer(
        self,
        field: str,
        *,
        required: bool = False,
        default: int | None = None,
        min: int | None = None,
        max: int | None = None,
        label: str | None = None,
    ) -> int | None:
        low = INT_MIN if min is None else min
        high = INT_MAX if max is None else max
        schema = {"type": "integer", "minimum": low, "maximum": high}
        self._record(field, schema, required=required, nullable=not required)
        return default if default is not None else low

    def _boolean(
        self,
        field: str,
        *,
        required: bool = False,
        default: bool | None = None,
        label: str | None = None,
    ) -> bool | None:
        # In a form an absent box is False, so it is never required there.
        required = required and self.source == "json"
        self._record(field, {"type": "boolean"}, required=required, nullable=not required)
        return default if default is not None else False

    def _enum(  # type: ignore[override]
        self,
        field: str,
        choices: type[enum.Enum] | Sequence[str],
        *,
        required: bool = False,
        default: enum.Enum | str | None = None,
        label: str | None = None,
    ) -> enum.Enum | str | None:
        if isinstance(choices, type) and issubclass(choices, enum.Enum):
            schema = self.registry.schema(choices)
            sample: enum.Enum | str = next(iter(choices))
        else:
            schema = {"enum": list(choices)}
            sample = choices[0]
        self._record(field, schema, required=required, nullable=not required)
        return default if default is not None else sample

    def _url(
        self,
        field: str,
        *,
        required: bool = False,
        default: str | None = None,
        max_length: int = MAX_URL_LENGTH,
        schemes: Collection[str] = ("http", "https"),
        label: str | None = None,
    ) -> str | None:
        schema = {"type": "string", "format": "uri", "maxLength": max_length}
        self._record(field, schema, required=required, nullable=not required)
        return default if default is not None else ""

    def _email(
        self,
        field: str,
        *,
        required: bool = False,
        default: str | None = None,
        label: str | None = None,
    ) -> str | None:
        schema = {"type": "string", "format": "email", "maxLength": MAX_EMAIL_LENGTH}
        self._record(field, schema, required=required, nullable=not required)
        return default if default is not None else ""

    def _strings(
        self,
        field: str,
        *,
        required: bool = False,
        default: list[str] | None = None,
        max_items: int | None = None,
        max_length: int | None = None,
        split: bool = False,
        label: str | None = None,
    ) -> list[str] | None:
        item: dict[str, Any] = {"type": "string"}
        item["maxLength"] = min(max_length or MAX_STRING_LENGTH, MAX_STRING_LENGTH)
        limit = MAX_LIST_ITEMS if max_items is None else min(max_items, MAX_LIST_ITEMS)
        schema = {"type": "array", "items": item, "maxItems": limit}
        if required:
            schema["minItems"] = 1
        self._record(field, schema, required=required, nullable=not required)
        return default if default is not None else []

    def _file(
        self,
        field: str,
        *,
        max_size: int,
        required: bool = False,
        label: str | None = None,
    ) -> Any:
        schema = {"type": "string", "format": "binary", "maxLength": max_size}
        self._record(field, schema, required=required, nullable=False)
        return None


def _or_null(schema: dict[str, Any]) -> dict[str, Any]:
    kind = schema.get("type")
    if isinstance(kind, str):
        return {**schema, "type": [kind, "null"]}
    if "enum" in schema and None not in schema["enum"]:
        return {**schema, "enum": [*schema["enum"], None]}
    return {"anyOf": [schema, {"type": "null"}]}


def describe_input(
    readers: Sequence[Reader], *, source: Source, registry: SchemaRegistry
) -> InputSpec:
    """The fields *readers* read, each run once against a fresh :class:`Probe`."""
    spec = InputSpec()
    for reader in readers:
        probe = Probe(registry, source=source)
        # A reader that stops at a check is described by what it read so far.
        with contextlib.suppress(ValidationFailed):
            reader(probe)
        for name, found in probe.spec.fields.items():
            spec.fields.setdefault(name, found)
    return spec
