"""Addresses in their canonical form: one mailbox, one spelling, one account.

Addresses were stored stripped and lower-cased only, so ``alice@bücher.example`` and
``alice@xn--bcher-kva.example`` (what Chromium's email field sends for it), a local part
with an accent composed or decomposed, or full-width letters were different addresses
with one mailbox, each free for another account. Every address (an account's, its
pending one, a mailed link's) is rewritten in :func:`srcore.identity.addresses.canonical_email`'s
form, which the unique index on the lower-cased address then holds to one account each.
An address with no canonical form is left as it is.

Revision ID: 0009_canonical_addresses
Revises: 0008_list_indexes
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from srcore.identity.addresses import canonical_email

revision: str = "0009_canonical_addresses"
down_revision: str | Sequence[str] | None = "0008_list_indexes"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_USER = sa.table(
    "user", sa.column("id", sa.Integer), sa.column("email"), sa.column("pending_email")
)
_TOKEN = sa.table("email_token", sa.column("id", sa.Integer), sa.column("email"))


def _canonical(address: str | None) -> str | None:
    if address is None:
        return None
    try:
        return canonical_email(address)
    except ValueError:
        return address


def upgrade() -> None:
    bind = op.get_bind()
    users = bind.execute(sa.select(_USER.c.id, _USER.c.email, _USER.c.pending_email)).all()
    owners: defaultdict[str, list[str]] = defaultdict(list)
    for _, email, _ in users:
        owners[(_canonical(email) or "").lower()].append(email)
    shared = sorted(
        f"{' and '.join(sorted(spellings))} (one mailbox)"
        for spellings in owners.values()
        if len(spellings) > 1
    )
    if shared:
        raise RuntimeError(
            "meta 0009: these addresses are one mailbox, each of another account; change "
            "or delete all but one of each (python -m meta.admin, or the admin pages), "
            "then upgrade again: " + "; ".join(shared[:20])
        )
    for user_id, email, pending in users:
        values = {"email": _canonical(email), "pending_email": _canonical(pending)}
        if values != {"email": email, "pending_email": pending}:
            bind.execute(sa.update(_USER).where(_USER.c.id == user_id).values(**values))
    for token_id, email in bind.execute(sa.select(_TOKEN.c.id, _TOKEN.c.email)).all():
        if _canonical(email) != email:
            bind.execute(
                sa.update(_TOKEN).where(_TOKEN.c.id == token_id).values(email=_canonical(email))
            )


def downgrade() -> None:
    # The canonical form is an address like any other: the older code reads it as it is.
    pass
