"""meta's schema: migrations in step with the models, ids never reused, token storage."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import meta
from meta import logic
from meta.models import Base, TokenPurpose

from srcore import migrate


def test_migrations_match_the_models(app: Any, srcore_database: Any) -> None:
    target = migrate.MigrationTarget(
        service_id="meta",
        database_url=srcore_database.url,
        metadata=Base.metadata,
        versions_dir=Path(meta.__file__).parent / "migrations" / "versions",
    )
    assert migrate.pending_changes(target, lineage="srcore") == []
    ours = [
        change
        for change in migrate.pending_changes(target)
        # the OAuth half's tables are checked by its own tests
        if any(
            name in repr(change)
            for name in (
                "email_token",
                "'user'",
                "web_session",
                "totp_factor",
                "recovery_code",
                "audit_entry",
            )
        )
    ]
    assert ours == []
    assert migrate.current(target)["srcore"] == migrate.heads(target)["srcore"]


def test_account_migration_leaves_core_columns_alone() -> None:
    source = (
        Path(meta.__file__).parent / "migrations" / "versions" / "0001_accounts.py"
    ).read_text()
    for column in ("username", "user_type", "suspension_notice", '"id"'):
        assert f'add_column("user", sa.Column({column}' not in source
    assert 'revision: str = "0001_accounts"' in source


def test_ids_grow_and_tokens_are_stored_hashed(app: Any, accounts: Any) -> None:
    from datetime import timedelta

    ids = [accounts.make(f"user{i}").id for i in range(3)]
    assert ids == sorted(ids) and len(set(ids)) == 3
    with app.extensions["srcore"].db.transaction() as session:
        user = session.get(meta.models.User, ids[0])
        secret = logic.issue_token(
            session, user, TokenPurpose.reset, email=user.email, lifetime=timedelta(hours=1)
        )
        found = logic.find_token(session, secret, (TokenPurpose.reset,))
        assert found is not None and found.token_hash != secret
        assert logic.find_token(session, secret, (TokenPurpose.confirm,)) is None
        assert logic.find_token(session, secret + "x", (TokenPurpose.reset,)) is None


def test_username_rules() -> None:
    assert logic.check_username("ab") is None
    assert logic.check_username("a-b_c9") is None
    assert logic.check_username("todo") is not None
    assert logic.check_username("wiki", reserved={"wiki"}) is not None
    assert logic.check_username("é" + "a") is not None
    assert logic.check_username("Ab") is not None


def test_the_security_migration_goes_down_and_up_again(srcore_backend: str, tmp_path: Path) -> None:
    """0004_security (two-factor, audit log, the sessions' amr) downgrades cleanly on both
    databases, and upgrades again to a schema that matches the models."""
    from srcore.testdb import create_test_database, drop_test_database

    url = f"sqlite:///{tmp_path / 'meta.db'}"
    if srcore_backend == "postgresql":
        url = create_test_database()
    target = migrate.MigrationTarget(
        service_id="meta",
        database_url=url,
        metadata=Base.metadata,
        versions_dir=Path(meta.__file__).parent / "migrations" / "versions",
    )
    try:
        migrate.upgrade_all(target)
        migrate.downgrade(target, "0003_sessions")
        assert migrate.current(target)["meta"] == "0003_sessions"
        migrate.upgrade_all(target)
        assert migrate.current(target)["meta"] == migrate.heads(target)["meta"]
        assert migrate.pending_changes(target) == []
    finally:
        if srcore_backend == "postgresql":
            drop_test_database(url)
