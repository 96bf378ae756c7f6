"""``/.well-known/srcore-service``: a service's manifest, for whoever cannot import it.

meta shows the scopes of every configured service on its consent screen; for a service
whose package is not installed beside meta, it reads them here. The JSON is built from
the same ``service.yaml`` the app was built from, so nothing is declared twice.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from flask import Flask

    from srcore.manifest import Manifest

__all__ = ["WELL_KNOWN_PATH", "init_app", "manifest_document"]

WELL_KNOWN_PATH = "/.well-known/srcore-service"


def manifest_document(manifest: Manifest) -> dict[str, Any]:
    """The public part of *manifest*: id, name, description, scopes and events."""
    return {
        "id": manifest.id,
        "name": manifest.name,
        "description": manifest.description,
        "scopes": [{"name": s.name, "description": s.description} for s in manifest.scopes],
        "events": [
            {"name": e.name, "scope": e.scope, "description": e.description}
            for e in manifest.events
        ],
    }


def init_app(app: Flask) -> None:
    """Serve *app*'s manifest at :data:`WELL_KNOWN_PATH`."""
    from flask import jsonify

    document = manifest_document(app.extensions["srcore"].manifest)

    def well_known() -> Any:
        response = jsonify(document)
        response.headers["Cache-Control"] = "public, max-age=300"
        response.headers["Access-Control-Allow-Origin"] = "*"
        return response

    app.add_url_rule(WELL_KNOWN_PATH, endpoint="srcore_well_known", view_func=well_known)
