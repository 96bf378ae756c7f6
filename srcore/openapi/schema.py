"""JSON Schema from Python type annotations: the shapes the API's code already declares.

A serializer that returns a :class:`~typing.TypedDict` states its JSON shape once, for
both the type checker and the API description; this module reads that declaration.
Named shapes (TypedDicts, enums) become ``#/components/schemas/...`` references so a
document names each shape once.

Supported: ``str``, ``int``, ``float``, ``bool``, ``None``, :class:`~datetime.datetime`
and :class:`~datetime.date` (ISO 8601 text, as srcore's JSON provider writes them),
``list[X]``, ``dict[str, X]``, ``X | None`` and other unions, ``Literal[...]``,
:class:`enum.Enum` subclasses (their values), TypedDicts (generic ones too), and
``Annotated[X, ...]`` whose extras are :class:`Format` or an Enum class naming the values
a text field holds. :func:`json_schema` writes one type's schema standalone, outside any
OpenAPI document (the webhook event catalog publishes its events' data so).
"""

from __future__ import annotations

import datetime as dt
import enum
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypedDict, cast

__all__ = ["DataSchema", "Format", "SchemaRegistry", "UnsupportedType", "json_schema"]

JSONSchema = dict[str, Any]
_COMPONENTS = "#/components/schemas/"

#: A standalone JSON Schema (2020-12) as :func:`json_schema` writes it: the keywords this
#: module uses, and ``$schema``, ``title`` and ``$defs``. A shape of its own (not "any
#: object") so that an API which returns one describes what a client gets.
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


@dataclass(frozen=True)
class Format:
    """``Annotated[str, Format("date-time")]``: the JSON Schema ``format`` of a text value."""

    name: str


class UnsupportedType(TypeError):
    """An annotation this module cannot describe as JSON (a class, ``Any``, ...)."""


_SCALARS: dict[type, JSONSchema] = {
    str: {"type": "string"},
    bool: {"type": "boolean"},
    int: {"type": "integer"},
    float: {"type": "number"},
    type(None): {"type": "null"},
    dt.datetime: {"type": "string", "format": "date-time"},
    dt.date: {"type": "string", "format": "date"},
}


def _name_of(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is None:
        return str(getattr(tp, "__name__", repr(tp)))
    args = "And".join(_name_of(arg) for arg in typing.get_args(tp))
    return f"{_name_of(origin)}Of{args}"


def _nullable(schema: JSONSchema) -> JSONSchema:
    kind = schema.get("type")
    if isinstance(kind, str) and "$ref" not in schema:
        return {**schema, "type": [kind, "null"]}
    return {"anyOf": [schema, {"type": "null"}]}


class SchemaRegistry:
    """Turns annotations into schemas, collecting the named ones as components."""

    def __init__(self) -> None:
        self.components: dict[str, JSONSchema] = {}
        self._sources: dict[str, Any] = {}

    def schema(self, tp: Any) -> JSONSchema:
        """The JSON Schema of a value annotated *tp*."""
        if tp is Any or tp is object:
            raise UnsupportedType("Any says nothing of a value's shape; annotate it")
        if isinstance(tp, type) and tp in _SCALARS:
            return dict(_SCALARS[tp])
        origin = typing.get_origin(tp)
        args = typing.get_args(tp)
        if origin is not None and not args:
            raise UnsupportedType(f"{tp!r} does not say what it holds")
        if origin is typing.Annotated:
            return self._annotated(args[0], args[1:])
        if origin is typing.Literal:
            return {"enum": list(args)}
        if origin in (typing.Union, types.UnionType):
            return self._union(args)
        if typing.is_typeddict(tp if origin is None else origin):
            return self._named(tp, lambda: self._typeddict(tp))
        if origin in (list, tuple, set, frozenset) or (
            origin is not None and _is_abc(origin, "Sequence")
        ):
            if origin is tuple and not (len(args) == 2 and args[1] is Ellipsis):
                raise UnsupportedType(f"fixed-length tuples are not described: {tp!r}")
            return {"type": "array", "items": self.schema(args[0])}
        if origin in (dict,) or (origin is not None and _is_abc(origin, "Mapping")):
            return {"type": "object", "additionalProperties": self.schema(args[1])}
        if isinstance(tp, type) and issubclass(tp, enum.Enum):
            return self._named(tp, lambda: {"enum": [member.value for member in tp]})
        raise UnsupportedType(f"cannot describe {tp!r} as JSON")

    def _annotated(self, base: Any, extras: tuple[Any, ...]) -> JSONSchema:
        schema = self.schema(base)
        for extra in extras:
            if isinstance(extra, Format):
                schema["format"] = extra.name
            elif isinstance(extra, type) and issubclass(extra, enum.Enum):
                schema = self.schema(extra)
        return schema

    def _union(self, args: tuple[Any, ...]) -> JSONSchema:
        members = [arg for arg in args if arg is not type(None)]
        if len(members) == 1:
            inner = self.schema(members[0])
            return _nullable(inner) if len(args) > 1 else inner
        schema: JSONSchema = {"anyOf": [self.schema(arg) for arg in members]}
        if len(members) < len(args):
            schema["anyOf"].append({"type": "null"})
        return schema

    def _named(self, tp: Any, build: typing.Callable[[], JSONSchema]) -> JSONSchema:
        name = _name_of(tp)
        ref = {"$ref": _COMPONENTS + name}
        known = self._sources.get(name)
        if known is not None:
            if known != tp:
                raise UnsupportedType(f"two different shapes are both named {name}")
            return ref
        self._sources[name] = tp
        self.components[name] = {}  # a placeholder: a shape may refer to itself
        self.components[name] = build()
        return ref

    def _typeddict(self, tp: Any) -> JSONSchema:
        origin = typing.get_origin(tp) or tp
        substitutions: Mapping[Any, Any] = dict(
            zip(getattr(origin, "__parameters__", ()), typing.get_args(tp), strict=False)
        )
        hints = typing.get_type_hints(origin, include_extras=True)
        properties: JSONSchema = {}
        required = []
        for field, annotation in hints.items():
            properties[field] = self.schema(_substitute(_strip_required(annotation), substitutions))
            # Under postponed annotations __required_keys__ misses NotRequired[...]: the
            # evaluated hint says it.
            marker = typing.get_origin(annotation)
            if marker is typing.Required or (
                marker is not typing.NotRequired and field in origin.__required_keys__
            ):
                required.append(field)
        schema: JSONSchema = {
            "type": "object",
            "properties": properties,
            "required": sorted(required),
            "additionalProperties": False,
        }
        doc = origin.__doc__
        if doc and not doc.startswith(origin.__name__ + "("):
            schema["description"] = " ".join(doc.split())
        return schema


def json_schema(tp: Any) -> DataSchema:
    """A standalone JSON Schema of *tp* (None: any JSON object), read as the OpenAPI
    description reads annotations: a TypedDict's fields inline, the shapes it uses under
    ``$defs``."""
    registry = SchemaRegistry()
    schema: JSONSchema = registry.schema(tp) if tp is not None else {"type": "object"}
    root = schema.get("$ref", "").removeprefix(_COMPONENTS)
    if root:  # the shape itself, not a reference to it
        schema = dict(registry.components.pop(root), title=root)
    if registry.components:
        schema["$defs"] = dict(sorted(registry.components.items()))
    dialect = {"$schema": "https://json-schema.org/draft/2020-12/schema"}
    return cast(DataSchema, {**dialect, **_local_refs(schema, root)})


def _local_refs(value: Any, root: str) -> Any:
    """*value* with component references made local: ``#/$defs/...``, ``#`` for *root*."""
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


def _is_abc(origin: Any, name: str) -> bool:
    import collections.abc

    abc = getattr(collections.abc, name)
    return isinstance(origin, type) and issubclass(origin, abc)


def _strip_required(annotation: Any) -> Any:
    """``Required[X]`` and ``NotRequired[X]`` are X: the key's presence is said apart."""
    if typing.get_origin(annotation) in (typing.Required, typing.NotRequired):
        return typing.get_args(annotation)[0]
    return annotation


def _substitute(annotation: Any, substitutions: Mapping[Any, Any]) -> Any:
    """*annotation* with a generic TypedDict's type variables replaced by its arguments."""
    if not substitutions:
        return annotation
    if isinstance(annotation, typing.TypeVar):
        return substitutions.get(annotation, annotation)
    args = typing.get_args(annotation)
    if not args:
        return annotation
    origin = typing.get_origin(annotation)
    new_args = tuple(_substitute(arg, substitutions) for arg in args)
    if origin is typing.Annotated:
        return typing.Annotated[(new_args[0], *args[1:])]
    if origin in (typing.Union, types.UnionType):
        return typing.Union[new_args]  # noqa: UP007
    if origin is typing.Literal:
        return annotation
    return annotation.copy_with(new_args) if hasattr(annotation, "copy_with") else origin[new_args]
