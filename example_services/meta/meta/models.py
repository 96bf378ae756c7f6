"""meta's account tables: users (the network's accounts) and mailed one-time tokens.

The ``user`` table's core columns (:class:`srcore.db.UserMixin`) belong to srcore's own
migration lineage; meta's lineage adds the columns only meta knows (password hash, email
confirmation, ...) and the tables below.

Account ids are meta's to hand out and every service stores them, so an id must never be
given twice, not even after the account with the highest id is deleted. On PostgreSQL they
come from the sequence ``user_id_seq``; on SQLite, which has no sequences, from a one-column
``AUTOINCREMENT`` table (SQLite then guarantees ids only grow). See :func:`next_user_id`.
"""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Column,
    Enum,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    Sequence,
    String,
    Table,
    func,
    insert,
    select,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

import srcore.db
from srcore.db import UserMixin, utcnow

__all__ = [
    "USER_ID_SEQUENCE",
    "AuditEntry",
    "Base",
    "EmailToken",
    "PasskeyChallenge",
    "PasskeyCredential",
    "RecoveryCode",
    "TokenPurpose",
    "TotpFactor",
    "User",
    "WebSession",
    "next_user_id",
]


class Base(DeclarativeBase):
    metadata = srcore.db.make_metadata()
    type_annotation_map = srcore.db.TYPE_ANNOTATION_MAP


#: PostgreSQL's source of account ids (created by meta's migration on PostgreSQL only).
USER_ID_SEQUENCE = Sequence("user_id_seq", metadata=Base.metadata)

#: SQLite's source of account ids. Kept out of ``Base.metadata`` on purpose: it exists on
#: SQLite only, so autogenerate must not expect it on PostgreSQL.
_sqlite_ids = Table(
    "user_id_allocation",
    MetaData(),
    Column("id", Integer, primary_key=True),
    sqlite_autoincrement=True,
)


def next_user_id(session: Session) -> int:
    """Allocate a new account id that was never used before, in *session*'s transaction."""
    if session.get_bind().dialect.name == "postgresql":
        value = session.scalar(select(USER_ID_SEQUENCE.next_value()))
    else:
        result = session.execute(insert(_sqlite_ids).values(id=None))
        value = result.inserted_primary_key[0] if result.inserted_primary_key else None
    if not isinstance(value, int):
        raise RuntimeError("the database gave no new account id")
    return value


class User(UserMixin, Base):
    """An account: the core columns every service mirrors, plus meta's own."""

    __tablename__ = "user"

    password_hash: Mapped[str] = mapped_column(String(256))
    email_confirmed_at: Mapped[datetime | None]
    #: A new address waiting for confirmation; ``email`` changes once it is confirmed.
    pending_email: Mapped[str | None] = mapped_column(String(256))
    last_login_at: Mapped[datetime | None]
    #: Web sessions at meta started before this moment are no longer valid (password
    #: change, suspension, "log out everywhere").
    sessions_valid_after: Mapped[datetime | None]

    #: One account per address, as the database's rule: the views check first, but two
    #: registrations (or a registration and an address change) at once both passed the
    #: check. Addresses are stored lower-cased; the index says so again.
    __table_args__ = (Index("uq_user_email_lower", func.lower(text("email")), unique=True),)

    def __repr__(self) -> str:
        return f"<User {self.id} {self.username!r} {self.user_type.value}>"


class TokenPurpose(enum.StrEnum):
    """What a mailed link does."""

    confirm = "confirm"
    reset = "reset"
    change_email = "change-email"


class EmailToken(Base):
    """A link sent by mail. Only a hash of its secret is kept, so a leaked table opens nothing."""

    __tablename__ = "email_token"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("user.id", ondelete="CASCADE"), index=True)
    purpose: Mapped[TokenPurpose] = mapped_column(
        Enum(
            TokenPurpose,
            name="token_purpose",
            native_enum=False,
            create_constraint=False,
            length=16,
            values_callable=lambda members: [m.value for m in members],
        )
    )
    #: SHA-256 of the token in the link, hex.
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    #: The address the link was sent to (for a change of address: the new one).
    email: Mapped[str] = mapped_column(String(256))
    created: Mapped[datetime] = mapped_column(default=utcnow)
    expires: Mapped[datetime]
    used_at: Mapped[datetime | None]


class WebSession(Base):
    """One logged-in browser. The cookie carries the secret; only its hash is kept here.

    The signed cookie alone proves nothing once its row is gone: logging out deletes the
    row, so a copy of the cookie stops working too, and a password change, a suspension
    or "log out everywhere" deletes every row of the account. A row unused for longer
    than ``session-lifetime`` goes too (its cookie has expired): at the account's next
    login, and in the hourly pruning (:mod:`meta.oauth.pruning`).
    """

    __tablename__ = "web_session"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("user.id", ondelete="CASCADE"), index=True)
    #: SHA-256 of the secret in the cookie, hex.
    secret_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created: Mapped[datetime] = mapped_column(default=utcnow)
    #: When a page of this browser was last served, recorded again once it is older than
    #: :func:`meta.logic.web_session_use_due` allows (not a write per page). The login
    #: lasts ``session-lifetime`` past its last use, as the cookie does: what judges a
    #: session abandoned, at the account's next login and in the hourly pruning.
    last_used: Mapped[datetime] = mapped_column(default=utcnow)
    #: How this browser logged in, as space-separated RFC 8176 method references
    #: (``pwd``, ``pwd otp``): what an ID token's ``amr`` claim will say.
    amr: Mapped[str] = mapped_column(String(64), default="pwd", server_default="pwd")


class TotpFactor(Base):
    """An account's authenticator app (RFC 6238 time-based one-time passwords).

    One per account. *last_counter* is the time step of the last code accepted: a code is
    good once, so one seen over a shoulder or in a log cannot be replayed within its window.
    """

    __tablename__ = "totp_factor"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(
        ForeignKey("user.id", ondelete="CASCADE"), unique=True, index=True
    )
    #: The shared secret, base32, as the authenticator app has it.
    secret: Mapped[str] = mapped_column(String(64))
    created: Mapped[datetime] = mapped_column(default=utcnow)
    last_counter: Mapped[int | None]


class RecoveryCode(Base):
    """A one-time code that stands in for the authenticator app. Stored hashed; used once."""

    __tablename__ = "recovery_code"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("user.id", ondelete="CASCADE"), index=True)
    #: SHA-256 of the account id and the normalized code, hex.
    code_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created: Mapped[datetime] = mapped_column(default=utcnow)
    used_at: Mapped[datetime | None]


class AuditEntry(Base):
    """One security event of an account: when, what, from which address and browser.

    *user_id* has no foreign key on purpose: account ids are never reused, and the entries
    of a deleted account stay readable to admins until they are pruned
    (``[meta] audit-retention``). *actor_id* is the admin who acted, when it was not the
    account itself.
    """

    __tablename__ = "audit_entry"
    # Each list of entries (everyone's, an account's, one kind's) is read newest first,
    # a page at a time: an index in that order, so a page reads a page's rows, not all.
    __table_args__ = (
        Index("ix_audit_entry_created_id", "created", "id"),
        Index("ix_audit_entry_user_id_created_id", "user_id", "created", "id"),
        Index("ix_audit_entry_kind_created_id", "kind", "created", "id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    created: Mapped[datetime] = mapped_column(default=utcnow)
    user_id: Mapped[int | None]
    actor_id: Mapped[int | None]
    kind: Mapped[str] = mapped_column(String(32))
    address: Mapped[str] = mapped_column(String(64), default="")
    user_agent: Mapped[str] = mapped_column(String(256), default="")
    detail: Mapped[str] = mapped_column(String(256), default="")


class PasskeyCredential(Base):
    """A passkey (a WebAuthn public-key credential) of an account.

    It logs in on its own (a discoverable credential, with user verification) or serves as
    the second factor after the password. *credential_id* is what the authenticator names
    it by (base64url); *user_handle* is the random handle the authenticator keeps for the
    account (never its id: a handle read off a key tells nothing), shared by every passkey
    of the account so that registering again on one authenticator replaces its old key.
    """

    __tablename__ = "passkey_credential"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("user.id", ondelete="CASCADE"), index=True)
    #: The credential id, base64url (at most 1023 bytes, so 1364 characters).
    credential_id: Mapped[str] = mapped_column(String(1400), unique=True)
    #: The COSE public key, as the authenticator gave it at registration.
    public_key: Mapped[bytes] = mapped_column(LargeBinary)
    #: The authenticator's signature counter at the last use (0: it keeps none).
    sign_count: Mapped[int] = mapped_column(BigInteger, default=0)
    #: The account's WebAuthn user handle, base64url.
    user_handle: Mapped[str] = mapped_column(String(128))
    #: The name its owner gave it ("laptop", "phone").
    name: Mapped[str] = mapped_column(String(64))
    #: Transports the browser reported (space-separated: "internal hybrid usb").
    transports: Mapped[str] = mapped_column(String(128), default="")
    #: Whether the key may be synced to other devices (the backup-eligible flag).
    backup_eligible: Mapped[bool] = mapped_column(default=False)
    created: Mapped[datetime] = mapped_column(default=utcnow)
    last_used_at: Mapped[datetime | None]


class PasskeyChallenge(Base):
    """A WebAuthn challenge waiting for its answer: usable once, until *expires*.

    The browser's signed session cookie carries the challenge itself; this row (its hash)
    is what makes it single-use, since a copy of the cookie could be sent again.
    """

    __tablename__ = "passkey_challenge"

    id: Mapped[int] = mapped_column(primary_key=True)
    #: SHA-256 of the challenge, hex.
    challenge_hash: Mapped[str] = mapped_column(String(64), unique=True)
    #: What it is for: ``register``, ``login`` (password-less) or ``second`` (factor).
    purpose: Mapped[str] = mapped_column(String(16))
    #: The account it was made for (none for a password-less login: the key names it).
    user_id: Mapped[int | None] = mapped_column(ForeignKey("user.id", ondelete="CASCADE"))
    expires: Mapped[datetime] = mapped_column(index=True)
