"""Every response of every service carries the security headers; HSTS only in production
over https. The policy itself is a plain function of the config."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from srcore.testing import write_config


def build(tmp_path: Path, *, environment: str = "development", origin: str = "") -> Any:
    import sample_service

    path = write_config(
        tmp_path / "config.ini",
        service_id="sample",
        database_url=f"sqlite:///{tmp_path / 'sample.db'}",
        **({"origin": origin} if origin else {}),
    )
    text = path.read_text().replace("environment = development", f"environment = {environment}")
    path.write_text(text)
    return sample_service.create_app(config=path)


def _csp(response: Any) -> dict[str, str]:
    header = response.headers["Content-Security-Policy"]
    directives = (part.strip().split(None, 1) for part in header.split(";") if part.strip())
    return {d[0]: (d[1] if len(d) > 1 else "") for d in directives}


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/"),
        ("GET", "/form"),
        ("GET", "/no-such-page"),
        ("GET", "/boom"),
        ("GET", "/api/things"),
        ("GET", "/api/boom"),
        ("POST", "/form"),
        ("GET", "/healthz"),
        ("GET", "/static/srcore/x/srcore.css"),
    ],
)
def test_every_response_carries_the_headers(tmp_path: Path, method: str, path: str) -> None:
    app = build(tmp_path)
    app.config["WTF_CSRF_ENABLED"] = True
    app.config["PROPAGATE_EXCEPTIONS"] = False
    response = app.test_client().open(path, method=method)
    response.close()
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Referrer-Policy"] == "strict-origin-when-cross-origin"
    csp = _csp(response)
    assert csp["frame-ancestors"] == "'none'"
    assert csp["default-src"] == "'self'"
    assert csp["object-src"] == "'none'"
    assert csp["base-uri"] == "'none'"
    assert "'unsafe-inline'" not in response.headers["Content-Security-Policy"]
    # Development over http: a browser must not be told to insist on https.
    assert "Strict-Transport-Security" not in response.headers


def test_hsts_in_production_over_https(tmp_path: Path) -> None:
    app = build(tmp_path, environment="production", origin="https://sample.example.org")
    response = app.test_client().get("/", base_url="https://sample.example.org")
    hsts = response.headers["Strict-Transport-Security"]
    assert hsts.startswith("max-age=") and int(hsts.split("=")[1].split(";")[0]) >= 31536000


def test_no_hsts_in_production_over_plain_http(tmp_path: Path) -> None:
    app = build(tmp_path, environment="production", origin="http://sample.example.org")
    response = app.test_client().get("/", base_url="http://sample.example.org")
    assert "Strict-Transport-Security" not in response.headers


def test_a_view_can_set_its_own_policy(tmp_path: Path) -> None:
    app = build(tmp_path)

    @app.get("/own")
    def own() -> Any:
        return "x", 200, {"X-Frame-Options": "SAMEORIGIN"}

    response = app.test_client().get("/own")
    assert response.headers["X-Frame-Options"] == "SAMEORIGIN"
    assert "Content-Security-Policy" in response.headers


def test_policy_is_a_plain_function() -> None:
    from srcore.headers import security_headers

    dev = security_headers(production=False, origin="https://a.example.org")
    prod = security_headers(production=True, origin="https://a.example.org")
    plain = security_headers(production=True, origin="http://a.example.org")
    assert "Strict-Transport-Security" not in dev
    assert "Strict-Transport-Security" in prod
    assert "Strict-Transport-Security" not in plain
    assert all("frame-ancestors 'none'" in h["Content-Security-Policy"] for h in (dev, prod))


@pytest.mark.parametrize("service", ["meta", "todo", "paste"])
def test_every_page_of_every_service_carries_them(tmp_path: Path, service: str) -> None:
    """Every GET route without variables, of each example service, logged out."""
    import importlib

    from srcore.migrate import core_metadata

    package = importlib.import_module(service)
    path = write_config(
        tmp_path / "config.ini",
        service_id=service,
        database_url=f"sqlite:///{tmp_path / (service + '.db')}",
    )
    app = package.create_app(config=path)
    st = app.extensions["srcore"]
    core_metadata().create_all(st.db.engine)
    st.metadata.create_all(st.db.engine)
    client = app.test_client()
    rules = [
        r.rule
        for r in app.url_map.iter_rules()
        if "GET" in (r.methods or ()) and not r.arguments and not r.rule.startswith("/static")
    ]
    assert len(rules) > 3
    for rule in rules:
        response = client.get(rule)
        response.close()
        assert response.status_code != 500, rule
        assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"], rule
        assert response.headers["X-Frame-Options"] == "DENY", rule
        assert response.headers["X-Content-Type-Options"] == "nosniff", rule
    st.db.dispose()


def test_a_response_that_read_the_session_is_private(app: Any, user: Any, make_token: Any) -> None:
    """Kept out of shared caches, whether or not they honour Vary: Cookie."""
    from srcore.testing import log_in_client

    client = log_in_client(app.test_client(), user)
    page = client.get("/private")
    assert page.status_code == 200
    # A logged-in user's page is kept by no cache, the browser's own neither
    # (test_stale_forms.py).
    assert page.headers["Cache-Control"] == "no-store"
    assert "Cookie" in page.headers["Vary"]
    form = app.test_client().get("/form")  # anonymous, but its CSRF token is the session's
    assert form.headers["Cache-Control"] == "private"
    # What does not depend on the session says nothing; a view's own value is kept.
    api = {"Authorization": f"Bearer {make_token('sample/things:RO', user=user)}"}
    things = app.test_client().get("/api/things", headers=api)
    assert things.status_code == 200
    assert things.headers.get("Cache-Control") is None, things.headers
    assert client.get("/healthz").headers["Cache-Control"] == "no-store"
    with client.get("/static/srcore/x/srcore.css") as static:
        assert "private" not in static.headers.get("Cache-Control", "")
