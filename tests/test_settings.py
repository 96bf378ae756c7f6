"""Typed settings: a service's section read once into its frozen dataclass."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import pytest

from srcore.settings import SettingsError, settings


@dataclass(frozen=True)
class Sample:
    greeting: str


@dataclass(frozen=True)
class Misspelt:
    greting: str


@dataclass(frozen=True)
class WrongType:
    greeting: int


def test_the_section_is_read_once_into_the_dataclass(app: Any) -> None:
    with app.app_context():
        first = settings(Sample)
        assert first == Sample(greeting="hello")
        assert settings(Sample) is first
        with pytest.raises(dataclasses.FrozenInstanceError):
            first.greeting = "x"  # type: ignore[misc]
        with pytest.raises(AttributeError):
            first.greting  # type: ignore[attr-defined]


def test_a_field_naming_no_declared_key_fails_loudly(app: Any) -> None:
    with pytest.raises(SettingsError, match=r"Misspelt.greting reads \[sample\] greting, which"):
        settings(Misspelt, app)


def test_a_field_of_another_type_fails_loudly(app: Any) -> None:
    with pytest.raises(SettingsError, match=r"WrongType\.greeting is <class 'int'>"):
        settings(WrongType, app)
    with pytest.raises(SettingsError, match="must be a dataclass"):
        settings(dict, app)
