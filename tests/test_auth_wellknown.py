"""/.well-known/srcore-service: the manifest as JSON, for meta's consent screen."""

from __future__ import annotations

from typing import Any

from srcore.auth.wellknown import manifest_document
from srcore.manifest import load_manifest


def test_well_known_serves_the_manifest(app: Any) -> None:
    response = app.test_client().get("/.well-known/srcore-service")
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json"
    assert "max-age" in response.headers["Cache-Control"]
    assert response.get_json() == {
        "id": "sample",
        "name": "Sample",
        "description": "A tiny service that srcore's own tests build apps from.",
        "scopes": [{"name": "things", "description": "The things you own"}],
        "events": [
            {"name": "thing:created", "scope": "things", "description": "A thing was created"}
        ],
    }


def test_document_leaves_config_keys_out() -> None:
    document = manifest_document(load_manifest("sample_service"))
    assert "config" not in document
    assert set(document) == {"id", "name", "description", "scopes", "events"}


def test_well_known_is_get_only(app: Any) -> None:
    assert app.test_client().post("/.well-known/srcore-service").status_code in (400, 405)
