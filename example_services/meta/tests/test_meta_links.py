"""A forged Host header changes no link meta sends: the confirmation and reset links in
its mail, its OAuth metadata, its pages."""

from __future__ import annotations

from typing import Any

from meta_constants import PASSWORD

FORGED = {"Host": "evil.invalid", "X-Forwarded-Host": "evil.invalid"}


def test_mail_links_use_the_configured_origin(
    app: Any, client: Any, csrf: Any, smtp_sink: Any, accounts: Any
) -> None:
    origin = str(app.extensions["srcore"].section["origin"]).rstrip("/")
    client.environ_base["HTTP_HOST"] = "evil.invalid"
    client.environ_base["HTTP_X_FORWARDED_HOST"] = "evil.invalid"
    response = csrf.post(
        client, "/register", {"username": "alice", "email": "a@example.org", "password": PASSWORD}
    )
    assert response.status_code == 302
    accounts.make("bob")
    csrf.post(client, "/forgot", {"email": "bob@example.org"})
    bodies = {m["To"]: m.get_content() for m in smtp_sink.messages}
    assert origin + "/confirm/" in bodies["a@example.org"]
    assert origin + "/reset/" in bodies["bob@example.org"]
    assert not any("evil.invalid" in body for body in bodies.values())


def test_metadata_and_pages_ignore_a_forged_host(app: Any, client: Any) -> None:
    for path in ("/.well-known/oauth-authorization-server", "/login", "/register", "/profile"):
        response = client.get(path, headers=FORGED)
        assert "evil.invalid" not in response.get_data(as_text=True), path
        assert "evil.invalid" not in response.headers.get("Location", ""), path
