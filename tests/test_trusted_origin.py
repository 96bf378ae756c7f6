"""Absolute URLs srcore builds use the service's configured ``origin``: never the Host
header (or X-Forwarded-Host) of the request, which anyone can forge."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flask import url_for

from srcore.testing import write_config

ORIGIN = "https://sample.example.org"


def build(tmp_path: Path, extra: str = "") -> Any:
    import sample_service

    path = write_config(
        tmp_path / "config.ini",
        service_id="sample",
        database_url=f"sqlite:///{tmp_path / 'sample.db'}",
        origin=ORIGIN,
        extra=extra,
    )
    app = sample_service.create_app(config=path)

    @app.get("/external")
    def external() -> Any:
        return {"url": url_for("pages.index", _external=True)}

    @app.get("/dir/")
    def directory() -> str:
        return "a directory"

    return app


def test_external_urls_in_a_request_use_the_origin(tmp_path: Path) -> None:
    app = build(tmp_path)
    client = app.test_client()
    for headers in ({"Host": "evil.invalid"}, {"Host": "evil.invalid:8443"}, {}):
        assert client.get("/external", headers=headers).get_json()["url"] == ORIGIN + "/"


def test_forwarded_host_behind_a_trusted_proxy_does_not_change_links(tmp_path: Path) -> None:
    app = build(tmp_path, "proxy-fix-trusted-hops = 1\n")
    response = app.test_client().get(
        "/external",
        headers={"X-Forwarded-Host": "evil.invalid", "X-Forwarded-Proto": "http"},
    )
    assert response.get_json()["url"] == ORIGIN + "/"


def test_slash_redirects_use_the_origin(tmp_path: Path) -> None:
    app = build(tmp_path)
    response = app.test_client().get("/dir", headers={"Host": "evil.invalid"})
    assert response.status_code == 308
    assert "evil.invalid" not in response.headers["Location"]
    assert response.headers["Location"] in ("/dir/", ORIGIN + "/dir/")


def test_external_urls_outside_a_request_use_the_origin(tmp_path: Path) -> None:
    """A worker or a command builds links with only an app context."""
    app = build(tmp_path)
    with app.app_context():
        assert url_for("pages.index") == ORIGIN + "/"
        assert url_for("pages.index", _external=False) == "/"
