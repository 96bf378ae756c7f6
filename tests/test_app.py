"""The app factory: cookies, templates, static files, CSRF, errors, nav, health, metrics."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

import srcore
from srcore.config import ConfigError
from srcore.testing import create_user, log_in_client, write_config


def build(tmp_path: Path, extra: str = "", *, environment: str = "development", **kw: Any) -> Any:
    import sample_service

    path = write_config(
        tmp_path / "config.ini",
        service_id="sample",
        database_url=f"sqlite:///{tmp_path / 'sample.db'}",
        extra=extra,
    )
    text = path.read_text().replace("environment = development", f"environment = {environment}")
    path.write_text(text)
    return sample_service.create_app(config=path, **kw)


def test_state_lives_in_extensions(app: Any) -> None:
    st = app.extensions["srcore"]
    assert st is srcore.state(app)
    assert st.service_id == "sample"
    assert st.manifest.name == "Sample"
    assert st.section["greeting"] == "hello"


def test_two_apps_share_no_state(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a, b = build(tmp_path / "a"), build(tmp_path / "b")
    assert a.extensions["srcore"] is not b.extensions["srcore"]
    assert a.extensions["srcore"].db.engine is not b.extensions["srcore"].db.engine
    assert a.secret_key != b.secret_key
    assert a.jinja_env is not b.jinja_env


def test_missing_section_is_a_config_error(tmp_path: Path) -> None:
    import sample_service

    path = write_config(tmp_path / "c.ini", service_id="other", database_url="sqlite://")
    with pytest.raises(ConfigError) as info:
        sample_service.create_app(config=path)
    assert "[sample]" in str(info.value)


def test_session_cookie_is_per_service_and_hardened(app: Any, user: Any) -> None:
    client = log_in_client(app.test_client(), user)
    response = client.get("/private")
    assert response.status_code == 200
    cookie = client.get_cookie("sample_session")
    assert cookie is not None
    assert cookie.http_only
    assert cookie.same_site == "Lax"
    assert not cookie.secure  # development on plain http


def test_secure_cookie_outside_development(tmp_path: Path) -> None:
    app = build(tmp_path, environment="production")
    assert app.config["SESSION_COOKIE_SECURE"] is True
    assert app.config["SESSION_COOKIE_NAME"] == "sample_session"


def test_banner_only_outside_production(tmp_path: Path) -> None:
    (tmp_path / "p").mkdir()
    dev = build(tmp_path).test_client().get("/").get_data(as_text=True)
    prod = build(tmp_path / "p", environment="production").test_client().get("/")
    assert "Development environment" in dev
    assert "Development environment" not in prod.get_data(as_text=True)


def test_nav_lists_exactly_the_configured_services(tmp_path: Path) -> None:
    extra = (
        "\n[todo]\norigin = http://127.0.0.1:5001\ndatabase-url = sqlite://\n"
        "secret-key = " + "t" * 40 + "\n"
    )
    html = build(tmp_path, extra).test_client().get("/").get_data(as_text=True)
    nav = re.search(r"<nav.*?</nav>", html, re.S)
    assert nav is not None
    assert "http://127.0.0.1:5001/" in nav.group(0)
    assert "http://127.0.0.1:5999/" in nav.group(0)
    assert "meta" not in nav.group(0).lower()


def test_service_templates_come_first(app: Any) -> None:
    from flask import render_template

    with app.test_request_context("/"):
        assert "the service's own template" in render_template("hello.html")
        assert "<html" in render_template("hello.html")  # extends the shared layout


def test_shared_static_is_versioned_and_cached(app: Any, client: Any) -> None:
    from flask import url_for

    with app.test_request_context("/"):
        url = app.jinja_env.globals["static_url"]("srcore.css")
        assert url_for("srcore_static", version_tag="x", filename="a") != url
    with client.get(url) as response:
        assert response.status_code == 200
        assert "immutable" in response.headers["Cache-Control"]
        assert "max-age=31536000" in response.headers["Cache-Control"]
    with client.get(url.replace(app.extensions["srcore"].static_version, "old")) as stale:
        assert "immutable" not in stale.headers["Cache-Control"]
    assert client.get(url.replace("srcore.css", "../pyproject.toml")).status_code == 404


def test_dict_return_is_json(client: Any) -> None:
    response = client.get("/form")
    assert response.is_json
    assert set(response.get_json()) == {"csrf"}


def test_form_post_needs_csrf_but_api_does_not(app: Any, client: Any, make_token: Any) -> None:
    response = client.post("/form", data={"x": "1"})
    assert response.status_code == 400
    assert "security token" in response.get_data(as_text=True)
    token = make_token("sample/things:RW")
    api = client.post(
        "/api/things", json={"name": "x"}, headers={"Authorization": f"Bearer {token}"}
    )
    assert api.status_code == 201


def test_form_post_with_csrf_token_passes(app: Any, client: Any) -> None:
    token = client.get("/form").get_json()["csrf"]
    response = client.post("/form", data={"csrf_token": token})
    assert response.status_code == 200


@pytest.mark.parametrize(
    ("path", "code"),
    [("/nope", 404), ("/api/nope", 404), ("/api/things", 401)],
)
def test_errors_are_json_under_api_and_html_elsewhere(client: Any, path: str, code: int) -> None:
    response = client.get(path)
    assert response.status_code == code
    if path.startswith("/api/"):
        assert response.is_json
        assert response.get_json()["errors"][0]["reason"]
    else:
        assert response.mimetype == "text/html"
        assert "There is nothing here" in response.get_data(as_text=True)


def test_405_keeps_allow_header(client: Any) -> None:
    response = client.delete("/api/things")
    assert response.status_code == 405
    assert "GET" in response.headers["Allow"]
    assert response.is_json


def test_500_shows_no_traceback(app: Any, client: Any) -> None:
    app.config["TESTING"] = False
    app.config["PROPAGATE_EXCEPTIONS"] = False
    for path in ("/boom", "/api/boom"):
        response = client.get(path)
        assert response.status_code == 500
        body = response.get_data(as_text=True)
        assert "kaboom" not in body
        assert "Traceback" not in body


def test_too_large_body_is_413(app: Any, client: Any, make_token: Any) -> None:
    app.config["MAX_CONTENT_LENGTH"] = 1000
    token = make_token("sample/things:RW")
    response = client.post(
        "/api/things",
        data=b"{" + b" " * 5000 + b"}",
        content_type="application/json",
        headers={"Authorization": f"Bearer {token}"},
    )
    assert response.status_code == 413
    assert response.is_json


def test_healthz(app: Any, client: Any) -> None:
    assert client.get("/healthz").get_json()["status"] == "ok"


def test_healthz_reports_a_dead_database(tmp_path: Path) -> None:
    app = build(tmp_path)
    app.extensions["srcore"].db = type(app.extensions["srcore"].db)(
        f"sqlite:///{tmp_path}/missing-dir/x.db"
    )
    response = app.test_client().get("/healthz")
    assert response.status_code == 503
    assert response.get_json()["status"] == "unavailable"


def test_metrics_off_unless_configured(tmp_path: Path) -> None:
    (tmp_path / "on").mkdir()
    assert build(tmp_path).test_client().get("/metrics").status_code == 404
    app = build(tmp_path / "on", "metrics-path = /internal/metrics\n")
    client = app.test_client()
    client.get("/")
    body = client.get("/internal/metrics").get_data(as_text=True)
    assert (
        'srcore_http_requests_total{method="GET",route="/",service="sample",status="200"}' in body
    )


def test_request_id(client: Any) -> None:
    generated = client.get("/").headers["X-Request-Id"]
    assert re.fullmatch(r"[0-9a-f]{16}", generated)
    assert (
        client.get("/", headers={"X-Request-Id": "abcdef123456"}).headers["X-Request-Id"]
        == "abcdef123456"
    )
    assert (
        client.get("/", headers={"X-Request-Id": "bad id <x>"}).headers["X-Request-Id"]
        != "bad id <x>"
    )


def test_login_required_without_meta_says_so(client: Any) -> None:
    response = client.get("/private")
    assert response.status_code == 503
    assert "account service" in response.get_data(as_text=True)


def test_logged_in_user_sees_private_page(user_client: Any) -> None:
    assert user_client.get("/private").get_data(as_text=True) == "hello alice"


def test_suspended_user_is_refused(app: Any) -> None:
    from srcore.db import UserType

    bob = create_user(app, "bob", user_type=UserType.suspended, suspension_notice="Spam.")
    response = log_in_client(app.test_client(), bob).get("/private")
    assert response.status_code == 403
    assert "Spam." in response.get_data(as_text=True)


def test_logout_is_a_csrf_checked_post(user_client: Any) -> None:
    assert user_client.get("/logout").status_code == 405
    assert user_client.post("/logout").status_code == 400


def test_login_next_is_checked(user_client: Any) -> None:
    for target in ("//evil.example", "https://evil.example/", "/\\evil.example"):
        response = user_client.get("/login", query_string={"next": target})
        assert response.status_code == 302
        assert response.headers["Location"] == "/"
    assert user_client.get("/login?next=/private").headers["Location"] == "/private"


def test_csrf_can_be_switched_off_for_tests(app: Any, client: Any) -> None:
    app.config["WTF_CSRF_ENABLED"] = False
    assert client.post("/form", data={"x": "1"}).status_code == 200


def test_session_lifetime_comes_from_the_config(tmp_path: Path) -> None:
    from datetime import timedelta

    app = build(tmp_path, "session-lifetime = 2h\n")
    assert app.permanent_session_lifetime == timedelta(hours=2)


def test_api_requests_neither_read_nor_set_the_session_cookie(
    app: Any, user: Any, make_token: Any
) -> None:
    """Under /api/ only the bearer token counts: the session cookie is not read, not
    refreshed and not set, and a view writing to the session is a bug that says so."""
    from flask import session

    seen: dict[str, Any] = {}

    @app.get("/api/session-probe")
    def probe() -> Any:
        seen["session"] = dict(session)
        with pytest.raises(RuntimeError, match="bearer token"):
            session["planted"] = True
        return {}

    client = log_in_client(app.test_client(), user)
    page = client.get("/private")
    assert page.status_code == 200
    assert "Set-Cookie" in page.headers  # a page refreshes the permanent session
    bearer = {"Authorization": f"Bearer {make_token('sample/things:RW', user=user)}"}
    calls = [
        ("GET", "/api/whoami", 200),
        ("HEAD", "/api/things", 200),
        ("POST", "/api/things", 201),
        ("GET", "/api/session-probe", 200),
        ("GET", "/api/nowhere", 404),
    ]
    for method, path, status in calls:
        response = client.open(path, method=method, headers=bearer, json={"name": "x"})
        assert response.status_code == status, (method, path)
        assert "Set-Cookie" not in response.headers, (method, path)
        assert "cookie" not in response.headers.get("Vary", "").lower(), (method, path)
    assert seen["session"] == {}
    assert client.get("/private").status_code == 200  # the page session is intact


@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_a_sent_file_is_closed_when_the_test_client_answers(client: Any, method: str) -> None:
    # A WSGI server closes a response once it is written. A test client that left a sent
    # file open until the garbage collector came raised a ResourceWarning in whichever test
    # was running then (an error under ``filterwarnings = error``), far from its cause.
    import gc
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        response = client.open("/favicon.ico", method=method)
        assert response.status_code == 200
        del response
        gc.collect()
    assert [w for w in caught if issubclass(w.category, ResourceWarning)] == []


def test_a_test_client_can_still_read_a_stream_piece_by_piece(client: Any) -> None:
    with client.get("/favicon.ico", buffered=False) as response:
        assert next(iter(response.response)).startswith(b"<svg")
