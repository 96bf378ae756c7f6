"""The list getter, and a failed validation raised by a view and answered by srcore: the
form page again, the JSON error body, or an error page naming the bad fields."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask
from jinja2 import DictLoader
from werkzeug.datastructures import MultiDict

from srcore import errors
from srcore.openapi.inputs import describe_input
from srcore.openapi.schema import SchemaRegistry
from srcore.pagination import page_number
from srcore.validation import MAX_LIST_ITEMS, Invalid, Validation, coerce_strings


def test_list_from_json() -> None:
    valid = Validation(data={"tags": [" a ", "b", ""]})
    assert valid.require("tags", list[str]) == ["a", "b"]
    assert valid.ok


def test_list_from_a_form_or_query_reads_every_value() -> None:
    data = MultiDict([("events", "a"), ("events", "b c"), ("other", "x")])
    valid = Validation(data=data, source="form")
    assert valid.optional("events", list[str]) == ["a", "b c"]
    assert valid.optional("events", list[str], split=True) == ["a", "b", "c"]
    assert valid.optional("missing", list[str], default=["d"]) == ["d"]


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("a b", "Must be a list of strings."),
        ([1, "a"], "Must be a list of strings."),
        ({"a": 1}, "Must be a list of strings."),
        (["x"] * 3, "Must have at most 2 items."),
        (["x" * 11], "Must be at most 10 characters."),
        (["\x00"], "Contains the control character U+0000, which is not allowed."),
    ],
)
def test_bad_lists_are_field_errors(raw: object, reason: str) -> None:
    valid = Validation(data={"tags": raw})
    assert valid.optional("tags", list[str], max_items=2, max_length=10) is None
    assert [(e.field, e.reason) for e in valid.errors] == [("tags", reason)]


def test_an_empty_list_is_missing() -> None:
    for data in ({}, {"tags": []}, {"tags": None}, {"tags": ["  "]}):
        valid = Validation(data=data)
        assert valid.require("tags", list[str], label="Tags") is None
        assert valid.error_for("tags") == "Tags is required."


def test_split_accepts_one_string_and_the_ceiling_holds() -> None:
    assert coerce_strings("a  b\tc", split=True) == ["a", "b", "c"]
    with pytest.raises(Invalid):
        coerce_strings(["x"] * (MAX_LIST_ITEMS + 1), max_items=MAX_LIST_ITEMS * 2)


def test_the_openapi_probe_describes_a_list_as_a_typed_array() -> None:
    def reader(valid: Validation) -> object:
        return valid.require("events", list[str], max_items=5, max_length=64)

    spec = describe_input([reader], source="json", registry=SchemaRegistry())
    assert spec.object_schema() == {
        "type": "object",
        "properties": {
            "events": {
                "type": "array",
                "items": {"type": "string", "maxLength": 64},
                "maxItems": 5,
                "minItems": 1,
            }
        },
        "required": ["events"],
        "additionalProperties": False,
    }


# -- raised and answered -------------------------------------------------------------------


built: list[int] = []


def make_app() -> Flask:
    app = Flask(__name__)
    app.jinja_loader = DictLoader(
        {
            "form.html": "{{ thing }}|{% for e in valid.errors %}{{ e.field }}={{ e.reason }};"
            "{% endfor %}|{{ valid.value('title') }}",
            "error.html": "{{ code }} {{ message }}",
        }
    )
    errors.init_app(app)

    @app.post("/things")
    def create() -> str:
        valid = Validation.form("form.html", thing="ctx")
        title = valid.require("title", max_length=5)
        valid.optional("n", int)
        valid.raise_if_invalid()
        return f"made {title}"

    @app.post("/lazy")
    def lazy() -> str:
        def build() -> dict[str, Any]:
            built.append(1)
            return {"thing": "built"}

        valid = Validation.form("form.html", build)
        valid.require("title")
        valid.raise_if_invalid()
        return "ok"

    @app.post("/api/things")
    def api_create() -> str:
        valid = Validation()
        title = valid.require("title")
        if title == "taken":
            valid.fail("Taken.", "title", status=409)
        valid.raise_if_invalid()
        return "made"

    @app.get("/list")
    def listing() -> str:
        return f"page {page_number()}"

    return app


@pytest.fixture
def client() -> Any:
    return make_app().test_client()


def test_a_form_page_is_shown_again_with_every_error(client: Any) -> None:
    response = client.post("/things", data={"title": "too long", "n": "x"})
    assert response.status_code == 400
    assert response.mimetype == "text/html"
    assert response.get_data(as_text=True) == (
        "ctx|title=Must be at most 5 characters.;n=Must be a whole number.;|too long"
    )
    assert client.post("/things", data={"title": "ok"}).get_data(as_text=True) == "made ok"


def test_a_form_pages_context_is_built_only_when_it_is_shown_again(client: Any) -> None:
    built.clear()
    assert client.post("/lazy", data={"title": "x"}).get_data(as_text=True) == "ok"
    assert built == []
    response = client.post("/lazy", data={})
    assert response.status_code == 400
    assert response.get_data(as_text=True).startswith("built|title=Title is required.;")
    assert built == [1]


def test_the_api_answers_the_error_body_with_the_status_asked_for(client: Any) -> None:
    response = client.post("/api/things", json={})
    assert (response.status_code, response.json) == (
        400,
        {"errors": [{"field": "title", "reason": "Title is required."}]},
    )
    response = client.post("/api/things", json={"title": "taken"})
    assert (response.status_code, response.json) == (
        409,
        {"errors": [{"field": "title", "reason": "Taken."}]},
    )


def test_a_bad_query_string_of_a_page_is_an_error_page_naming_the_field(client: Any) -> None:
    assert client.get("/list?page=3").get_data(as_text=True) == "page 3"
    response = client.get("/list?page=0")
    assert response.status_code == 400
    assert response.get_data(as_text=True) == "400 Invalid address: page: Must be at least 1."
    json_response = client.get("/list?page=x", headers={"Accept": "application/json"})
    reason = {"field": "page", "reason": "Must be a whole number."}
    assert json_response.json == {"errors": [reason]}


def test_one_way_to_read_a_value() -> None:
    """require()/optional() keyed by type; the per-type steps behind them are private."""
    for name in ("string", "integer", "boolean", "enum", "url", "email", "file", "strings"):
        assert not hasattr(Validation, name), name
