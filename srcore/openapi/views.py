"""``/api/openapi.json`` and ``/api/docs``: every service describes its API by itself.

The document is built on its first request, when every blueprint of the service has
been registered, and kept for the life of the process: routes do not change at run time.
"""

from __future__ import annotations

import threading
from typing import Any
from urllib.parse import quote

from flask import Flask, current_app, jsonify, render_template, request, url_for

from srcore.openapi.document import Document, Endpoints, build_document

__all__ = ["DOCS_PATH", "OPENAPI_PATH", "document_of", "init_app"]

OPENAPI_PATH = "openapi.json"
DOCS_PATH = "docs"
_KEY = "srcore_openapi"
_lock = threading.Lock()


def _endpoints(app: Flask) -> Endpoints | None:
    """meta's authorize and token endpoints, from the configured origin of meta."""
    st = app.extensions["srcore"]
    if st.service_id == "meta":
        origin = str(st.section["origin"])
    elif st.config.has_service("meta"):
        origin = str(st.config.section("meta")["origin"])
    else:
        return None
    origin = origin.rstrip("/")
    return Endpoints(authorize=origin + "/oauth/authorize", token=origin + "/oauth/token")


def _own_paths(prefix: str) -> dict[str, dict[str, Any]]:
    """The two routes of this module, described here since no annotation can say it."""
    return {
        prefix + OPENAPI_PATH: {
            "get": {
                "operationId": "srcore_openapi.document.get",
                "summary": "This description (OpenAPI 3.1).",
                "tags": ["meta"],
                "responses": {
                    "200": {
                        "description": "The OpenAPI document.",
                        "content": {"application/json": {"schema": {"type": "object"}}},
                    }
                },
            }
        },
        prefix + DOCS_PATH: {
            "get": {
                "operationId": "srcore_openapi.docs.get",
                "summary": "This description as a page for people.",
                "tags": ["meta"],
                "responses": {
                    "200": {
                        "description": "An HTML page.",
                        "content": {"text/html": {"schema": {"type": "string"}}},
                    }
                },
            }
        },
    }


def document_of(app: Flask) -> Document:
    """*app*'s OpenAPI document, built once."""
    from srcore.routing import API_PREFIX

    found = app.extensions.get(_KEY)
    if found is None:
        with _lock:
            found = app.extensions.get(_KEY)
            if found is None:
                found = build_document(
                    app,
                    prefix=API_PREFIX,
                    endpoints=_endpoints(app),
                    extra=_own_paths(API_PREFIX),
                )
                app.extensions[_KEY] = found
    assert isinstance(found, Document)
    return found


def _openapi() -> Any:
    body = document_of(current_app).body
    if request.script_root:
        body = {**body, "servers": [{"url": _mounted(body["servers"][0]["url"])}]}
    response = jsonify(body)
    response.headers["Cache-Control"] = "public, max-age=300"
    response.headers["Access-Control-Allow-Origin"] = "*"
    return response


def _mounted(origin: str) -> str:
    """The server URL of a service mounted under a path (SCRIPT_NAME): a client joins
    the operations' paths to it, so it holds the mount, as a path of *origin*.

    SCRIPT_NAME is what the server or a proxy hands over, decoded: one not starting with
    ``/`` (``@elsewhere``, ``.elsewhere``) would move the host the client sends its token
    to, and a ``?``, ``#``, space or non-ASCII character would end the path or make no
    URL at all, so the mount is quoted below the origin.
    """
    root = request.script_root
    path = root if root.startswith("/") else f"/{root}"
    return origin + quote(path, safe="/:@!$&'()*+,;=")


def _docs() -> Any:
    return render_template("api_docs.html", openapi_url=url_for("srcore_openapi.document"))


def init_app(app: Flask) -> None:
    """Serve *app*'s API description and its docs page under the API prefix."""
    from srcore.routing import API_PREFIX

    app.add_url_rule(
        API_PREFIX + OPENAPI_PATH, endpoint="srcore_openapi.document", view_func=_openapi
    )
    app.add_url_rule(API_PREFIX + DOCS_PATH, endpoint="srcore_openapi.docs", view_func=_docs)
