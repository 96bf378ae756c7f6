"""Webhook tables: subscriptions, outbox, deliveries and the delivery log.

Revision ID: srcore_0002
Revises: srcore_0001
Create Date: 2026-11-28
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "srcore_0002"
down_revision: str | Sequence[str] | None = "srcore_0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
When = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "srcore_webhook_subscription",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("owner_id", sa.Integer(), nullable=True),
        sa.Column("owner_client", sa.String(length=256), nullable=True),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("events", sa.Text(), nullable=False),
        sa.Column("resource", sa.String(length=256), nullable=True),
        sa.Column("scopes", sa.Text(), nullable=False),
        sa.Column("secret", sa.String(length=128), nullable=False),
        sa.Column("previous_secret", sa.String(length=128), nullable=True),
        sa.Column("previous_secret_expires", When, nullable=True),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("disabled_reason", sa.String(length=512), nullable=True),
        sa.Column("failing_since", When, nullable=True),
        sa.Column("created", When, nullable=False),
        sa.Column("updated", When, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_srcore_webhook_subscription")),
    )
    op.create_index(
        op.f("ix_srcore_webhook_subscription_owner_id"),
        "srcore_webhook_subscription",
        ["owner_id"],
    )
    op.create_table(
        "srcore_webhook_outbox",
        sa.Column("id", BigId, nullable=False),
        sa.Column("event", sa.String(length=128), nullable=False),
        sa.Column("resource", sa.String(length=256), nullable=True),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("created", When, nullable=False),
        sa.Column("fanned_out_at", When, nullable=True),
        sa.Column("claimed_until", When, nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_srcore_webhook_outbox")),
    )
    op.create_index(
        op.f("ix_srcore_webhook_outbox_fanned_out_at"), "srcore_webhook_outbox", ["fanned_out_at"]
    )
    op.create_table(
        "srcore_webhook_delivery",
        sa.Column("id", BigId, nullable=False),
        sa.Column("subscription_id", sa.Integer(), nullable=False),
        sa.Column("outbox_id", BigId, nullable=False),
        sa.Column("message_id", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", When, nullable=False),
        sa.Column("claimed_until", When, nullable=True),
        sa.Column("last_status_code", sa.Integer(), nullable=True),
        sa.Column("created", When, nullable=False),
        sa.Column("delivered_at", When, nullable=True),
        sa.ForeignKeyConstraint(
            ["outbox_id"],
            ["srcore_webhook_outbox.id"],
            name=op.f("fk_srcore_webhook_delivery_outbox_id_srcore_webhook_outbox"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["subscription_id"],
            ["srcore_webhook_subscription.id"],
            name=op.f("fk_srcore_webhook_delivery_subscription_id_srcore_webho_1a67"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_srcore_webhook_delivery")),
        sa.UniqueConstraint("message_id", name=op.f("uq_srcore_webhook_delivery_message_id")),
        sa.UniqueConstraint(
            "subscription_id",
            "outbox_id",
            name=op.f("uq_srcore_webhook_delivery_subscription_id_outbox_id"),
        ),
    )
    op.create_index(
        "ix_srcore_webhook_delivery_due", "srcore_webhook_delivery", ["status", "next_attempt_at"]
    )
    op.create_index(
        op.f("ix_srcore_webhook_delivery_outbox_id"), "srcore_webhook_delivery", ["outbox_id"]
    )
    op.create_index(
        op.f("ix_srcore_webhook_delivery_subscription_id"),
        "srcore_webhook_delivery",
        ["subscription_id"],
    )
    op.create_table(
        "srcore_webhook_attempt",
        sa.Column("id", BigId, nullable=False),
        sa.Column("delivery_id", BigId, nullable=False),
        sa.Column("created", When, nullable=False),
        sa.Column("request_headers", sa.Text(), nullable=False),
        sa.Column("request_body", sa.Text(), nullable=False),
        sa.Column("response_status", sa.Integer(), nullable=True),
        sa.Column("response_headers", sa.Text(), nullable=False),
        sa.Column("response_body", sa.Text(), nullable=False),
        sa.Column("duration_ms", sa.Integer(), nullable=False),
        sa.Column("error", sa.String(length=512), nullable=True),
        sa.ForeignKeyConstraint(
            ["delivery_id"],
            ["srcore_webhook_delivery.id"],
            name=op.f("fk_srcore_webhook_attempt_delivery_id_srcore_webhook_delivery"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_srcore_webhook_attempt")),
    )
    op.create_index(
        op.f("ix_srcore_webhook_attempt_created"), "srcore_webhook_attempt", ["created"]
    )
    op.create_index(
        op.f("ix_srcore_webhook_attempt_delivery_id"), "srcore_webhook_attempt", ["delivery_id"]
    )


def downgrade() -> None:
    op.drop_table("srcore_webhook_attempt")
    op.drop_table("srcore_webhook_delivery")
    op.drop_table("srcore_webhook_outbox")
    op.drop_table("srcore_webhook_subscription")
