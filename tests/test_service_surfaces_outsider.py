"""What a service exposes to the other services, probed from the network.

``/_srcore/events`` (meta's signed pushes), the login callback that reads meta's answers
and the API's token check. Messages are signed with the ``standardwebhooks`` package and
hostile tokens minted with PyJWT, neither of which srcore uses itself: an outsider's
client, not srcore's own helpers checking themselves. Every hostile input is a clear 4xx
(or a 503 blaming meta), never a 500, and changes nothing; every valid one works once.
"""

from __future__ import annotations

import base64
import json
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import jwt
import pytest
from fake_meta import META, FakeMeta, build_service
from standardwebhooks.webhooks import Webhook

from srcore.auth.revocation import state_of
from srcore.signatures import derive_secret
from srcore.testing import create_user


@pytest.fixture
def fake() -> FakeMeta:
    return FakeMeta()


@pytest.fixture
def service(tmp_path: Path, fake: FakeMeta) -> Iterator[Any]:
    app = build_service(tmp_path, fake)
    yield app
    state_of(app).stop()
    app.extensions["srcore"].db.dispose()


def _message(
    fake: FakeMeta,
    body: bytes,
    *,
    service_id: str = "sample",
    client_secret: str | None = None,
    content_type: str = "application/json",
    when: datetime | None = None,
) -> tuple[dict[str, str], bytes]:
    """*body* signed as meta signs a push to *service_id*, by the reference library."""
    secret = derive_secret(client_secret or fake.client_secret, service_id)
    message_id = "msg_" + uuid.uuid4().hex
    stamp = when or datetime.now(UTC)
    headers = {
        "content-type": content_type,
        "webhook-id": message_id,
        "webhook-timestamp": str(int(stamp.timestamp())),
        "webhook-signature": Webhook(secret).sign(message_id, stamp, body.decode("latin-1")),
    }
    return headers, body


def _body(kind: str, data: Any) -> bytes:
    return json.dumps({"type": kind, "timestamp": "2026-01-01T00:00:00Z", "data": data}).encode()


def _push(events: list[dict[str, Any]]) -> bytes:
    return _body("revocation:issued", {"events": events})


def _post(app: Any, message: tuple[dict[str, str], bytes]) -> Any:
    headers, body = message
    return app.test_client().post("/_srcore/events", data=body, headers=headers)


def _refused(response: Any, status: int) -> str:
    assert response.status_code == status, response.get_data(as_text=True)[:300]
    assert response.mimetype == "application/json"
    reason: str = response.get_json()["errors"][0]["reason"]
    assert reason
    return reason


def _row(app: Any, user_id: int) -> Any:
    st = app.extensions["srcore"]
    with st.db.transaction() as db:
        row = db.get(st.user_model, user_id)
        return None if row is None else (row.username, row.email, row.url)


# -- /_srcore/events -----------------------------------------------------------------------


def test_a_message_signed_by_the_reference_library_applies_once(
    service: Any, fake: FakeMeta
) -> None:
    heard: list[int] = []
    state_of(service).listeners.append(lambda events: heard.append(len(events)))
    message = _message(fake, _push([{"seq": 3, "kind": "token", "subject": "j3"}]))
    assert _post(service, message).status_code == 204
    assert _post(service, message).status_code == 204  # acknowledged, not applied again
    assert heard == [1]
    assert service.extensions["srcore"].identity.store.last_seq == 3


def test_one_message_sent_many_times_at_once_applies_once(service: Any, fake: FakeMeta) -> None:
    heard: list[int] = []
    state_of(service).listeners.append(lambda events: heard.append(len(events)))
    event = {"seq": 4, "kind": "session", "subject": "7", "not_before": 1}
    message = _message(fake, _push([event]))
    statuses: list[int] = []
    start = threading.Barrier(8)

    def send() -> None:
        start.wait(timeout=10)
        statuses.append(_post(service, message).status_code)

    threads = [threading.Thread(target=send) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert statuses == [204] * 8
    assert heard == [1]


@pytest.mark.parametrize(
    "case",
    [
        "for another service",
        "with a rotated-out client secret",
        "an hour in the future",
        "a day in the past",
    ],
)
def test_a_message_that_is_not_this_services_now_is_refused(
    service: Any, fake: FakeMeta, case: str
) -> None:
    body = _push([{"seq": 5, "kind": "user", "subject": "7", "not_before": int(time.time())}])
    message = {
        "for another service": lambda: _message(fake, body, service_id="todo"),
        "with a rotated-out client secret": lambda: _message(fake, body, client_secret="old"),
        "an hour in the future": lambda: _message(
            fake, body, when=datetime.fromtimestamp(time.time() + 3600, UTC)
        ),
        "a day in the past": lambda: _message(
            fake, body, when=datetime.fromtimestamp(time.time() - 86400, UTC)
        ),
    }[case]()
    _refused(_post(service, message), 401)
    assert service.extensions["srcore"].identity.store.last_seq == 0
    # The genuine message with that id still gets through: a refusal used up nothing.
    assert _post(service, _message(fake, body)).status_code == 204


def test_a_signed_body_nested_deeper_than_a_parser_goes_is_a_400(
    service: Any, fake: FakeMeta
) -> None:
    depth = 100_000
    body = b'{"type": "revocation:issued", "data": ' + b"[" * depth + b"]" * depth + b"}"
    _refused(_post(service, _message(fake, body)), 400)


@pytest.mark.parametrize(
    "content_type",
    ["application/x-www-form-urlencoded", "text/plain", "application/xml", ""],
)
def test_a_body_that_is_not_sent_as_json_is_a_415(
    service: Any, fake: FakeMeta, content_type: str
) -> None:
    message = _message(
        fake,
        _push([{"seq": 6, "kind": "token", "subject": "j6"}]),
        content_type=content_type,
    )
    reason = _refused(_post(service, message), 415)
    assert "application/json" in reason
    assert service.extensions["srcore"].identity.store.last_seq == 0


def test_a_broken_multipart_body_gets_the_json_error_body(service: Any, fake: FakeMeta) -> None:
    message = _message(fake, b"--x\r\n", content_type="multipart/form-data; boundary=x")
    _refused(_post(service, message), 400)


@pytest.mark.parametrize(
    "event",
    [
        {"seq": 2**63, "kind": "token", "subject": "j"},
        {"seq": 10**400, "kind": "token", "subject": "j"},
        {"seq": 1.0, "kind": "token", "subject": "j"},
        {"seq": "\u00b9", "kind": "token", "subject": "j"},
        {"seq": 1, "kind": "token", "subject": "j", "expires_at": 10**400},
        {"seq": 1, "kind": "token", "subject": "j", "expires_at": 253402300800},
        {"seq": 1, "kind": "token", "subject": "j", "expires_at": -1},
        {"seq": 1, "kind": "grant", "subject": "g", "expires_at": 1e300},
        {"seq": 1, "kind": "user", "subject": "7", "not_before": 10**40},
        {"seq": 1, "kind": "session", "subject": "7", "not_before": "\u00b2"},
        {"seq": 1, "kind": "client", "subject": "c", "not_before": -(2**70)},
    ],
    ids=lambda e: ",".join(f"{k}={str(v)[:12]}" for k, v in e.items() if k != "subject"),
)
def test_an_event_with_numbers_out_of_range_is_a_400(
    service: Any, fake: FakeMeta, event: dict[str, Any]
) -> None:
    _refused(_post(service, _message(fake, _push([event]))), 400)
    assert service.extensions["srcore"].identity.store.last_seq == 0


def test_the_largest_numbers_the_protocol_allows_apply(service: Any, fake: FakeMeta) -> None:
    from srcore.identity.protocol import MAX_SEQ, MAX_TIME

    events = [
        {"seq": 1, "kind": "user", "subject": "7", "not_before": MAX_TIME},
        {"seq": 2, "kind": "client", "subject": "c", "not_before": MAX_TIME},
        {"seq": MAX_SEQ, "kind": "token", "subject": "j", "expires_at": MAX_TIME},
    ]
    assert _post(service, _message(fake, _push(events))).status_code == 204
    assert service.extensions["srcore"].identity.store.last_seq == MAX_SEQ


def test_events_naming_nobody_this_service_knows_apply_and_harm_no_one(
    service: Any, fake: FakeMeta
) -> None:
    create_user(service, "alice", id=41)
    tok = fake.token(user_id=41, audience="sample", scope="sample/things:RO")
    events = [
        {"seq": 1, "kind": "user", "subject": "999999", "not_before": int(time.time()) + 60},
        {"seq": 2, "kind": "suspend", "subject": "\u00b9\u00b2"},
        {"seq": 3, "kind": "token", "subject": "no-such-jti", "expires_at": None},
        {"seq": 4, "kind": "grant", "subject": "41", "expires_at": None},
    ]
    assert _post(service, _message(fake, _push(events))).status_code == 204
    headers = {"Authorization": f"Bearer {tok}"}
    assert service.test_client().get("/api/things", headers=headers).status_code == 200


@pytest.mark.parametrize(
    "change",
    [
        {"id": 2**31},
        {"id": 10**30},
        {"id": "41"},
        {"id": 41.0},
        {"id": True},
        {"username": "ali\x00ce"},
        {"username": "x" * 257},
        {"email": "a\ud800@example.org"},
        {"url": "https://example.org/" + "x" * 300},
        {"bio": "nul \x00 byte"},
    ],
    ids=lambda c: ",".join(f"{k}={str(v)[:10]!r}" for k, v in c.items()),
)
def test_a_profile_no_user_row_can_hold_is_a_400(
    service: Any, fake: FakeMeta, change: dict[str, Any]
) -> None:
    create_user(service, "alice", id=41)
    before = _row(service, 41)
    profile = {**fake.add_user(41, "alice", email="new@example.org"), **change}
    _refused(_post(service, _message(fake, _body("profile:updated", profile))), 400)
    assert _row(service, 41) == before


# -- the login callback ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "change",
    [{"id": 2**31}, {"id": 10**30}, {"username": "a\x00"}, {"location": "x" * 257}],
    ids=["id past the column", "id past 64 bits", "NUL in the name", "a long location"],
)
def test_a_login_whose_profile_no_user_row_can_hold_is_a_503(
    service: Any, fake: FakeMeta, change: dict[str, Any]
) -> None:
    fake.add_user(42, "alice")
    fake.users[42].update(change)
    fake.logged_in = 42
    client = service.test_client()
    start = client.get("/private")
    params = {k: v[0] for k, v in parse_qs(urlsplit(start.headers["Location"]).query).items()}
    answer = fake.app.test_client().get("/oauth/authorize", query_string=params)
    back = urlsplit(answer.headers["Location"])
    response = client.get(f"{back.path}?{back.query}")
    assert response.status_code == 503
    assert _row(service, 42) is None
    assert client.get("/private").status_code == 302  # not logged in


def test_a_login_answer_nested_past_the_parser_is_a_503(service: Any, fake: FakeMeta) -> None:
    from srcore.auth.link import MetaUnavailable

    class Deep:
        status_code = 200
        url = META + "/oauth/token"

        def json(self) -> Any:
            return json.loads("[" * 100_000 + "]" * 100_000)

    meta = service.extensions["srcore"].identity.meta
    with pytest.raises(MetaUnavailable, match="not JSON"):
        meta._json(Deep())


# -- bearer tokens -------------------------------------------------------------------------


def _claims(fake: FakeMeta, audience: Any = "sample") -> dict[str, Any]:
    now = int(time.time())
    return {
        "iss": META,
        "sub": "41",
        "aud": audience,
        "client_id": fake.client_id,
        "scope": "sample/things:RO",
        "iat": now,
        "exp": now + 600,
        "jti": uuid.uuid4().hex,
    }


def _private_pem(key: Any) -> bytes:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import (
        Encoding,
        NoEncryption,
        PrivateFormat,
    )

    raw = base64.urlsafe_b64decode(key.as_dict(private=True)["d"] + "==")
    return Ed25519PrivateKey.from_private_bytes(raw).private_bytes(
        Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()
    )


def _api(app: Any, token: str) -> Any:
    return app.test_client().get("/api/things", headers={"Authorization": f"Bearer {token}"})


def test_hostile_tokens_are_refused_without_asking_anyone_else(
    service: Any, fake: FakeMeta
) -> None:
    from srcore.auth import jose

    create_user(service, "alice", id=41)
    good = _private_pem(fake.key)
    stranger_key = jose.generate_key()
    stranger = _private_pem(stranger_key)
    # PyJWT refuses a JWK or a PEM as an HMAC secret; the key's published x is neither.
    public = fake.key.as_dict(private=False)["x"].encode()
    typ = {"typ": "at+jwt"}
    assert _api(service, jwt.encode(_claims(fake), good, "EdDSA", {**typ, "kid": fake.key.kid}))
    tokens = {
        "for todo": jwt.encode(_claims(fake, "todo"), good, "EdDSA", {**typ, "kid": fake.key.kid}),
        "for todo and meta": jwt.encode(
            _claims(fake, ["todo", "meta"]), good, "EdDSA", {**typ, "kid": fake.key.kid}
        ),
        "alg none": jwt.encode(_claims(fake), None, "none", typ),
        "HS256 keyed with the public key": jwt.encode(_claims(fake), public, "HS256", typ),
        "a kid meta never published": jwt.encode(
            _claims(fake), stranger, "EdDSA", {**typ, "kid": "not-in-the-jwks"}
        ),
        "a jku naming the signer's keys": jwt.encode(
            _claims(fake), stranger, "EdDSA", {**typ, "jku": "https://keys.invalid/jwks.json"}
        ),
        "an x5u naming the signer's chain": jwt.encode(
            _claims(fake), stranger, "EdDSA", {**typ, "x5u": "https://keys.invalid/chain.pem"}
        ),
        "an embedded jwk": jwt.encode(
            _claims(fake), stranger, "EdDSA", {**typ, "jwk": stranger_key.as_dict(private=False)}
        ),
        "a user id past the column": jwt.encode(
            {**_claims(fake), "sub": str(2**31)}, good, "EdDSA", {**typ, "kid": fake.key.kid}
        ),
    }
    fetched = service.extensions["srcore"].identity.keys.fetches
    asked = list(fake.calls)
    for name, token in tokens.items():
        response = _api(service, token)
        assert response.status_code == 401, name
        assert "invalid_token" in response.headers["WWW-Authenticate"], name
    # One JWKS fetch at most (the unknown kid, floored), never a jku/x5u address.
    assert service.extensions["srcore"].identity.keys.fetches <= fetched + 1
    assert all(".invalid" not in call for call in fake.calls[len(asked) :])
