"""Local verification of access tokens: signed JWTs (RFC 9068) checked against meta's keys.

Every service verifies tokens itself, with no call to meta per request: the signature is
checked against a key set (meta's JWKS, cached), the claims against this service, and the
result is cached in process under the token's hash until the token expires, so a busy
client pays for one signature check per token, not per request.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from srcore.auth.jose import ALGORITHMS
from srcore.auth.scopes import Scope, ScopeError, parse_scopes
from srcore.identity.protocol import CLOCK_LEEWAY
from srcore.routing import ID_MAX

__all__ = [
    "ALGORITHMS",
    "AccessToken",
    "KeySource",
    "KeysUnavailable",
    "StaticKeySource",
    "TokenError",
    "TokenVerifier",
    "VerificationUnavailable",
    "token_hash",
]

#: The ``typ`` header RFC 9068 requires of JWT access tokens.
ACCESS_TOKEN_TYPES = frozenset({"at+jwt", "application/at+jwt"})
_MAX_TOKEN_LENGTH = 8192
#: Seconds between two warnings that this host's clock is behind meta's.
_SKEW_WARNING_INTERVAL = 60.0

log = logging.getLogger("srcore.auth")


class TokenError(Exception):
    """A token that must be refused; ``description`` says why, for the 401 body."""

    def __init__(self, description: str, *, error: str = "invalid_token") -> None:
        super().__init__(description)
        self.error = error
        self.description = description


class VerificationUnavailable(Exception):
    """A token cannot be checked right now (meta or Redis unreachable): answer 503, not 401."""


class KeysUnavailable(VerificationUnavailable):
    """No verification keys are at hand and meta cannot be asked for them now."""


@dataclass(frozen=True)
class AccessToken:
    """What a verified token says: who, for which client, with which scopes, until when."""

    subject: int | None
    client_id: str
    scopes: frozenset[Scope]
    expires_at: int
    issued_at: int
    jti: str
    hash: str
    claims: dict[str, Any]


class KeySource(Protocol):
    """Where verification keys come from (meta's JWKS in production, a fixed set in tests)."""

    def key_set(self, kid: str | None) -> Any:
        """Return a joserfc ``KeySet`` that should contain *kid*; refresh if it does not.

        Raises :class:`KeysUnavailable` when it has no keys to give at all.
        """


class StaticKeySource:
    """A fixed key set, for tests and for deployments that pin meta's public keys."""

    def __init__(self, key_set: Any) -> None:
        self._key_set = key_set

    def key_set(self, kid: str | None) -> Any:
        return self._key_set


def token_hash(token: str) -> str:
    """The SHA-256 hex digest under which a token is cached and revoked."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


class TokenVerifier:
    """Verify bearer tokens for one service.

    *issuer* is meta's issuer identifier; *audience* is this service's origin or id as meta
    writes it into ``aud``. *is_revoked* is asked about every token, cached or not, so a
    revocation takes effect on the next request.

    ``iat``, ``nbf`` and ``exp`` are meta's clock, compared with *clock* (this host's)
    give or take *leeway* seconds. The revocation list keeps an expiring event for
    :data:`~srcore.identity.protocol.CLOCK_LEEWAY` after its expiry, so a larger
    *leeway* would let a revoked token through at the end of its life.
    """

    def __init__(
        self,
        *,
        keys: KeySource,
        issuer: str,
        audience: str,
        is_revoked: Callable[[AccessToken], bool] | None = None,
        clock: Callable[[], float] = time.time,
        leeway: int = CLOCK_LEEWAY,
        cache_size: int = 10_000,
    ) -> None:
        self.keys = keys
        self.issuer = issuer
        self.audience = audience
        self.is_revoked = is_revoked
        self.clock = clock
        self.leeway = leeway
        self.cache_size = cache_size
        self._cache: OrderedDict[str, AccessToken] = OrderedDict()
        self._lock = threading.Lock()
        self._skew_warned: float | None = None

    def verify(self, token: str) -> AccessToken:
        """Return the verified token, or raise :class:`TokenError`."""
        if not token or len(token) > _MAX_TOKEN_LENGTH:
            raise TokenError("The access token is malformed.")
        digest = token_hash(token)
        now = self.clock()
        with self._lock:
            cached = self._cache.get(digest)
            if cached is not None:
                self._cache.move_to_end(digest)
        if cached is None:
            cached = self._verify_signed(token, digest, now)
            with self._lock:
                self._cache[digest] = cached
                while len(self._cache) > self.cache_size:
                    self._cache.popitem(last=False)
        if cached.expires_at + self.leeway < now:
            with self._lock:
                self._cache.pop(digest, None)
            raise TokenError("The access token has expired.")
        if self.is_revoked is not None and self.is_revoked(cached):
            raise TokenError("The access token has been revoked.")
        return cached

    def forget(self, digest: str | None = None) -> None:
        """Drop one cached token (by hash) or all of them."""
        with self._lock:
            if digest is None:
                self._cache.clear()
            else:
                self._cache.pop(digest, None)

    def _verify_signed(self, token: str, digest: str, now: float) -> AccessToken:
        from joserfc import jws
        from joserfc.errors import JoseError

        from srcore.auth import jose

        try:
            header = jws.extract_compact(token.encode("ascii")).protected
        except (JoseError, ValueError, UnicodeError):
            raise TokenError("The access token is malformed.") from None
        if header.get("alg") not in ALGORITHMS:
            raise TokenError("The access token is not signed with an accepted algorithm.")
        if header.get("typ") not in ACCESS_TOKEN_TYPES:
            raise TokenError("The token is not an access token (typ must be at+jwt).")
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise TokenError("The access token is malformed.")
        try:
            key_set = self.keys.key_set(kid)
            decoded = jose.decode(token, key_set)
        except (JoseError, ValueError, KeyError, TypeError):
            raise TokenError("The access token's signature is not valid.") from None
        return self._check_claims(decoded.claims, digest, now)

    def _warn_behind(self, seconds: float) -> None:
        """Tell the operator this host's clock is behind meta's: a signed ``iat`` ahead of
        it can mean nothing else, and every fresh token fails until the clock is set.
        Once a minute at most, however many requests carry such tokens."""
        moment = self.clock()
        with self._lock:
            last = self._skew_warned
            if last is not None and 0 <= moment - last < _SKEW_WARNING_INTERVAL:
                return
            self._skew_warned = moment
        log.warning(
            "refused an access token that meta issued %d s ahead of this host's clock "
            "(srcore tolerates %d s): this host's clock is behind meta's; keep clocks in "
            "sync with NTP",
            round(seconds),
            self.leeway,
        )

    def _check_claims(self, claims: dict[str, Any], digest: str, now: float) -> AccessToken:
        if claims.get("iss") != self.issuer:
            raise TokenError("The access token was issued by someone else.")
        audience = claims.get("aud")
        audiences = audience if isinstance(audience, list) else [audience]
        if self.audience not in audiences:
            raise TokenError("The access token is meant for another service.")
        exp, iat = claims.get("exp"), claims.get("iat")
        if not isinstance(exp, int) or not isinstance(iat, int):
            raise TokenError("The access token lacks exp or iat.")
        if exp + self.leeway < now:
            raise TokenError("The access token has expired.")
        if iat - self.leeway > now:
            self._warn_behind(iat - now)
            raise TokenError("The access token was issued in the future.")
        # RFC 7519 4.1.5: a token is not accepted before its nbf (meta sets none today,
        # but a token that says it is not valid yet must not be taken for one that is).
        nbf = claims.get("nbf")
        if nbf is not None:
            if not isinstance(nbf, int) or isinstance(nbf, bool):
                raise TokenError("The access token's nbf is not a number.")
            if nbf - self.leeway > now:
                raise TokenError("The access token is not valid yet.")
        client_id, jti = claims.get("client_id"), claims.get("jti")
        if not isinstance(client_id, str) or not isinstance(jti, str):
            raise TokenError("The access token lacks client_id or jti.")
        subject = claims.get("sub")
        user_id: int | None
        if subject is None or subject == client_id:
            user_id = None
        elif (
            isinstance(subject, str)
            and subject.isascii()
            and subject.isdigit()
            and len(subject) <= len(str(ID_MAX))
            and 0 < int(subject) <= ID_MAX
        ):
            # A user id as the user table holds it: anything past its range names no row.
            user_id = int(subject)
        else:
            raise TokenError("The access token's subject is not valid.")
        scope = claims.get("scope", "")
        if not isinstance(scope, str):
            raise TokenError("The access token's scope is not valid.")
        try:
            scopes = parse_scopes(scope)
        except ScopeError as exc:
            raise TokenError(f"The access token's scope is not valid: {exc}") from None
        return AccessToken(
            subject=user_id,
            client_id=client_id,
            scopes=scopes,
            expires_at=exp,
            issued_at=iat,
            jti=jti,
            hash=digest,
            claims=dict(claims),
        )
