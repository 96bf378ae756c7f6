"""``[global] security-contact`` tells people where to report a hole: every service serves
it as ``/.well-known/security.txt`` (RFC 9116); without it there is no such file."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from srcore.testing import write_config


def build(tmp_path: Path, contact: str | None) -> Any:
    import sample_service

    path = write_config(
        tmp_path / "config.ini",
        service_id="sample",
        database_url=f"sqlite:///{tmp_path / 'sample.db'}",
    )
    if contact is not None:
        text = path.read_text().replace("[global]\n", f"[global]\nsecurity-contact = {contact}\n")
        path.write_text(text)
    return sample_service.create_app(config=path)


def test_security_txt_names_the_contact(tmp_path: Path) -> None:
    app = build(tmp_path, "mailto:security@example.org")
    response = app.test_client().get("/.well-known/security.txt")
    assert response.status_code == 200
    assert response.mimetype == "text/plain"
    fields = dict(
        line.split(": ", 1) for line in response.get_data(as_text=True).splitlines() if line
    )
    assert fields["Contact"] == "mailto:security@example.org"
    assert datetime.fromisoformat(fields["Expires"]) > datetime.now(UTC)


def test_a_bare_address_becomes_a_mailto(tmp_path: Path) -> None:
    app = build(tmp_path, "security@example.org")
    body = app.test_client().get("/.well-known/security.txt").get_data(as_text=True)
    assert "Contact: mailto:security@example.org" in body


def test_no_contact_no_file(tmp_path: Path) -> None:
    app = build(tmp_path, None)
    assert app.test_client().get("/.well-known/security.txt").status_code == 404


@pytest.mark.parametrize("bad", ["nobody", "ftp://example.org/x", "mailto:"])
def test_a_contact_that_is_no_address_or_url_is_a_config_error(tmp_path: Path, bad: str) -> None:
    from srcore.config import ConfigError

    with pytest.raises(ConfigError, match="security-contact"):
        build(tmp_path, bad)
