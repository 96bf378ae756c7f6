from __future__ import annotations

import enum
import io
import json
from typing import IO, Any, cast

import pytest
from flask import Flask, Response
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from werkzeug.datastructures import FileStorage, MultiDict

from srcore import validation as v
from srcore.validation import (
    INT_MAX,
    INT_MIN,
    MAX_STRING_LENGTH,
    FieldError,
    Invalid,
    Validation,
    ValidationFailed,
    coerce_bool,
    coerce_choice,
    coerce_email,
    coerce_int,
    coerce_string,
    coerce_url,
    error_body,
    file_size,
    is_json_mimetype,
    parse_json_object,
)


class State(enum.StrEnum):
    OPEN = "open"
    CLOSED = "closed"


class Priority(enum.IntEnum):
    LOW = 1
    HIGH = 2


def reasons(valid: Validation) -> list[tuple[str | None, str]]:
    return [(err.field, err.reason) for err in valid.errors]


def assert_well_formed(body: Any) -> None:
    assert isinstance(body, dict)
    assert list(body) == ["errors"]
    assert isinstance(body["errors"], list)
    for item in body["errors"]:
        assert set(item) <= {"field", "reason"}
        assert isinstance(item["reason"], str)
        assert item["reason"]
        if "field" in item:
            assert isinstance(item["field"], str)


def test_all_is_honest() -> None:
    public = {name for name in vars(v) if not name.startswith("_")}
    for name in v.__all__:
        assert name in public
    exported_kinds = {
        name
        for name in public
        if str(getattr(getattr(v, name), "__module__", "")).startswith(v.__name__ + ".")
    }
    assert exported_kinds, "the package re-exports its submodules' classes and functions"
    assert exported_kinds <= set(v.__all__)


# -- error body -------------------------------------------------------------------------------


def test_error_body_omits_field_for_whole_request_errors() -> None:
    body = error_body([FieldError("Title is required.", "title"), FieldError("Not found")])
    assert body == {
        "errors": [{"field": "title", "reason": "Title is required."}, {"reason": "Not found"}]
    }


def test_error_body_accepts_plain_strings() -> None:
    assert error_body(["Not found"]) == {"errors": [{"reason": "Not found"}]}
    assert error_body([]) == {"errors": []}


# -- JSON bodies ------------------------------------------------------------------------------


def test_parse_json_object() -> None:
    assert parse_json_object(b'{"a": 1, "b": [true, null]}') == {"a": 1, "b": [True, None]}
    assert parse_json_object('\ufeff{"a": "é"}'.encode()) == {"a": "é"}


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"", "The request body is empty; expected a JSON object."),
        (b" \n\t", "The request body is empty; expected a JSON object."),
        (b'{"a": "\xff"}', "The request body is not valid UTF-8."),
        (b"\xc3\x28", "The request body is not valid UTF-8."),
        (b"[1, 2]", "Expected a JSON object."),
        (b"42", "Expected a JSON object."),
        (b'"text"', "Expected a JSON object."),
        (b"null", "Expected a JSON object."),
        (b'{"a": 1, "a": 2}', 'The JSON object has the key "a" more than once.'),
        (b'{"x": {"b": 1, "b": 1}}', 'The JSON object has the key "b" more than once.'),
        (b'{"a": NaN}', "Not valid JSON: NaN is not a JSON number."),
        (b'{"a": -Infinity}', "Not valid JSON: -Infinity is not a JSON number."),
    ],
)
def test_parse_json_object_refuses(body: bytes, reason: str) -> None:
    with pytest.raises(Invalid) as info:
        parse_json_object(body)
    assert info.value.reason == reason


def test_parse_json_object_malformed_names_the_place() -> None:
    with pytest.raises(Invalid) as info:
        parse_json_object(b'{"a": 1,\n "b" 2}')
    assert info.value.reason.startswith("Not valid JSON: ")
    assert "(line 2, column 6)" in info.value.reason


@pytest.mark.parametrize("opener", [b"[", b'{"a":'])
def test_parse_json_object_refuses_deep_nesting(opener: bytes) -> None:
    with pytest.raises(Invalid) as info:
        parse_json_object(b'{"a":' + opener * 200_000)
    assert info.value.reason == "The JSON body is nested too deeply."


def test_parse_json_object_refuses_overlong_integer_literal() -> None:
    with pytest.raises(Invalid) as info:
        parse_json_object(b'{"a": ' + b"9" * 5000 + b"}")
    assert info.value.reason == "Not valid JSON."


def test_duplicate_key_reason_is_short() -> None:
    key = "k" * 10_000
    body = json.dumps({"x": 1})[:-1] + f', "{key}": 1, "{key}": 2}}'
    with pytest.raises(Invalid) as info:
        parse_json_object(body.encode())
    assert len(info.value.reason) < 200


@pytest.mark.parametrize(
    ("mimetype", "expected"),
    [
        ("application/json", True),
        ("Application/JSON", True),
        ("application/vnd.api+json", True),
        ("application/merge-patch+json", True),
        ("text/json", False),
        ("application/jsonx", False),
        ("application/x-www-form-urlencoded", False),
        ("", False),
    ],
)
def test_is_json_mimetype(mimetype: str, expected: bool) -> None:
    assert is_json_mimetype(mimetype) is expected


# -- strings ----------------------------------------------------------------------------------


def test_coerce_string() -> None:
    assert coerce_string("  hi  ") == "hi"
    assert coerce_string("  hi  ", strip=False) == "  hi  "
    assert coerce_string("abc", min_length=3, max_length=3) == "abc"
    assert coerce_string("a\tb\r\nc") == "a\tb\r\nc"  # tabs and line breaks are text


@pytest.mark.parametrize(
    ("raw", "options", "reason"),
    [
        (5, {}, "Must be a string."),
        (["a"], {}, "Must be a string."),
        ({"a": "b"}, {}, "Must be a string."),
        (True, {}, "Must be a string."),
        ("abcd", {"max_length": 3}, "Must be at most 3 characters."),
        ("ab", {"max_length": 1}, "Must be at most 1 character."),
        ("ab", {"min_length": 3}, "Must be at least 3 characters."),
        (" a ", {"min_length": 2}, "Must be at least 2 characters."),
        ("a\x00b", {}, "Contains the control character U+0000, which is not allowed."),
        ("a\ud800b", {}, "Contains a lone surrogate U+D800, which is not allowed."),
        # What forms and query strings refuse, a JSON body may not carry either.
        ("a\x1b[31mb", {}, "Contains the control character U+001B, which is not allowed."),
        ("a\x7fb", {}, "Contains the control character U+007F, which is not allowed."),
        ("a\x0bb", {}, "Contains the control character U+000B, which is not allowed."),
    ],
)
def test_coerce_string_refuses(raw: object, options: dict[str, Any], reason: str) -> None:
    with pytest.raises(Invalid) as info:
        coerce_string(raw, **options)
    assert info.value.reason == reason


def test_coerce_string_caps_every_length() -> None:
    huge = "x" * (MAX_STRING_LENGTH + 1)
    for options in ({}, {"max_length": None}, {"max_length": 10 * MAX_STRING_LENGTH}):
        with pytest.raises(Invalid) as info:
            coerce_string(huge, **options)
        assert info.value.reason == f"Must be at most {MAX_STRING_LENGTH} characters."
    assert coerce_string("x" * MAX_STRING_LENGTH) == "x" * MAX_STRING_LENGTH


# -- integers ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"), [(0, 0), (-7, -7), (5.0, 5), (-0.0, 0), (INT_MAX, INT_MAX)]
)
def test_coerce_int_json(raw: object, expected: int) -> None:
    assert coerce_int(raw, from_form=False) == expected


@pytest.mark.parametrize(
    "raw", [True, False, 5.5, float("inf"), float("nan"), "5", None, [1], {"a": 1}]
)
def test_coerce_int_json_refuses(raw: object) -> None:
    with pytest.raises(Invalid) as info:
        coerce_int(raw, from_form=False)
    assert info.value.reason == "Must be a whole number."


@pytest.mark.parametrize(
    ("raw", "expected"), [("5", 5), (" 12 ", 12), ("+3", 3), ("-0", 0), ("-42", -42)]
)
def test_coerce_int_form(raw: str, expected: int) -> None:
    assert coerce_int(raw, from_form=True) == expected


@pytest.mark.parametrize(
    "raw", ["", "five", "1_000", "1,000", "5.0", "1e3", "0x10", "٣", "²", "--1", "+", 5, True]
)
def test_coerce_int_form_refuses(raw: object) -> None:
    with pytest.raises(Invalid) as info:
        coerce_int(raw, from_form=True)
    assert info.value.reason == "Must be a whole number."


def test_coerce_int_bounds() -> None:
    assert coerce_int(3, from_form=False, min=3, max=3) == 3
    with pytest.raises(Invalid, match=r"^Must be at least 1\.$"):
        coerce_int(0, from_form=False, min=1)
    with pytest.raises(Invalid, match=r"^Must be at most 10\.$"):
        coerce_int("11", from_form=True, max=10)


def test_coerce_int_always_fits_64_bits() -> None:
    with pytest.raises(Invalid, match=rf"^Must be at most {INT_MAX}\.$"):
        coerce_int(INT_MAX + 1, from_form=False)
    with pytest.raises(Invalid, match=rf"^Must be at least {INT_MIN}\.$"):
        coerce_int(str(INT_MIN - 1), from_form=True)
    with pytest.raises(Invalid, match=rf"^Must be at most {INT_MAX}\.$"):
        coerce_int(1e300, from_form=False)
    assert coerce_int(INT_MAX, from_form=False, max=INT_MAX + 5) == INT_MAX
    with pytest.raises(Invalid, match=rf"^Must be at most {INT_MAX}\.$"):
        coerce_int(INT_MAX + 1, from_form=False, max=INT_MAX + 5)


def test_coerce_int_huge_form_digits_are_refused_without_converting() -> None:
    with pytest.raises(Invalid, match=rf"^Must be at most {INT_MAX}\.$"):
        coerce_int("9" * 100_000, from_form=True)
    with pytest.raises(Invalid, match=r"^Must be at least -5\.$"):
        coerce_int("-" + "9" * 100_000, from_form=True, min=-5)


# -- booleans ---------------------------------------------------------------------------------


@pytest.mark.parametrize("word", ["on", "true", "1", "yes", "ON", " True ", "Yes"])
def test_coerce_bool_form_true(word: str) -> None:
    assert coerce_bool(word, from_form=True) is True


@pytest.mark.parametrize("word", ["off", "false", "0", "no", "", "  ", "NO"])
def test_coerce_bool_form_false(word: str) -> None:
    assert coerce_bool(word, from_form=True) is False


@pytest.mark.parametrize("raw", ["maybe", "2", "y", True, None])
def test_coerce_bool_form_refuses(raw: object) -> None:
    with pytest.raises(Invalid, match=r"^Must be true or false\.$"):
        coerce_bool(raw, from_form=True)


def test_coerce_bool_json() -> None:
    assert coerce_bool(True, from_form=False) is True
    assert coerce_bool(False, from_form=False) is False
    refused: list[object] = ["true", 1, 0, None, [], {}]
    for raw in refused:
        with pytest.raises(Invalid, match=r"^Must be true or false\.$"):
            coerce_bool(raw, from_form=False)


# -- choices ----------------------------------------------------------------------------------


def test_coerce_choice_enum() -> None:
    assert coerce_choice("open", State, from_form=False) is State.OPEN
    assert coerce_choice(" closed ", State, from_form=True) is State.CLOSED
    assert coerce_choice(2, Priority, from_form=False) is Priority.HIGH
    assert coerce_choice("1", Priority, from_form=True) is Priority.LOW


@pytest.mark.parametrize(
    ("raw", "choices", "from_form"),
    [
        ("OPEN", State, False),
        (" open", State, False),
        ("OPEN", State, True),
        (1, State, False),
        ("1", Priority, False),
        (True, Priority, False),
        (1.0, Priority, False),
        ("3", Priority, True),
        (["open"], State, False),
        (None, State, False),
    ],
)
def test_coerce_choice_enum_refuses(raw: object, choices: Any, from_form: bool) -> None:
    with pytest.raises(Invalid) as info:
        coerce_choice(raw, choices, from_form=from_form)
    assert info.value.reason.startswith("Must be one of: ")


def test_coerce_choice_sequence() -> None:
    assert coerce_choice("b", ["a", "b"], from_form=False) == "b"
    assert coerce_choice(" b ", ("a", "b"), from_form=True) == "b"
    with pytest.raises(Invalid, match=r"^Must be one of: a, b\.$"):
        coerce_choice("c", ["a", "b"], from_form=False)
    with pytest.raises(Invalid, match=r"^Not one of the allowed choices\.$"):
        coerce_choice("z", [str(i) for i in range(50)], from_form=False)
    with pytest.raises(TypeError):
        coerce_choice("a", "abc", from_form=False)


# -- URLs and email ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        "http://example.org",
        "https://example.org/path?q=1#frag",
        "HTTPS://Example.org:8443/",
        "https://user@example.org/",
        "http://127.0.0.1:5000/x",
        "http://[::1]/",
        "https://exämple.org/",
    ],
)
def test_coerce_url_accepts(raw: str) -> None:
    assert coerce_url(raw) == raw
    assert coerce_url(f"  {raw}\n") == raw


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("ftp://example.org/", "Must be a URL starting with http:// or https://."),
        ("javascript:alert(1)", "Must be a URL starting with http:// or https://."),
        ("example.org", "Must be a URL starting with http:// or https://."),
        ("//example.org/", "Must be a URL starting with http:// or https://."),
        ("https:///path", "Not a valid URL: the host is missing."),
        ("https://", "Not a valid URL: the host is missing."),
        ("https://exa mple.org/", "Not a valid URL."),
        (
            "https://example.org/\x07",
            "Contains the control character U+0007, which is not allowed.",
        ),
        ("https://example.org:99999/", "Not a valid URL."),
        ("https://example.org:port/", "Not a valid URL."),
        ("http://[::1/", "Not a valid URL."),
        (42, "Must be a string."),
        ("https://example.org/" + "a" * 3000, "Must be at most 2048 characters."),
    ],
)
def test_coerce_url_refuses(raw: object, reason: str) -> None:
    with pytest.raises(Invalid) as info:
        coerce_url(raw)
    assert info.value.reason == reason


def test_coerce_url_options() -> None:
    assert coerce_url("gemini://example.org/", schemes={"gemini"}) == "gemini://example.org/"
    with pytest.raises(Invalid, match="https://"):
        coerce_url("http://example.org/", schemes=("https",))
    with pytest.raises(Invalid, match=r"^Must be at most 20 characters\.$"):
        coerce_url("https://example.org/long", max_length=20)
    with pytest.raises(Invalid, match=r"^Must be at most 2048 characters\.$"):
        coerce_url("https://example.org/" + "a" * 3000, max_length=10**9)


@pytest.mark.parametrize(
    "raw",
    ["a@example.org", "first.last+tag@sub.example.co.uk", "x@xn--bcher-kva.example", "é@ü.de"],
)
def test_coerce_email_accepts(raw: str) -> None:
    assert coerce_email(raw) == raw
    assert coerce_email(f" {raw} ") == raw


@pytest.mark.parametrize(
    "raw",
    [
        "plain",
        "@example.org",
        "a@",
        "a@localhost",
        "a@@example.org",
        "a@b@example.org",
        "a b@example.org",
        "a@exa mple.org",
        "a@example..org",
        "a@.example.org",
        "a@example.org.",
        "a@-example.org",
        "a@example-.org",
        "<a@example.org>",
        "a@exam\nple.org",
        "a,b@example.org",
        "a@example.org\r\nBcc: x@example.org",
        "x" * 65 + "@example.org",
        "a@" + "b" * 64 + ".org",
    ],
)
def test_coerce_email_refuses(raw: str) -> None:
    with pytest.raises(Invalid) as info:
        coerce_email(raw)
    assert info.value.reason == "Not a valid email address."


def test_coerce_email_length_and_type() -> None:
    with pytest.raises(Invalid, match=r"^Must be at most 254 characters\.$"):
        coerce_email("a@" + ".".join(["b" * 60] * 5))
    with pytest.raises(Invalid, match=r"^Must be a string\.$"):
        coerce_email(["a@example.org"])


# -- files ------------------------------------------------------------------------------------


class _OneWayStream(io.RawIOBase):
    def __init__(self, data: bytes) -> None:
        self._data = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        return self._data.read(size)

    def seekable(self) -> bool:
        return False

    def seek(self, offset: int, whence: int = 0) -> int:
        raise io.UnsupportedOperation("not seekable")

    def tell(self) -> int:
        raise io.UnsupportedOperation("not seekable")


def test_file_size_seeks_and_keeps_position() -> None:
    storage = FileStorage(io.BytesIO(b"x" * 1000), filename="a.txt")
    assert file_size(storage) == 1000
    assert storage.read() == b"x" * 1000


def test_file_size_copies_a_stream_that_cannot_seek() -> None:
    storage = FileStorage(cast(IO[bytes], _OneWayStream(b"y" * 200_000)), filename="a.bin")
    assert file_size(storage) == 200_000
    assert storage.read() == b"y" * 200_000
    storage.close()


# -- Validation over plain data ---------------------------------------------------------------


def test_required_string_missing_in_every_way() -> None:
    for data in ({}, {"title": None}, {"title": ""}, {"title": "   "}):
        valid = Validation(data=data)
        assert valid.require("title") is None
        assert reasons(valid) == [("title", "Title is required.")]
        assert not valid.ok


def test_labels_are_derived_or_given() -> None:
    valid = Validation(data={})
    valid.require("due_date")
    valid.require("home-page")
    valid.require("n", int, label="Number of seats")
    assert [err.reason for err in valid.errors] == [
        "Due date is required.",
        "Home page is required.",
        "Number of seats is required.",
    ]


def test_optional_gives_default_only_when_missing() -> None:
    valid = Validation(data={"a": "", "b": None, "c": "x", "d": 5})
    assert valid.optional("a", default="dflt") == "dflt"
    assert valid.optional("b") is None
    assert valid.optional("c", default="dflt") == "x"
    assert valid.optional("missing", int, default=3) == 3
    assert valid.ok
    assert valid.optional("d", default="dflt") is None
    assert reasons(valid) == [("d", "Must be a string.")]


def test_string_options_through_require() -> None:
    valid = Validation(data={"title": "x" * 300, "code": "  ab "})
    assert valid.require("title", str, max_length=256) is None
    assert valid.require("code", str, strip=False) == "  ab "
    assert valid.require("code", str, min_length=3) is None
    assert reasons(valid) == [
        ("title", "Must be at most 256 characters."),
        ("code", "Must be at least 3 characters."),
    ]


def test_json_typed_getters() -> None:
    data = {
        "n": 7,
        "f": 3.0,
        "flag": True,
        "state": "open",
        "pri": 2,
        "color": "red",
        "site": "https://example.org",
        "mail": "a@example.org",
    }
    valid = Validation(data=data)
    assert valid.source == "json"
    assert valid.require("n", int, min=1, max=10) == 7
    assert valid.optional("f", int) == 3
    assert valid.require("flag", bool) is True
    assert valid.require("state", State) is State.OPEN
    assert valid.optional("pri", Priority) is Priority.HIGH
    assert valid.require("color", "enum", choices=["red", "blue"]) == "red"
    assert valid.require("site", "url") == "https://example.org"
    assert valid.require("mail", "email") == "a@example.org"
    assert valid.optional("nothing", State, default=State.CLOSED) is State.CLOSED
    assert valid.optional("nothing", "enum", choices=["x"], default="x") == "x"
    assert valid.optional("nothing", "url") is None
    assert valid.optional("nothing", "email", default="n@example.org") == "n@example.org"
    assert valid.optional("nothing", bool) is None
    assert valid.ok, valid.errors


def test_json_wrong_types_are_field_errors() -> None:
    data: dict[str, Any] = {
        "title": ["a list"],
        "n": True,
        "m": "5",
        "flag": 1,
        "state": {"open": 1},
        "site": 5,
        "mail": None,
        "upload": "not a file",
    }
    valid = Validation(data=data)
    assert valid.optional("title") is None
    assert valid.optional("n", int) is None
    assert valid.optional("m", int) is None
    assert valid.optional("flag", bool) is None
    assert valid.optional("state", State) is None
    assert valid.optional("site", "url") is None
    assert valid.require("mail", "email") is None
    assert valid.optional("upload", "file", max_size=10) is None
    assert reasons(valid) == [
        ("title", "Must be a string."),
        ("n", "Must be a whole number."),
        ("m", "Must be a whole number."),
        ("flag", "Must be true or false."),
        ("state", "Must be one of: open, closed."),
        ("site", "Must be a string."),
        ("mail", "Mail is required."),
        ("upload", "Must be a file upload."),
    ]


def test_json_boolean_missing() -> None:
    valid = Validation(data={})
    assert valid.optional("public", bool) is None
    assert valid.optional("public", bool, default=False) is False
    assert valid.ok
    assert valid.require("public", bool) is None
    assert reasons(valid) == [("public", "Public is required.")]


def test_form_data_is_parsed_from_strings() -> None:
    form = MultiDict([("n", " 42 "), ("agree", "on"), ("state", "closed"), ("pri", "1")])
    valid = Validation(data=form, source="form")
    assert valid.source == "form"
    assert valid.require("n", int) == 42
    assert valid.optional("agree", bool) is True
    assert valid.require("newsletter", bool) is False
    assert valid.optional("state", State) is State.CLOSED
    assert valid.optional("pri", Priority) is Priority.LOW
    assert valid.value("n") == " 42 "
    assert valid.ok


def test_form_empty_values_are_missing() -> None:
    valid = Validation(data={"n": "", "site": " ", "flag": ""}, source="form")
    assert valid.optional("n", int, default=1) == 1
    assert valid.optional("site", "url") is None
    assert valid.optional("flag", bool) is False
    assert valid.ok
    valid.require("n", int)
    assert reasons(valid) == [("n", "N is required.")]


def test_form_bad_values() -> None:
    valid = Validation(data={"n": "4.5", "flag": "maybe", "state": "OPEN"}, source="form")
    assert valid.optional("n", int) is None
    assert valid.optional("flag", bool) is None
    assert valid.optional("state", State) is None
    assert [err.field for err in valid.errors] == ["n", "flag", "state"]


def test_value_for_rerendering() -> None:
    valid = Validation(
        data={"s": "text", "n": 5, "f": 1.5, "t": True, "z": None, "l": [1], "big": 10**5000}
    )
    assert valid.value("s") == "text"
    assert valid.value("n") == "5"
    assert valid.value("f") == "1.5"
    assert valid.value("t") == "true"
    assert valid.value("z") == ""
    assert valid.value("l", "?") == "?"
    assert valid.value("big") == ""
    assert valid.value("absent", "dflt") == "dflt"
    assert "s" in valid
    assert "absent" not in valid


def test_errors_and_expect() -> None:
    valid = Validation(data={})
    assert valid.ok
    assert valid.expect(1 + 1 == 2, "never")
    assert valid.ok
    assert not valid.expect(False, "Passwords do not match.", field="password2")
    valid.error("Something is off.")
    valid.error("Too short.", "password")
    valid.error("Also bad.", field="password")
    assert valid.error_for("password") == "Too short."
    assert valid.error_for("password2") == "Passwords do not match."
    assert valid.error_for("other") is None
    assert valid.general_errors == ["Something is off."]
    assert not valid.ok
    assert "errors=4" in repr(valid)


def test_response_without_an_app() -> None:
    valid = Validation(data={})
    valid.require("title")
    valid.error("Whole thing is wrong.")
    response = ValidationFailed(valid).response()
    assert isinstance(response, Response)
    assert response.status_code == 400
    assert response.mimetype == "application/json"
    assert json.loads(response.get_data()) == {
        "errors": [
            {"field": "title", "reason": "Title is required."},
            {"reason": "Whole thing is wrong."},
        ]
    }
    assert ValidationFailed(valid, status=422).response().status_code == 422
    assert not hasattr(valid, "response")  # a view raises; it never builds the answer


def test_raise_if_invalid() -> None:
    valid = Validation(data={"title": "ok"})
    valid.raise_if_invalid()
    valid.require("body")
    with pytest.raises(ValidationFailed) as info:
        valid.raise_if_invalid(status=422)
    assert info.value.validation is valid
    assert info.value.status == 422
    assert str(info.value) == "Body is required."
    assert info.value.response().status_code == 422


def test_misuse_is_a_programming_error() -> None:
    with pytest.raises(TypeError):
        Validation(Flask(__name__).test_request_context().request, data={})
    with pytest.raises(TypeError):
        Validation(data={"a": 1}).require("a", float)  # type: ignore[type-var]


def test_files_in_plain_data() -> None:
    files = {
        "small": FileStorage(io.BytesIO(b"abc"), filename="s.txt"),
        "big": FileStorage(io.BytesIO(b"x" * 2048), filename="b.txt"),
        "empty_input": FileStorage(io.BytesIO(b""), filename=""),
    }
    valid = Validation(data={}, files=files, source="form")
    small = valid.require("small", "file", max_size=3)
    assert small is not None
    assert small.read() == b"abc"
    assert valid.optional("big", "file", max_size=1024) is None
    assert valid.require("empty_input", "file", max_size=10) is None
    assert valid.optional("absent", "file", max_size=10) is None
    assert reasons(valid) == [
        ("big", "Must be at most 1 KB."),
        ("empty_input", "Empty input is required."),
    ]


@pytest.mark.parametrize(
    ("limit", "text"),
    [(1, "1 byte"), (10, "10 bytes"), (1536, "1536 bytes"), (2 << 20, "2 MB"), (1 << 30, "1 GB")],
)
def test_file_size_reason(limit: int, text: str) -> None:
    files = {"f": FileStorage(cast(IO[bytes], _SizedStream(limit + 1)), filename="f")}
    valid = Validation(data={}, files=files, source="form")
    assert valid.optional("f", "file", max_size=limit) is None
    assert valid.errors == [FieldError(f"Must be at most {text}.", "f")]
    assert files["f"].stream.tell() == 0


class _SizedStream(io.RawIOBase):
    """Reports a size by seeking, without holding that many bytes."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._pos = 0

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = 0) -> int:
        self._pos = {0: offset, 1: self._pos + offset, 2: self._size + offset}[whence]
        return self._pos


# -- Validation over real Flask requests -------------------------------------------------------


def make_app() -> Flask:
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = 4 << 20

    @app.post("/tickets")
    def create_ticket() -> Response | tuple[dict[str, Any], int]:
        valid = Validation()
        title = valid.require("title", max_length=256)
        priority = valid.optional("priority", int, min=1, max=5, default=3)
        state = valid.optional("state", State, default=State.OPEN)
        public = valid.optional("public", bool)
        site = valid.optional("site", "url")
        mail = valid.optional("mail", "email")
        kind = valid.optional("kind", "enum", choices=["bug", "feature"])
        attachment = valid.optional("attachment", "file", max_size=1024)
        valid.expect(title != "forbidden", "That title is taken.", field="title")
        valid.raise_if_invalid()
        return {
            "title": title,
            "priority": priority,
            "state": state.value if state else None,
            "public": public,
            "site": site,
            "mail": mail,
            "kind": kind,
            "attachment": attachment.read().decode() if attachment else None,
        }, 201

    @app.route("/search", methods=["GET", "DELETE"])
    def search() -> Response | dict[str, Any]:
        valid = Validation()
        q = valid.require("q")
        page = valid.optional("page", int, default=1, min=1)
        valid.raise_if_invalid()
        return {"q": q, "page": page, "source": valid.source}

    @app.errorhandler(ValidationFailed)
    def failed(exc: ValidationFailed) -> Response:
        return exc.response()

    return app


APP = make_app()


@pytest.fixture
def client() -> Any:
    return APP.test_client()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ("title=a&title=b", "title"),
        ("title=a&priority=1&priority=5", "priority"),
        ("title=a&public=on&public=off", "public"),
        ("title=a&kind=bug&kind=feature", "kind"),
        ("title=a&title=", "title"),
    ],
)
def test_a_form_field_sent_twice_is_refused(client: Any, body: str, field: str) -> None:
    """Which copy counts is ambiguous (a proxy in front may check the other one), so neither
    does: the request is a 400 naming the field, as a JSON object's repeated key is."""
    form = "application/x-www-form-urlencoded"
    response = client.post("/tickets", data=body, content_type=form)
    assert response.status_code == 400, response.json
    assert {
        "field": field,
        "reason": f"{field.capitalize()} was sent more than once; send it once.",
    } in response.json["errors"]


def test_a_query_field_or_file_sent_twice_is_refused(client: Any) -> None:
    response = client.get("/search?q=a&q=b")
    assert response.status_code == 400
    assert response.json["errors"][0]["field"] == "q"
    assert client.get("/search?q=a&page=1&page=2").status_code == 400
    twice = [(io.BytesIO(b"one"), "1.txt"), (io.BytesIO(b"two"), "2.txt")]
    data: dict[str, Any] = {"title": "x", "attachment": twice}
    response = client.post("/tickets", data=data, content_type="multipart/form-data")
    assert response.status_code == 400
    assert response.json["errors"][0]["field"] == "attachment"
    # A list field takes every copy, as before.
    valid = Validation(data=MultiDict([("labels", "a"), ("labels", "b")]), source="form")
    assert valid.optional("labels", list[str]) == ["a", "b"]
    assert valid.ok


def test_form_post(client: Any) -> None:
    response = client.post(
        "/tickets",
        data={"title": " Broken ", "priority": "2", "public": "on", "kind": "bug"},
    )
    assert response.status_code == 201, response.json
    assert response.json == {
        "title": "Broken",
        "priority": 2,
        "state": "open",
        "public": True,
        "site": None,
        "mail": None,
        "kind": "bug",
        "attachment": None,
    }


def test_form_post_errors(client: Any) -> None:
    response = client.post(
        "/tickets", data={"title": "", "priority": "9", "site": "ftp://x", "mail": "nope"}
    )
    assert response.status_code == 400
    assert response.json == {
        "errors": [
            {"field": "title", "reason": "Title is required."},
            {"field": "priority", "reason": "Must be at most 5."},
            {"field": "site", "reason": "Must be a URL starting with http:// or https://."},
            {"field": "mail", "reason": "Not a valid email address."},
        ]
    }


def test_form_post_with_file(client: Any) -> None:
    response = client.post(
        "/tickets",
        data={"title": "t", "attachment": (io.BytesIO(b"hello"), "log.txt")},
        content_type="multipart/form-data",
    )
    assert response.status_code == 201, response.json
    assert response.json["attachment"] == "hello"


def test_form_post_with_big_file(client: Any) -> None:
    response = client.post(
        "/tickets",
        data={"title": "t", "attachment": (io.BytesIO(b"x" * 5000), "big.bin")},
        content_type="multipart/form-data",
    )
    assert response.status_code == 400
    assert response.json == {"errors": [{"field": "attachment", "reason": "Must be at most 1 KB."}]}


def test_form_post_with_empty_file_input(client: Any) -> None:
    response = client.post(
        "/tickets",
        data={"title": "t", "attachment": (io.BytesIO(b""), "")},
        content_type="multipart/form-data",
    )
    assert response.status_code == 201, response.json
    assert response.json["attachment"] is None


def test_form_post_invalid_utf8_does_not_fail(client: Any) -> None:
    response = client.post(
        "/tickets",
        data=b"title=%FF%FE&priority=1",
        content_type="application/x-www-form-urlencoded",
    )
    assert response.status_code in {201, 400}
    assert response.is_json


@pytest.mark.parametrize(
    "content_type",
    [
        "application/json",
        "application/json; charset=utf-8",
        "application/json;charset=UTF-8",
        "APPLICATION/JSON; charset=utf8",
        "application/vnd.api+json",
        "application/merge-patch+json; charset=utf-8",
    ],
)
def test_json_post(client: Any, content_type: str) -> None:
    body = {
        "title": "Crash ✓",
        "priority": 5,
        "state": "closed",
        "public": False,
        "site": "https://example.org/x",
        "mail": "a@example.org",
        "kind": "feature",
    }
    response = client.post("/tickets", data=json.dumps(body), content_type=content_type)
    assert response.status_code == 201, response.json
    assert response.json == body | {"attachment": None}


def test_json_post_errors(client: Any) -> None:
    body = {"title": "x" * 257, "priority": True, "state": "OPEN", "public": "yes", "kind": 1}
    response = client.post("/tickets", json=body)
    assert response.status_code == 400
    assert response.json == {
        "errors": [
            {"field": "title", "reason": "Must be at most 256 characters."},
            {"field": "priority", "reason": "Must be a whole number."},
            {"field": "state", "reason": "Must be one of: open, closed."},
            {"field": "public", "reason": "Must be true or false."},
            {"field": "kind", "reason": "Must be one of: bug, feature."},
        ]
    }


def test_json_expect(client: Any) -> None:
    response = client.post("/tickets", json={"title": "forbidden"})
    assert response.json == {"errors": [{"field": "title", "reason": "That title is taken."}]}


def test_json_huge_string(client: Any) -> None:
    response = client.post("/tickets", json={"title": "x" * (MAX_STRING_LENGTH + 10)})
    assert response.status_code == 400
    assert response.json == {
        "errors": [{"field": "title", "reason": "Must be at most 256 characters."}]
    }


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"{", "Not valid JSON: Expecting property name enclosed in double quotes"),
        (b"[1]", "Expected a JSON object."),
        (b"3", "Expected a JSON object."),
        (b"", "The request body is empty; expected a JSON object."),
        (b'{"title": "\xff"}', "The request body is not valid UTF-8."),
        (b'{"title": "a", "title": "b"}', 'The JSON object has the key "title" more than once.'),
        (b"[" * 100_000, "The JSON body is nested too deeply."),
    ],
)
def test_json_whole_request_errors(client: Any, body: bytes, reason: str) -> None:
    response = client.post("/tickets", data=body, content_type="application/json")
    assert response.status_code == 400
    errors = response.json["errors"]
    assert errors[0]["reason"].startswith(reason)
    assert "field" not in errors[0]
    # That one error says it all: no field is then also "required" (a title sent twice,
    # or in a body not read, was sent; a list of them would bury what is wrong).
    assert len(errors) == 1, errors


def test_unsupported_content_type(client: Any) -> None:
    response = client.post("/tickets", data=b"title=x", content_type="text/plain")
    assert response.status_code == 400
    assert response.json["errors"] == [
        {"reason": "Unsupported content type text/plain; send a form or JSON."}
    ]


def test_no_content_type_is_an_empty_form(client: Any) -> None:
    response = client.post("/tickets")
    assert response.json == {"errors": [{"field": "title", "reason": "Title is required."}]}


def test_get_reads_the_query_string(client: Any) -> None:
    response = client.get("/search?q=bugs&page=2")
    assert response.json == {"q": "bugs", "page": 2, "source": "form"}
    response = client.get("/search?page=0")
    assert response.status_code == 400
    assert response.json == {
        "errors": [
            {"field": "q", "reason": "Q is required."},
            {"field": "page", "reason": "Must be at least 1."},
        ]
    }


def test_get_ignores_a_json_content_type(client: Any) -> None:
    response = client.get("/search?q=x", headers={"Content-Type": "application/json"})
    assert response.json == {"q": "x", "page": 1, "source": "form"}


def test_json_delete_body(client: Any) -> None:
    response = client.delete("/search", json={"q": "x"})
    assert response.json == {"q": "x", "page": 1, "source": "json"}


def test_body_over_the_app_limit_is_413(client: Any) -> None:
    response = client.post("/tickets", data=b" " * (5 << 20), content_type="application/json")
    assert response.status_code == 413


# -- properties -------------------------------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)
FIELDS = ["title", "priority", "state", "public", "site", "mail", "kind", "attachment"]
field_names = st.sampled_from([*FIELDS, "other"])


def exercise(valid: Validation) -> None:
    """Call every getter on every field, as a view would."""
    for name in FIELDS:
        valid.optional(name, max_length=10, min_length=1)
        valid.require(name)
        valid.optional(name, int, min=0, max=100)
        valid.optional(name, bool)
        valid.optional(name, bool, default=True)
        valid.optional(name, State)
        valid.optional(name, Priority)
        valid.require(name, "enum", choices=["a", "b"])
        valid.optional(name, "url")
        valid.optional(name, "email")
        valid.optional(name, "file", max_size=10)
        valid.value(name)
        valid.error_for(name)
    assert_well_formed(json.loads(ValidationFailed(valid).response().get_data()))
    assert_well_formed(error_body(valid.errors))


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(field_names, json_values))
def test_any_json_object_never_raises(data: dict[str, Any]) -> None:
    exercise(Validation(data=data))


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(field_names, st.text() | st.lists(st.text(), max_size=3)))
def test_any_form_never_raises(data: dict[str, Any]) -> None:
    form = MultiDict(
        [
            (k, item)
            for k, value in data.items()
            for item in (value if isinstance(value, list) else [value])
        ]
    )
    exercise(Validation(data=form, source="form"))


@given(st.binary())
def test_any_bytes_parse_or_invalid(body: bytes) -> None:
    result: dict[str, Any] | str
    try:
        result = parse_json_object(body)
    except Invalid as exc:
        result = exc.reason
    assert isinstance(result, dict) or (isinstance(result, str) and result.endswith("."))


content_types = st.sampled_from(
    [
        "application/json",
        "application/json; charset=utf-8",
        "application/json; charset=latin-1",
        "application/problem+json",
        "application/x-www-form-urlencoded",
        "multipart/form-data",
        "multipart/form-data; boundary=xyz",
        "text/plain",
        "",
    ]
)
json_bodies = st.dictionaries(field_names, json_values).map(lambda d: json.dumps(d).encode())
form_bodies = st.dictionaries(field_names, st.text()).map(
    lambda d: "&".join(f"{k}={v}" for k, v in d.items()).encode("utf-8", "surrogatepass")
)
multipart_bodies = st.lists(
    st.tuples(field_names, st.binary(max_size=40), st.booleans()), max_size=4
).map(
    lambda parts: (
        b"".join(
            b'--xyz\r\nContent-Disposition: form-data; name="'
            + name.encode()
            + b'"'
            + (b'; filename="f.bin"' if is_file else b"")
            + b"\r\n\r\n"
            + payload
            + b"\r\n"
            for name, payload, is_file in parts
        )
        + b"--xyz--\r\n"
    )
)
bodies = st.binary() | json_bodies | form_bodies | multipart_bodies


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=bodies, content_type=content_types, method=st.sampled_from(["POST", "DELETE", "GET"]))
def test_random_requests_never_500(body: bytes, content_type: str, method: str) -> None:
    client = APP.test_client()
    headers = {"Content-Type": content_type} if content_type else {}
    path = "/tickets" if method == "POST" else "/search"
    response = client.open(path, method=method, data=body, headers=headers)
    assert response.status_code in {200, 201, 400}, response.get_data()
    if response.status_code == 400:
        assert_well_formed(response.json)


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(field_names, json_values))
def test_random_json_objects_over_http(data: dict[str, Any]) -> None:
    response = APP.test_client().post("/tickets", json=data)
    assert response.status_code in {201, 400}
    if response.status_code == 400:
        assert_well_formed(response.json)
