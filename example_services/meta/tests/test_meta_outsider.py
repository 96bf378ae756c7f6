"""meta seen from outside: a second user, a stranger and hostile bytes against one user's
things, on both databases.

Bob (another account) aims Alice's ids at the pages and the API that act on her personal
access tokens, passkeys, applications and authorizations: each answer is the one a
missing id gets, names nothing of hers, and her rows stay as they were. Passkey answers
carry text no database stores (NUL, lone surrogates) where the server reads it: in the
credential id it looks up, and in the clientData the WebAuthn library quotes when it
refuses the answer (which the audit log records). Each gets a 400 with the standard error
body; the refusal is still audited. The admins' audit page takes the last day there is.
"""

from __future__ import annotations

import base64
import json
import re
from typing import Any

import pytest
from meta_constants import PASSWORD
from oidc_helpers import oidc_app, register, tokens_for
from passkey_helpers import SoftKey
from sqlalchemy import select

from srcore.db import UserType
from srcore.testing import log_in_client

__all__ = ["oidc_app"]  # fixtures used by this module

_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
JSON = {"Accept": "application/json"}


def csrf(client: Any, page: str = "/forgot") -> str:
    match = _CSRF.search(client.get(page).get_data(as_text=True))
    assert match, page
    return match.group(1)


def post(
    client: Any, path: str, data: dict[str, str] | None = None, page: str = "/security"
) -> Any:
    return client.post(path, data={**(data or {}), "csrf_token": csrf(client, page)})


def post_json(client: Any, path: str, body: Any, page: str = "/forgot") -> Any:
    """POST *body* (raw bytes, or a value to encode) as JSON, as the passkey script does."""
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = {**JSON, "X-CSRFToken": csrf(client, page)}
    return client.post(path, data=raw, headers=headers, content_type="application/json")


def rows(app: Any, model: Any, **where: Any) -> list[tuple[Any, ...]]:
    """Every row of *model* matching *where*, as plain tuples of its columns (comparable
    before and after)."""
    columns = [c.key for c in model.__table__.columns]
    with app.extensions["srcore"].db.transaction() as session:
        stmt = select(model).filter_by(**where).order_by(model.id)
        return [tuple(getattr(row, c) for c in columns) for row in session.scalars(stmt)]


def audit_of(app: Any, user_id: int, kind: str | None = None) -> list[Any]:
    from meta.models import AuditEntry

    with app.extensions["srcore"].db.transaction() as session:
        stmt = select(AuditEntry).where(AuditEntry.user_id == user_id).order_by(AuditEntry.id)
        if kind is not None:
            stmt = stmt.where(AuditEntry.kind == kind)
        found = list(session.scalars(stmt))
        session.expunge_all()
        return found


def pat(app: Any, user_id: int, scope: str, name: str) -> tuple[int, str]:
    """A personal access token of *user_id*: (its row id, the token)."""
    from meta.models import User
    from meta.oauth.pats import create_token

    with app.test_request_context("/api/tokens", method="POST"):
        from srcore.db import session

        row, token = create_token(session.get(User, user_id), name=name, scope=scope, days=30)
        session.commit()
        return row.id, token


def soft_key(app: Any) -> SoftKey:
    from meta.passkeys import RelyingParty

    rp = RelyingParty.from_origin(str(app.extensions["srcore"].section["origin"]), "x")
    return SoftKey(rp_id=rp.id, origin=rp.origin)


def add_passkey(app: Any, client: Any, name: str = "alices-laptop") -> SoftKey:
    key = soft_key(app)
    options = client.post(
        "/security/passkeys/options",
        data={"name": name, "current_password": PASSWORD, "csrf_token": csrf(client, "/security")},
        headers=JSON,
    )
    assert options.status_code == 200, options.get_data(as_text=True)
    done = post_json(client, "/security/passkeys", key.create(options.get_json()), "/security")
    assert done.status_code == 200, done.get_data(as_text=True)
    return key


def alices_client(client: Any) -> dict[str, str]:
    """Register an application at ``/clients`` in *client*'s account: its id."""
    data = {"name": "alices-app", "redirect_uris": "https://alice.example/cb", "kind": "public"}
    page = post(client, "/clients", data, page="/clients").get_data(as_text=True)
    found = re.search(r'id="client-id">([^<]+)<', page)
    assert found, page[:800]
    return {"id": found.group(1)}


def with_client_data(answer: dict[str, Any], **changes: str) -> dict[str, Any]:
    """*answer* with fields of its clientDataJSON replaced (its signature no longer holds,
    which is the point: the library refuses it, quoting the field)."""
    encoded = answer["response"]["clientDataJSON"]
    data = json.loads(base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)))
    data.update(changes)
    raw = json.dumps(data).encode()  # a lone surrogate goes as its \\ud800 escape
    answer["response"]["clientDataJSON"] = base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
    return answer


def standard_error(response: Any) -> str:
    body = response.get_json()
    assert isinstance(body, dict) and body.get("errors"), response.get_data(as_text=True)
    return str(body["errors"][0]["reason"])


@pytest.fixture
def alice(accounts: Any) -> Any:
    return accounts.make("alice")


@pytest.fixture
def bob(accounts: Any) -> Any:
    return accounts.make("bob")


# -- a second user against the first one's things ------------------------------------------


def test_bob_cannot_reach_alices_tokens_passkeys_or_applications(
    oidc_app: Any, accounts: Any, alice: Any, bob: Any
) -> None:
    """Every id of hers is answered as a missing one, and nothing of hers changes."""
    from meta.models import AuditEntry, PasskeyCredential
    from meta.oauth.models import Consent, Grant, OAuthClient, PersonalAccessToken

    app = oidc_app
    alices = log_in_client(app.test_client(), alice)
    token_id, _token = pat(app, alice.id, "meta/profile:RO", name="alices-token")
    add_passkey(app, alices)
    (key_id,) = [row[0] for row in rows(app, PasskeyCredential, user_id=alice.id)]
    rp = register(app, accounts, owner="developer")
    tokens_for(alices, rp, scope="openid meta/profile:RO")
    own = alices_client(alices)
    _bobs_id, bobs_token = pat(app, bob.id, "meta/tokens:RW meta/profile:RO", name="bobs")

    watched = [
        (PersonalAccessToken, {"user_id": alice.id}),
        (PasskeyCredential, {"user_id": alice.id}),
        (Grant, {"user_id": alice.id}),
        (Consent, {"user_id": alice.id}),
        (OAuthClient, {"client_id": own["id"]}),
        (AuditEntry, {"user_id": alice.id}),
    ]
    before = [rows(app, model, **where) for model, where in watched]
    bobs_entries = len(audit_of(app, bob.id))

    bobs = log_in_client(app.test_client(), bob)
    answers = [
        post(bobs, f"/security/tokens/{token_id}/revoke"),
        post(bobs, f"/security/passkeys/{key_id}/name", {"name": "mine now"}),
        post(bobs, f"/security/passkeys/{key_id}/remove", {"current_password": PASSWORD}),
        post(bobs, f"/security/applications/{rp['id']}/revoke"),
        post(bobs, f"/clients/{own['id']}/delete"),
        app.test_client().delete(
            f"/api/tokens/{token_id}", headers={"Authorization": f"Bearer {bobs_token}"}
        ),
    ]
    for answer in answers:
        text = answer.get_data(as_text=True)
        assert answer.status_code == 404, (answer.request.path, answer.status_code)
        for hers in ("alice", "alices-token", "alices-laptop", "alices-app"):
            assert hers not in text, (answer.request.path, hers)
    listed = app.test_client().get("/api/tokens", headers={"Authorization": f"Bearer {bobs_token}"})
    assert [t["name"] for t in listed.get_json()["results"]] == ["bobs"]
    for page in ("/security", "/security/passkeys", "/clients", "/security/activity"):
        shown = bobs.get(page)
        assert shown.status_code == 200
        assert "alice" not in shown.get_data(as_text=True).lower(), page

    assert [rows(app, model, **where) for model, where in watched] == before
    # Bob's own log has no entry of an application he never authorized.
    assert len(audit_of(app, bob.id)) == bobs_entries


def test_revoking_an_application_never_authorized_is_a_404_and_records_nothing(
    oidc_app: Any, accounts: Any, alice: Any, bob: Any
) -> None:
    """Whatever the id (another user's application, a first-party service, a made-up or
    hostile one), nothing is revoked, nothing goes in the log, and no name is echoed."""
    from meta.oauth.models import Grant

    app = oidc_app
    rp = register(app, accounts, owner="developer")
    tokens_for(log_in_client(app.test_client(), alice), rp, scope="openid")
    grants = rows(app, Grant, user_id=alice.id)
    bobs = log_in_client(app.test_client(), bob)
    for client_id in (rp["id"], "todo", "c" + "0" * 24, "%ED%A0%80", "a" * 3000):
        answer = post(bobs, f"/security/applications/{client_id}/revoke")
        assert answer.status_code == 404, (client_id, answer.status_code)
        assert "Relying Party" not in answer.get_data(as_text=True)
    assert audit_of(app, bob.id, "app-revoked") == []
    assert rows(app, Grant, user_id=alice.id) == grants
    # Her own revocation still works, and is recorded.
    alices = log_in_client(app.test_client(), alice)
    assert post(alices, f"/security/applications/{rp['id']}/revoke").status_code == 302
    assert [e.detail for e in audit_of(app, alice.id, "app-revoked")] == ["Relying Party"]
    assert all(row[-1] is not None for row in rows(app, Grant, user_id=alice.id))


# -- hostile bytes in passkey answers ---------------------------------------------------------

#: Credential ids no key has, and which no database query should see.
HOSTILE_IDS = [
    b'"\\u0000"',
    b'"ab\\u0000cd"',
    b'"\\ud800"',
    b'"\\udfff\\ud800"',
    b'"abc=="',
    b'"a b"',
    b'"\xc2\xb2"',
]


@pytest.mark.parametrize("ident", HOSTILE_IDS, ids=range(len(HOSTILE_IDS)))
def test_a_passwordless_login_naming_a_hostile_key_id_is_a_400(
    app: Any, client: Any, ident: bytes
) -> None:
    assert post_json(client, "/login/passkey/options", {}).status_code == 200
    answer = post_json(client, "/login/passkey", b'{"id": ' + ident + b', "response": {}}')
    assert answer.status_code == 400, answer.get_data(as_text=True)
    assert standard_error(answer) == "This is not a passkey's answer."


@pytest.mark.parametrize("ident", HOSTILE_IDS, ids=range(len(HOSTILE_IDS)))
def test_a_second_step_naming_a_hostile_key_id_is_a_400(
    app: Any, alice: Any, login: Any, ident: bytes
) -> None:
    add_passkey(app, log_in_client(app.test_client(), alice))
    browser = app.test_client()
    assert login(browser, "alice", PASSWORD).status_code == 302
    assert post_json(browser, "/login/verify/passkey/options", {}).status_code == 200
    answer = post_json(browser, "/login/verify/passkey", b'{"id": ' + ident + b', "response": {}}')
    assert answer.status_code == 400, answer.get_data(as_text=True)
    assert standard_error(answer) == "This is not a passkey's answer."


#: clientData fields the WebAuthn library quotes when it refuses an answer.
QUOTED = [
    {"origin": "http://evil.invalid\x00"},
    {"origin": "http://evil.invalid\ud800"},
    {"type": "webauthn.\x00"},
    {"type": "webauthn.\udfff"},
]


@pytest.mark.parametrize("changes", QUOTED, ids=range(len(QUOTED)))
def test_a_refused_login_quoting_hostile_text_is_a_400_and_is_audited(
    app: Any, alice: Any, changes: dict[str, str]
) -> None:
    key = add_passkey(app, log_in_client(app.test_client(), alice))
    browser = app.test_client()
    options = post_json(browser, "/login/passkey/options", {}).get_json()
    answer = post_json(browser, "/login/passkey", with_client_data(key.get(options), **changes))
    assert answer.status_code == 400, answer.get_data(as_text=True)
    standard_error(answer)
    (entry,) = audit_of(app, alice.id, "passkey-failed")
    assert entry.detail.startswith("alices-laptop: ")
    assert "\ufffd" in entry.detail and "\x00" not in entry.detail
    assert not any(0xD800 <= ord(c) <= 0xDFFF for c in entry.detail)


@pytest.mark.parametrize("changes", QUOTED, ids=range(len(QUOTED)))
def test_a_refused_new_passkey_quoting_hostile_text_is_a_400_and_is_audited(
    app: Any, alice: Any, changes: dict[str, str]
) -> None:
    from meta.models import PasskeyCredential

    browser = log_in_client(app.test_client(), alice)
    options = browser.post(
        "/security/passkeys/options",
        data={"name": "k", "current_password": PASSWORD, "csrf_token": csrf(browser, "/security")},
        headers=JSON,
    )
    created = with_client_data(soft_key(app).create(options.get_json()), **changes)
    answer = post_json(browser, "/security/passkeys", created, "/security")
    assert answer.status_code == 400, answer.get_data(as_text=True)
    standard_error(answer)
    (entry,) = audit_of(app, alice.id, "passkey-failed")
    assert entry.detail.startswith("adding k: ") and "\ufffd" in entry.detail
    assert rows(app, PasskeyCredential, user_id=alice.id) == []


# -- the admins' audit page ------------------------------------------------------------------


@pytest.mark.parametrize(
    "query", ["until=9999-12-31", "since=9999-12-31&until=9999-12-31", "since=0001-01-01"]
)
def test_the_audit_page_takes_the_first_and_last_days_there_are(
    app: Any, accounts: Any, alice: Any, query: str
) -> None:
    admin = accounts.make("root1", user_type=UserType.admin)
    browser = log_in_client(app.test_client(), admin)
    post(browser, "/logout/everywhere")  # one entry, of now
    browser = log_in_client(app.test_client(), admin)
    page = browser.get("/admin/audit?" + query)
    assert page.status_code == 200
    expected = "0 entries" if query.startswith("since=9999") else "1 entry"
    assert f"newest first:\n      {expected}." in page.get_data(as_text=True)
