"""Standard Webhooks signing and verification, checked against the standardwebhooks package."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta

import pytest
import standardwebhooks
from hypothesis import given
from hypothesis import strategies as st

from srcore.signatures import decode_secret, sign, signature_header, verify_signature
from srcore.webhooks import WebhookVerificationError, generate_secret, verify

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
TS = int(NOW.timestamp())
SECRET = "whsec_" + base64.b64encode(b"k" * 32).decode()

ids = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789_", min_size=1, max_size=40)
bodies = st.binary(max_size=2048)


def headers(message_id: str, ts: int, signature: str) -> dict[str, str]:
    return {"webhook-id": message_id, "webhook-timestamp": str(ts), "webhook-signature": signature}


def test_generate_secret_shape() -> None:
    secret = generate_secret()
    assert secret.startswith("whsec_")
    assert len(decode_secret(secret)) >= 24
    assert generate_secret() != secret
    with pytest.raises(ValueError, match="24 to 64"):
        generate_secret(nbytes=8)


def test_known_vector_matches_the_reference_library() -> None:
    body = b'{"type":"thing:created"}'
    ours = sign(SECRET, "msg_1", TS, body)
    theirs = standardwebhooks.Webhook(SECRET).sign("msg_1", NOW, body.decode())
    assert ours == theirs


def test_verify_returns_the_parsed_body() -> None:
    body = b'{"type":"thing:created","data":{"id":1}}'
    h = headers("msg_1", TS, sign(SECRET, "msg_1", TS, body))
    assert verify(SECRET, h, body, now=NOW) == {"type": "thing:created", "data": {"id": 1}}
    upper = {k.title(): v for k, v in h.items()}
    assert verify(SECRET, upper, body.decode(), now=NOW)["data"] == {"id": 1}


@pytest.mark.parametrize("skew", [301, -301, 3600])
def test_verify_refuses_timestamps_outside_the_tolerance(skew: int) -> None:
    body = b"{}"
    h = headers("msg_1", TS + skew, sign(SECRET, "msg_1", TS + skew, body))
    with pytest.raises(WebhookVerificationError, match="tolerance"):
        verify(SECRET, h, body, now=NOW)
    assert verify(SECRET, h, body, now=NOW, tolerance=timedelta(hours=2)) == {}


def test_verify_refuses_missing_headers_and_garbage() -> None:
    body = b"{}"
    good = headers("msg_1", TS, sign(SECRET, "msg_1", TS, body))
    for name in good:
        partial = {k: v for k, v in good.items() if k != name}
        with pytest.raises(WebhookVerificationError, match=name):
            verify(SECRET, partial, body, now=NOW)
    for timestamp in ("soon", "9" * 400, "-5", f" {TS}", f"+{TS}", "1_700_000_000", "\uff11"):
        with pytest.raises(WebhookVerificationError, match="integer"):
            verify(SECRET, {**good, "webhook-timestamp": timestamp}, body, now=NOW)
    with pytest.raises(WebhookVerificationError, match="no matching"):
        verify(SECRET, {**good, "webhook-signature": "v1,AAAA v2,zzz nonsense"}, body, now=NOW)
    with pytest.raises(WebhookVerificationError, match="no matching"):
        verify(generate_secret(), good, body, now=NOW)


def test_rotation_two_signatures_either_secret_verifies() -> None:
    old, new = generate_secret(), generate_secret()
    body = b'{"a":1}'
    header = signature_header([new, old], "msg_r", TS, body)
    assert len(header.split()) == 2
    h = headers("msg_r", TS, header)
    assert verify(new, h, body, now=NOW) == {"a": 1}
    assert verify(old, h, body, now=NOW) == {"a": 1}
    assert verify([generate_secret(), old], h, body, now=NOW) == {"a": 1}
    # The reference library agrees (it checks the timestamp against its own clock).
    now = int(datetime.now(UTC).timestamp())
    fresh = headers("msg_r", now, signature_header([new, old], "msg_r", now, body))
    assert standardwebhooks.Webhook(old).verify(body, fresh) == {"a": 1}
    assert standardwebhooks.Webhook(new).verify(body, fresh) == {"a": 1}
    with pytest.raises(WebhookVerificationError):
        verify(generate_secret(), h, body, now=NOW)


@given(message_id=ids, body=bodies, ts=st.integers(min_value=0, max_value=2**33))
def test_property_sign_then_verify(message_id: str, body: bytes, ts: int) -> None:
    signature = sign(SECRET, message_id, ts, body)
    assert verify_signature(SECRET, message_id, ts, body, signature)
    assert verify_signature(SECRET, message_id, ts, body, f"v1,bogus {signature}")


@given(message_id=ids, body=bodies, flip=st.integers(min_value=0, max_value=2047))
def test_property_any_change_to_the_body_fails(message_id: str, body: bytes, flip: int) -> None:
    signature = sign(SECRET, message_id, TS, body)
    if body:
        i = flip % len(body)
        tampered = body[:i] + bytes([body[i] ^ 1]) + body[i + 1 :]
    else:
        tampered = b"x"
    assert not verify_signature(SECRET, message_id, TS, tampered, signature)
    assert not verify_signature(SECRET, message_id + "x", TS, body, signature)
    assert not verify_signature(SECRET, message_id, TS + 1, body, signature)


@given(body=st.text(max_size=500))
def test_property_reference_library_verifies_ours(body: str) -> None:
    import json

    payload = json.dumps({"text": body})
    wh = standardwebhooks.Webhook(SECRET)
    # standardwebhooks checks the timestamp against its own clock: sign for "now".
    now = int(datetime.now(UTC).timestamp())
    h = headers("msg_p", now, sign(SECRET, "msg_p", now, payload))
    assert wh.verify(payload, h) == {"text": body}


def test_bad_secret_text() -> None:
    with pytest.raises(ValueError, match="base64"):
        sign("whsec_***", "msg_1", TS, b"")
    with pytest.raises(ValueError, match="must not contain"):
        sign(SECRET, "msg.1", TS, b"")


def test_verify_accepts_a_list_of_header_pairs_and_refuses_other_shapes() -> None:
    body = b'{"type":"thing:created","data":{}}'
    signed = headers("msg_p", TS, sign(SECRET, "msg_p", TS, body))
    # WSGI/ASGI servers and HTTP clients hand headers over as (name, value) pairs.
    pairs = [(name.title(), value) for name, value in signed.items()]
    assert verify(SECRET, pairs, body, now=NOW) == {"type": "thing:created", "data": {}}
    as_bytes = [(n.encode(), v.encode()) for n, v in signed.items()]
    assert verify(SECRET, as_bytes, body, now=NOW)["type"] == "thing:created"
    for bad in (None, "webhook-id: x", 42, [("webhook-id",)], [1, 2, 3], [(1, 2)]):
        with pytest.raises(WebhookVerificationError, match="headers"):
            verify(SECRET, bad, body, now=NOW)  # type: ignore[arg-type]
