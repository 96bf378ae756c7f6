"""meta under srcore's write rate limits: its own per-form limits keep governing its login
and account forms (not counted twice), the endpoints services call are never counted, and
its other pages and API are counted per account like any service's."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

from srcore.ratelimit import write_limits
from srcore.testing import log_in_client

PASSWORD = "correct horse battery staple"


@pytest.fixture
def srcore_service() -> str:
    return "meta"


@pytest.fixture
def meta(app: Any, tmp_path: Path) -> Any:
    """meta on *app*'s database with ``write-rate-limit = 2/minute``, cheap hashing, and
    no CSRF tokens to fetch."""
    import meta as package
    from argon2 import PasswordHasher
    from meta.logic import Passwords

    config = Path(app.extensions["srcore"].config.path).read_text(encoding="utf-8")
    path = tmp_path / f"config-{uuid.uuid4().hex[:8]}.ini"
    path.write_text(
        config.replace("write-rate-limit = off\n", "write-rate-limit = 2/minute\n", 1),
        encoding="utf-8",
    )
    built = package.create_app(config=path)
    built.config.update(TESTING=True, WTF_CSRF_ENABLED=False)
    hasher = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
    built.extensions["meta"].passwords = Passwords(hasher)
    try:
        yield built
    finally:
        built.extensions["srcore"].db.dispose()


def _account(app: Any, name: str) -> Any:
    from meta import logic

    from srcore.db import UserType, utcnow

    hashed = app.extensions["meta"].passwords.hash(PASSWORD)
    with app.extensions["srcore"].db.transaction() as session:
        user = logic.create_user(
            session, username=name, email=f"{name}@example.org", password_hash=hashed
        )
        user.user_type = UserType.active
        user.email_confirmed_at = utcnow()
    return user


def test_the_login_forms_keep_their_own_limits_only(meta: Any) -> None:
    _account(meta, "alice")
    client = meta.test_client()
    wrong = {"login": "alice", "password": "not the password"}
    # Two failures cost nothing at meta; counted as writes, the login after them would be
    # the third of two a minute.
    assert [client.post("/login", data=wrong).status_code for _ in range(2)] == [400] * 2
    right = client.post("/login", data={"login": "alice", "password": PASSWORD})
    assert right.status_code == 302


def test_meta_pages_and_api_are_counted_per_account(meta: Any) -> None:
    alice = _account(meta, "alice")
    browser = log_in_client(meta.test_client(), alice)
    profile = {"url": "", "location": "here", "bio": ""}
    answers = [browser.post("/profile", data=profile).status_code for _ in range(3)]
    assert 429 not in answers[:2] and answers[2] == 429
    # Logging out always works.
    assert browser.post("/logout").status_code == 302


def test_what_services_call_is_never_counted(meta: Any) -> None:
    from meta.protection import UNCOUNTED_WRITES

    exempt = write_limits(meta).exempt
    for endpoint in (*UNCOUNTED_WRITES, "srcore_logout"):
        assert endpoint in exempt and endpoint in meta.view_functions, endpoint
    client = meta.test_client()
    answers = [client.post("/oauth/revoke", data={"token": "x"}).status_code for _ in range(4)]
    assert 429 not in answers
