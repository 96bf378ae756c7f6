"""The OpenAPI description: built from annotations and Validation readers, complete for
every route under /api/, served with its docs page."""

from __future__ import annotations

import enum
import importlib
import re
from functools import partial
from pathlib import Path
from typing import Annotated, Any, Generic, NotRequired, TypedDict, TypeVar

import pytest
from flask import Flask

from srcore.openapi import Created, Format, NoContent, created, no_content, operation
from srcore.openapi.document import openapi_path
from srcore.openapi.inputs import describe_input
from srcore.openapi.schema import SchemaRegistry, UnsupportedType
from srcore.openapi.views import document_of
from srcore.testing import write_config
from srcore.validation import Validation

SERVICES = ["meta", "todo", "paste"]


def _app(name: str, tmp_path: Path, extra: str = "") -> Flask:
    config = write_config(
        tmp_path / f"{name}.ini", service_id=name, database_url=f"sqlite:///{tmp_path}/x.db"
    )
    if extra:
        config.write_text(config.read_text(encoding="utf-8") + extra, encoding="utf-8")
    app: Flask = importlib.import_module(name).create_app(config=config)
    return app


def _api_routes(app: Flask) -> set[tuple[str, str]]:
    return {
        (rule.rule, method)
        for rule in app.url_map.iter_rules()
        if rule.rule.startswith("/api/")
        for method in (rule.methods or set()) - {"HEAD", "OPTIONS"}
    }


def _described(document: dict[str, Any]) -> set[tuple[str, str]]:
    return {
        (path, method.upper())
        for path, item in document["paths"].items()
        for method, op in item.items()
        if any(code.startswith("2") for code in op["responses"])
    }


# -- every route is described ------------------------------------------------------------


@pytest.mark.parametrize("name", SERVICES)
def test_every_api_route_has_a_documented_answer(name: str, tmp_path: Path) -> None:
    """A route added under /api/ without an answer the document can read fails here."""
    app = _app(name, tmp_path)
    with app.app_context():
        document = document_of(app)
    described = _described(document.body)
    missing = {
        (rule, method)
        for rule, method in _api_routes(app)
        if (openapi_path(rule), method) not in described
    }
    assert missing == set(), document.undocumented


def test_a_route_without_an_answer_is_reported(tmp_path: Path) -> None:
    app = _app("todo", tmp_path)

    def untyped() -> Any:
        return {}

    def typed() -> NoContent:
        return no_content()

    app.add_url_rule("/api/untyped", view_func=untyped)
    app.add_url_rule("/api/typed", view_func=typed, methods=["DELETE"])
    with app.app_context():
        document = document_of(app)
    assert ("/api/untyped", "GET") in document.undocumented
    assert "/api/untyped" not in document.body["paths"]
    assert document.body["paths"]["/api/typed"]["delete"]["responses"]["204"]


# -- the parts of an operation ---------------------------------------------------------------


def test_todo_operations(tmp_path: Path) -> None:
    app = _app("todo", tmp_path)
    with app.app_context():
        body = document_of(app).body
    assert body["openapi"] == "3.1.0"
    listing = body["paths"]["/api/trackers/{name}/tickets"]["get"]
    # Either scope is enough: :RW grants what :RO does.
    assert listing["security"] == [{"meta": ["todo/tickets:RO"]}, {"meta": ["todo/tickets:RW"]}]
    params = {p["name"]: p for p in listing["parameters"]}
    assert params["name"]["in"] == "path"
    assert params["limit"]["schema"] == {"type": "integer", "minimum": 1, "maximum": 100}
    assert params["cursor"]["schema"]["maxLength"] == 1024
    assert params["status"]["schema"] == {"$ref": "#/components/schemas/TicketStatus"}
    assert params["search"]["in"] == "query"
    page = listing["responses"]["200"]["content"]["application/json"]["schema"]
    assert page == {"$ref": "#/components/schemas/CursorListOfTicketJSON"}
    schemas = body["components"]["schemas"]
    assert schemas["CursorListOfTicketJSON"]["properties"]["next"] == {"type": ["string", "null"]}
    ticket = schemas["TicketJSON"]
    assert ticket["properties"]["created"] == {"type": "string", "format": "date-time"}
    assert ticket["properties"]["resolution"] == {
        "anyOf": [{"$ref": "#/components/schemas/Resolution"}, {"type": "null"}]
    }
    assert ticket["additionalProperties"] is False
    assert set(listing["responses"]) == {"200", "400", "401", "403", "404", "503"}

    create = body["paths"]["/api/trackers"]["post"]
    body_schema = create["requestBody"]["content"]["application/json"]["schema"]
    assert body_schema["required"] == ["name"]
    assert create["responses"]["201"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/TrackerJSON"
    }
    assert "409" in create["responses"]
    # PATCH: the fields read only when sent are optional
    patch = body["paths"]["/api/trackers/{name}"]["patch"]
    assert patch["requestBody"]["content"]["application/json"]["schema"]["required"] == []
    deleting = body["paths"]["/api/trackers/{name}"]["delete"]["responses"]
    assert deleting["204"]
    # A write may find its row changed or deleted by another request meanwhile (srcore's
    # errors answer 409), and any operation a database that is away or too slow (503).
    assert deleting["409"] == {"$ref": "#/components/responses/Error409"}
    assert "409" not in listing["responses"]
    catalog = body["paths"]["/api/webhooks/events"]["get"]["responses"]
    assert catalog["503"] == {"$ref": "#/components/responses/Error503"}
    assert "database" in body["components"]["responses"]["Error503"]["description"]
    number = body["paths"]["/api/trackers/{name}/tickets/{number}"]["get"]["parameters"][1]
    assert number["schema"] == {"type": "integer", "minimum": 1, "maximum": 2**31 - 1}
    error = body["components"]["responses"]["Error401"]
    assert error["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ErrorBody"
    }
    assert "WWW-Authenticate" in error["headers"]
    assert body["components"]["schemas"]["ErrorItem"]["required"] == ["reason"]


def _body_field(body: dict[str, Any], path: str, method: str, field: str) -> Any:
    operation = body["paths"][path][method]
    return operation["requestBody"]["content"]["application/json"]["schema"]["properties"][field]


def test_lists_read_with_the_list_getter_are_typed_arrays(tmp_path: Path) -> None:
    with (app := _app("meta", tmp_path)).app_context():
        scopes = _body_field(document_of(app).body, "/api/tokens", "post", "scopes")
    assert scopes["type"] == ["array", "null"]
    assert scopes["items"] == {"type": "string", "maxLength": 256}
    with (app := _app("todo", tmp_path)).app_context():
        body = document_of(app).body
    for path, method in (("/api/webhooks", "post"), ("/api/webhooks/{subscription_id}", "patch")):
        events = _body_field(body, path, method, "events")
        assert events["type"] == ["array", "null"], events
        assert events["items"]["type"] == "string"


def test_security_points_at_meta(tmp_path: Path) -> None:
    meta = "\n[meta]\norigin = https://meta.example.invalid\n"
    meta += f"database-url = sqlite:///{tmp_path}/m.db\nsecret-key = {'k' * 40}\n"
    app = _app("todo", tmp_path, extra=meta)
    with app.app_context():
        scheme = document_of(app).body["components"]["securitySchemes"]["meta"]
    assert scheme["type"] == "oauth2"
    flow = scheme["flows"]["authorizationCode"]
    assert flow["authorizationUrl"] == "https://meta.example.invalid/oauth/authorize"
    assert flow["tokenUrl"] == "https://meta.example.invalid/oauth/token"
    assert set(flow["scopes"]) == {
        "todo/trackers:RO",
        "todo/trackers:RW",
        "todo/tickets:RO",
        "todo/tickets:RW",
    }
    # Without meta in the file, tokens are described as plain bearer tokens.
    alone = _app("paste", tmp_path)
    with alone.app_context():
        scheme = document_of(alone).body["components"]["securitySchemes"]["meta"]
    assert scheme == {**scheme, "type": "http", "scheme": "bearer"}


# -- annotations to JSON Schema --------------------------------------------------------------

T = TypeVar("T")


class Colour(enum.Enum):
    red = "red"
    blue = "blue"


class Inner(TypedDict):
    when: Annotated[str, Format("date")]


class Outer(TypedDict):
    """An outer shape."""

    name: str
    count: int
    ratio: float
    flag: bool
    colour: Annotated[str, Colour]
    tags: list[str]
    inner: Inner | None
    extra: NotRequired[dict[str, int]]


class Box(TypedDict, Generic[T]):
    item: T


def test_typeddicts_become_named_schemas() -> None:
    registry = SchemaRegistry()
    assert registry.schema(Box[Outer]) == {"$ref": "#/components/schemas/BoxOfOuter"}
    box = registry.components["BoxOfOuter"]
    assert box["properties"]["item"] == {"$ref": "#/components/schemas/Outer"}
    outer = registry.components["Outer"]
    assert outer["description"] == "An outer shape."
    assert outer["required"] == sorted(
        ["name", "count", "ratio", "flag", "colour", "tags", "inner"]
    )
    props = outer["properties"]
    assert props["colour"] == {"$ref": "#/components/schemas/Colour"}
    assert registry.components["Colour"] == {"enum": ["red", "blue"]}
    assert props["tags"] == {"type": "array", "items": {"type": "string"}}
    assert props["inner"] == {"anyOf": [{"$ref": "#/components/schemas/Inner"}, {"type": "null"}]}
    assert props["extra"] == {"type": "object", "additionalProperties": {"type": "integer"}}
    assert registry.components["Inner"]["properties"]["when"] == {
        "type": "string",
        "format": "date",
    }


@pytest.mark.parametrize("tp", [Any, dict, object, tuple[int, str], list])
def test_what_json_cannot_describe_is_refused(tp: Any) -> None:
    with pytest.raises(UnsupportedType):
        SchemaRegistry().schema(tp)


def test_answers_are_read_from_annotations() -> None:
    from srcore.openapi.document import _success

    def make() -> Created[Inner] | NoContent:
        return created({"when": "2026-01-01"}, location="/x")

    answers = _success(make, SchemaRegistry())
    assert set(answers) == {"201", "204"}
    assert make() == ({"when": "2026-01-01"}, 201, {"Location": "/x"})
    assert no_content() == ("", 204)


# -- Validation readers to JSON Schema -------------------------------------------------------


def _reader(valid: Validation, *, partial: bool = False) -> dict[str, Any]:
    values: dict[str, Any] = {}
    if not partial or "title" in valid:
        values["title"] = valid.require("title", max_length=80)
    values["size"] = valid.optional("size", int, min=1, max=9, default=3)
    values["colour"] = valid.optional("colour", Colour)
    values["site"] = valid.optional("site", "url")
    values["hidden"] = valid.optional("hidden", bool)
    return values


def test_readers_describe_their_fields() -> None:
    registry = SchemaRegistry()
    spec = describe_input([_reader], source="json", registry=registry)
    schema = spec.object_schema()
    assert schema["required"] == ["title"]
    props = schema["properties"]
    assert props["title"] == {"type": "string", "maxLength": 80}
    assert props["size"] == {"type": ["integer", "null"], "minimum": 1, "maximum": 9}
    assert props["colour"] == {"anyOf": [{"$ref": "#/components/schemas/Colour"}, {"type": "null"}]}
    assert props["site"]["format"] == "uri"
    assert props["hidden"] == {"type": ["boolean", "null"]}
    patch = describe_input([partial(_reader, partial=True)], source="json", registry=registry)
    assert patch.object_schema()["required"] == []
    # in a query string nothing is JSON null
    query = describe_input([_reader], source="form", registry=registry)
    assert query.fields["size"].schema == {"type": "integer", "minimum": 1, "maximum": 9}


def test_operation_keeps_the_view() -> None:
    def view() -> NoContent:
        return no_content()

    assert operation(query=_reader)(view) is view


# -- the docs page ---------------------------------------------------------------------------


def test_docs_page_uses_only_static_files(tmp_path: Path) -> None:
    app = _app("paste", tmp_path)
    client = app.test_client()
    page = client.get("/api/docs")
    assert page.status_code == 200
    assert page.mimetype == "text/html"
    assert "script-src 'self'" in page.headers["Content-Security-Policy"]
    html = page.get_data(as_text=True)
    assert 'data-openapi-url="/api/openapi.json"' in html
    scripts = re.findall(r"<script([^>]*)>(.*?)</script>", html, re.S)
    # Swagger UI, its starter, and the layout's forms.js: all files, none inline.
    assert len(scripts) == 3
    assert all('src="' in attrs and not inline.strip() for attrs, inline in scripts)
    assert "style=" not in html and "<style" not in html
    for url in re.findall(r'(?:src|href)="(/static/[^"]+)"', html):
        response = client.get(url)
        assert response.status_code == 200, url
        response.close()
    document = client.get("/api/openapi.json")
    assert document.status_code == 200
    assert document.get_json()["info"]["title"] == "Paste API"
