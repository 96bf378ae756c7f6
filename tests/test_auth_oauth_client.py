"""Logging in through meta: the redirect, the callback, first sight of a user, meta down."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
from fake_meta import META, FakeMeta, build_service

from srcore.auth.oauth_client import (
    MetaClient,
    MetaUnavailable,
    OAuthLogin,
    default_login_backend,
    pkce_challenge,
)
from srcore.auth.revocation import state_of
from srcore.auth.web import NoAccountService


@pytest.fixture
def fake() -> FakeMeta:
    meta = FakeMeta()
    meta.add_user(42, "alice", bio="hello")
    meta.logged_in = 42
    return meta


@pytest.fixture
def service(tmp_path: Path, fake: FakeMeta) -> Iterator[Any]:
    app = build_service(tmp_path, fake)
    yield app
    app.extensions["srcore"].db.dispose()


def start_login(client: Any, path: str = "/private") -> dict[str, str]:
    response = client.get(path)
    assert response.status_code == 302
    location = response.headers["Location"]
    assert location.startswith(f"{META}/oauth/authorize?")
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}


def at_meta(fake: FakeMeta, params: dict[str, str]) -> str:
    """What meta answers the browser: the callback URL (path and query) to follow."""
    answer = fake.app.test_client().get("/oauth/authorize", query_string=params)
    assert answer.status_code == 302
    url = urlsplit(answer.headers["Location"])
    assert f"{url.scheme}://{url.netloc}" == "http://sample.test"
    return f"{url.path}?{url.query}"


def user_row(app: Any, user_id: int) -> Any:
    st = app.extensions["srcore"]
    with st.db.transaction() as db:
        row = db.get(st.user_model, user_id)
        if row is not None:
            db.expunge(row)
        return row


def test_login_redirect_carries_state_and_pkce(service: Any, fake: FakeMeta) -> None:
    params = start_login(service.test_client())
    assert params["response_type"] == "code"
    assert params["client_id"] == "sample"
    assert params["redirect_uri"] == "http://sample.test/oauth/callback"
    assert params["scope"] == "meta/profile:RO"
    assert params["code_challenge_method"] == "S256"
    assert len(params["state"]) >= 32
    assert len(params["code_challenge"]) == 43


def test_full_login_upserts_the_user_and_returns_to_next(service: Any, fake: FakeMeta) -> None:
    client = service.test_client()
    callback = at_meta(fake, start_login(client, "/private?x=1"))
    response = client.get(callback)
    assert response.status_code == 302
    assert response.headers["Location"] == "/private?x=1"
    assert client.get("/private").get_data(as_text=True) == "hello alice"
    row = user_row(service, 42)
    assert (row.username, row.email, row.bio, row.user_type.value) == (
        "alice",
        "alice@example.org",
        "hello",
        "active",
    )
    with client.session_transaction() as session:
        assert session["_uid"] == 42
        assert abs(session["_at"] - time.time()) < 5
        assert "_oauth" not in session


def test_second_login_updates_the_row(service: Any, fake: FakeMeta) -> None:
    client = service.test_client()
    client.get(at_meta(fake, start_login(client)))
    fake.users[42]["username"] = "alicia"
    fake.users[42]["location"] = "Lyon"
    other = service.test_client()
    other.get(at_meta(fake, start_login(other)))
    row = user_row(service, 42)
    assert (row.username, row.location) == ("alicia", "Lyon")


def test_renamed_user_frees_the_username(service: Any, fake: FakeMeta) -> None:
    from srcore.testing import create_user

    create_user(service, "alice", id=7)  # a stale local row: alice was renamed at meta
    client = service.test_client()
    client.get(at_meta(fake, start_login(client)))
    assert user_row(service, 42).username == "alice"
    assert user_row(service, 7).username == "~7"


def test_state_mismatch_is_refused(service: Any, fake: FakeMeta) -> None:
    client = service.test_client()
    params = start_login(client)
    params["state"] = params["state"][:-2] + "xx"
    response = client.get(at_meta(fake, params))
    assert response.status_code == 400
    assert "not started here" in response.get_data(as_text=True)
    assert client.get("/private").status_code == 302  # still not logged in


def test_callback_from_another_browser_is_refused(service: Any, fake: FakeMeta) -> None:
    callback = at_meta(fake, start_login(service.test_client()))
    assert service.test_client().get(callback).status_code == 400


def test_missing_state_and_missing_code(service: Any, fake: FakeMeta) -> None:
    client = service.test_client()
    assert client.get("/oauth/callback?code=abc").status_code == 400
    params = start_login(client)
    response = client.get(f"/oauth/callback?state={params['state']}")
    assert response.status_code == 400
    assert "no authorization code" in response.get_data(as_text=True)


def test_denied_at_meta(service: Any, fake: FakeMeta) -> None:
    client = service.test_client()
    params = start_login(client)
    response = client.get(f"/oauth/callback?state={params['state']}&error=access_denied")
    assert response.status_code == 403


def test_state_is_single_use(service: Any, fake: FakeMeta) -> None:
    client = service.test_client()
    callback = at_meta(fake, start_login(client))
    assert client.get(callback).status_code == 302
    assert client.get(callback).status_code == 400


@pytest.mark.parametrize("iss", ["https://evil.invalid", META + "/", "", "m\u0435ta"])
def test_an_answer_naming_another_server_is_refused_unused(
    service: Any, fake: FakeMeta, iss: str
) -> None:
    """RFC 9207: a callback whose iss is not meta's is a mix-up; its code is not sent
    anywhere, and no one is logged in."""
    client = service.test_client()
    callback = at_meta(fake, start_login(client))
    assert len(fake.codes) == 1
    response = client.get(callback + "&" + urlencode({"iss": iss}))
    assert response.status_code == 400
    assert "another server" in response.get_data(as_text=True)
    assert len(fake.codes) == 1  # never sent to meta, nor anywhere
    with client.session_transaction() as session:
        assert "_uid" not in session


def test_an_answer_naming_meta_logs_in(service: Any, fake: FakeMeta) -> None:
    client = service.test_client()
    callback = at_meta(fake, start_login(client))
    assert client.get(callback + "&" + urlencode({"iss": META})).status_code == 302
    with client.session_transaction() as session:
        assert session["_uid"] == 42


def test_code_refused_by_meta_is_a_400(service: Any, fake: FakeMeta) -> None:
    client = service.test_client()
    params = start_login(client)
    response = client.get(f"/oauth/callback?state={params['state']}&code=made-up")
    assert response.status_code == 400
    assert "did not accept" in response.get_data(as_text=True)


def test_two_tabs_can_log_in_at_once(service: Any, fake: FakeMeta) -> None:
    client = service.test_client()
    first = at_meta(fake, start_login(client, "/private?tab=1"))
    second = at_meta(fake, start_login(client, "/private?tab=2"))
    assert client.get(second).headers["Location"] == "/private?tab=2"
    assert client.get(first).status_code == 400  # log_in cleared the other pending login


@pytest.mark.parametrize(
    "target",
    [
        "//evil.example/",
        "https://evil.example/",
        "/\\evil.example",
        "http:/evil",
        "javascript:x",
        "/ok\r\nSet-Cookie: x=y",
        "",
    ],
)
def test_next_cannot_leave_the_service(service: Any, fake: FakeMeta, target: str) -> None:
    client = service.test_client()
    response = client.get("/login", query_string={"next": target})
    params = {k: v[0] for k, v in parse_qs(urlsplit(response.headers["Location"]).query).items()}
    done = client.get(at_meta(fake, params))
    assert done.status_code == 302
    assert done.headers["Location"] == "/"


def test_meta_down_at_login_is_a_503_page(service: Any, fake: FakeMeta) -> None:
    fake.down = True
    response = service.test_client().get("/private")
    assert response.status_code == 503
    page = response.get_data(as_text=True)
    assert "Account service unavailable" in page
    assert "Traceback" not in page


def test_meta_down_at_callback_is_a_503_page(service: Any, fake: FakeMeta) -> None:
    client = service.test_client()
    callback = at_meta(fake, start_login(client))
    fake.down = True
    response = client.get(callback)
    assert response.status_code == 503
    assert "Account service unavailable" in response.get_data(as_text=True)


def test_meta_down_keeps_sessions_and_tokens_working(service: Any, fake: FakeMeta) -> None:
    client = service.test_client()
    client.get(at_meta(fake, start_login(client)))
    token = fake.token(user_id=42, audience="sample", scope="sample/things:RO")
    api = service.test_client()
    auth = {"Authorization": f"Bearer {token}"}
    assert api.get("/api/whoami", headers=auth).get_json() == {"user": "alice"}
    fake.down = True
    fake.calls.clear()
    assert client.get("/private").status_code == 200
    assert api.get("/api/whoami", headers=auth).get_json() == {"user": "alice"}
    second = fake.token(user_id=42, audience="sample", scope="sample/things:RO")
    assert api.get("/api/things", headers={"Authorization": f"Bearer {second}"}).status_code == 200
    assert fake.calls == []


def test_api_before_any_key_with_meta_down_is_503(service: Any, fake: FakeMeta) -> None:
    token = fake.token(user_id=42, audience="sample", scope="sample/things:RO")
    fake.down = True
    response = service.test_client().get(
        "/api/things", headers={"Authorization": f"Bearer {token}"}
    )
    assert response.status_code == 503
    assert response.get_json()["errors"]


def test_unknown_user_is_fetched_once_from_meta(service: Any, fake: FakeMeta) -> None:
    fake.add_user(99, "zed")
    token = fake.token(user_id=99, audience="sample", scope="sample/things:RO")
    client = service.test_client()
    auth = {"Authorization": f"Bearer {token}"}
    assert client.get("/api/whoami", headers=auth).get_json() == {"user": "zed"}
    assert "GET /api/users/99" in fake.calls
    assert fake.calls.count("POST /oauth/token") == 1  # client credentials
    fake.calls.clear()
    assert client.get("/api/whoami", headers=auth).get_json() == {"user": "zed"}
    assert fake.calls == []


def test_client_token_is_reused_until_expiry(service: Any, fake: FakeMeta) -> None:
    for uid in (100, 101):
        fake.add_user(uid, f"u{uid}")
        token = fake.token(user_id=uid, audience="sample", scope="sample/things:RO")
        service.test_client().get("/api/whoami", headers={"Authorization": f"Bearer {token}"})
    assert fake.calls.count("POST /oauth/token") == 1
    assert fake.calls.count("GET /api/users/100") == 1


def test_unknown_user_meta_does_not_know_is_401(service: Any, fake: FakeMeta) -> None:
    token = fake.token(user_id=555, audience="sample", scope="sample/things:RO")
    response = service.test_client().get(
        "/api/whoami", headers={"Authorization": f"Bearer {token}"}
    )
    assert response.status_code == 401


def test_unknown_user_with_meta_down_is_503(service: Any, fake: FakeMeta) -> None:
    fake.add_user(77, "mia")
    token = fake.token(user_id=77, audience="sample", scope="sample/things:RO")
    client = service.test_client()
    assert (
        client.get("/api/things", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    )
    fake.down = True  # the keys are cached by now; the user is not
    response = client.get("/api/whoami", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 503


def test_logout_ends_the_session_and_goes_to_meta(service: Any, fake: FakeMeta) -> None:
    client = service.test_client()
    client.get(at_meta(fake, start_login(client)))
    service.config["WTF_CSRF_ENABLED"] = False
    response = client.post("/logout")
    assert response.status_code == 302
    # meta's end-session endpoint, which comes back to this service's front page.
    query = urlencode({"client_id": "sample", "post_logout_redirect_uri": "http://sample.test/"})
    assert response.headers["Location"] == f"{META}/oauth/logout?{query}"
    assert client.get("/private").status_code == 302


def test_login_after_a_revocation_in_the_same_second_sticks(service: Any, fake: FakeMeta) -> None:
    from srcore.auth.revocation import RevocationEvent

    store = service.extensions["srcore"].identity.store
    store.apply([RevocationEvent(1, "user", "42", int(time.time()) + 2)])
    client = service.test_client()
    client.get(at_meta(fake, start_login(client)))
    assert client.get("/private").status_code == 200


def test_nothing_is_fetched_when_the_app_is_built(tmp_path: Path) -> None:
    fake = FakeMeta()
    app = build_service(tmp_path, fake)
    assert fake.calls == []
    assert app.test_client().get("/healthz").status_code == 200
    # A request starts the process's pull of meta's revocations, and nothing else.
    assert set(fake.calls) <= {"GET /oauth/revocations"}
    state_of(app).stop()
    app.extensions["srcore"].db.dispose()


def test_default_login_backend(tmp_path: Path) -> None:
    from srcore.config import load_config

    path = tmp_path / "c.ini"
    body = (
        "[meta]\norigin = http://m.test\ndatabase-url = sqlite://\nsecret-key = " + "k" * 40 + "\n"
        "[todo]\norigin = http://t.test\ndatabase-url = sqlite://\nsecret-key = " + "j" * 40 + "\n"
    )
    path.write_text(body)
    config = load_config(path, specs={})
    backend = default_login_backend(config, "todo")
    assert isinstance(backend, NoAccountService)
    assert "oauth-client-id" in backend.reason
    assert isinstance(default_login_backend(config, "meta"), NoAccountService)
    path.write_text(body + "oauth-client-id = todo\noauth-client-secret = " + "s" * 40 + "\n")
    assert isinstance(default_login_backend(load_config(path, specs={}), "todo"), OAuthLogin)


def test_pkce_challenge_matches_rfc7636_appendix_b() -> None:
    verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
    assert pkce_challenge(verifier) == "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"


def test_meta_client_maps_failures() -> None:
    fake = FakeMeta()
    client = MetaClient(META, http=fake.session(), timeout=1)
    assert client.metadata()["issuer"] == META
    fake.down = True
    with pytest.raises(MetaUnavailable):
        client.metadata()


def test_internal_origin_is_used_for_server_calls() -> None:
    fake = FakeMeta()
    client = MetaClient("https://meta.example.org", internal_origin=META, http=fake.session())
    assert client.metadata()["issuer"] == META
    assert client.origin == "https://meta.example.org"


def test_init_writes_first_party_client_credentials(tmp_path: Path) -> None:
    from srcore.cli import render_development_config

    text = render_development_config(["meta", "todo", "paste"], data_dir=tmp_path)
    sections = text.split("\n[")
    meta = next(s for s in sections if s.startswith("meta]"))
    todo = next(s for s in sections if s.startswith("todo]"))
    assert "oauth-client" not in meta
    assert "oauth-client-id = todo" in todo
    assert "oauth-client-secret = " in todo
    alone = render_development_config(["todo"], data_dir=tmp_path)
    assert "oauth-client" not in alone


def test_login_callback_flashes_who_is_logged_in(service: Any, fake: FakeMeta) -> None:
    client = service.test_client()
    client.get(at_meta(fake, start_login(client)))
    with client.session_transaction() as session:
        assert ("success", "Logged in as alice.") in session.get("_flashes", [])
