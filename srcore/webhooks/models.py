"""The webhook tables: subscriptions, the outbox, deliveries and the delivery log, in every
service's database through the core migration lineage (:func:`srcore.migrate.core_metadata`)."""

from __future__ import annotations

import enum
import secrets
from datetime import datetime

from sqlalchemy import BigInteger, ForeignKey, Index, Integer, String, Text, UniqueConstraint, false
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from srcore.db import TYPE_ANNOTATION_MAP, make_metadata, utcnow

__all__ = [
    "ANY_CLIENT",
    "VISIBILITY_LENGTH",
    "Account",
    "Attempt",
    "Delivery",
    "DeliveryStatus",
    "OutboxRow",
    "Subscription",
    "WebhookBase",
    "new_message_id",
]

#: A 64-bit key on PostgreSQL (SQLite auto-increments only ``INTEGER PRIMARY KEY``). Tables
#: are ``sqlite_autoincrement``, or SQLite would reuse a deleted row's id.
BigId = BigInteger().with_variant(Integer(), "sqlite")


class WebhookBase(DeclarativeBase):
    """The declarative base of the webhook tables (copied into the core metadata)."""

    metadata = make_metadata()
    type_annotation_map = TYPE_ANNOTATION_MAP


class DeliveryStatus(enum.StrEnum):
    """Where a delivery stands."""

    pending = "pending"
    delivered = "delivered"
    failed = "failed"
    cancelled = "cancelled"


#: The ``client_id`` of a user's subscription made before srcore_0007, when which client
#: made it was not recorded: every token of its owner sees it until one sets it up again.
ANY_CLIENT = "*"


def new_message_id() -> str:
    """A fresh ``webhook-id``: ``msg_`` and 26 hex digits."""
    return "msg_" + secrets.token_hex(13)


class Subscription(WebhookBase):
    """A URL subscribed to some of a service's events, by a user or another service."""

    __tablename__ = "srcore_webhook_subscription"
    __table_args__ = {"sqlite_autoincrement": True}

    id: Mapped[int] = mapped_column(primary_key=True)
    #: The owner's meta user id, or for a service subscriber its OAuth client id.
    owner_id: Mapped[int | None] = mapped_column(index=True)
    owner_client: Mapped[str | None] = mapped_column(String(256))
    #: The OAuth client of the token that set it up (None: its owner did, on the web pages;
    #: :data:`ANY_CLIENT`: before srcore_0007 recorded it): a token sees only its own
    #: client's. Revoking that token (``token_id``, its jti), its grant or its client disables
    #: the subscription and makes it its owner's alone (:mod:`.accounts`).
    client_id: Mapped[str | None] = mapped_column(String(256))
    grant_id: Mapped[str | None] = mapped_column(String(256), index=True)
    token_id: Mapped[str | None] = mapped_column(String(256), index=True)
    url: Mapped[str] = mapped_column(Text)
    events: Mapped[str] = mapped_column(Text)  # space-separated
    #: Only events about this resource (e.g. ``tracker:12``); None: every resource.
    resource: Mapped[str | None] = mapped_column(String(256))
    #: The scopes the subscriber held when it subscribed, space-separated.
    scopes: Mapped[str] = mapped_column(Text, default="")
    secret: Mapped[str] = mapped_column(String(128))
    previous_secret: Mapped[str | None] = mapped_column(String(128))
    previous_secret_expires: Mapped[datetime | None]
    enabled: Mapped[bool] = mapped_column(default=True)
    disabled_reason: Mapped[str | None] = mapped_column(String(512))
    #: Meta's first-party subscription to a service's ``/_srcore/events``, from the config:
    #: its deliveries skip the SSRF guard, so only code sets it; the API and pages hide it.
    trusted: Mapped[bool] = mapped_column(default=False, server_default=false())
    #: Since when every attempt has failed; None after a success.
    failing_since: Mapped[datetime | None]
    #: When its owner last set it up or enabled it (None: when created): see :mod:`.accounts`.
    confirmed_at: Mapped[datetime | None]
    created: Mapped[datetime] = mapped_column(default=utcnow)
    updated: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    @property
    def event_names(self) -> frozenset[str]:
        return frozenset(self.events.split())

    def __repr__(self) -> str:
        return f"<Subscription {self.id} {self.url!r} {self.events!r}>"


#: The few trusted subscriptions, which every fan-out reads: a partial index, as SQLite
#: (with no histogram) would price finding them in a full one at half the table.
_trusted = Subscription.trusted.is_(True)
Index(None, Subscription.trusted, sqlite_where=_trusted, postgresql_where=_trusted)


#: The longest visibility word an outbox row holds.
VISIBILITY_LENGTH = 16


class OutboxRow(WebhookBase):
    """An event as emitted, written in the transaction of the change that caused it."""

    __tablename__ = "srcore_webhook_outbox"
    __table_args__ = {"sqlite_autoincrement": True}

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    event: Mapped[str] = mapped_column(String(128), index=True)
    resource: Mapped[str | None] = mapped_column(String(256))
    payload: Mapped[str] = mapped_column(Text)  # JSON
    #: Who owned what the event is about, and its visibility, when it was emitted: the
    #: fan-out judges the audience from these, never from today's rows.
    owner_id: Mapped[int | None]
    visibility: Mapped[str | None] = mapped_column(String(VISIBILITY_LENGTH))
    created: Mapped[datetime] = mapped_column(default=utcnow)
    fanned_out_at: Mapped[datetime | None] = mapped_column(index=True)
    claimed_until: Mapped[datetime | None]

    def __repr__(self) -> str:
        return f"<OutboxRow {self.id} {self.event}>"


class Account(WebhookBase):
    """A suspension meta told this service about: the account's subscriptions receive
    nothing meanwhile. *seq* is the event that set it, so a late older event undoes nothing."""

    __tablename__ = "srcore_webhook_account"

    user_id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    suspended: Mapped[bool] = mapped_column(default=False)
    seq: Mapped[int] = mapped_column(BigInteger, default=0)
    updated: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    def __repr__(self) -> str:
        return f"<Account {self.user_id} suspended={self.suspended}>"


class Delivery(WebhookBase):
    """One event to one subscription; retried until delivered, failed or cancelled."""

    __tablename__ = "srcore_webhook_delivery"
    __table_args__ = (
        UniqueConstraint("subscription_id", "outbox_id"),
        Index("ix_srcore_webhook_delivery_due", "status", "next_attempt_at"),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    subscription_id: Mapped[int] = mapped_column(
        ForeignKey("srcore_webhook_subscription.id", ondelete="CASCADE"), index=True
    )
    outbox_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("srcore_webhook_outbox.id", ondelete="CASCADE"), index=True
    )
    #: The ``webhook-id`` header: the same for every retry and redelivery.
    message_id: Mapped[str] = mapped_column(String(64), unique=True, default=new_message_id)
    status: Mapped[str] = mapped_column(String(16), default=DeliveryStatus.pending.value)
    attempts: Mapped[int] = mapped_column(default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(default=utcnow)
    #: While a manual redelivery waits, the status and the next automatic attempt it put
    #: aside, both restored if it fails.
    manual_status: Mapped[str | None] = mapped_column(String(16))
    resume_at: Mapped[datetime | None]
    claimed_until: Mapped[datetime | None]
    last_status_code: Mapped[int | None]
    created: Mapped[datetime] = mapped_column(default=utcnow)
    delivered_at: Mapped[datetime | None]

    subscription: Mapped[Subscription] = relationship(lazy="joined", innerjoin=True)
    outbox: Mapped[OutboxRow] = relationship(lazy="joined", innerjoin=True)

    def __repr__(self) -> str:
        return f"<Delivery {self.id} {self.message_id} {self.status}>"


class Attempt(WebhookBase):
    """One HTTP request of a delivery and what came back: the delivery log."""

    __tablename__ = "srcore_webhook_attempt"
    __table_args__ = {"sqlite_autoincrement": True}

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    delivery_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("srcore_webhook_delivery.id", ondelete="CASCADE"), index=True
    )
    created: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    #: JSON objects; the signature is never stored.
    request_headers: Mapped[str] = mapped_column(Text, default="{}")
    request_body: Mapped[str] = mapped_column(Text, default="")
    response_status: Mapped[int | None]
    response_headers: Mapped[str] = mapped_column(Text, default="{}")
    response_body: Mapped[str] = mapped_column(Text, default="")
    duration_ms: Mapped[int] = mapped_column(default=0)
    error: Mapped[str | None] = mapped_column(String(512))

    def __repr__(self) -> str:
        return f"<Attempt {self.id} of delivery {self.delivery_id}: {self.response_status}>"
