"""todo with one more account-deletion hook, which a test reads from outside.

The hook appends ``attempt <id>`` to the file ``DELETION_PROBE_LOG`` names each time it
runs, fails its first run for each account, and appends ``done <id>`` once a run's
transaction commits: a test counts from the file how often todo ran the deletion.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

__all__ = ["create_app"]


def create_app() -> Any:
    import todo
    from sqlalchemy.orm import Session

    import srcore.auth
    from srcore.oncommit import after_commit

    app = todo.create_app()
    log = Path(os.environ["DELETION_PROBE_LOG"])

    def note(line: str) -> None:
        with log.open("a", encoding="utf-8") as file:
            file.write(line + "\n")

    def probe(session: Session, user: Any) -> None:
        runs = log.read_text(encoding="utf-8").split("\n") if log.exists() else []
        note(f"attempt {user.id}")
        if f"attempt {user.id}" not in runs:
            raise RuntimeError("the probe fails its first run")
        after_commit(session, lambda ids: note(f"done {ids[0]}"), user.id)

    srcore.auth.on_account_deleted(app, probe)
    return app
