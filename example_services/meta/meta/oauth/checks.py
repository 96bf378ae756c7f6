"""The checks every OAuth request passes before Authlib sees it.

RFC 6749 asks things of a request that Authlib leaves to the server: a parameter appears at
most once (3.1, 3.2), a client uses one authentication method (2.3), ``grant_type`` and
``response_type`` are present (4.1.1, 4.1.3). Malformed input that Authlib would turn into
a 500 is refused here too: a Basic header that is not base64, not UTF-8 or has no colon,
and NUL bytes, which PostgreSQL cannot store or compare. These are plain functions over
plain values; :mod:`meta.oauth.endpoints` turns their answers into OAuth error responses.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import unquote

__all__ = ["BadRequest", "basic_credentials", "check_parameters"]


@dataclass(frozen=True)
class BadRequest(Exception):
    """Why a request is refused: an RFC 6749 error code and a description."""

    error: str
    description: str

    def __str__(self) -> str:
        return f"{self.error}: {self.description}"


def _printable(value: str) -> bool:
    return "\x00" not in value


def basic_credentials(header: str | None) -> tuple[str, str] | None:
    """The (client id, secret) of an ``Authorization: Basic`` header, or None without one.

    Both parts are form-encoded before the Basic encoding (RFC 6749 2.3.1), so they are
    percent-decoded here. Raises :class:`BadRequest` (``invalid_client``) for a header
    that is not base64, not UTF-8, has no colon or holds a NUL byte.
    """
    if not header:
        return None
    kind, _, encoded = header.strip().partition(" ")
    if kind.lower() != "basic":
        return None
    encoded = encoded.strip()
    try:
        raw = base64.b64decode(encoded.encode("ascii"), validate=True)
        text = raw.decode("utf-8")
    except (binascii.Error, UnicodeError, ValueError):
        raise BadRequest(
            "invalid_client", "The Basic credentials are not base64 of UTF-8 text."
        ) from None
    client_id, colon, secret = text.partition(":")
    if not colon or not client_id:
        raise BadRequest("invalid_client", "The Basic credentials need client_id:client_secret.")
    client_id, secret = unquote(client_id), unquote(secret)
    if not _printable(client_id) or not _printable(secret):
        raise BadRequest("invalid_client", "The Basic credentials contain a NUL byte.")
    return client_id, secret


def check_parameters(
    items: Iterable[tuple[str, str]],
    *,
    required: Iterable[str] = (),
    basic: tuple[str, str] | None = None,
) -> None:
    """Refuse repeated or NUL-bearing parameters, missing *required* ones, and a
    ``client_secret`` sent beside Basic credentials. *items* are every (name, value) pair
    of the query string and the form body, repeats included."""
    seen: set[str] = set()
    client_id = None
    for name, value in items:
        if name == "client_id":
            client_id = value
        if not _printable(name) or not _printable(value):
            raise BadRequest(
                "invalid_request", f"The parameter {_shown(name)} contains a NUL byte."
            )
        if name in seen:
            raise BadRequest("invalid_request", f"The parameter {_shown(name)} is repeated.")
        seen.add(name)
    for name in required:
        if name not in seen:
            raise BadRequest("invalid_request", f"The parameter {name} is missing.")
    if basic is not None and "client_secret" in seen:
        raise BadRequest(
            "invalid_request",
            "Authenticate with one method: Basic credentials or client_secret, not both.",
        )
    if basic is not None and client_id is not None and client_id != basic[0]:
        raise BadRequest("invalid_request", "client_id differs from the Basic credentials.")


def _shown(name: str) -> str:
    return "".join(c if c.isprintable() else "?" for c in name)[:64]
