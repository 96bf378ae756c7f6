"""meta's public keys (JWKS), fetched on first need, cached, refreshed when they change.

Every service verifies access tokens against meta's JWKS. The keys are
fetched the first time a signature has to be checked (never at import or app build),
kept for ``max_age``, and fetched again early when a token names a ``kid`` the cache does
not know (meta rotated its key), at most once per ``min_refresh_interval`` so a flood of
made-up kids cannot turn into a flood of requests to meta. When meta cannot be reached
the cached keys keep working, however old: a service must not go down with meta.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from srcore.auth.tokens import KeysUnavailable

if TYPE_CHECKING:
    import requests
    from joserfc.jwk import KeySet

__all__ = ["JWKSKeySource", "KeysUnavailable", "parse_jwks"]

log = logging.getLogger("srcore.auth")


def parse_jwks(document: Any) -> KeySet:
    """Build a key set from a JWKS document, keeping only Ed25519 public keys.

    Raises ValueError for a document that is not a JWKS at all.
    """
    from joserfc.errors import JoseError
    from joserfc.jwk import KeySet, OKPKey

    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise ValueError("not a JWKS document: no 'keys' list")
    keys: list[Any] = []
    for entry in document["keys"]:
        if not isinstance(entry, dict):
            continue
        if entry.get("kty") != "OKP" or entry.get("crv") != "Ed25519":
            continue
        if "d" in entry:
            # A private key published by mistake: use only its public half.
            entry = {k: v for k, v in entry.items() if k != "d"}
        try:
            keys.append(OKPKey.import_key(entry))
        except (JoseError, ValueError, TypeError):
            log.warning("ignoring a malformed key in meta's JWKS: kid=%r", entry.get("kid"))
    return KeySet(keys)


def _kids(key_set: KeySet) -> frozenset[str]:
    return frozenset(key.kid for key in key_set.keys if key.kid)


class JWKSKeySource:
    """A :class:`~srcore.auth.tokens.KeySource` over meta's ``jwks_uri``.

    *http* is the session requests go through (a fake in tests); *clock* is a monotonic
    clock in seconds. Thread-safe: one fetch at a time, readers never wait on a fetch
    when the keys they need are cached.
    """

    def __init__(
        self,
        url: str,
        *,
        http: requests.Session | None = None,
        clock: Callable[[], float] = time.monotonic,
        timeout: float = 5.0,
        min_refresh_interval: float = 30.0,
        max_age: float = 3600.0,
    ) -> None:
        self.url = url
        self.timeout = timeout
        self.min_refresh_interval = min_refresh_interval
        self.max_age = max_age
        self._http = http
        self._clock = clock
        self._keys: KeySet | None = None
        self._kids: frozenset[str] = frozenset()
        self._fetched_at: float | None = None
        self._attempted_at: float | None = None
        self._lock = threading.Lock()
        #: How many times the JWKS was requested (counted for benchmarks and tests).
        self.fetches = 0

    @property
    def http(self) -> requests.Session:
        if self._http is None:
            import requests

            self._http = requests.Session()
        return self._http

    def key_set(self, kid: str | None) -> KeySet:
        """The cached keys, fetched first if missing, too old, or lacking *kid*.

        Raises :class:`KeysUnavailable` only when no keys were ever fetched and meta
        cannot be reached now.
        """
        keys = self._keys
        if keys is not None and not self._needs_refresh(kid):
            return keys
        with self._lock:
            if self._keys is None or self._needs_refresh(kid):
                self._refresh_locked()
            if self._keys is None:
                raise KeysUnavailable("meta's signing keys cannot be fetched right now.")
            return self._keys

    def refresh(self) -> bool:
        """Fetch the JWKS now (respecting the refresh floor); True if new keys arrived."""
        with self._lock:
            before = self._fetched_at
            self._refresh_locked()
            return self._fetched_at != before

    def _needs_refresh(self, kid: str | None) -> bool:
        now = self._clock()
        if self._fetched_at is None or now - self._fetched_at >= self.max_age:
            return self._may_try(now)
        if kid is not None and kid not in self._kids:
            return self._may_try(now)
        return False

    def _may_try(self, now: float) -> bool:
        return self._attempted_at is None or now - self._attempted_at >= self.min_refresh_interval

    def _refresh_locked(self) -> None:
        now = self._clock()
        if not self._may_try(now):
            return
        self._attempted_at = now
        self.fetches += 1
        import requests

        try:
            # This is the cache: a copy kept by a proxy in front of meta could lack the key
            # a token names (after an emergency rotation), so the proxy is to ask meta.
            headers = {"Accept": "application/json", "Cache-Control": "no-cache"}
            response = self.http.get(self.url, timeout=self.timeout, headers=headers)
            response.raise_for_status()
            keys = parse_jwks(response.json())
        except (requests.RequestException, ValueError) as exc:
            if self._keys is None:
                log.error("cannot fetch meta's JWKS from %s: %s", self.url, exc)
            else:
                log.warning(
                    "cannot refresh meta's JWKS from %s (keeping cached keys): %s", self.url, exc
                )
            return
        self._keys = keys
        self._kids = _kids(keys)
        self._fetched_at = now
