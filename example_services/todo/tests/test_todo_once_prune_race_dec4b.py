"""A used form token taken over (its row had expired) while another claim prunes expired
rows: the prune must leave the fresh claim alone.

On PostgreSQL the prune picks its rows in a subquery, then waits for the row lock the
takeover holds; once that commits, the row no longer expired. Deleted all the same, the
token counted as never used, and a third sending of the form was run again.
"""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from typing import Any

from sqlalchemy import insert, select, text

from srcore.db import utcnow
from srcore.once import DatabaseTokens, OnceToken


def _someone_waits_for_a_lock(db: Any) -> bool:
    with db.engine.connect() as connection:
        waiting = connection.execute(
            text(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                "AND datname = current_database()"
            )
        ).scalar()
    return bool(waiting)


def test_a_token_taken_over_during_a_prune_stays_taken(app: Any) -> None:
    db = app.extensions["srcore"].db
    tokens = DatabaseTokens(db)
    with db.engine.begin() as connection:
        expired = utcnow() - timedelta(seconds=5)
        connection.execute(insert(OnceToken).values(key="k", location="/x", expires=expired))
    pruner: threading.Thread | None = None
    with db.engine.connect() as taker:
        transaction = taker.begin()
        assert taker.execute(tokens._insert("k", utcnow())).first() is not None  # taken over
        pruner = threading.Thread(target=tokens._prune, args=(utcnow(),), daemon=True)
        pruner.start()
        if db.engine.dialect.name == "postgresql":
            deadline = time.monotonic() + 10
            while not _someone_waits_for_a_lock(db) and time.monotonic() < deadline:
                time.sleep(0.05)
        transaction.commit()
    pruner.join(timeout=30)
    assert not pruner.is_alive()
    with db.engine.connect() as connection:
        kept = connection.execute(select(OnceToken.location).where(OnceToken.key == "k")).all()
    assert kept == [(None,)], kept  # still the takeover's pending claim
    assert tokens.claim("k") == ""  # a third sending finds it taken
    with db.engine.begin() as connection:
        connection.execute(OnceToken.__table__.delete())
