"""Request hygiene of every service, through the test client.

Safe methods change nothing (HEAD is GET), odd characters and out-of-range ids get a 4xx
with the standard error body, and every route of meta, todo and paste uses the bounded
``id`` converter for its numeric path parts. The server-side limits (short bodies, broken
chunks, oversized request lines and headers) are in ``test_http_server.py``.
"""

from __future__ import annotations

import base64
import json
import re
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import delete, func, select

from srcore.testing import create_user, log_in_client

SERVICES = ["meta", "todo", "paste"]
_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


@pytest.fixture(scope="module", params=SERVICES)
def srcore_service(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture
def app(app: Any, srcore_service: str) -> Any:
    if srcore_service == "meta":
        from argon2 import PasswordHasher
        from meta.logic import Passwords

        app.extensions["meta"].passwords = Passwords(
            PasswordHasher(time_cost=1, memory_cost=64, parallelism=1)
        )
    return app


def make_user(app: Any, username: str = "alice", **fields: Any) -> Any:
    """A user row of any of the three services (meta's carry a password hash)."""
    if app.extensions["srcore"].service_id == "meta":
        fields.setdefault("password_hash", "x")
        fields.setdefault("email_confirmed_at", None)
    return create_user(app, username, **fields)


def bearer(app: Any, user: Any, scope: str, make_token: Any) -> dict[str, str]:
    """Authorization headers with a token *app* accepts (meta signs its own)."""
    if app.extensions["srcore"].service_id != "meta":
        return {"Authorization": f"Bearer {make_token(scope, user=user)}"}
    from meta.oauth.pats import create_token

    from srcore.db import session

    with app.app_context():
        row_user = session.merge(user)
        _row, token = create_token(row_user, name="test", scope=scope, days=1)
        session.commit()
    return {"Authorization": f"Bearer {token}"}


def form_client(app: Any) -> Any:
    """A client that can open the service's forms: anonymous at meta, logged in elsewhere."""
    client = app.test_client()
    if app.extensions["srcore"].service_id == "meta":
        return client
    return log_in_client(client, make_user(app, "formuser"))


def count(app: Any, model: Any) -> int:
    with app.extensions["srcore"].db.transaction() as session:
        return session.scalar(select(func.count()).select_from(model)) or 0


def for_service(service: str) -> pytest.MarkDecorator:
    """Run a test on *service* alone (its route exists nowhere else)."""
    return pytest.mark.parametrize("srcore_service", [service])


def csrf_token(client: Any, path: str) -> str:
    response = client.get(path)
    assert response.status_code == 200, (path, response.status_code)
    match = _CSRF.search(response.get_data(as_text=True))
    assert match, path
    return match.group(1)


# -- HEAD is GET; safe methods change nothing ------------------------------------------------


@for_service("meta")
def test_head_register_makes_no_account(app: Any, client: Any, srcore_service: str) -> None:
    from meta.models import User

    query = {"username": "mallory", "email": "mallory@example.org", "password": "x" * 20}
    response = client.head("/register", query_string=query)
    assert response.status_code == 200
    assert count(app, User) == 0


@for_service("meta")
def test_head_forgot_sends_nothing(app: Any, client: Any, srcore_service: str) -> None:
    from meta.models import EmailToken as Token

    make_user(app, "alice")
    response = client.head("/forgot", query_string={"email": "alice@example.org"})
    assert response.status_code == 200
    assert count(app, Token) == 0


@for_service("todo")
def test_head_does_not_change_tracker(app: Any, srcore_service: str) -> None:
    from todo.models import Tracker, Visibility

    user = make_user(app, "alice")
    with app.extensions["srcore"].db.transaction() as session:
        session.add(Tracker(owner_id=user.id, name="bugs", visibility=Visibility.private))
    client = log_in_client(app.test_client(), user)
    response = client.head("/~alice/bugs/settings", query_string={"visibility": "public"})
    assert response.status_code == 200
    with app.extensions["srcore"].db.transaction() as session:
        tracker = session.scalar(select(Tracker))
        assert tracker is not None and tracker.visibility == Visibility.private


@for_service("paste")
def test_head_new_paste_writes_nothing(app: Any, srcore_service: str) -> None:
    from paste.models import Paste

    client = log_in_client(app.test_client(), make_user(app, "alice"))
    response = client.head("/new", query_string={"text": "hello", "visibility": "public"})
    assert response.status_code == 200
    assert count(app, Paste) == 0


@for_service("todo")
def test_view_writing_on_get_fails_loudly(app: Any, srcore_service: str) -> None:
    """The request session refuses writes on GET/HEAD/OPTIONS unless the view says why."""
    from todo.models import Tracker

    import srcore
    from srcore.db import SafeMethodWrite, session

    user = make_user(app, "alice")

    def sneaky() -> str:
        session.add(Tracker(owner_id=user.id, name="sneaky"))
        session.commit()
        return "ok"

    def bulk() -> str:
        session.execute(delete(Tracker))
        session.commit()
        return "ok"

    def posted() -> str:
        session.execute(delete(Tracker).where(Tracker.name == "nothing"))
        session.commit()
        return "ok"

    @srcore.writes_on_safe_method("a test of the escape hatch")
    def allowed() -> str:
        session.add(Tracker(owner_id=user.id, name="allowed"))
        session.commit()
        return "ok"

    app.add_url_rule("/test/sneaky", view_func=sneaky)
    app.add_url_rule("/test/allowed", view_func=allowed)
    app.add_url_rule("/test/bulk", view_func=bulk)
    app.add_url_rule("/api/test/posted", view_func=posted, methods=["POST"])
    client = app.test_client()
    with pytest.raises(SafeMethodWrite):
        client.get("/test/sneaky")
    with pytest.raises(SafeMethodWrite):
        client.get("/test/bulk")
    assert client.post("/api/test/posted").status_code == 200
    with pytest.raises(SafeMethodWrite):
        client.head("/test/sneaky")
    assert client.get("/test/allowed").status_code == 200
    assert count(app, Tracker) == 1


# -- lone surrogates -------------------------------------------------------------------------


FORMS = {
    "meta": ["/register", "/forgot", "/login"],
    "todo": ["/create"],
    "paste": ["/new"],
}


def test_surrogate_in_json_body_to_a_form(app: Any, srcore_service: str) -> None:
    app.config["WTF_CSRF_ENABLED"] = False
    body = b'{"username": "\\ud800", "email": "\\ud800", "name": "\\ud800", "text": "\\udfff",'
    body += b' "title": "\\ud800", "login": "\\ud800", "password": "\\ud800"}'
    client = form_client(app)
    for path in FORMS[srcore_service]:
        response = client.post(path, data=body, content_type="application/json")
        assert 400 <= response.status_code < 500, (path, response.status_code)
        response.get_data().decode("utf-8")


def test_surrogate_in_query_and_form(app: Any, srcore_service: str) -> None:
    app.config["WTF_CSRF_ENABLED"] = False
    client = form_client(app)
    for path in FORMS[srcore_service]:
        response = client.get(path + "?next=%ED%A0%80&page=%ED%A0%80")
        assert response.status_code < 500, path
        response = client.post(
            path,
            data=b"username=%ED%A0%80&email=%ED%A0%80&text=%ED%A0%80",
            content_type="application/x-www-form-urlencoded",
        )
        assert response.status_code < 500, path


def test_surrogate_in_json_api(app: Any, srcore_service: str, make_token: Any) -> None:
    user = make_user(app, "alice")
    paths = {
        "meta": ("/api/tokens", "meta/tokens:RW"),
        "todo": ("/api/trackers", "todo/trackers:RW"),
        "paste": ("/api/pastes", "paste/pastes:RW"),
    }
    path, scope = paths[srcore_service]
    headers = bearer(app, user, scope, make_token)
    body = b'{"name": "\\ud800", "text": "\\ud800", "scopes": ["\\ud800"], "\\ud800": 1}'
    response = app.test_client().post(
        path, data=body, content_type="application/json", headers=headers
    )
    assert response.status_code == 400, response.get_data()
    assert response.is_json and response.get_json()["errors"]


# -- numeric ids -----------------------------------------------------------------------------


@pytest.mark.parametrize("ident", ["2147483648", "9223372036854775808", "0", "1" * 30])
@for_service("meta")
def test_out_of_range_ids_are_404(
    app: Any, srcore_service: str, make_token: Any, ident: str
) -> None:
    from srcore.db import UserType

    admin = make_user(app, "root", user_type=UserType.admin)
    client = log_in_client(app.test_client(), admin)
    app.config["WTF_CSRF_ENABLED"] = False
    auth = bearer(app, admin, "meta/tokens:RW meta/profile:RO", make_token)
    for method, path, headers in [
        ("DELETE", f"/api/tokens/{ident}", auth),
        ("GET", f"/api/users/{ident}", auth),
        ("POST", f"/security/tokens/{ident}/revoke", {}),
        ("GET", f"/admin/users/{ident}", {}),
        ("POST", f"/admin/users/{ident}/suspend", {}),
        ("POST", f"/admin/users/{ident}/unsuspend", {}),
    ]:
        response = client.open(path, method=method, headers=headers)
        assert response.status_code == 404, (method, path, response.status_code)
        if path.startswith("/api/"):
            assert response.get_json()["errors"]


def _service_app(name: str, tmp_path: Any) -> Flask:
    import importlib

    from srcore.testing import write_config

    config = write_config(
        tmp_path / f"{name}.ini", service_id=name, database_url=f"sqlite:///{tmp_path}/x.db"
    )
    app: Flask = importlib.import_module(name).create_app(config=config)
    return app


@pytest.mark.parametrize("name", SERVICES)
def test_no_route_uses_a_plain_int(name: str, tmp_path: Any) -> None:
    from werkzeug.routing import IntegerConverter

    from srcore.routing import IdConverter

    app = _service_app(name, tmp_path)
    assert app.url_map.converters["id"] is IdConverter
    for rule in app.url_map.iter_rules():
        for converter in (rule._converters or {}).values():
            bounded = isinstance(converter, IdConverter)
            assert bounded or not isinstance(converter, IntegerConverter), rule.rule


# -- NUL and control characters --------------------------------------------------------------


@for_service("meta")
def test_nul_in_path_ids(app: Any, srcore_service: str) -> None:
    app.config["WTF_CSRF_ENABLED"] = False
    client = log_in_client(app.test_client(), make_user(app, "alice"))
    for path in ["/security/applications/%00/revoke", "/clients/%00/delete"]:
        response = client.post(path)
        assert response.status_code == 400, (path, response.status_code)
    assert client.get("/confirm/%00").status_code == 400
    assert client.get("/reset/a%01b").status_code == 400


def test_nul_in_query_and_form(app: Any, srcore_service: str) -> None:
    app.config["WTF_CSRF_ENABLED"] = False
    client = form_client(app)
    for path in FORMS[srcore_service]:
        assert client.get(path + "?next=%00").status_code == 400, path
        response = client.post(path, data={"email": "a\x00@example.org", "text": "x\x00"})
        assert response.status_code == 400, path
        assert client.post(path, data={"a\x00": "1"}).status_code == 400, path
    response = client.get("/api/x?q=%00")
    assert response.status_code == 400 and response.get_json()["errors"]


@for_service("paste")
def test_newlines_in_form_text_are_fine(app: Any, srcore_service: str) -> None:
    app.config["WTF_CSRF_ENABLED"] = False
    client = log_in_client(app.test_client(), make_user(app, "alice"))
    response = client.post("/new", data={"text": "a\r\n\tb", "visibility": "public"})
    assert response.status_code == 302


# -- broken Authorization headers ------------------------------------------------------------


def test_non_utf8_basic_and_garbage_bearer(app: Any, client: Any, srcore_service: str) -> None:
    basic = "Basic " + base64.b64encode(b"\xff\xfe:\xc3\x28").decode()
    for value in [basic, "Basic %%%", "Bearer \x7f\x01", "Bearer " + "A" * 5000, "Bearer"]:
        for path in ["/", "/api/nothing", "/healthz"]:
            response = client.get(path, headers={"Authorization": value})
            assert response.status_code < 500, (path, value[:20], response.status_code)


def test_error_bodies_encode(app: Any, client: Any) -> None:
    response = client.get("/api/nothing")
    assert response.status_code == 404
    assert json.loads(response.get_data())["errors"]


# -- the pieces on their own -----------------------------------------------------------------


def test_the_escape_hatch_needs_a_reason() -> None:
    from srcore.db import writes_on_safe_method

    with pytest.raises(ValueError, match="say why"):
        writes_on_safe_method("")


def test_gunicorn_limits_sit_above_srcores() -> None:
    from srcore import hygiene
    from srcore.serving import GUNICORN_LIMITS, gunicorn_options

    assert GUNICORN_LIMITS["limit-request-line"] > hygiene.MAX_TARGET_LENGTH + len(
        "DELETE  HTTP/1.1"
    )
    assert GUNICORN_LIMITS["limit-request-fields"] > hygiene.MAX_HEADER_COUNT
    assert GUNICORN_LIMITS["limit-request-field_size"] > hygiene.MAX_HEADER_BYTES
    options = gunicorn_options()
    assert options[options.index("--limit-request-line") + 1] == "8190"


def test_id_converter_bounds() -> None:
    from werkzeug.exceptions import NotFound
    from werkzeug.routing import Map, Rule

    from srcore.routing import IdConverter

    url_map = Map(
        [Rule("/a/<id:x>", endpoint="a"), Rule("/b/<id(max=9223372036854775807):x>", endpoint="b")],
        converters={"id": IdConverter},
    )
    adapter = url_map.bind("example.invalid")
    assert adapter.match("/a/2147483647") == ("a", {"x": 2**31 - 1})
    assert adapter.match("/b/9223372036854775807") == ("b", {"x": 2**63 - 1})
    for path in ["/a/2147483648", "/a/0", "/a/01", "/a/-1", "/a/+1", "/b/9223372036854775808"]:
        with pytest.raises(NotFound):
            adapter.match(path)
    assert adapter.build("a", {"x": 7}) == "/a/7"
    with pytest.raises(ValueError, match="max"):
        IdConverter(url_map, max=2**63)


def test_an_id_out_of_range_is_404_for_every_method() -> None:
    """An id past the column's range names no row, whatever the method: not a 405 that
    offers GET, which would itself answer 404."""
    from werkzeug.exceptions import MethodNotAllowed, NotFound
    from werkzeug.routing import Map, Rule

    from srcore.routing import IdConverter

    url_map = Map(
        [
            Rule("/t/<id:x>", endpoint="get", methods=["GET"]),
            Rule("/t/<id:x>", endpoint="patch", methods=["PATCH"]),
            Rule("/u/<id:x>", endpoint="u", methods=["GET"]),
        ],
        converters={"id": IdConverter},
    )
    adapter = url_map.bind("example.invalid")
    for method in ["GET", "PATCH"]:
        with pytest.raises(NotFound) as caught:
            adapter.match("/t/2147483648", method=method)
        assert not isinstance(caught.value, MethodNotAllowed), method
    with pytest.raises(MethodNotAllowed):
        adapter.match("/u/1", method="PATCH")


def test_json_with_a_lone_surrogate_is_invalid() -> None:
    from srcore.validation import Invalid, parse_json_object

    for body in [
        b'{"a": "\\ud800"}',
        b'{"\\udfff": 1}',
        b'{"a": ["x", {"b": "y\\ud83d"}]}',
        b'{"a": "\\ude00\\ud83d"}',
    ]:
        with pytest.raises(Invalid, match="surrogate"):
            parse_json_object(body)
    assert parse_json_object(b'{"a": "\\ud83d\\ude00", "b": "\\\\ud800"}') == {
        "a": "\U0001f600",
        "b": "\\ud800",
    }
