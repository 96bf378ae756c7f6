"""meta's [meta] section as one typed MetaSettings, read when the app is built."""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from typing import Any

import pytest
from meta.settings import MetaSettings, meta_settings

from srcore.manifest import load_manifest


def test_every_key_meta_declares_is_a_typed_field(app: Any) -> None:
    declared = {key.name.replace("-", "_") for key in load_manifest("meta").config["meta"]}
    assert {spec.name for spec in dataclasses.fields(MetaSettings)} == declared
    found = meta_settings(app)
    assert found.password_min_length == 10
    assert found.login_lockout == timedelta(minutes=15)
    assert found.audit_subscribers == ()
    assert found.registration == "open"


def test_a_misspelt_setting_fails_instead_of_taking_a_default(app: Any) -> None:
    found = meta_settings(app)
    with pytest.raises(AttributeError):
        found.pasword_min_length  # type: ignore[attr-defined]
    with pytest.raises(dataclasses.FrozenInstanceError):
        found.registration = "closed"  # type: ignore[misc]
