"""A service declares the error form of some paths (srcore.errors.declare_error_form): the
answers srcore's gunicorn workers send for requests gunicorn refuses there are that form's,
with gunicorn's status and srcore's security headers. A request line too long to parse is
matched by the path read before gunicorn's limit."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
from flask import Flask, Response, current_app
from gunicorn.config import Config
from gunicorn.http.errors import LimitRequestLine
from gunicorn.http.parser import RequestParser

from srcore.errors import declare_error_form
from srcore.gunicorn_worker import error_answer, request_path
from srcore.headers import security_headers
from srcore.serving import GUNICORN_LIMITS

_PAGE = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\nConnection: close\r\n"
    b"Content-Type: text/html\r\nContent-Length: 11\r\n\r\n<p>bad</p>\n"
)


def _app() -> Flask:
    app = Flask("declared")

    def form(status: int, reason: str) -> Response:
        body = json.dumps({"error": "invalid_request", "error_description": reason})
        response = current_app.response_class(body, status=status, mimetype="application/json")
        response.headers["Cache-Control"] = "no-store"
        response.headers["X-Bad"] = "a control byte \x01"
        response.headers["X-Frame-Options"] = "SAMEORIGIN"
        return response

    def broken(status: int, reason: str) -> Response:
        raise RuntimeError("a bug in the form")

    declare_error_form(app, ["/machine"], form)
    declare_error_form(app, ["/broken"], broken)
    return app


def _parts(answer: bytes) -> tuple[str, dict[str, list[str]], bytes]:
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers: dict[str, list[str]] = {}
    for line in lines[1:]:
        name, _, value = line.partition(": ")
        headers.setdefault(name.lower(), []).append(value)
    return lines[0], headers, body


@pytest.mark.parametrize("path", ["/machine", "/%6Dachine"])
def test_a_declared_path_gets_its_form(path: str) -> None:
    status, headers, body = _parts(error_answer(_PAGE, path, ValueError("too many"), _app()))
    assert status == "HTTP/1.1 431 Request Header Fields Too Large"
    assert json.loads(body) == {"error": "invalid_request", "error_description": "too many"}
    assert headers["content-type"] == ["application/json"]
    assert headers["cache-control"] == ["no-store"]
    assert headers["content-length"] == [str(len(body))]
    assert headers["connection"] == ["close"]
    # srcore's security headers, once each; a header that cannot be sent is left out.
    for name, value in security_headers(production=False, origin="").items():
        assert headers[name.lower()] == [value], name
    assert "x-bad" not in headers


@pytest.mark.parametrize("path", ["/", "/machine/more", "/other"])
def test_other_paths_keep_gunicorns_page(path: str) -> None:
    _, headers, body = _parts(error_answer(_PAGE, path, ValueError("too many"), _app()))
    assert body == b"<p>bad</p>\n"
    assert headers["x-frame-options"] == ["DENY"]


def test_a_form_that_fails_leaves_srcores_json() -> None:
    answer = error_answer(_PAGE, "/broken", ValueError("too many"), _app())
    _, headers, body = _parts(answer)
    assert headers["content-type"] == ["application/json"]
    assert json.loads(body)["errors"][0]["reason"] == "too many"


def _refusal(data: bytes) -> BaseException:
    config = Config()
    config.set("limit_request_line", GUNICORN_LIMITS["limit-request-line"])
    with pytest.raises(LimitRequestLine) as raised:
        next(iter(RequestParser(config, io.BytesIO(data), ("127.0.0.1", 1))))
    return raised.value


@pytest.mark.parametrize(
    ("line", "path"),
    [
        (b"GET /machine?q=" + b"a" * 9000 + b" HTTP/1.1", "/machine"),
        (b"POST /a/b%2Fc#" + b"f" * 9000 + b" HTTP/1.1", "/a/b%2Fc"),
        # A path cut off by the limit is no path: it might be any.
        (b"GET /" + b"m" * 9000 + b" HTTP/1.1", None),
        (b"GARBAGE" * 2000, None),
    ],
)
def test_a_request_line_too_long_is_matched_by_the_path_read(line: bytes, path: str | None) -> None:
    exc = _refusal(line + b"\r\nHost: x\r\n\r\n")
    assert request_path(None, exc) == path


def test_a_declared_form_is_built_in_the_apps_context() -> None:
    app = _app()
    seen: list[Any] = []

    def form(status: int, reason: str) -> Response:
        seen.append(current_app._get_current_object())  # type: ignore[attr-defined]
        return Response("{}", status=status, mimetype="application/json")

    declare_error_form(app, ["/seen"], form)
    error_answer(_PAGE, "/seen", ValueError("x"), app)
    assert seen == [app]
