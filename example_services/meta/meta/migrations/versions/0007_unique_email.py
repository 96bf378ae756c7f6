"""One account per address: a unique index on the lower-cased address.

Revision ID: 0007_unique_email
Revises: 0006_oidc
Create Date: 2026-12-04
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007_unique_email"
down_revision: str | Sequence[str] | None = "0006_oidc"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Two registrations at once could both pass the views' check: say which addresses
    # are shared rather than fail on the index with the database's words.
    shared = (
        op.get_bind()
        .execute(
            sa.text(
                'SELECT lower(email) FROM "user" GROUP BY lower(email) HAVING count(*) > 1 '
                "ORDER BY 1 LIMIT 20"
            )
        )
        .scalars()
        .all()
    )
    if shared:
        raise RuntimeError(
            "meta 0007: these addresses belong to more than one account; change or delete "
            "all but one of each (python -m meta.admin, or the admin pages), then upgrade "
            "again: " + ", ".join(shared)
        )
    op.create_index("uq_user_email_lower", "user", [sa.text("lower(email)")], unique=True)


def downgrade() -> None:
    op.drop_index("uq_user_email_lower", "user")
