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
        (
            {
                "id": "svc",
                "scopes": [{"name": "a", "description": "x"}],
                "events": [{"name": "a:b", "scope": "a", "audience": "everyone"}],
            },
            r"events\[0\]: audience 'everyone' must be one of owner, readers, public, internal",
        ),
    ],
)
def test_errors_name_the_entry(data: Any, message: str) -> None:
    with pytest.raises(ManifestError, match=message):
        parse_manifest(data, package="svc", source="svc/service.yaml")


def test_missing_package() -> None:
    with pytest.raises(ManifestError, match=r"cannot read service\.yaml"):
        load_manifest("no_such_package_here")


def test_event_audience_defaults_to_the_owner() -> None:
    manifest = parse_manifest(
        {
            "id": "svc",
            "scopes": [{"name": "a", "description": "x"}],
            "events": [
                {"name": "a:created", "scope": "a"},
                {"name": "a:shared", "scope": "a", "audience": "readers"},
                {"name": "a:announced", "scope": "a", "audience": "public"},
                {"name": "a:audited", "scope": "a", "audience": "internal"},
            ],
        },
        package="svc",
    )
    audiences = {event.name: event.audience for event in manifest.events}
    assert audiences == {
        "a:created": "owner",
        "a:shared": "readers",
        "a:announced": "public",
        "a:audited": "internal",
    }
    assert [event.name for event in manifest.user_events] == [
        "a:created",
        "a:shared",
        "a:announced",
    ]


@pytest.mark.parametrize("package", ["meta", "todo", "paste"])
def test_every_example_event_says_who_receives_it(package: str) -> None:
    """The example services' events are about one user's things: none is public to all."""
    for event in load_manifest(package).events:
        assert event.audience in ("owner", "readers", "internal"), event.name
