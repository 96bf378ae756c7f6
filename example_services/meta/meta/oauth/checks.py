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
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import unquote

__all__ = [
    "BODY_PARAMETERS",
    "FORM_TYPE",
    "MAX_CLIENT_BODY",
    "BadRequest",
    "basic_credentials",
    "check_body",
    "check_parameters",
    "check_query",
    "scope_syntax_problem",
]


#: The one body type of the token, revocation and introspection endpoints (RFC 6749 3.2,
#: RFC 7009 2.1, RFC 7662 2.1).
FORM_TYPE = "application/x-www-form-urlencoded"
#: The largest body those endpoints read: a token request is a few hundred bytes.
MAX_CLIENT_BODY = 64 * 1024
#: The parameters a client sends those endpoints, which belong in the body, never the URL.
BODY_PARAMETERS = frozenset(
    {
        "grant_type",
        "code",
        "redirect_uri",
        "code_verifier",
        "refresh_token",
        "scope",
        "client_id",
        "client_secret",
        "token",
        "token_type_hint",
    }
)


@dataclass(frozen=True)
class BadRequest(Exception):
    """Why a request is refused: an RFC 6749 error code, a description and, when it is not
    the error's usual one, the HTTP status."""

    error: str
    description: str
    status: int | None = None

    def __str__(self) -> str:
        return f"{self.error}: {self.description}"


def _printable(value: str) -> bool:
    return "\x00" not in value


def check_body(mimetype: str, length: int | None) -> None:
    """Refuse a client request whose body is not a form (RFC 6749 3.2: the parameters
    are ``application/x-www-form-urlencoded``), or is larger than any token request.

    A multipart form or a JSON object was read as if it were one, so a client that sent
    the wrong thing learnt nothing, or was answered as if it had sent what was meant.
    """
    if mimetype != FORM_TYPE:
        shown = f"not {_shown(mimetype)}" if mimetype else "the request has no Content-Type"
        raise BadRequest(
            "invalid_request", f"Send the parameters as {FORM_TYPE} in the request body, {shown}."
        )
    if length is not None and length > MAX_CLIENT_BODY:
        raise BadRequest(
            "invalid_request",
            f"The request body is larger than {MAX_CLIENT_BODY} bytes.",
            status=413,
        )


def check_query(names: Iterable[str]) -> None:
    """Refuse the client endpoints' parameters in the URL: they belong in the body (RFC 6749
    3.2), and a URL ends up in logs, a secret, a code or a token with it. Other names
    are ignored, as an unknown parameter is (RFC 6749 3.1)."""
    names = list(names)
    if "client_secret" in names:
        # An authentication method meta does not support (RFC 6749 2.3.1).
        raise BadRequest(
            "invalid_client",
            "Send client_secret in the request body or as HTTP Basic, never in the URL.",
        )
    for name in names:
        if name in BODY_PARAMETERS:
            raise BadRequest(
                "invalid_request",
                f"Send {name} in the request body, not in the URL: URLs are logged.",
            )


def basic_credentials(header: str | None) -> tuple[str, str] | None:
    """The (client id, secret) of an ``Authorization: Basic`` header, or None without one.

    Both parts are form-encoded before the Basic encoding (RFC 6749 2.3.1), so they are
    percent-decoded here. Raises :class:`BadRequest` (``invalid_client``) for a header
    that is not base64, not UTF-8, has no colon or holds a NUL byte, and
    (``invalid_request``) for several headers in one (RFC 6749 5.2).
    """
    if not header:
        return None
    kind, _, encoded = header.strip().partition(" ")
    if kind.lower() != "basic":
        return None
    encoded = encoded.strip()
    if "," in encoded:
        # Two Authorization headers, joined by the server: base64 has no comma.
        raise BadRequest("invalid_request", "Send one Authorization header, not several.")
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


def scope_syntax_problem(scope: str) -> str | None:
    """Why *scope* is not a scope parameter as RFC 6749 3.3 writes one, or None: scope
    tokens of printable ASCII but the quote and backslash, between spaces.

    Python splits on any whitespace, so a tab, a no-break space (U+00A0) or an
    ideographic space (U+3000) between two scopes was read as a separator by meta and as
    part of one scope by clients and services that follow the RFC: what was granted was
    not what each side saw.
    """
    for char in scope:
        if char != " " and not ("\x21" <= char <= "\x7e" and char not in '"\\'):
            name = unicodedata.name(char, "")
            shown = f"U+{ord(char):04X}" + (f" ({name})" if name else "")
            return (
                f"The scope holds {shown}: scopes are printable ASCII separated by spaces "
                "(RFC 6749 3.3)."
            )
    return None


def _shown(name: str) -> str:
    return "".join(c if c.isprintable() else "?" for c in name)[:64]
