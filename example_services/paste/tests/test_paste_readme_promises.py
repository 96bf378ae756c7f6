"""What paste's README promises, held to the service as an outsider meets it: a person in
a browser, an API client with a token of some scopes, a second user, a suspended
account, an operator setting the config keys. On SQLite and PostgreSQL.

A browser sends every line break of a textarea as CRLF (the HTML standard's form
encoding), whatever the person typed: the forms here are posted that way.
"""

from __future__ import annotations

import importlib
import json
import re
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from paste.models import Paste
from sqlalchemy import select

from srcore.config import ConfigError
from srcore.db import UserType
from srcore.testing import TEST_ISSUER, create_user, log_in_client
from srcore.webhooks.models import OutboxRow

_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def as_browser_sends(text: str) -> str:
    """*text* as a browser's form carries a textarea's value: each line break a CRLF."""
    return text.replace("\n", "\r\n")


def state(app: Any) -> list[tuple[Any, ...]]:
    """Every paste as stored and every event: what a refused request leaves as it was."""
    with app.extensions["srcore"].db.transaction() as session:
        pastes = [
            (p.short_id, p.owner_id, p.title, p.text, p.format, p.language, p.visibility)
            for p in session.scalars(select(Paste).order_by(Paste.id))
        ]
        events = [(r.event, r.resource) for r in session.scalars(select(OutboxRow))]
    return [*pastes, *events]


def events(app: Any) -> list[str]:
    with app.extensions["srcore"].db.transaction() as session:
        return [r.event for r in session.scalars(select(OutboxRow).order_by(OutboxRow.id))]


def stored_text(app: Any, short_id: str) -> str:
    with app.extensions["srcore"].db.transaction() as session:
        text: str = session.scalars(select(Paste.text).where(Paste.short_id == short_id)).one()
        return text


def bearer(make_token: Any, who: Any, scopes: str = "paste/pastes:RW") -> dict[str, str]:
    return {"Authorization": f"Bearer {make_token(scopes, user=who)}"}


def post_form(client: Any, path: str, data: dict[str, str], page: str = "/new") -> Any:
    match = _CSRF.search(client.get(page).get_data(as_text=True))
    assert match, f"no CSRF token on {page}"
    return client.post(path, data={**data, "csrf_token": match.group(1)})


def with_config(app: Any, signing_key: Any, tmp_path: Path, lines: str) -> Any:
    """Paste again on *app*'s migrated database, with *lines* added to its section."""
    from joserfc.jwk import KeySet

    from srcore.auth.tokens import StaticKeySource, TokenVerifier
    from srcore.outbound.targets import set_resolver

    st = app.extensions["srcore"]
    text = Path(st.config.path).read_text(encoding="utf-8")
    path = tmp_path / "config.ini"
    path.write_text(text.replace("[paste]\n", "[paste]\n" + lines, 1), encoding="utf-8")
    verifier = TokenVerifier(
        keys=StaticKeySource(KeySet([signing_key])), issuer=TEST_ISSUER, audience="paste"
    )
    built = importlib.import_module("paste").create_app(config=path, token_verifier=verifier)
    built.config["TESTING"] = True
    set_resolver(built, lambda host, port, timeout: None)
    return built


# -- max-paste-length: "longest paste accepted, in characters" -------------------------------


def test_a_paste_typed_in_a_browser_is_as_long_as_its_characters(
    app: Any, user: Any, make_token: Any, srcore_signing_key: Any, tmp_path: Path
) -> None:
    """At the limit and one past it, from the form and the API alike: a line break is one
    character however the browser sends it (CRLF made a 20-line paste 20 characters
    longer from the form than from the API, refused there), and the text kept is the one
    typed, the same from both."""
    limited = with_config(app, srcore_signing_key, tmp_path, "max-paste-length = 20\n")
    try:
        browser = log_in_client(limited.test_client(), user)
        typed = "é\n" * 10  # 20 characters, 10 of them line breaks
        made = post_form(browser, "/new", {"text": as_browser_sends(typed)})
        assert made.status_code == 302, made.get_data(as_text=True)
        short_id = made.headers["Location"].rsplit("/", 1)[1]
        api = limited.test_client().post(
            "/api/pastes", json={"text": typed}, headers=bearer(make_token, user)
        )
        assert api.status_code == 201, api.get_json()
        assert stored_text(limited, short_id) == stored_text(limited, api.get_json()["id"])
        assert stored_text(limited, short_id) == typed
        assert browser.get(f"/p/{short_id}/raw").get_data() == typed.encode()
        before = state(limited)
        longer = post_form(browser, "/new", {"text": as_browser_sends(typed + "x")})
        assert longer.status_code == 400
        assert "Must be at most 20 characters." in longer.get_data(as_text=True)
        refused = limited.test_client().post(
            "/api/pastes", json={"text": typed + "x"}, headers=bearer(make_token, user)
        )
        assert refused.status_code == 400
        assert refused.get_json()["errors"] == [
            {"field": "text", "reason": "Must be at most 20 characters."}
        ]
        assert state(limited) == before
    finally:
        limited.extensions["srcore"].db.dispose()


def test_the_longest_max_paste_length_the_config_takes_is_honoured(
    app: Any, user: Any, make_token: Any, srcore_signing_key: Any, tmp_path: Path
) -> None:
    """The key took up to 16777216, but no paste past 1000000 characters was ever accepted
    (srcore refuses any longer string): 2000000 in the file still refused a paste of
    1000001. The key now takes what can work, and a value past it is a config error."""
    with pytest.raises(ConfigError, match="max-paste-length"):
        with_config(app, srcore_signing_key, tmp_path, "max-paste-length = 1000001\n")
    widest = with_config(app, srcore_signing_key, tmp_path, "max-paste-length = 1000000\n")
    try:
        client = widest.test_client()
        headers = bearer(make_token, user)
        fits = client.post("/api/pastes", json={"text": "x" * 1_000_000}, headers=headers)
        assert fits.status_code == 201, fits.get_data()[:200]
        longer = client.post("/api/pastes", json={"text": "x" * 1_000_001}, headers=headers)
        assert longer.status_code == 400
        assert longer.get_json()["errors"][0]["field"] == "text"
    finally:
        widest.extensions["srcore"].db.dispose()


# -- paste:updated: "an edit that changes anything" ---------------------------------------------


def test_saving_the_edit_form_unchanged_keeps_the_text_and_sends_nothing(
    app: Any, client: Any, user: Any, user_client: Any, make_token: Any
) -> None:
    """A shell script made through the API, its edit page saved as it is: it was stored
    again with CRLF line breaks (its raw text no longer ran under sh) and a paste:updated
    went to every subscriber for a change nobody made."""
    script = "#!/bin/sh\nset -eu\necho hello\n"
    made = client.post(
        "/api/pastes",
        json={"text": script, "title": "hello.sh", "language": "sh"},
        headers=bearer(make_token, user),
    ).get_json()
    short_id = made["id"]
    assert events(app) == ["paste:created"]
    edit = f"/p/{short_id}/edit"
    page = user_client.get(edit).get_data(as_text=True)
    assert "set -eu" in page
    fields = {
        "title": "hello.sh",
        "text": as_browser_sends(script),
        "format": "plain",
        "language": "bash",
        "visibility": "public",
    }
    saved = post_form(user_client, edit, fields, page=edit)
    assert saved.status_code == 302
    assert client.get(f"/p/{short_id}/raw").get_data() == script.encode()
    assert events(app) == ["paste:created"]
    # A real change is still one, and carries the text as typed.
    changed = post_form(
        user_client, edit, {**fields, "text": as_browser_sends(script + "exit 0\n")}, page=edit
    )
    assert changed.status_code == 302
    assert events(app) == ["paste:created", "paste:updated"]
    assert stored_text(app, short_id) == script + "exit 0\n"


# -- hostile bytes in every field ----------------------------------------------------------------


HOSTILE_BODIES = [
    ('{"text": "a\\u0000b"}', "text", "U+0000"),
    ('{"text": "ok", "title": "a\\u0000b"}', "title", "U+0000"),
    ('{"text": "ok", "language": "py\\u0000"}', "language", "U+0000"),
    ('{"text": "ok", "format": "plain\\u0000"}', "format", "one of"),
    ('{"text": "ok", "visibility": "public\\u0000"}', "visibility", "one of"),
    ('{"text": "ok", "title": "invoice\\u202efdp.exe"}', "title", "U+202E"),
    ('{"text": "ok", "title": "two\\nlines"}', "title", "single line"),
    ('{"text": "ok", "language": "py\\u202e"}', "language", "Unknown language"),
    ('{"text": "a\\ud800b"}', None, "lone surrogate"),
    ('{"text": "ok", "title": "\\udfff"}', None, "lone surrogate"),
    ('{"text": "ok", "\\ud800": "x"}', None, "lone surrogate"),
    ('{"text": "ok", "title": "' + "t" * 257 + '"}', "title", "at most 256"),
    ('{"text": "ok", "language": "' + "p" * 65 + '"}', "language", "at most 64"),
    ('{"text": "ok", "visibility": "private"}', "visibility", "one of"),
    ('{"text": " \\n\\t "}', "text", "required"),
    ('{"text": ["a"]}', "text", "string"),
]


@pytest.mark.parametrize(("body", "field", "says"), HOSTILE_BODIES)
def test_hostile_bytes_in_any_field_are_a_400_naming_it(
    app: Any, client: Any, user: Any, make_token: Any, body: str, field: str | None, says: str
) -> None:
    before = state(app)
    response = client.post(
        "/api/pastes",
        data=body.encode(),
        content_type="application/json",
        headers=bearer(make_token, user),
    )
    assert response.status_code == 400, response.get_data()
    (error,) = response.get_json()["errors"]
    assert error.get("field") == field and says in error["reason"], error
    assert state(app) == before


def test_text_keeps_what_a_title_may_not_hold(app: Any, client: Any, user: Any, make_token: Any):
    """A paste is text as written: right-to-left marks and overrides, tabs and blanks at
    its ends stay; a title is one line, stripped, at most 256 characters."""
    text = "\t<- tab, \u202eevil\u202c, \u05e9\u05dc\u05d5\u05dd \u200f\n  "
    response = client.post(
        "/api/pastes",
        json={"text": text, "title": "  " + "t" * 256 + "  ", "language": "PY"},
        headers=bearer(make_token, user),
    )
    assert response.status_code == 201, response.get_json()
    body = response.get_json()
    assert (body["text"], body["title"], body["language"]) == (text, "t" * 256, "python")
    assert client.get(f"/p/{body['id']}/raw").get_data(as_text=True) == text


def test_bodies_of_ten_megabytes_and_past_the_limit_are_refused_plainly(
    app: Any, client: Any, user: Any, user_client: Any, make_token: Any
) -> None:
    before = state(app)
    headers = bearer(make_token, user)
    ten = json.dumps({"text": "x" * 10_000_000})
    api = client.post("/api/pastes", data=ten, content_type="application/json", headers=headers)
    assert api.status_code == 400
    assert api.get_json()["errors"] == [
        {"field": "text", "reason": "Must be at most 262144 characters."}
    ]
    page = post_form(user_client, "/new", {"text": "x" * 10_000_000})
    assert page.status_code == 400
    assert "Must be at most 262144 characters." in page.get_data(as_text=True)
    past = b'{"text": "' + b"x" * (17 * 1024 * 1024) + b'"}'
    too_large = client.post(
        "/api/pastes", data=past, content_type="application/json", headers=headers
    )
    assert too_large.status_code == 413
    assert too_large.get_json()["errors"][0]["reason"]
    assert state(app) == before


# -- who sees what -------------------------------------------------------------------------------


def test_any_paste_by_its_id_but_only_ones_own_in_the_list(
    app: Any, client: Any, user: Any, make_token: Any
) -> None:
    """``GET /api/pastes/<id>``: "any paste: its id is its link"; ``GET /api/pastes``: "the
    caller's pastes"."""
    secret = client.post(
        "/api/pastes",
        json={"text": "zebra secret", "visibility": "unlisted"},
        headers=bearer(make_token, user),
    ).get_json()
    bob = create_user(app, "bob")
    reader = bearer(make_token, bob, "paste/pastes:RO")
    found = client.get(f"/api/pastes/{secret['id']}", headers=reader)
    assert found.status_code == 200
    assert found.get_json() == secret
    listed = client.get("/api/pastes", headers=reader).get_json()
    assert listed == {"results": [], "next": None}
    searched = client.get("/api/pastes?search=zebra", headers=reader).get_json()
    assert searched["results"] == []


def test_tokens_without_the_scope_and_inactive_accounts_change_nothing(
    app: Any, client: Any, user: Any, make_token: Any
) -> None:
    made = client.post(
        "/api/pastes", json={"text": "mine"}, headers=bearer(make_token, user)
    ).get_json()
    before = state(app)
    routes = [("GET", "/api/pastes"), ("POST", "/api/pastes"), ("GET", f"/api/pastes/{made['id']}")]
    for method, path in routes:
        anonymous = client.open(path, method=method, json={"text": "x"})
        assert anonymous.status_code == 401, (method, path)
        assert anonymous.headers["WWW-Authenticate"].startswith("Bearer")
        other = client.open(
            path,
            method=method,
            json={"text": "x"},
            headers=bearer(make_token, user, "todo/trackers:RW"),
        )
        assert other.status_code == 403, (method, path)
    read_only = bearer(make_token, user, "paste/pastes:RO")
    refused = client.post("/api/pastes", json={"text": "x"}, headers=read_only)
    assert refused.status_code == 403
    assert "paste/pastes:RW" in refused.get_json()["errors"][0]["reason"]
    suspended = create_user(app, "sus", user_type=UserType.suspended)
    for method, path in routes:
        answer = client.open(
            path, method=method, json={"text": "x"}, headers=bearer(make_token, suspended)
        )
        assert answer.status_code == 403, (method, path)
    browser = log_in_client(app.test_client(), suspended)
    for path in ("/new", "/mine"):
        assert browser.get(path).status_code == 403
    assert browser.post("/new", data={"text": "x"}).status_code in (400, 403)
    assert state(app) == before


def test_head_and_options_on_every_post_route_change_nothing(
    app: Any, client: Any, user: Any, user_client: Any, make_token: Any
) -> None:
    made = client.post(
        "/api/pastes", json={"text": "mine"}, headers=bearer(make_token, user)
    ).get_json()
    before = state(app)
    headers = bearer(make_token, user)
    for path in ("/new", f"/p/{made['id']}/edit", f"/p/{made['id']}/delete", "/api/pastes"):
        for method in ("HEAD", "OPTIONS"):
            answer = user_client.open(
                f"{path}?text=forged", method=method, headers=headers, data={"text": "forged"}
            )
            assert answer.status_code == 200, (method, path, answer.status_code)
            assert answer.get_data() == b"", (method, path)
            if method == "OPTIONS":
                assert "POST" in answer.headers["Allow"]
    assert state(app) == before


def test_raw_is_the_text_alone_as_text_plain(app: Any, client: Any, user: Any, make_token: Any):
    text = "<script>alert(1)</script>\n# not markdown\n"
    made = client.post(
        "/api/pastes",
        json={"text": text, "format": "markdown", "visibility": "unlisted"},
        headers=bearer(make_token, user),
    ).get_json()
    raw = client.get(f"/p/{made['id']}/raw")
    assert raw.status_code == 200
    assert raw.mimetype == "text/plain"
    assert raw.headers["X-Content-Type-Options"] == "nosniff"
    assert raw.get_data(as_text=True) == text
    assert client.get(f"/p/{made['id']}x/raw").status_code == 404


# -- the network config: "srcore init gives it port 5002" -------------------------------------


def test_srcore_init_gives_paste_port_5002(tmp_path: Path) -> None:
    from srcore.cli import cli

    path = tmp_path / "config.ini"
    result = CliRunner().invoke(cli, ["init", "--path", str(path)])
    assert result.exit_code == 0, result.output
    text = path.read_text(encoding="utf-8")
    section = text.split("[paste]", 1)[1].split("\n[", 1)[0]
    assert "origin = http://127.0.0.1:5002" in section
