"""The authorization server's tables: clients, codes, grants, tokens, keys and revocations.

Secrets (client secrets, codes, refresh tokens) are stored only as SHA-256 digests; a
leaked database copy yields nothing that can be presented back to meta. First-party
clients are not rows: they are read from the config file (see :mod:`meta.oauth.clients`).
"""

from __future__ import annotations

import hashlib
from datetime import datetime

from sqlalchemy import BigInteger, ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from meta.models import Base, User
from srcore.db import utcnow

__all__ = [
    "AuthorizationCode",
    "Consent",
    "Grant",
    "OAuthClient",
    "PersonalAccessToken",
    "RefreshToken",
    "RevocationEvent",
    "SigningKey",
    "digest",
]


def digest(secret: str) -> str:
    """The SHA-256 hex digest a secret is stored and looked up under."""
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


class OAuthClient(Base):
    """A third-party application registered by a user at ``/clients``."""

    __tablename__ = "oauth_client"

    id: Mapped[int] = mapped_column(primary_key=True)
    client_id: Mapped[str] = mapped_column(String(64), unique=True)
    owner_id: Mapped[int] = mapped_column(ForeignKey("user.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(128))
    #: Newline-separated, each compared exactly.
    redirect_uris: Mapped[str] = mapped_column(Text)
    confidential: Mapped[bool] = mapped_column(default=True)
    secret_hash: Mapped[str | None] = mapped_column(String(64))
    created: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(default=None)
    #: OpenID Connect: where RP-initiated logout may send the browser back to
    #: (newline-separated, compared exactly).
    post_logout_redirect_uris: Mapped[str] = mapped_column(Text, default="", server_default="")
    #: OpenID Connect Back-Channel Logout: where meta POSTs a logout token.
    backchannel_logout_uri: Mapped[str | None] = mapped_column(String(512), default=None)
    #: How its ID tokens are signed: ``RS256`` (what every library verifies) or ``EdDSA``.
    id_token_alg: Mapped[str] = mapped_column(String(16), default="RS256", server_default="RS256")

    owner: Mapped[User] = relationship(lazy="joined")

    @property
    def redirect_uri_list(self) -> list[str]:
        return [line for line in self.redirect_uris.splitlines() if line.strip()]

    @property
    def post_logout_redirect_uri_list(self) -> list[str]:
        return [line for line in self.post_logout_redirect_uris.splitlines() if line.strip()]


class AuthorizationCode(Base):
    """A single-use authorization code; kept after use so a replay can be detected."""

    __tablename__ = "oauth_authorization_code"

    id: Mapped[int] = mapped_column(primary_key=True)
    code_hash: Mapped[str] = mapped_column(String(64), unique=True)
    client_id: Mapped[str] = mapped_column(String(64))
    user_id: Mapped[int] = mapped_column(ForeignKey("user.id", ondelete="CASCADE"), index=True)
    #: As sent with the authorization request (None: the client's only URI was used).
    redirect_uri: Mapped[str | None] = mapped_column(Text)
    scope: Mapped[str] = mapped_column(Text)
    code_challenge: Mapped[str | None] = mapped_column(String(128))
    code_challenge_method: Mapped[str | None] = mapped_column(String(16))
    created: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column()
    used_at: Mapped[datetime | None] = mapped_column(default=None)
    #: The grant the code was exchanged for (revoked if the code is replayed).
    grant_id: Mapped[str | None] = mapped_column(String(64))
    #: OpenID Connect: the request's nonce (kept: a nonce seen twice is a replay).
    nonce: Mapped[str | None] = mapped_column(String(255), default=None)
    #: When the user logged in to meta (Unix time), and how (RFC 8176, space-separated).
    auth_time: Mapped[int | None] = mapped_column(BigInteger, default=None)
    amr: Mapped[str | None] = mapped_column(String(64), default=None)
    #: The public id of meta's login session, for back-channel logout.
    sid: Mapped[str | None] = mapped_column(String(64), default=None, index=True)

    __table_args__ = (Index("ix_oauth_authorization_code_client_id_nonce", "client_id", "nonce"),)

    # Authlib's AuthorizationCodeMixin (and OpenID Connect's)
    def get_redirect_uri(self) -> str | None:
        return self.redirect_uri

    def get_scope(self) -> str:
        return self.scope

    def get_nonce(self) -> str | None:
        return self.nonce

    def get_auth_time(self) -> int | None:
        return self.auth_time

    def get_amr(self) -> list[str] | None:
        return self.amr.split() if self.amr else None

    def get_acr(self) -> str | None:
        from meta.oauth.oidc import acr_of

        return acr_of(self.get_amr() or []) if self.auth_time is not None else None


class Grant(Base):
    """One authorization of a client by a user; its tokens share its fate."""

    __tablename__ = "oauth_grant"
    __table_args__ = (Index("ix_oauth_grant_user_id_client_id", "user_id", "client_id"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("user.id", ondelete="CASCADE"))
    client_id: Mapped[str] = mapped_column(String(64))
    scope: Mapped[str] = mapped_column(Text)
    created: Mapped[datetime] = mapped_column(default=utcnow)
    last_used: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(default=None)


class RefreshToken(Base):
    """An opaque refresh token (hashed); rotated on each use, a replay kills its grant."""

    __tablename__ = "oauth_refresh_token"

    id: Mapped[int] = mapped_column(primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    grant_id: Mapped[str] = mapped_column(
        ForeignKey("oauth_grant.id", ondelete="CASCADE"), index=True
    )
    created: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column()
    used_at: Mapped[datetime | None] = mapped_column(default=None)

    grant: Mapped[Grant] = relationship(lazy="joined")


class Consent(Base):
    """A user's remembered approval of a third-party client for exactly these scopes."""

    __tablename__ = "oauth_consent"
    __table_args__ = (UniqueConstraint("user_id", "client_id", "scope"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("user.id", ondelete="CASCADE"))
    client_id: Mapped[str] = mapped_column(String(64))
    scope: Mapped[str] = mapped_column(Text)
    created: Mapped[datetime] = mapped_column(default=utcnow)


class PersonalAccessToken(Base):
    """A token a user made for themselves; only its jti is kept, never the token."""

    __tablename__ = "personal_access_token"
    # The signing keys still published are those some live token was signed with.
    __table_args__ = (Index("ix_personal_access_token_kid_expires_at", "kid", "expires_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("user.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(128))
    scope: Mapped[str] = mapped_column(Text)
    jti: Mapped[str] = mapped_column(String(64), unique=True)
    #: The key that signed it: a retired key stays published while its tokens live.
    kid: Mapped[str] = mapped_column(String(64))
    created: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column()
    revoked_at: Mapped[datetime | None] = mapped_column(default=None)
    #: What the token that made this one came from, when a token made it through the API:
    #: an OAuth grant id or ``pat:<id>``. Revoking that revokes this token too, so an
    #: application cannot leave behind tokens that outlive its access.
    parent: Mapped[str | None] = mapped_column(String(80), index=True, default=None)


class SigningKey(Base):
    """A token-signing key; the newest unretired one of each algorithm signs.

    Access tokens are signed with Ed25519 (``EdDSA``) only; ID tokens with the algorithm
    their client registered, ``RS256`` (an RSA key) by default.
    """

    __tablename__ = "oauth_signing_key"

    kid: Mapped[str] = mapped_column(String(64), primary_key=True)
    private_jwk: Mapped[str] = mapped_column(Text)
    alg: Mapped[str] = mapped_column(String(16), default="EdDSA", server_default="EdDSA")
    created: Mapped[datetime] = mapped_column(default=utcnow)
    retired_at: Mapped[datetime | None] = mapped_column(default=None)


class RevocationEvent(Base):
    """One revocation, written in the transaction that revokes; pushed and pulled by seq."""

    __tablename__ = "revocation_event"

    seq: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(16))
    subject: Mapped[str] = mapped_column(String(128))
    not_before: Mapped[int | None] = mapped_column(BigInteger)
    expires_at: Mapped[int | None] = mapped_column(BigInteger)
    created: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (
        Index("ix_revocation_event_kind_subject", "kind", "subject"),
        {"sqlite_autoincrement": True},
    )

    def as_dict(self) -> dict[str, object]:
        return {
            "seq": self.seq,
            "kind": self.kind,
            "subject": self.subject,
            "not_before": self.not_before,
            "expires_at": self.expires_at,
        }
