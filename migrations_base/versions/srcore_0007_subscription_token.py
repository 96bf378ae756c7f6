"""The token that set up each webhook subscription.

A subscription records the OAuth client, grant and token id (jti) of the token that made
or last changed it: a token then sees only the subscriptions of its own client, and
meta's revocation of that token, grant or client disables them, so an application whose
access was revoked stops receiving events. Existing subscriptions of a service subscriber
(no user) belong to its client; nothing says which client made a user's, so every token
of the user keeps seeing those (``*``) until one of them changes it.

Revision ID: srcore_0007
Revises: srcore_0006
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "srcore_0007"
down_revision: str | Sequence[str] | None = "srcore_0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLE = "srcore_webhook_subscription"


def upgrade() -> None:
    with op.batch_alter_table(TABLE) as batch:
        batch.add_column(sa.Column("client_id", sa.String(256), nullable=True))
        batch.add_column(sa.Column("grant_id", sa.String(256), nullable=True))
        batch.add_column(sa.Column("token_id", sa.String(256), nullable=True))
        batch.create_index(f"ix_{TABLE}_grant_id", ["grant_id"])
        batch.create_index(f"ix_{TABLE}_token_id", ["token_id"])
    subscription = sa.table(
        TABLE, sa.column("owner_id"), sa.column("owner_client"), sa.column("client_id")
    )
    service_owned = subscription.c.owner_id.is_(None)
    op.execute(
        subscription.update().where(service_owned).values(client_id=subscription.c.owner_client)
    )
    users = subscription.c.owner_id.is_not(None)
    op.execute(subscription.update().where(users).values(client_id="*"))


def downgrade() -> None:
    with op.batch_alter_table(TABLE) as batch:
        batch.drop_index(f"ix_{TABLE}_token_id")
        batch.drop_index(f"ix_{TABLE}_grant_id")
        batch.drop_column("token_id")
        batch.drop_column("grant_id")
        batch.drop_column("client_id")
