"""The keys paste, todo and meta declare (docs/config-reference.md), each set in the file
and seen to do what its entry says in the service itself."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import pytest

from srcore.testing import TEST_ISSUER


def rebuild(app: Any, signing_key: Any, tmp_path: Path, lines: str) -> Any:
    """*app*'s service again, on the same migrated database, with *lines* added to its
    section of a copy of its config file."""
    from joserfc.jwk import KeySet

    from srcore.auth.tokens import StaticKeySource, TokenVerifier
    from srcore.outbound.targets import set_resolver

    st = app.extensions["srcore"]
    text = Path(st.config.path).read_text(encoding="utf-8")
    header = f"[{st.service_id}]\n"
    assert header in text
    path = tmp_path / "config.ini"
    path.write_text(text.replace(header, header + lines, 1), encoding="utf-8")
    verifier = TokenVerifier(
        keys=StaticKeySource(KeySet([signing_key])), issuer=TEST_ISSUER, audience=st.service_id
    )
    module = importlib.import_module(st.service_id)
    built = module.create_app(config=path, token_verifier=verifier)
    built.config["TESTING"] = True
    set_resolver(built, lambda host, port, timeout: None)
    return built


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.mark.parametrize("srcore_service", ["paste"])
def test_paste_max_paste_length_is_the_longest_paste_accepted(
    app: Any, user: Any, make_token: Any, srcore_signing_key: Any, tmp_path: Path
) -> None:
    """max-paste-length: "The longest paste accepted, in characters." """
    paste = rebuild(app, srcore_signing_key, tmp_path, "max-paste-length = 10\n")
    client = paste.test_client()
    headers = bearer(make_token("paste/pastes:RW", user=user))
    fits = client.post("/api/pastes", json={"text": "é" * 10}, headers=headers)
    assert fits.status_code == 201, fits.get_json()
    longer = client.post("/api/pastes", json={"text": "é" * 11}, headers=headers)
    assert longer.status_code == 400
    (error,) = longer.get_json()["errors"]
    assert error["field"] == "text"
    assert "10" in error["reason"]
    paste.extensions["srcore"].db.dispose()


@pytest.mark.parametrize("srcore_service", ["paste"])
def test_paste_pastes_per_page_is_the_length_of_the_public_list(
    app: Any, user: Any, make_token: Any, srcore_signing_key: Any, tmp_path: Path
) -> None:
    """pastes-per-page: "How many pastes the public list and your list show at once." """
    paste = rebuild(app, srcore_signing_key, tmp_path, "pastes-per-page = 2\n")
    client = paste.test_client()
    headers = bearer(make_token("paste/pastes:RW", user=user))
    for n in range(3):
        made = client.post("/api/pastes", json={"title": f"T{n}x", "text": "x"}, headers=headers)
        assert made.status_code == 201
    first = client.get("/").text
    assert "T2x" in first and "T1x" in first and "T0x" not in first
    assert "T0x" in client.get("/?page=2").text
    paste.extensions["srcore"].db.dispose()


@pytest.mark.parametrize("srcore_service", ["todo"])
def test_todo_trackers_per_page_is_the_length_of_the_front_page(
    app: Any, user: Any, make_token: Any, srcore_signing_key: Any, tmp_path: Path
) -> None:
    """trackers-per-page: "How many public trackers the front page lists at once." """
    todo = rebuild(app, srcore_signing_key, tmp_path, "trackers-per-page = 1\n")
    client = todo.test_client()
    headers = bearer(make_token("todo/trackers:RW", user=user))
    for name in ("first-tracker", "second-tracker"):
        made = client.post(
            "/api/trackers", json={"name": name, "visibility": "public"}, headers=headers
        )
        assert made.status_code == 201, made.get_json()
    first, second = client.get("/").text, client.get("/?page=2").text
    assert ("first-tracker" in first) != ("second-tracker" in first)
    assert ("first-tracker" in second) != ("second-tracker" in second)
    assert ("first-tracker" in first) != ("first-tracker" in second)
    todo.extensions["srcore"].db.dispose()


def _fast_meta(meta: Any) -> Any:
    from argon2 import PasswordHasher
    from meta.logic import Passwords

    meta.extensions["meta"].passwords = Passwords(
        PasswordHasher(time_cost=1, memory_cost=64, parallelism=1)
    )
    meta.config["WTF_CSRF_ENABLED"] = False
    return meta


@pytest.mark.parametrize("srcore_service", ["meta"])
def test_meta_password_min_length_is_the_shortest_password_taken(
    app: Any, srcore_signing_key: Any, tmp_path: Path
) -> None:
    """password-min-length: "The fewest characters a new password may have." """
    meta = _fast_meta(rebuild(app, srcore_signing_key, tmp_path, "password-min-length = 14\n"))
    client = meta.test_client()
    form = {"username": "carol", "email": "carol@example.org"}
    short = client.post("/register", data={**form, "password": "q7#Lm2vR9xT4w"})
    assert short.status_code == 400
    assert "Use at least 14 characters." in short.text
    enough = client.post("/register", data={**form, "password": "q7#Lm2vR9xT4wZ"})
    assert enough.status_code in (302, 303), enough.text[-2000:]
    meta.extensions["srcore"].db.dispose()


@pytest.mark.parametrize("srcore_service", ["meta"])
def test_meta_two_factor_issuer_empty_is_the_site_name(
    app: Any, srcore_signing_key: Any, tmp_path: Path
) -> None:
    """two-factor-issuer: "empty means [global] site-name"; set, it is the name."""
    from meta import twofactor

    for lines, expected in (("", "srcore test network"), ("two-factor-issuer = Acme\n", "Acme")):
        (tmp_path / expected).mkdir()
        meta = rebuild(app, srcore_signing_key, tmp_path / expected, lines)
        with meta.app_context():
            assert twofactor._issuer() == expected
        meta.extensions["srcore"].db.dispose()


@pytest.mark.parametrize("srcore_service", ["meta"])
def test_meta_audit_subscribers_name_services_of_the_network(
    app: Any, srcore_signing_key: Any, tmp_path: Path
) -> None:
    """audit-subscribers: "Services of the network (by id) whose first-party webhook
    subscription also receives every audit log entry". A name that is no such service
    (a typo, or meta itself) would receive nothing, silently: meta refuses to start,
    naming file, line, section and key."""
    from srcore.config import ConfigError

    with pytest.raises(ConfigError) as info:
        rebuild(app, srcore_signing_key, tmp_path, "audit-subscribers = meta, tood\n")
    (problem,) = info.value.problems
    assert (problem.section, problem.key) == ("meta", "audit-subscribers")
    assert problem.line is not None
    assert problem.message == (
        "meta, tood: no service of this file besides meta that meta sends events to "
        "(with an oauth-client-secret); none would receive the audit log"
    )
