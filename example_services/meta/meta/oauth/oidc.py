"""OpenID Connect on top of meta's OAuth server: ID tokens, nonces, logins, claims.

An authorization request whose scope has ``openid`` is an OpenID Connect one: the code
remembers the request's ``nonce`` and the login it was given under (when, how, which
session), and the token endpoint adds an ID token signed with the client's registered
algorithm (``RS256`` by default, ``EdDSA`` on request). The OpenID scopes (``openid``,
``profile``, ``email``) are not srcore scopes: they stay out of the access token's
``scope`` claim, which every service parses, and live in the grant and the token
response only.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from authlib.oauth2.rfc6749.errors import InvalidRequestError
from authlib.oidc.core.grants import OpenIDCode
from sqlalchemy import select

from srcore.auth.scopes import format_scopes, parse_scopes
from srcore.db import session as db_session

if TYPE_CHECKING:
    from meta.models import User
    from meta.oauth.clients import Client

__all__ = [
    "ACR_MULTI_FACTOR",
    "ACR_SINGLE_FACTOR",
    "ID_TOKEN_ALGORITHMS",
    "OIDC_SCOPES",
    "OIDC_SCOPE_CLAIM",
    "PROMPT_VALUES",
    "Login",
    "MetaOpenIDCode",
    "acr_of",
    "current_login",
    "normalize_scope",
    "service_scope",
    "split_scope",
    "user_claims",
]

#: The OpenID scopes meta understands; each names which claims the client may read.
OIDC_SCOPES = ("openid", "profile", "email")
#: The access token claim with its OpenID scopes (``scope`` has only srcore's).
OIDC_SCOPE_CLAIM = "oidc_scope"
ID_TOKEN_ALGORITHMS = ("RS256", "EdDSA")
#: ``acr`` values: a login with one factor, or with two or more (RFC 8176 methods).
ACR_SINGLE_FACTOR = "urn:meta:acr:1fa"
ACR_MULTI_FACTOR = "urn:meta:acr:2fa"
#: The ``prompt`` values meta understands (OpenID Connect Core 3.1.2.1).
PROMPT_VALUES = ("none", "login", "consent", "select_account")
#: The longest nonce kept (the column's width).
MAX_NONCE_LENGTH = 255
#: Lifetime of an ID token, in seconds.
ID_TOKEN_LIFETIME = 3600
#: The claims each scope releases (OpenID Connect Core 5.4).
SCOPE_CLAIMS = {
    "profile": ("preferred_username", "name", "profile", "website"),
    "email": ("email", "email_verified"),
}


def split_scope(text: str | Iterable[str] | None) -> tuple[list[str], list[str]]:
    """The OpenID scopes of *text* and its other (srcore) scopes, each in request order."""
    items = (text or "").split() if isinstance(text, str | None) else list(text)
    oidc = [s for s in dict.fromkeys(items) if s in OIDC_SCOPES]
    other = [s for s in dict.fromkeys(items) if s not in OIDC_SCOPES]
    return oidc, other


def normalize_scope(text: str) -> str:
    """One spelling per set of scopes: the OpenID scopes first, then the srcore ones sorted.
    Raises :class:`srcore.auth.scopes.ScopeError` for an ungrammatical srcore scope."""
    oidc, other = split_scope(text)
    ordered = [s for s in OIDC_SCOPES if s in oidc]
    rest = format_scopes(parse_scopes(other)) if other else ""
    return " ".join([*ordered, *([rest] if rest else [])])


def service_scope(text: str) -> str:
    """The srcore scopes of *text*: what an access token's ``scope`` claim carries."""
    return " ".join(split_scope(text)[1])


def is_openid(text: str | None) -> bool:
    return "openid" in split_scope(text)[0]


#: RFC 8176 methods by the kind of factor they prove; ``user`` (presence) proves none.
_FACTOR_KINDS = {
    "pwd": "knowledge",
    "pin": "knowledge",
    "kba": "knowledge",
    "otp": "possession",
    "hwk": "possession",
    "swk": "possession",
    "sms": "possession",
    "tel": "possession",
    "sc": "possession",
    "fpt": "inherence",
    "face": "inherence",
    "iris": "inherence",
    "retina": "inherence",
    "vbm": "inherence",
}


def acr_of(amr: Iterable[str]) -> str:
    """The ``acr`` of a login made with the RFC 8176 methods *amr*: factors of two kinds
    (a password and a code; a passkey unlocked with a PIN or a fingerprint) are
    multi-factor; a passkey that only saw someone touch it (``user``) is one factor."""
    methods = set(amr)
    kinds = {_FACTOR_KINDS[m] for m in methods if m in _FACTOR_KINDS}
    if "mfa" in methods or len(kinds) >= 2:
        return ACR_MULTI_FACTOR
    return ACR_SINGLE_FACTOR


# -- the browser's login at meta ----------------------------------------------------------


@dataclass(frozen=True)
class Login:
    """How and when this browser logged in to meta: what an ID token says about it."""

    user_id: int
    auth_time: int
    amr: tuple[str, ...]
    #: The session's public id (``sid`` of ID and logout tokens); not the cookie's secret.
    sid: str

    @property
    def acr(self) -> str:
        return acr_of(self.amr)


def sid_of(secret_hash: str) -> str:
    """The public id of the web session stored under *secret_hash*: a second hash, so the
    id says nothing about the cookie, and two ids of one session are equal."""
    return hashlib.sha256(("meta-sid:" + secret_hash).encode()).hexdigest()[:32]


def browser_sid() -> str | None:
    """The ``sid`` of this browser's login session, from its cookie alone (the session's
    row may be gone already: a logout deletes it first)."""
    from flask import session

    from meta.views import SESSION_ID

    secret = session.get(SESSION_ID)
    if not isinstance(secret, str) or not secret or len(secret) > 128:
        return None
    return sid_of(hashlib.sha256(secret.encode()).hexdigest())


def current_login() -> Login | None:
    """The login of the browser making this request, or None when it has none."""
    from flask import session

    from meta.models import WebSession
    from meta.views import SESSION_ID

    secret = session.get(SESSION_ID)
    uid = session.get("_uid")
    if not isinstance(secret, str) or not secret or len(secret) > 128 or uid is None:
        return None
    secret_hash = hashlib.sha256(secret.encode()).hexdigest()
    row = db_session.scalar(select(WebSession).where(WebSession.secret_hash == secret_hash))
    if row is None or str(row.user_id) != str(uid):
        return None
    created = row.created
    return Login(
        user_id=row.user_id,
        auth_time=int(created.timestamp()),
        amr=tuple(row.amr.split()) or ("pwd",),
        sid=sid_of(secret_hash),
    )


# -- claims -------------------------------------------------------------------------------


def user_claims(user: User, scopes: Iterable[str], *, issuer: str) -> dict[str, Any]:
    """The standard claims about *user* that the OpenID *scopes* release (``sub`` always)."""
    granted = set(scopes)
    claims: dict[str, Any] = {"sub": str(user.id)}
    if "profile" in granted:
        claims.update(
            preferred_username=user.username,
            name=user.username,
            profile=f"{issuer.rstrip('/')}/profile",
        )
        if user.url:
            claims["website"] = user.url
    if "email" in granted:
        claims.update(email=user.email, email_verified=user.email_confirmed_at is not None)
    return claims


# -- the grant extension ------------------------------------------------------------------


class MetaOpenIDCode(OpenIDCode):  # type: ignore[misc]
    """Authlib's OpenID Connect extension of the authorization code grant, on meta's keys.

    ``nonce`` is optional (PKCE protects the code) but, when sent, one a client used
    before is refused: Authlib asks :meth:`exists_nonce` before a code is made.
    """

    def validate_openid_authorization_request(self, grant: Any, redirect_uri: str) -> None:
        nonce = grant.request.payload.data.get("nonce")
        if nonce is not None and len(str(nonce)) > MAX_NONCE_LENGTH:
            raise InvalidRequestError(
                f"nonce may be at most {MAX_NONCE_LENGTH} characters long.",
                redirect_uri=redirect_uri,
            )
        prompts = str(grant.request.payload.data.get("prompt") or "").split(" ")
        unknown = [p for p in prompts if p and p not in PROMPT_VALUES]
        if unknown:
            # An unknown value (a typo, "LOGIN") ignored would pass for a login forced.
            raise InvalidRequestError(
                "prompt is none, login, consent or select_account, separated by spaces.",
                redirect_uri=redirect_uri,
            )
        super().validate_openid_authorization_request(grant, redirect_uri)

    def exists_nonce(self, nonce: str, request: Any) -> bool:
        from meta.oauth.models import AuthorizationCode

        found = db_session.scalar(
            select(AuthorizationCode.id)
            .where(
                AuthorizationCode.client_id == request.payload.client_id,
                AuthorizationCode.nonce == nonce,
            )
            .limit(1)
        )
        return found is not None

    def get_client_algorithm(self, client: Client) -> str:
        return client_algorithm(client)

    def resolve_client_private_key(self, client: Client) -> Any:
        from meta.oauth.server import oauth_state

        return oauth_state().ring.signing_key_for(client_algorithm(client))

    def get_encode_header(self, client: Client) -> dict[str, Any]:
        key = self.resolve_client_private_key(client)
        return {"alg": client_algorithm(client), "kid": key.kid, "typ": "JWT"}

    def get_client_claims(self, client: Client) -> dict[str, Any]:
        from meta.oauth.server import oauth_state

        now = int(time.time())
        return {
            "iss": oauth_state().issuer,
            "aud": client.client_id,
            "azp": client.client_id,
            "iat": now,
            "exp": now + ID_TOKEN_LIFETIME,
        }

    def encode_id_token(self, token: dict[str, Any], request: Any) -> str:
        client = request.client
        claims = self.get_client_claims(client)
        code = request.authorization_code
        if code is not None:
            claims.update(self.get_authorization_code_claims(code))
            if code.sid:
                claims["sid"] = code.sid
        alg = client_algorithm(client)
        access_token = token.get("access_token")
        if access_token:
            claims["at_hash"] = half_hash(access_token, alg)
        claims.update(self.generate_user_info(request.user, token["scope"]))
        return sign_jwt(claims, alg, typ="JWT")

    def generate_user_info(self, user: User, scope: str) -> dict[str, Any]:
        from meta.oauth.server import oauth_state

        return user_claims(user, split_scope(scope)[0], issuer=oauth_state().issuer)


def half_hash(value: str, alg: str) -> str:
    """``at_hash``: the left half of the token's hash, the hash going with *alg*
    (SHA-256 for RS256, SHA-512 for Ed25519), base64url without padding."""
    import base64

    method = hashlib.sha512 if alg == "EdDSA" else hashlib.sha256
    digest = method(value.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest[: len(digest) // 2]).rstrip(b"=").decode("ascii")


def sign_jwt(claims: dict[str, Any], alg: str, *, typ: str) -> str:
    """Sign *claims* with meta's current key of *alg* (``RS256`` or ``EdDSA``)."""
    from joserfc import jwt

    from meta.oauth.server import oauth_state
    from srcore.auth import jose

    key = oauth_state().ring.signing_key_for(alg)
    header = {"alg": alg, "kid": key.kid, "typ": typ}
    # srcore's registry names EdDSA without joserfc's warning (RFC 9864 renamed it).
    registry = jose.registry() if alg == "EdDSA" else None
    return jwt.encode(header, claims, key, algorithms=[alg], registry=registry)


def verify_jwt(token: str) -> dict[str, Any]:
    """The claims of a JWT that meta signed with any published key, expired or not.
    Raises ValueError when it is not one (bad form, signature or issuer)."""
    from joserfc import jws, jwt
    from joserfc.errors import JoseError

    from meta.oauth.server import oauth_state
    from srcore.auth import jose

    st = oauth_state()
    if not isinstance(token, str) or len(token) > 8192 or token.count(".") != 2:
        raise ValueError("not a signed JWT")
    try:
        header = jws.extract_compact(token.encode("ascii")).protected
        alg = header.get("alg")
        if alg not in ID_TOKEN_ALGORITHMS:
            raise ValueError("not signed by meta")
        registry = jose.registry() if alg == "EdDSA" else None
        claims = dict(
            jwt.decode(
                token, st.ring.id_token_key_set(), algorithms=[alg], registry=registry
            ).claims
        )
    except (JoseError, UnicodeError, KeyError, TypeError) as exc:
        raise ValueError("not signed by meta") from exc
    if claims.get("iss") != st.issuer:
        raise ValueError("not issued by meta")
    return claims


def client_algorithm(client: Client) -> str:
    alg = getattr(client, "id_token_alg", None) or "RS256"
    return alg if alg in ID_TOKEN_ALGORITHMS else "RS256"
