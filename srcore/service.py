"""What every part of srcore may know about the service an app is: its app-wide state.

:class:`SrcoreState` lives in ``app.extensions["srcore"]``: the service's id, manifest,
config, database and models. It sits in the base layer so that every feature (auth,
webhooks, mail, metrics) and the per-request glue can read it without importing
:mod:`srcore.app`, which composes them. A feature keeps its own state in its own
``app.extensions["srcore.<feature>"]`` entry.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from flask import Flask, current_app

if TYPE_CHECKING:
    from sqlalchemy import MetaData

    from srcore.config import Config, Section
    from srcore.db import Database
    from srcore.manifest import Manifest

__all__ = ["NavItem", "SrcoreState", "state"]

log = logging.getLogger("srcore")


@dataclass(frozen=True)
class NavItem:
    """One service in the network's navigation bar."""

    id: str
    name: str
    url: str
    current: bool


@dataclass
class SrcoreState:
    """Everything srcore builds for one app; stored in ``app.extensions["srcore"]``."""

    service_id: str
    manifest: Manifest
    config: Config
    section: Section
    db: Database
    metadata: MetaData | None
    user_model: type[Any] | None
    static_version: str
    nav_names: dict[str, str] = field(default_factory=dict)
    _nav_names_loaded: bool = False
    #: The app's ``extensions``, where each feature keeps its own state.
    extensions: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    # The auth and metrics features keep their state in their own extension entries
    # (``srcore.auth``, ``srcore.metrics``); these names read it for code written when it
    # lived here.

    @property
    def login(self) -> Any:
        """``app.extensions["srcore.auth"].login``."""
        return self._feature("srcore.auth", "login")

    @property
    def token_verifier(self) -> Any:
        """``app.extensions["srcore.auth"].token_verifier``."""
        return self._feature("srcore.auth", "token_verifier")

    @token_verifier.setter
    def token_verifier(self, value: Any) -> None:
        self.extensions["srcore.auth"].token_verifier = value

    @property
    def identity(self) -> Any:
        """``app.extensions["srcore.auth"].identity``."""
        return self._feature("srcore.auth", "identity")

    @property
    def metrics(self) -> Any:
        """``app.extensions.get("srcore.metrics")``."""
        return self.extensions.get("srcore.metrics")

    def _feature(self, key: str, name: str) -> Any:
        return getattr(self.extensions.get(key), name, None)

    @property
    def is_production(self) -> bool:
        return self.config.global_["environment"] == "production"

    def service_name(self, service_id: str) -> str:
        """The human name of a configured service, read from the installed manifests once."""
        if not self._nav_names_loaded:
            self._nav_names_loaded = True
            from srcore.manifest import ManifestError, discover

            try:
                self.nav_names.update({k: m.name for k, m in discover().items()})
            except ManifestError as exc:
                log.warning("cannot read the manifests of installed services: %s", exc)
            self.nav_names[self.service_id] = self.manifest.name
        return self.nav_names.get(service_id, service_id.replace("-", " ").title())

    def nav(self) -> list[NavItem]:
        """The configured services, in config-file order: the network is the file."""
        return [
            NavItem(
                id=sid,
                name=self.service_name(sid),
                url=str(self.config.section(sid)["origin"]).rstrip("/") + "/",
                current=sid == self.service_id,
            )
            for sid in self.config.services
        ]


def state(app: Flask | None = None) -> SrcoreState:
    """The srcore state of *app*, or of the current app."""
    target = app if app is not None else current_app
    result: SrcoreState = target.extensions["srcore"]
    return result
