"""The link from a service to meta: its HTTP client and what the service keeps to use it.

:class:`MetaClient` makes every call to meta, each with a timeout, through an HTTP session
that tests replace with a fake. :class:`MetaLink` is what a service keeps (the client,
meta's keys, the revocation list and its pull): the auth feature's ``identity``, built by
:func:`build_meta_link` from the config without any IO.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from srcore.auth.revocation.pull import PullRefused
from srcore.auth.users import profile_values, upsert_user

if TYPE_CHECKING:
    import requests

    from srcore.auth.jwks import JWKSKeySource
    from srcore.auth.revocation import RevocationPuller, RevocationStore
    from srcore.auth.tokens import TokenVerifier
    from srcore.config import Config
    from srcore.identity.protocol import RevocationEvent

__all__ = [
    "CALLBACK_PATH",
    "LOGIN_SCOPE",
    "MetaClient",
    "MetaLink",
    "MetaRefused",
    "MetaUnavailable",
    "PullCredentialsRefused",
    "build_meta_link",
    "fetch_unknown_user",
]

log = logging.getLogger("srcore.auth")

#: What a service asks for when it logs a user in: who they are.
LOGIN_SCOPE = "meta/profile:RO"
#: Where meta sends the browser back after a login (:mod:`srcore.auth.oauth_client`).
CALLBACK_PATH = "/oauth/callback"


class MetaUnavailable(Exception):
    """meta did not answer, timed out or failed (5xx)."""


class MetaRefused(Exception):
    """meta answered with a refusal (4xx); *error* is its OAuth error code if any."""

    def __init__(self, status: int, error: str, description: str = "") -> None:
        super().__init__(f"{status} {error}: {description}".strip(": "))
        self.status = status
        self.error = error
        self.description = description


class PullCredentialsRefused(MetaRefused, PullRefused):
    """meta refused this service's client credentials when it pulled revocations: what the
    puller takes for meta no longer knowing the service (:class:`PullRefused`)."""


class MetaClient:
    """HTTP calls from a service to meta, each with a timeout.

    *origin* is meta's public origin (browsers, the issuer); *internal_origin* is where
    this service reaches it. *client_id*/*client_secret* authenticate this service
    (``client_secret_basic``); without them only public calls work.
    """

    def __init__(
        self,
        origin: str,
        *,
        internal_origin: str | None = None,
        client_id: str | None = None,
        client_secret: str | None = None,
        http: requests.Session | None = None,
        timeout: float = 10.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.origin = origin.rstrip("/")
        self.internal = (internal_origin or origin).rstrip("/")
        self.client_id = client_id
        self.client_secret = client_secret
        self.timeout = timeout
        self._http = http
        self._clock = clock
        self._client_token: tuple[str, float] | None = None
        self._token_lock = threading.Lock()

    @property
    def http(self) -> requests.Session:
        if self._http is None:
            import requests

            self._http = requests.Session()
        return self._http

    @property
    def has_credentials(self) -> bool:
        return bool(self.client_id and self.client_secret)

    def _auth(self) -> tuple[str, str]:
        if not self.client_id or not self.client_secret:
            raise MetaRefused(401, "invalid_client", "this service has no OAuth client secret")
        # RFC 6749 section 2.3.1: both parts are form-encoded before Basic encoding.
        return quote(self.client_id, safe=""), quote(self.client_secret, safe="")

    def _call(self, method: str, path: str, **options: Any) -> requests.Response:
        import requests

        url = self.internal + path
        try:
            response = self.http.request(method, url, timeout=self.timeout, **options)
        except requests.RequestException as exc:
            raise MetaUnavailable(f"{method} {url}: {exc}") from exc
        if response.status_code >= 500:
            raise MetaUnavailable(f"{method} {url}: HTTP {response.status_code}")
        return response

    @staticmethod
    def _json(response: requests.Response) -> dict[str, Any]:
        try:
            body = response.json()
        except (ValueError, RecursionError):  # not JSON, or nested past the parser
            body = None
        if response.status_code >= 400:
            error = body.get("error") if isinstance(body, dict) else None
            description = body.get("error_description") if isinstance(body, dict) else None
            raise MetaRefused(response.status_code, str(error or "error"), str(description or ""))
        if not isinstance(body, dict):
            raise MetaUnavailable(f"meta answered {response.url} with something not JSON")
        return body

    def metadata(self) -> dict[str, Any]:
        """meta's RFC 8414 metadata; also tells whether meta is up right now."""
        return self._json(self._call("GET", "/.well-known/oauth-authorization-server"))

    def authorization_endpoint(self) -> str:
        """Where browsers go to log in: from the metadata, which proves meta is up."""
        endpoint = self.metadata().get("authorization_endpoint")
        if isinstance(endpoint, str) and endpoint.startswith(("https://", "http://")):
            return endpoint
        return self.origin + "/oauth/authorize"

    def exchange_code(self, code: str, *, verifier: str, redirect_uri: str) -> dict[str, Any]:
        """Trade an authorization code for tokens (RFC 6749 section 4.1.3)."""
        body = self._json(
            self._call(
                "POST",
                "/oauth/token",
                auth=self._auth(),
                data={
                    "grant_type": "authorization_code",
                    "code": code,
                    "redirect_uri": redirect_uri,
                    "code_verifier": verifier,
                },
                headers={"Accept": "application/json"},
            )
        )
        if not isinstance(body.get("access_token"), str):
            raise MetaRefused(400, "invalid_response", "no access_token in the token response")
        return body

    def profile(self, access_token: str) -> dict[str, Any]:
        """The profile of the user an access token belongs to (``/api/profile``)."""
        return self._json(
            self._call("GET", "/api/profile", headers={"Authorization": f"Bearer {access_token}"})
        )

    def client_token(self) -> str:
        """An access token of this service itself (client credentials), kept until expiry."""
        with self._token_lock:
            cached = self._client_token
            if cached is not None and cached[1] > self._clock():
                return cached[0]
            body = self._json(
                self._call(
                    "POST",
                    "/oauth/token",
                    auth=self._auth(),
                    data={"grant_type": "client_credentials", "scope": LOGIN_SCOPE},
                    headers={"Accept": "application/json"},
                )
            )
            token = body.get("access_token")
            if not isinstance(token, str):
                raise MetaRefused(400, "invalid_response", "no access_token in the answer")
            expires_in = body.get("expires_in")
            lifetime = expires_in if isinstance(expires_in, int) else 300
            self._client_token = (token, self._clock() + max(lifetime - 30, 0))
            return token

    def user(self, user_id: int) -> dict[str, Any] | None:
        """A user's profile by id (``/api/users/<id>``), or None if meta has no such user."""
        for attempt in range(2):
            token = self.client_token()
            response = self._call(
                "GET", f"/api/users/{int(user_id)}", headers={"Authorization": f"Bearer {token}"}
            )
            if response.status_code == 404:
                return None
            if response.status_code == 401 and attempt == 0:
                with self._token_lock:
                    self._client_token = None
                continue
            return self._json(response)
        return None  # pragma: no cover - the loop always returns

    def revocations(self, since: int) -> tuple[list[RevocationEvent], int]:
        """The revocation events after *since* (at most one page) and meta's last seq."""
        from srcore.identity.protocol import PULL_PATH, parse_pull_page

        response = self._call("GET", PULL_PATH, params={"since": str(since)}, auth=self._auth())
        try:
            body = self._json(response)
        except MetaRefused as exc:
            if exc.status == 401:
                raise PullCredentialsRefused(exc.status, exc.error, exc.description) from exc
            raise
        try:
            return parse_pull_page(body, since)
        except ValueError as exc:
            raise MetaUnavailable(f"meta sent bad revocation events: {exc}") from exc


@dataclass
class MetaLink:
    """Everything a service keeps to talk to meta: ``auth_state().identity``."""

    service_id: str
    origin: str
    meta: MetaClient
    keys: JWKSKeySource
    store: RevocationStore
    puller: RevocationPuller | None

    @property
    def issuer(self) -> str:
        return self.meta.origin

    @property
    def redirect_uri(self) -> str:
        return self.origin + CALLBACK_PATH

    def token_verifier(self) -> TokenVerifier:
        """A verifier of meta's tokens for this service, with revocations applied."""
        from srcore.auth.tokens import TokenVerifier

        return TokenVerifier(
            keys=self.keys,
            issuer=self.issuer,
            audience=self.service_id,
            is_revoked=self.store.is_revoked,
        )


def build_meta_link(
    config: Config,
    service_id: str,
    *,
    http: requests.Session | None = None,
) -> MetaLink | None:
    """Build (without any IO) the link of *service_id* to the meta in *config*, if any."""
    if not config.has_service("meta") or service_id == "meta":
        return None
    from srcore.auth.jwks import JWKSKeySource
    from srcore.auth.revocation import RevocationPuller, make_store

    meta = config.section("meta")
    own = config.section(service_id)
    timeout = config.global_.get("http-timeout")
    seconds = timeout.total_seconds() if hasattr(timeout, "total_seconds") else 10.0
    client = MetaClient(
        str(meta["origin"]),
        internal_origin=str(meta.get("internal-origin") or "") or None,
        client_id=str(own.get("oauth-client-id") or "") or None,
        client_secret=str(own.get("oauth-client-secret") or "") or None,
        http=http,
        timeout=seconds,
    )
    keys = JWKSKeySource(client.internal + "/oauth/jwks.json", http=http, timeout=seconds)
    store = make_store()
    interval = config.global_.get("revocation-pull-interval")
    pull_seconds = interval.total_seconds() if hasattr(interval, "total_seconds") else 30.0
    puller = None
    if client.has_credentials:
        puller = RevocationPuller(store, client.revocations, interval=pull_seconds)
    else:
        log.warning(
            "[%s] has no oauth-client-id/-secret: revocations arrive by push only", service_id
        )
    return MetaLink(
        service_id=service_id,
        origin=str(own["origin"]).rstrip("/"),
        meta=client,
        keys=keys,
        store=store,
        puller=puller,
    )


def fetch_unknown_user(link: MetaLink, user_id: int) -> bool:
    """Copy a user that a valid token names but this service has never seen from meta.

    It waits for meta, then writes in a transaction of its own, taking a connection for
    it: a request calling it lets go of its own session's connection first
    (:func:`srcore.db.release_request_connection`), or it would hold two.
    Returns False if meta has no such user; raises MetaUnavailable if meta is down.
    """
    try:
        profile = link.meta.user(user_id)
    except MetaRefused as exc:
        log.warning("cannot fetch user %s from meta: %s", user_id, exc)
        return False
    if profile is None:
        return False
    try:
        values = profile_values(profile)
    except ValueError as exc:
        raise MetaUnavailable(f"meta sent an unusable profile: {exc}") from exc
    if values["id"] != user_id:
        raise MetaUnavailable("meta sent the profile of another user")
    upsert_user(values)
    return True
