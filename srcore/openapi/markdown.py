"""A standalone JSON Schema (:func:`~srcore.openapi.schema.json_schema`) as a Markdown table
of its fields, nested objects' fields included, for READMEs that must say what the code does.
"""

from __future__ import annotations

from typing import Any

__all__ = ["field_rows"]

_Named = tuple[str, dict[str, Any]] | None


def _type(schema: dict[str, Any], defs: dict[str, Any]) -> tuple[str, _Named]:
    """A short name of *schema*'s type and, for a named object, its name and schema."""
    if "$ref" in schema:
        name = schema["$ref"].rpartition("/")[2]
        target = defs.get(name)
        if target is None:  # "#": the schema itself
            return "the data's shape", None
        return ("object", (name, target)) if "properties" in target else _type(target, defs)
    if "anyOf" in schema:
        parts = [_type(option, defs) for option in schema["anyOf"]]
        named = next((found for _, found in parts if found is not None), None)
        return " or ".join(label for label, _ in parts), named
    if "enum" in schema:
        return "one of " + ", ".join(f"`{value}`" for value in schema["enum"]), None
    if schema.get("type") == "array":
        item, named = _type(schema.get("items", {}), defs)
        return f"array of {item}", named
    kind = schema.get("type", "any")
    label = " or ".join(kind) if isinstance(kind, list) else str(kind)
    return label + (f" ({schema['format']})" if "format" in schema else ""), None


def field_rows(
    schema: dict[str, Any],
    defs: dict[str, Any] | None = None,
    prefix: str = "",
    seen: frozenset[str] = frozenset(),
) -> list[str]:
    """``| `path` | type |`` rows: one per field of *schema*, then the fields of the named
    objects in it (``owner.name``, ``labels[].name``), each object once per path."""
    defs = schema.get("$defs", {}) if defs is None else defs
    rows = []
    for name, field in schema.get("properties", {}).items():
        label, named = _type(field, defs)
        note = "" if name in schema.get("required", ()) else " (may be missing)"
        path = prefix + name + ("[]" if label.startswith("array of") else "")
        rows.append(f"| `{path}` | {label}{note} |")
        if named is not None and named[0] not in seen:
            rows += field_rows(named[1], defs, path + ".", seen | {named[0]})
    return rows
