"""Indexes in the order lists are read, for accounts with many rows.

The audit log (everyone's, an account's, one kind's) is shown newest first a page at a
time: with an index on the creation time alone, PostgreSQL sorted every entry of the
filter for each page (100,000 entries for the admin's log). Each list now has an index in
its order, which replaces the one-column index it starts with. The signing keys still
published are those a live personal access token was signed with: asked through a
(kid, expires_at) index, where every live token was read.

Revision ID: 0008_list_indexes
Revises: 0007_unique_email
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0008_list_indexes"
down_revision: str | Sequence[str] | None = "0007_unique_email"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: (new index, its columns, the one-column index it replaces).
_AUDIT = (
    ("ix_audit_entry_created_id", ["created", "id"], "ix_audit_entry_created", "created"),
    (
        "ix_audit_entry_user_id_created_id",
        ["user_id", "created", "id"],
        "ix_audit_entry_user_id",
        "user_id",
    ),
    ("ix_audit_entry_kind_created_id", ["kind", "created", "id"], "ix_audit_entry_kind", "kind"),
)
_KID_INDEX = "ix_personal_access_token_kid_expires_at"


def upgrade() -> None:
    for name, columns, replaced, _column in _AUDIT:
        op.create_index(name, "audit_entry", columns)
        op.drop_index(replaced, table_name="audit_entry")
    op.create_index(_KID_INDEX, "personal_access_token", ["kid", "expires_at"])


def downgrade() -> None:
    op.drop_index(_KID_INDEX, table_name="personal_access_token")
    for name, _columns, replaced, column in reversed(_AUDIT):
        op.create_index(replaced, "audit_entry", [column])
        op.drop_index(name, table_name="audit_entry")
