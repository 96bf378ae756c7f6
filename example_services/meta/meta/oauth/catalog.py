"""Which scopes the network's services declare, for the consent screen and scope checks.

Installed services are read from their packages' manifests; a configured service whose
package is not installed here is asked for ``{origin}/.well-known/srcore-service`` the
first time its scopes are needed (waiting ``[global] http-timeout`` at most, cached; a
failure is retried a minute later). Nothing is fetched at import or start-up.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from srcore.auth.scopes import Scope, ScopeError, parse_scope

__all__ = ["Catalog", "ServiceScopes", "http_fetcher", "scope_groups"]

log = logging.getLogger("meta.oauth")

#: How long a manifest is waited for when the config does not say (``http-timeout``).
FETCH_TIMEOUT = 10.0
_FAILURE_RETRY = 60.0
_SUCCESS_TTL = 3600.0


@dataclass(frozen=True)
class ServiceScopes:
    """One service's human name and its scopes with their descriptions."""

    id: str
    name: str
    scopes: dict[str, str] = field(default_factory=dict)
    known: bool = True


Fetcher = Callable[[str], Any]


def http_fetcher(timeout: float = FETCH_TIMEOUT) -> Fetcher:
    """A :data:`Fetcher` over HTTP waiting *timeout* seconds at most."""

    def fetch(url: str) -> Any:
        import requests

        response = requests.get(url, timeout=timeout, allow_redirects=False)
        response.raise_for_status()
        return response.json()

    return fetch


class Catalog:
    """The scopes of every configured service, loaded lazily."""

    def __init__(
        self,
        *,
        services: dict[str, str],
        local: Callable[[], dict[str, Any]] | None = None,
        fetch: Fetcher | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        #: service id -> the base URL its manifest is fetched from
        self.services = services
        self._local = local
        self._fetch = http_fetcher() if fetch is None else fetch
        self._clock = clock
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[float, ServiceScopes]] = {}
        self._installed: dict[str, Any] | None = None

    def _installed_manifests(self) -> dict[str, Any]:
        if self._installed is None:
            manifests: dict[str, Any] = {}
            if self._local is not None:
                try:
                    manifests = dict(self._local())
                except Exception as exc:  # a broken manifest must not break consent
                    log.warning("cannot read installed manifests: %s", exc)
            self._installed = manifests
        return self._installed

    def service(self, service_id: str, *, fetch: bool = True) -> ServiceScopes:
        """The scopes of *service_id* (``known=False`` when they could not be read, or,
        without *fetch*, are not read yet)."""
        installed = self._installed_manifests().get(service_id)
        if installed is not None:
            return ServiceScopes(
                id=service_id,
                name=installed.name,
                scopes={s.name: s.description for s in installed.scopes},
            )
        now = self._clock()
        with self._lock:
            cached = self._cache.get(service_id)
            if cached is not None and (cached[0] > now or not fetch):
                return cached[1]
        if not fetch:
            return ServiceScopes(id=service_id, name=service_id, known=False)
        result, ttl = self._remote(service_id)
        with self._lock:
            self._cache[service_id] = (now + ttl, result)
        return result

    def _remote(self, service_id: str) -> tuple[ServiceScopes, float]:
        unknown = ServiceScopes(id=service_id, name=service_id, known=False)
        base = self.services.get(service_id)
        if base is None:
            return unknown, _FAILURE_RETRY
        url = base.rstrip("/") + "/.well-known/srcore-service"
        try:
            data = self._fetch(url)
            scopes = {
                str(item["name"]): str(item.get("description", ""))
                for item in data.get("scopes", [])
            }
            name = str(data.get("name") or service_id)
        except Exception as exc:  # network, HTTP, JSON or shape: all mean "not now"
            log.warning("cannot read the manifest of %s at %s: %s", service_id, url, exc)
            return unknown, _FAILURE_RETRY
        return ServiceScopes(id=service_id, name=name, scopes=scopes), _SUCCESS_TTL

    def check(self, scopes: Iterable[str], *, fetch: bool = True) -> str | None:
        """Why *scopes* cannot be granted, or None when every one is grammatical and offered.

        A scope of a configured service whose manifest cannot be read right now (or,
        without *fetch*, is not read yet) is allowed (it is shown without a description):
        a service being down must not stop logins.
        """
        for text in scopes:
            try:
                scope = parse_scope(text)
            except ScopeError as exc:
                return str(exc)
            if scope.service not in self.services:
                return f"no service called {scope.service!r} is part of this network"
            info = self.service(scope.service, fetch=fetch)
            if info.known and scope.name not in info.scopes:
                return f"{info.name} has no scope called {scope.name!r}"
        return None

    def all_scopes(self, *, fetch: bool = True) -> list[str]:
        """Every declared scope in both access levels, for the PAT form; without *fetch*,
        those of manifests installed or read already, for meta's metadata documents.

        A service asks for that metadata while it sends a browser to log in; fetching its
        own manifest then would wait on the service, whose worker is busy waiting for meta.
        """
        found: list[str] = []
        for service_id in self.services:
            info = self.service(service_id, fetch=fetch)
            for name in info.scopes:
                found += [f"{service_id}/{name}:RO", f"{service_id}/{name}:RW"]
        return found


def scope_groups(catalog: Catalog, scopes: Iterable[Scope]) -> list[dict[str, Any]]:
    """Scopes grouped by service with descriptions, in the order the consent page lists them."""
    groups: dict[str, dict[str, Any]] = {}
    for scope in sorted(set(scopes)):
        info = catalog.service(scope.service)
        group = groups.setdefault(
            scope.service, {"id": scope.service, "name": info.name, "items": []}
        )
        group["items"].append(
            {
                "scope": str(scope),
                "name": scope.name,
                "access": "read and write" if scope.access == "RW" else "read only",
                "description": info.scopes.get(scope.name, ""),
            }
        )
    return list(groups.values())
