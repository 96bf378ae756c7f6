"""OAuth: third-party clients, codes, grants, refresh tokens, consents, personal access
tokens, signing keys and the revocation event log.

Revision ID: 0002_oauth
Revises: 0001_accounts
Create Date: 2026-11-22
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002_oauth"
down_revision: str | Sequence[str] | None = "0001_accounts"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _when(name: str, *, nullable: bool = False) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def _user_fk(table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        ["user_id"], ["user.id"], name=op.f(f"fk_{table}_user_id_user"), ondelete="CASCADE"
    )


def upgrade() -> None:
    op.create_table(
        "oauth_client",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("client_id", sa.String(length=64), nullable=False),
        sa.Column("owner_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("redirect_uris", sa.Text(), nullable=False),
        sa.Column("confidential", sa.Boolean(), nullable=False),
        sa.Column("secret_hash", sa.String(length=64), nullable=True),
        _when("created"),
        _when("revoked_at", nullable=True),
        sa.ForeignKeyConstraint(
            ["owner_id"],
            ["user.id"],
            name=op.f("fk_oauth_client_owner_id_user"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_oauth_client")),
        sa.UniqueConstraint("client_id", name=op.f("uq_oauth_client_client_id")),
    )
    op.create_index(op.f("ix_oauth_client_owner_id"), "oauth_client", ["owner_id"])

    op.create_table(
        "oauth_authorization_code",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("code_hash", sa.String(length=64), nullable=False),
        sa.Column("client_id", sa.String(length=64), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("redirect_uri", sa.Text(), nullable=True),
        sa.Column("scope", sa.Text(), nullable=False),
        sa.Column("code_challenge", sa.String(length=128), nullable=True),
        sa.Column("code_challenge_method", sa.String(length=16), nullable=True),
        _when("created"),
        _when("expires_at"),
        _when("used_at", nullable=True),
        sa.Column("grant_id", sa.String(length=64), nullable=True),
        _user_fk("oauth_authorization_code"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_oauth_authorization_code")),
        sa.UniqueConstraint("code_hash", name=op.f("uq_oauth_authorization_code_code_hash")),
    )
    op.create_index(
        op.f("ix_oauth_authorization_code_user_id"), "oauth_authorization_code", ["user_id"]
    )

    op.create_table(
        "oauth_grant",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("client_id", sa.String(length=64), nullable=False),
        sa.Column("scope", sa.Text(), nullable=False),
        _when("created"),
        _when("last_used"),
        _when("revoked_at", nullable=True),
        _user_fk("oauth_grant"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_oauth_grant")),
    )
    op.create_index(
        op.f("ix_oauth_grant_user_id_client_id"), "oauth_grant", ["user_id", "client_id"]
    )

    op.create_table(
        "oauth_refresh_token",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("grant_id", sa.String(length=64), nullable=False),
        _when("created"),
        _when("expires_at"),
        _when("used_at", nullable=True),
        sa.ForeignKeyConstraint(
            ["grant_id"],
            ["oauth_grant.id"],
            name=op.f("fk_oauth_refresh_token_grant_id_oauth_grant"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_oauth_refresh_token")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_oauth_refresh_token_token_hash")),
    )
    op.create_index(op.f("ix_oauth_refresh_token_grant_id"), "oauth_refresh_token", ["grant_id"])

    op.create_table(
        "oauth_consent",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("client_id", sa.String(length=64), nullable=False),
        sa.Column("scope", sa.Text(), nullable=False),
        _when("created"),
        _user_fk("oauth_consent"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_oauth_consent")),
        sa.UniqueConstraint(
            "user_id", "client_id", "scope", name=op.f("uq_oauth_consent_user_id_client_id_scope")
        ),
    )

    op.create_table(
        "personal_access_token",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("scope", sa.Text(), nullable=False),
        sa.Column("jti", sa.String(length=64), nullable=False),
        sa.Column("kid", sa.String(length=64), nullable=False),
        _when("created"),
        _when("expires_at"),
        _when("revoked_at", nullable=True),
        _user_fk("personal_access_token"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_personal_access_token")),
        sa.UniqueConstraint("jti", name=op.f("uq_personal_access_token_jti")),
    )
    op.create_index(op.f("ix_personal_access_token_user_id"), "personal_access_token", ["user_id"])

    op.create_table(
        "oauth_signing_key",
        sa.Column("kid", sa.String(length=64), nullable=False),
        sa.Column("private_jwk", sa.Text(), nullable=False),
        _when("created"),
        _when("retired_at", nullable=True),
        sa.PrimaryKeyConstraint("kid", name=op.f("pk_oauth_signing_key")),
    )

    op.create_table(
        "revocation_event",
        sa.Column("seq", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("subject", sa.String(length=128), nullable=False),
        sa.Column("not_before", sa.BigInteger(), nullable=True),
        sa.Column("expires_at", sa.BigInteger(), nullable=True),
        _when("created"),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_revocation_event")),
        sqlite_autoincrement=True,
    )
    op.create_index(
        op.f("ix_revocation_event_kind_subject"), "revocation_event", ["kind", "subject"]
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_revocation_event_kind_subject"), table_name="revocation_event")
    op.drop_table("revocation_event")
    op.drop_table("oauth_signing_key")
    op.drop_index(op.f("ix_personal_access_token_user_id"), table_name="personal_access_token")
    op.drop_table("personal_access_token")
    op.drop_table("oauth_consent")
    op.drop_index(op.f("ix_oauth_refresh_token_grant_id"), table_name="oauth_refresh_token")
    op.drop_table("oauth_refresh_token")
    op.drop_index(op.f("ix_oauth_grant_user_id_client_id"), table_name="oauth_grant")
    op.drop_table("oauth_grant")
    op.drop_index(
        op.f("ix_oauth_authorization_code_user_id"), table_name="oauth_authorization_code"
    )
    op.drop_table("oauth_authorization_code")
    op.drop_index(op.f("ix_oauth_client_owner_id"), table_name="oauth_client")
    op.drop_table("oauth_client")
