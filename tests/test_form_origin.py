"""A form another site's page sent is refused, though its CSRF token is valid, in every
environment.

Over plain http (development) nothing asked where a form came from: Flask-WTF's Referer
check is for https only, so a form with a valid token and ``Origin: http://evil.invalid``
was taken. ``make demo`` serves meta and todo on two ports of 127.0.0.1, two origins: no
page of one posts to the other, and each still takes its own forms.
"""

from __future__ import annotations

import http.client
import re
from pathlib import Path
from typing import Any

import pytest

from srcore.testing import free_port, run_service, write_config

OWN = "http://127.0.0.1:5999"  # write_config's origin
REFUSED = "sent from a page of another site"


def build(tmp_path: Path, *, origin: str = OWN, production: bool = False) -> tuple[Any, list[str]]:
    """The sample service with a ``/probe-form`` that records each time it runs."""
    import sample_service

    path = write_config(
        tmp_path / "config.ini",
        service_id="sample",
        database_url=f"sqlite:///{tmp_path / 'sample.db'}",
        origin=origin,
    )
    if production:
        path.write_text(path.read_text().replace("development", "production"))
    app = sample_service.create_app(config=path)
    sent: list[str] = []

    @app.post("/probe-form")
    def probe_form() -> str:
        sent.append("ran")
        return "taken"

    return app, sent


def token(client: Any, host: str = "localhost") -> str:
    return str(client.get("/form", base_url=f"http://{host}").get_json()["csrf"])


@pytest.mark.parametrize(
    "origin",
    [
        "http://evil.invalid",
        "http://127.0.0.1:5000",  # another service of the host (make demo's meta)
        "https://127.0.0.1:5999",  # another scheme
        "http://127.0.0.1:5999.evil.invalid",
        "http://[::1",  # not even an origin
    ],
)
def test_a_form_from_another_origin_is_refused(tmp_path: Path, origin: str) -> None:
    app, sent = build(tmp_path)
    client = app.test_client()
    data = {"csrf_token": token(client)}
    response = client.post("/probe-form", data=data, headers={"Origin": origin})
    assert response.status_code == 400
    assert REFUSED in response.get_data(as_text=True)
    assert sent == []


@pytest.mark.parametrize(
    ("origin", "host"),
    [
        (None, "localhost"),  # no browser: left to the token
        ("null", "localhost"),  # a browser keeping it private
        (OWN, "localhost"),  # the configured origin, whatever Host the request names
        ("HTTP://127.0.0.1:5999", "localhost"),
        ("http://localhost", "localhost"),  # the origin the request was sent to
        ("http://localhost:80", "localhost"),
        ("http://192.0.2.1:8000", "192.0.2.1:8000"),
    ],
)
def test_a_form_from_its_own_origin_is_taken(tmp_path: Path, origin: str | None, host: str) -> None:
    app, sent = build(tmp_path)
    client = app.test_client()
    data = {"csrf_token": token(client, host)}
    headers = {"Origin": origin} if origin else {}
    response = client.post("/probe-form", data=data, headers=headers, base_url=f"http://{host}")
    assert (response.status_code, response.data, sent) == (200, b"taken", ["ran"])


def test_without_a_valid_token_the_token_is_what_is_said(tmp_path: Path) -> None:
    app, sent = build(tmp_path)
    response = app.test_client().post(
        "/probe-form", data={"csrf_token": "x"}, headers={"Origin": "http://evil.invalid"}
    )
    assert response.status_code == 400
    assert "another site" not in response.get_data(as_text=True)
    assert sent == []


def _exchange(port: int, method: str, path: str, headers: dict[str, str], body: str = "") -> Any:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request(method, path, body=body.encode() or None, headers=headers)
        response = connection.getresponse()
        return response.status, response.getheader("Set-Cookie"), response.read().decode()
    finally:
        connection.close()


def test_under_gunicorn_meta_refuses_its_login_form_from_the_demos_other_origin(
    tmp_path: Path,
) -> None:
    """meta on one port, its login form posted with a valid token from todo's origin (the
    demo's other port): refused; from its own page: taken as a login attempt."""
    from srcore.app import migration_target
    from srcore.migrate import upgrade_all

    port = free_port()
    config = write_config(
        tmp_path / "config.ini",
        service_id="meta",
        database_url=f"sqlite:///{tmp_path / 'meta.db'}",
        origin=f"http://127.0.0.1:{port}",
    )
    upgrade_all(migration_target("meta", config))
    answers = {}
    with run_service("meta", config, port=port, workers=1, timeout=60):
        status, cookie, page = _exchange(port, "GET", "/login", {})
        assert status == 200 and cookie is not None
        found = re.search(r'name="csrf_token" value="([^"]+)"', page)
        assert found is not None
        form = f"csrf_token={found[1]}&login=nobody&password=wrong-password"
        for name, origin in (("demo's todo", f"http://127.0.0.1:{port + 1}"), ("own", None)):
            headers = {
                "Cookie": cookie.split(";", 1)[0],
                "Content-Type": "application/x-www-form-urlencoded",
                "Origin": origin or f"http://127.0.0.1:{port}",
            }
            status, _, body = _exchange(port, "POST", "/login", headers, form)
            said = [m for m in (REFUSED, "Incorrect username or password") if m in body]
            answers[name] = (status, said)
    assert answers == {
        "demo's todo": (400, [REFUSED]),
        "own": (400, ["Incorrect username or password"]),  # the login was tried
    }


def build_https(tmp_path: Path) -> tuple[Any, list[str]]:
    """The probe form on a service in production at an https origin, where Flask-WTF also
    asks a form for a Referer of this host."""
    return build(tmp_path, origin="https://sample.example.org", production=True)


@pytest.mark.parametrize(
    ("headers", "taken"),
    [
        # A browser, or an extension of it, that leaves the Referer out still names the
        # page's origin on a POST: the form is its own.
        ({"Origin": "https://sample.example.org"}, True),
        ({"Referer": "https://sample.example.org/form"}, True),
        ({"Origin": "https://sample.example.org", "Referer": "https://sample.example.org/"}, True),
        ({}, False),
        ({"Origin": "null"}, False),
        ({"Origin": "https://evil.invalid"}, False),
        ({"Referer": "https://evil.invalid/form"}, False),
    ],
)
def test_over_https_a_form_names_its_page_by_origin_or_referer(
    tmp_path: Path, headers: dict[str, str], taken: bool
) -> None:
    """Over https a form whose token is good but whose Referer is missing was answered with
    the "your session changed" page, whose Send again failed the same way for good: a
    browser that keeps the Referer private could send no form. Its Origin is enough; a
    form that names no page at all is told so."""
    app, sent = build_https(tmp_path)
    client = app.test_client()
    base = "https://sample.example.org"
    csrf = client.get("/form", base_url=base).get_json()["csrf"]
    response = client.post("/probe-form", data={"csrf_token": csrf}, headers=headers, base_url=base)
    text = response.get_data(as_text=True)
    if taken:
        assert (response.status_code, text, sent) == (200, "taken", ["ran"])
        return
    assert response.status_code == 400 and sent == []
    assert "session changed" not in text
    if "evil" in str(headers):
        assert REFUSED in text
    else:
        assert "which page it came from" in text
