"""Standard Webhooks signatures: sign on the sending side, verify on the receiving side.

A message is signed as ``v1,<base64 HMAC-SHA256(key, "{id}.{timestamp}.{body}")>`` where
the key is the base64-decoded part of a ``whsec_...`` secret. During a secret rotation the
sender puts two signatures, space-separated, in ``webhook-signature``; a receiver accepts
the message when any of them matches. Pure functions: no clock, no randomness unless given.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

__all__ = [
    "SECRET_PREFIX",
    "WebhookVerificationError",
    "decode_secret",
    "derive_secret",
    "generate_secret",
    "sign",
    "sign_with_key",
    "signature_header",
    "verify",
    "verify_signature",
]

#: Every srcore webhook secret starts with this.
SECRET_PREFIX = "whsec_"  # noqa: S105 - a prefix, not a secret
#: Random bytes in a generated secret (Standard Webhooks asks for 24 to 64).
SECRET_BYTES = 32
#: How far a message's timestamp may be from the receiver's clock.
DEFAULT_TOLERANCE = timedelta(minutes=5)


class WebhookVerificationError(ValueError):
    """A webhook whose headers or signature do not check out."""


def generate_secret(*, nbytes: int = SECRET_BYTES) -> str:
    """A new ``whsec_`` secret with *nbytes* (24 to 64) random bytes."""
    if not 24 <= nbytes <= 64:
        raise ValueError("a webhook secret has 24 to 64 random bytes")
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(nbytes)).decode("ascii")


#: What :func:`derive_secret` puts before the service id in the HMAC message.
DERIVE_LABEL = b"srcore-webhooks "


def derive_secret(client_secret: str, service_id: str) -> str:
    """The ``whsec_`` secret of meta's first-party subscription for *service_id*:
    ``HMAC-SHA256(client_secret, "srcore-webhooks " + service_id)``. Both ends hold the
    service's client secret, so nothing is stored or copied, and no other service can
    compute it."""
    if not client_secret:
        raise ValueError("deriving a webhook secret needs the service's client secret")
    digest = hmac.new(
        client_secret.encode("utf-8"), DERIVE_LABEL + service_id.encode("utf-8"), hashlib.sha256
    ).digest()
    return SECRET_PREFIX + base64.b64encode(digest).decode("ascii")


def decode_secret(secret: str) -> bytes:
    """The HMAC key of a ``whsec_`` secret (a bare base64 key is accepted too)."""
    text = secret.removeprefix(SECRET_PREFIX)
    try:
        key = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("a webhook secret is 'whsec_' followed by base64") from None
    if not key:
        raise ValueError("a webhook secret must not be empty")
    return key


def _as_bytes(body: bytes | str) -> bytes:
    return body.encode("utf-8") if isinstance(body, str) else body


def sign(secret: str, message_id: str, timestamp: int, body: bytes | str) -> str:
    """One signature, ``v1,<base64>``, of the message *message_id* sent at *timestamp*."""
    return sign_with_key(decode_secret(secret), message_id, timestamp, body)


def sign_with_key(key: bytes, message_id: str, timestamp: int, body: bytes | str) -> str:
    """:func:`sign` with the key already decoded (:func:`decode_secret`), for batches."""
    if "." in message_id:
        raise ValueError("a message id must not contain '.'")
    signed = f"{message_id}.{int(timestamp)}.".encode() + _as_bytes(body)
    digest = hmac.new(key, signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode("ascii")


def signature_header(
    secrets_: Iterable[str], message_id: str, timestamp: int, body: bytes | str
) -> str:
    """The ``webhook-signature`` value: one signature per secret, space-separated."""
    return " ".join(sign(secret, message_id, timestamp, body) for secret in secrets_)


def verify_signature(
    secret: str, message_id: str, timestamp: int, body: bytes | str, header: str
) -> bool:
    """Whether any ``v1`` signature in *header* is the one *secret* makes (constant time)."""
    expected = sign(secret, message_id, timestamp, body).encode("ascii")
    found = False
    for candidate in header.split():
        version, _, _value = candidate.partition(",")
        if version != "v1":
            continue
        # Compare every candidate, so the time taken does not tell which one matched.
        if hmac.compare_digest(candidate.encode("ascii", "replace"), expected):
            found = True
    return found


_SHAPE = "headers must be a mapping or a list of (name, value) pairs"


def _header_text(value: object) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bytes):
        return value.decode("latin-1")  # HTTP header bytes, as WSGI passes them
    raise WebhookVerificationError(_SHAPE)


def _header_map(headers: object) -> dict[str, str]:
    """*headers* (a mapping, anything with ``items()``, or ``(name, value)`` pairs) as
    lower-case names to values, the first of repeated names."""
    items: Iterable[Any]
    if isinstance(headers, Mapping) or callable(getattr(headers, "items", None)):
        items = headers.items()  # type: ignore[attr-defined]
    elif isinstance(headers, Iterable) and not isinstance(headers, (str, bytes)):
        items = headers
    else:
        raise WebhookVerificationError(_SHAPE)
    found: dict[str, str] = {}
    try:
        for item in items:
            name, value = item
            found.setdefault(_header_text(name).lower(), _header_text(value))
    except (TypeError, ValueError):
        raise WebhookVerificationError(_SHAPE) from None
    return found


def _header(headers: Mapping[str, str], name: str) -> str:
    try:
        return headers[name]
    except KeyError:
        raise WebhookVerificationError(f"missing header {name}") from None


def verify(
    secret: str | Iterable[str],
    headers: Mapping[str, str] | Iterable[tuple[str, str]],
    body: bytes | str,
    *,
    tolerance: timedelta = DEFAULT_TOLERANCE,
    now: datetime | None = None,
) -> Any:
    """Check a received webhook and return its parsed JSON body.

    *secret* is the subscription's ``whsec_`` secret (or several, while rotating),
    *headers* the request's (any case), *body* the raw body. Raises
    :class:`WebhookVerificationError` when a header is missing, the timestamp is further
    than *tolerance* from *now*, or no signature matches. *now* (default: the clock) must
    be timezone-aware: a naive one (``datetime.utcnow()``) would be read as the host's
    local time, hours off on a host whose zone is not UTC, and is refused with
    :class:`TypeError`.
    """
    if now is not None and (now.tzinfo is None or now.utcoffset() is None):
        raise TypeError(
            f"naive datetime {now.isoformat()} given as now; pass a timezone-aware one "
            "(datetime.now(UTC))"
        )
    found = _header_map(headers)
    message_id = _header(found, "webhook-id")
    raw_timestamp = _header(found, "webhook-timestamp")
    header = _header(found, "webhook-signature")
    # Seconds as ASCII digits, as senders write them: a number of hundreds of digits, which
    # int() reads, is past any float a clock can be compared with.
    if not (raw_timestamp.isascii() and raw_timestamp.isdigit() and len(raw_timestamp) <= 20):
        raise WebhookVerificationError("webhook-timestamp is not an integer")
    timestamp = int(raw_timestamp)
    current = now if now is not None else datetime.now(UTC)
    if abs(current.timestamp() - timestamp) > tolerance.total_seconds():
        raise WebhookVerificationError("webhook-timestamp is outside the tolerance")
    keys = [secret] if isinstance(secret, str) else list(secret)
    try:
        matched = any(verify_signature(k, message_id, timestamp, body, header) for k in keys)
    except ValueError as exc:
        raise WebhookVerificationError(str(exc)) from None
    if not matched:
        raise WebhookVerificationError("no matching signature")
    try:
        return json.loads(_as_bytes(body))
    except (ValueError, RecursionError):
        # Nested deeper than the parser recurses is no message either: the signer's
        # mistake (or its key's leak) must not become the receiver's crash.
        raise WebhookVerificationError("the body is not JSON") from None
