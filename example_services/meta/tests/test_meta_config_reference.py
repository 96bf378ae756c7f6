"""[meta]'s keys as docs/config-reference.md describes them, each set in the config file
to a value other than its default and seen to take effect where it is promised.

The tests of the defaults would pass as well if meta read a fixed length of its own; these
fail then.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from argon2 import PasswordHasher
from meta_constants import FAST_HASHER
from oauth_helpers import exchange, get_code, network_config, pkce, verifier_for
from sqlalchemy import select

from srcore.db import utcnow
from srcore.testing import log_in_client


def meta_with(srcore_database: Any, tmp_path: Path, lines: str) -> Any:
    """meta in a network with todo, on the test database, with *lines* in ``[meta]``."""
    import meta

    text = network_config(srcore_database.config_path.read_text(encoding="utf-8"))
    assert "[meta]\n" in text
    path = tmp_path / "config.ini"
    path.write_text(text.replace("[meta]\n", "[meta]\n" + lines, 1), encoding="utf-8")
    application = meta.create_app(config=path, password_hasher=PasswordHasher(**FAST_HASHER))
    application.config["TESTING"] = True
    return application


def _aware(value: datetime) -> datetime:
    """*value* in UTC, as stored (a backend may hand it back without its zone)."""
    return value if value.tzinfo is not None else value.replace(tzinfo=utcnow().tzinfo)


def test_token_lifetimes_are_the_ones_in_the_file(
    app: Any, srcore_database: Any, tmp_path: Path, accounts: Any
) -> None:
    """access-token-lifetime: "How long an access token is valid"; refresh-token-lifetime:
    "How long an unused refresh token stays valid"; authorization-code-lifetime: "How long
    an OAuth authorization code may wait to be exchanged"."""
    from meta.oauth.models import AuthorizationCode, RefreshToken

    meta = meta_with(
        srcore_database,
        tmp_path,
        "access-token-lifetime = 5m\n"
        "refresh-token-lifetime = 2h\n"
        "authorization-code-lifetime = 20s\n",
    )
    try:
        alice = accounts.make("alice")
        browser = log_in_client(meta.test_client(), alice)
        verifier, challenge = pkce()
        code = get_code(browser, (verifier, challenge))
        with meta.extensions["srcore"].db.transaction() as session:
            row = session.scalars(select(AuthorizationCode)).one()
            assert _aware(row.expires_at) - _aware(row.created) == pytest.approx(
                timedelta(seconds=20), abs=timedelta(seconds=2)
            )
        body = exchange(browser, code, verifier).get_json()
        assert body["expires_in"] == 300, body
        claims = verifier_for(meta, audience="todo").verify(body["access_token"]).claims
        assert claims["exp"] - claims["iat"] == 300
        with meta.extensions["srcore"].db.transaction() as session:
            refresh = session.scalars(select(RefreshToken)).one()
            assert _aware(refresh.expires_at) - _aware(refresh.created) == pytest.approx(
                timedelta(hours=2), abs=timedelta(seconds=2)
            )
    finally:
        meta.extensions["srcore"].db.dispose()


def test_audit_retention_is_the_age_pruned_at(
    app: Any, srcore_database: Any, tmp_path: Path, accounts: Any, login: Any
) -> None:
    """audit-retention: "How long audit log entries are kept. Older ones are deleted as
    new ones are written": set to 2d, a 3-day-old entry goes at the next login and a
    1-day-old one stays (the default of 365d would keep both)."""
    from meta.models import AuditEntry

    meta = meta_with(srcore_database, tmp_path, "audit-retention = 2d\n")
    try:
        alice = accounts.make("alice")
        now = utcnow()
        with meta.extensions["srcore"].db.transaction() as session:
            session.add(AuditEntry(created=now - timedelta(days=3), user_id=alice.id, kind="login"))
            session.add(
                AuditEntry(created=now - timedelta(days=1), user_id=alice.id, kind="logout")
            )
        response = login(meta.test_client(), "alice")
        assert response.status_code == 302, response.get_data(as_text=True)[:300]
        with meta.extensions["srcore"].db.transaction() as session:
            rows = session.scalars(
                select(AuditEntry).where(AuditEntry.user_id == alice.id).order_by(AuditEntry.id)
            ).all()
            assert [row.kind for row in rows] == ["logout", "login"]
            assert _aware(rows[-1].created) >= now
    finally:
        meta.extensions["srcore"].db.dispose()


def test_mailed_links_live_as_long_as_the_file_says(
    app: Any, srcore_database: Any, tmp_path: Path, accounts: Any, csrf: Any
) -> None:
    """confirmation-lifetime: "How long the link in an address confirmation mail works";
    reset-lifetime: "How long the link in a password reset mail works"."""
    from meta.models import EmailToken, TokenPurpose

    meta = meta_with(srcore_database, tmp_path, "confirmation-lifetime = 3h\nreset-lifetime = 7m\n")
    try:
        alice = accounts.make("alice")
        bob = accounts.make("bob", confirmed=False)
        before = utcnow()
        csrf.post(meta.test_client(), "/forgot", {"email": "alice@example.org"})
        browser = log_in_client(meta.test_client(), bob)
        assert csrf.post(browser, "/confirm/resend", {}, page="/profile").status_code == 302
        after = utcnow()
        with meta.extensions["srcore"].db.transaction() as session:
            tokens = {t.purpose: t for t in session.scalars(select(EmailToken)).all()}
            assert set(tokens) == {TokenPurpose.reset, TokenPurpose.confirm}
            reset, confirm = tokens[TokenPurpose.reset], tokens[TokenPurpose.confirm]
            assert reset.user_id == alice.id and confirm.user_id == bob.id
            lasting = {"reset": timedelta(minutes=7), "confirm": timedelta(hours=3)}
            for name, token in (("reset", reset), ("confirm", confirm)):
                expires = _aware(token.expires)
                assert before + lasting[name] <= expires <= after + lasting[name], name
    finally:
        meta.extensions["srcore"].db.dispose()
