"""Build a service's OpenAPI 3.1 document from its routes and what its views declare.

Nothing here is written for one service: each operation comes from a route under the
API prefix, its security from the scope :func:`~srcore.auth.oauth` requires, its
parameters and body from the readers named with :func:`~srcore.openapi.operation`, and
its answers from the view's return annotation (a TypedDict, a ``CursorList[...]``,
:class:`~srcore.openapi.Created`, :class:`~srcore.openapi.Accepted` or
:class:`~srcore.openapi.NoContent`). Errors share srcore's one error body. A route whose
answer cannot be read is left out and named in :attr:`Document.undocumented`, so a test
can refuse it.
"""

from __future__ import annotations

import re
import types
import typing
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from flask import Flask
from werkzeug.routing import Rule
from werkzeug.wrappers import Response

from srcore.conditional import CONDITIONAL_ATTRIBUTE, WRITE_METHODS
from srcore.openapi.declare import Operation, declared_operation, declared_scope
from srcore.openapi.inputs import describe_input
from srcore.openapi.responses import Accepted, Created, NoContent
from srcore.openapi.schema import SchemaRegistry, UnsupportedType

__all__ = ["SECURITY_SCHEME", "Document", "Endpoints", "build_document"]

OPENAPI_VERSION = "3.1.0"
#: The name of the security scheme every scoped operation refers to.
SECURITY_SCHEME = "meta"

_IGNORED_METHODS = frozenset({"HEAD", "OPTIONS"})
_ARGUMENT = re.compile(r"<(?:[^:<>]+:)?([A-Za-z_][A-Za-z0-9_]*)>")

#: Error answers every operation of a kind may give, each with srcore's error body.
_ERRORS = {
    400: "The request is invalid; each problem names its field.",
    401: "No valid access token was sent (see the WWW-Authenticate header).",
    403: "The token lacks the scope, belongs to no user, or the account is suspended.",
    404: "There is nothing at this address for this caller.",
    409: "What the request changes was changed or deleted meanwhile; reload it and retry.",
    413: "The request body is too large.",
    429: "Too many requests (a write past its caller's rate limit, say); try again after "
    "Retry-After.",
    412: "The resource changed since the version the If-Match header names (or the header "
    "is not a list of entity tags): read it again for its current ETag, then retry. On a "
    "change, also: it is still the version If-None-Match names.",
    503: "The service cannot answer now: the access token or the database cannot be "
    "reached (try again after Retry-After), or the request kept the database busy too long.",
}
#: Methods that change something: another request may change or delete it meanwhile.
_WRITES = frozenset({"POST", "PUT", "PATCH", "DELETE"})


@dataclass(frozen=True)
class Endpoints:
    """meta's OAuth endpoints, where the description tells clients to get tokens."""

    authorize: str
    token: str


@dataclass
class Document:
    """An OpenAPI document, and the API routes it had to leave out (with why)."""

    body: dict[str, Any]
    undocumented: dict[tuple[str, str], str] = field(default_factory=dict)


def openapi_path(rule: str) -> str:
    """``/trackers/<name>/tickets/<id:number>`` as ``/trackers/{name}/tickets/{number}``."""
    return _ARGUMENT.sub(lambda match: "{" + match.group(1) + "}", rule)


def _path_parameter(name: str, converter: Any) -> dict[str, Any]:
    from werkzeug.routing.converters import IntegerConverter

    from srcore.routing import IdConverter

    schema: dict[str, Any]
    if isinstance(converter, IdConverter):
        schema = {"type": "integer", "minimum": 1, "maximum": converter.max}
    elif isinstance(converter, IntegerConverter):
        schema = {"type": "integer"}
        if converter.min is not None:
            schema["minimum"] = converter.min
        if converter.max is not None:
            schema["maximum"] = converter.max
    else:
        schema = {"type": "string", "pattern": f"^(?:{converter.regex})$"}
    return {"name": name, "in": "path", "required": True, "schema": schema}


def _query_parameters(spec_fields: Iterable[Any]) -> list[dict[str, Any]]:
    parameters = []
    for spec in spec_fields:
        parameter: dict[str, Any] = {"name": spec.name, "in": "query", "schema": spec.schema}
        if spec.required:
            parameter["required"] = True
        parameters.append(parameter)
    return parameters


def _success(view: Callable[..., object], registry: SchemaRegistry) -> dict[str, Any]:
    """The 2xx answers of *view*, read from its return annotation."""
    hints = typing.get_type_hints(view, include_extras=True)
    if "return" not in hints:
        raise UnsupportedType("the view has no return annotation")
    returned = hints["return"]
    union = typing.get_origin(returned) in (typing.Union, types.UnionType)
    members = typing.get_args(returned) if union else (returned,)

    answers: dict[str, Any] = {}
    for member in members:
        origin = typing.get_origin(member) or member
        if origin is NoContent:
            answers["204"] = {"description": "Done."}
        elif origin is Created:
            (shape,) = typing.get_args(member) or (Any,)
            answers["201"] = _json_answer("Created.", registry.schema(shape))
        elif origin is Accepted:
            (shape,) = typing.get_args(member) or (Any,)
            answers["202"] = _json_answer("Accepted.", registry.schema(shape))
        elif isinstance(origin, type) and issubclass(origin, Response):
            continue  # an error answer built by hand: described by the standard errors
        else:
            answers["200"] = _json_answer("OK.", registry.schema(member))
    if not answers:
        raise UnsupportedType("the return annotation names no successful answer")
    return answers


def _json_answer(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _security(scope: str | None, token: bool, service_scopes: list[str]) -> list[dict[str, Any]]:
    """The security requirements of an operation: alternatives, any one of them enough.

    A client reads the scopes to ask meta for from here, and OpenAPI compares scopes as
    plain strings, so each scope that is enough is listed: ``:RW`` grants what ``:RO``
    does. A view that checks the token's scopes itself (*token*) needs one of its
    service's scopes, which one depending on the input.
    """
    if scope is not None:
        # ``SERVICE/NAME:RO`` or ``:RW`` (srcore.auth.scopes, a layer above this one).
        enough = [scope, scope.removesuffix(":RO") + ":RW"] if scope.endswith(":RO") else [scope]
    elif token:
        enough = service_scopes
    else:
        return []
    return [{SECURITY_SCHEME: [name]} for name in enough]


def _operation(
    rule: Rule,
    method: str,
    view: Callable[..., object],
    registry: SchemaRegistry,
    service_scopes: list[str],
) -> dict[str, Any]:
    declared: Operation = declared_operation(view)
    scope = declared_scope(view)
    responses = _success(view, registry)
    operation: dict[str, Any] = {"operationId": f"{rule.endpoint}.{method.lower()}"}
    doc = (getattr(view, "__doc__", None) or "").strip()
    if doc:
        summary, _, rest = doc.partition("\n\n")
        operation["summary"] = " ".join(summary.split())
        if rest.strip():
            operation["description"] = rest.strip()
    tag = rule.rule.removeprefix("/api/").split("/", 1)[0]
    operation["tags"] = [tag]
    parameters = [_path_parameter(name, converter) for name, converter in rule._converters.items()]
    errors: set[int] = set(declared.errors)
    if declared.query:
        query = describe_input(declared.query, source="form", registry=registry)
        parameters += _query_parameters(query.fields.values())
        errors.add(400)
    if getattr(view, CONDITIONAL_ATTRIBUTE, False):
        parameters += _conditional(method, responses, errors)
    if parameters:
        operation["parameters"] = parameters
    if declared.body:
        schema = describe_input(declared.body, source="json", registry=registry).object_schema()
        # A body of optional fields may be left out (a PATCH of nothing, a rotation with
        # the default overlap): the view reads no body as an empty one.
        operation["requestBody"] = {
            "required": bool(schema["required"]),
            "content": {"application/json": {"schema": schema}},
        }
        errors.update((400, 413))
    if rule.arguments:
        # srcore refuses an address with control characters before any view (400).
        errors.update((400, 404))
    security = _security(scope, declared.token, service_scopes)
    if security:
        operation["security"] = security
        errors.update((401, 403, 503))
    if method in _WRITES:
        # Changed meanwhile; past the write rate limit (srcore.ratelimit) of its caller.
        errors.update((409, 429))
    errors.add(503)  # the database may be away, or the request too slow for it
    for code in sorted(errors):
        if code in declared.errors:
            responses[str(code)] = {
                "description": declared.errors[code],
                "content": {"application/json": {"schema": _error_ref()}},
            }
        else:
            responses[str(code)] = {"$ref": f"#/components/responses/Error{code}"}
    operation["responses"] = dict(sorted(responses.items()))
    return operation


def _conditional(method: str, responses: dict[str, Any], errors: set[int]) -> list[Any]:
    """The header parameter and answers of a view marked :func:`srcore.conditional.conditional`:
    its JSON answers carry an ``ETag``; a GET is ``304`` when ``If-None-Match`` names it;
    a GET or a write is ``412`` when ``If-Match`` names no current tag, a write also when
    ``If-None-Match`` names it."""
    for answer in responses.values():
        if "content" in answer:
            answer["headers"] = {"ETag": {"$ref": "#/components/headers/ETag"}}
    headers = [
        {"$ref": "#/components/parameters/IfMatch"},
        {"$ref": "#/components/parameters/IfNoneMatch"},
    ]
    if method == "GET":
        responses["304"] = {
            "description": "Not modified: the resource still has the tag If-None-Match names.",
            "headers": {"ETag": {"$ref": "#/components/headers/ETag"}},
        }
        errors.add(412)
        return headers
    if method in WRITE_METHODS:
        errors.add(412)
        return headers
    return []


#: The header parameters and the header of conditional requests, referred to by each view.
_CONDITIONAL_COMPONENTS: dict[str, Any] = {
    "parameters": {
        "IfMatch": {
            "name": "If-Match",
            "in": "header",
            "description": "Only if the resource still has one of these strong entity tags "
            "(its ETag as last read), or any version with ``*``; else 412 and nothing is "
            "changed. A weak tag never matches. Without it a change is made whatever the "
            "version.",
            "schema": {"type": "string"},
        },
        "IfNoneMatch": {
            "name": "If-None-Match",
            "in": "header",
            "description": "When the resource still has one of these entity tags (weakly "
            "compared), or exists at all with ``*``: a read is answered 304 with no body, a "
            "change 412 and not made.",
            "schema": {"type": "string"},
        },
    },
    "headers": {
        "ETag": {
            "description": "The strong entity tag of this representation, for If-Match and "
            "If-None-Match.",
            "schema": {"type": "string"},
        }
    },
}


def _error_ref() -> dict[str, Any]:
    return {"$ref": "#/components/schemas/ErrorBody"}


def _error_responses(codes: Iterable[int]) -> dict[str, Any]:
    answers: dict[str, Any] = {}
    for code in codes:
        answer: dict[str, Any] = {
            "description": _ERRORS[code],
            "content": {"application/json": {"schema": _error_ref()}},
        }
        if code == 401:
            answer["headers"] = {
                "WWW-Authenticate": {"schema": {"type": "string"}, "required": True}
            }
        if code in (429, 503):
            answer["headers"] = {"Retry-After": {"schema": {"type": "string"}}}
        answers[f"Error{code}"] = answer
    return answers


def _security_scheme(
    scopes: dict[str, str], endpoints: Endpoints | None
) -> dict[str, dict[str, Any]]:
    if endpoints is None:
        return {
            SECURITY_SCHEME: {
                "type": "http",
                "scheme": "bearer",
                "bearerFormat": "JWT",
                "description": "An access token from the network's account service.",
            }
        }
    return {
        SECURITY_SCHEME: {
            "type": "oauth2",
            "description": "Access tokens from the network's account service, meta.",
            "flows": {
                "authorizationCode": {
                    "authorizationUrl": endpoints.authorize,
                    "tokenUrl": endpoints.token,
                    "scopes": scopes,
                },
                "clientCredentials": {"tokenUrl": endpoints.token, "scopes": scopes},
            },
        }
    }


def build_document(
    app: Flask,
    *,
    prefix: str,
    endpoints: Endpoints | None,
    extra: dict[str, dict[str, Any]] | None = None,
) -> Document:
    """The OpenAPI document of *app*'s routes under *prefix*.

    *endpoints* are meta's (None when no meta is configured: tokens are then described
    as plain bearer tokens). *extra* adds path items built elsewhere (the document's own
    routes).
    """
    from srcore.validation import ErrorBody

    st = app.extensions["srcore"]
    manifest = st.manifest
    registry = SchemaRegistry()
    registry.schema(ErrorBody)
    document = Document(body={})
    scopes = {}
    for scope in manifest.scopes:
        scopes[f"{manifest.id}/{scope.name}:RO"] = f"Read: {scope.description}"
        scopes[f"{manifest.id}/{scope.name}:RW"] = f"Read and write: {scope.description}"
    paths: dict[str, dict[str, Any]] = {}
    for rule in sorted(app.url_map.iter_rules(), key=lambda r: r.rule):
        if not rule.rule.startswith(prefix) or openapi_path(rule.rule) in (extra or {}):
            continue
        view = app.view_functions[rule.endpoint]
        for method in sorted((rule.methods or set()) - _IGNORED_METHODS):
            try:
                item = _operation(rule, method, view, registry, list(scopes))
            except (UnsupportedType, NameError) as exc:
                document.undocumented[(rule.rule, method)] = str(exc)
                continue
            paths.setdefault(openapi_path(rule.rule), {})[method.lower()] = item
    for path, item in (extra or {}).items():
        paths.setdefault(path, {}).update(item)
    document.body = {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": f"{manifest.name} API",
            "version": str(getattr(manifest, "version", "") or "1"),
            "description": manifest.description,
        },
        "servers": [{"url": str(st.section["origin"]).rstrip("/")}],
        "paths": dict(sorted(paths.items())),
        "components": {
            "schemas": dict(sorted(registry.components.items())),
            "responses": _error_responses(sorted(_ERRORS)),
            "securitySchemes": _security_scheme(scopes, endpoints),
            **_CONDITIONAL_COMPONENTS,
        },
    }
    return document
