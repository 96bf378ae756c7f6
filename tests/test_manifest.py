"""Service manifests: parsing, validation messages, discovery."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from srcore.manifest import ManifestError, load_manifest, parse_manifest


def test_sample_manifest() -> None:
    manifest = load_manifest("sample_service")
    assert manifest.id == "sample"
    assert manifest.scope("things") is not None
    assert manifest.event("thing:created").scope == "things"  # type: ignore[union-attr]
    (key,) = manifest.config["sample"]
    assert (key.name, key.default) == ("greeting", "hello")


def test_typed_defaults() -> None:
    manifest = parse_manifest(
        {
            "id": "svc",
            "config": {
                "svc": [
                    {"name": "timeout", "type": "duration", "default": "5m"},
                    {"name": "names", "type": "list", "default": ["a", "b"]},
                ]
            },
        },
        package="svc",
    )
    timeout, names = manifest.config["svc"]
    assert timeout.default == timedelta(minutes=5)
    assert names.default == ("a", "b")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ([], "mapping at the top level"),
        ({}, "missing 'id'"),
        ({"id": "Bad_Id"}, "lower-case"),
        ({"id": "global"}, "not 'global'"),
        ({"id": "svc", "config": {"other": []}}, "may only declare"),
        ({"id": "svc", "config": {"svc": [{"nom": "x"}]}}, "unknown field"),
        ({"id": "svc", "scopes": [{"name": "a"}]}, "missing 'description'"),
        ({"id": "svc", "scopes": [{"name": "a", "description": "x"}] * 2}, "declared twice"),
        ({"id": "svc", "events": [{"name": "a:b", "scope": "nope"}]}, "not declared"),
        (
            {
                "id": "svc",
                "scopes": [{"name": "a", "description": "x"}],
                "events": [{"name": "created", "scope": "a"}],
            },
            "thing:verb",
        ),
    ],
)
def test_errors_name_the_entry(data: Any, message: str) -> None:
    with pytest.raises(ManifestError, match=message):
        parse_manifest(data, package="svc", source="svc/service.yaml")


def test_missing_package() -> None:
    with pytest.raises(ManifestError, match=r"cannot read service\.yaml"):
        load_manifest("no_such_package_here")
