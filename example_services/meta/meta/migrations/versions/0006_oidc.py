"""OpenID Connect: ID-token keys by algorithm, what a code's login was, clients' logout URIs.

Revision ID: 0006_oidc
Revises: 0005_passkeys
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006_oidc"
down_revision: str | Sequence[str] | None = "0005_passkeys"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("oauth_signing_key") as batch:
        batch.add_column(
            sa.Column("alg", sa.String(length=16), nullable=False, server_default="EdDSA")
        )
    with op.batch_alter_table("oauth_client") as batch:
        batch.add_column(
            sa.Column("post_logout_redirect_uris", sa.Text(), nullable=False, server_default="")
        )
        batch.add_column(sa.Column("backchannel_logout_uri", sa.String(length=512)))
        batch.add_column(
            sa.Column("id_token_alg", sa.String(length=16), nullable=False, server_default="RS256")
        )
    with op.batch_alter_table("oauth_authorization_code") as batch:
        batch.add_column(sa.Column("nonce", sa.String(length=255)))
        batch.add_column(sa.Column("auth_time", sa.BigInteger()))
        batch.add_column(sa.Column("amr", sa.String(length=64)))
        batch.add_column(sa.Column("sid", sa.String(length=64)))
    op.create_index(op.f("ix_oauth_authorization_code_sid"), "oauth_authorization_code", ["sid"])
    op.create_index(
        "ix_oauth_authorization_code_client_id_nonce",
        "oauth_authorization_code",
        ["client_id", "nonce"],
    )


def downgrade() -> None:
    op.drop_index("ix_oauth_authorization_code_client_id_nonce", "oauth_authorization_code")
    op.drop_index(op.f("ix_oauth_authorization_code_sid"), "oauth_authorization_code")
    with op.batch_alter_table("oauth_authorization_code") as batch:
        batch.drop_column("sid")
        batch.drop_column("amr")
        batch.drop_column("auth_time")
        batch.drop_column("nonce")
    with op.batch_alter_table("oauth_client") as batch:
        batch.drop_column("id_token_alg")
        batch.drop_column("backchannel_logout_uri")
        batch.drop_column("post_logout_redirect_uris")
    with op.batch_alter_table("oauth_signing_key") as batch:
        batch.drop_column("alg")
