"""Logging in through meta: the OAuth 2.0 client side of every service.

``login_required`` hands the browser to :class:`OAuthLogin`, which sends it to meta's
authorization endpoint (authorization code + PKCE S256 + state, RFC 6749 and 7636). meta
sends it back to ``/oauth/callback``, where the service exchanges the code, reads the
user's profile with the access token, keeps a local copy of it (the row's id is meta's
account id) and starts its own session.

All IO goes through :class:`MetaClient`, which takes an HTTP session, so tests hand it a
fake of meta's answers. A meta that cannot be reached gives a 503 "Account service
unavailable" page for a new login; existing sessions and tokens do not need meta.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode

from flask import Response, current_app, flash, redirect, request, session

from srcore.auth.state import auth_state

if TYPE_CHECKING:
    import requests
    from werkzeug.wrappers import Response as BaseResponse

    from srcore.auth.jwks import JWKSKeySource
    from srcore.auth.revocation import RevocationPuller, RevocationStore
    from srcore.auth.tokens import TokenVerifier
    from srcore.config import Config
    from srcore.identity.protocol import RevocationEvent

__all__ = [
    "LOGIN_SCOPE",
    "MetaClient",
    "MetaLink",
    "MetaRefused",
    "MetaUnavailable",
    "OAuthLogin",
    "build_meta_link",
    "init_app",
    "pkce_challenge",
    "profile_values",
    "upsert_user",
]

log = logging.getLogger("srcore.auth")

#: What a service asks for when it logs a user in: who they are.
LOGIN_SCOPE = "meta/profile:RO"
CALLBACK_PATH = "/oauth/callback"
_PENDING = "_oauth"
_PENDING_MAX = 5
_PENDING_LIFETIME = 600


class MetaUnavailable(Exception):
    """meta did not answer, timed out or failed (5xx)."""


class MetaRefused(Exception):
    """meta answered with a refusal (4xx); *error* is its OAuth error code if any."""

    def __init__(self, status: int, error: str, description: str = "") -> None:
        super().__init__(f"{status} {error}: {description}".strip(": "))
        self.status = status
        self.error = error
        self.description = description


def pkce_challenge(verifier: str) -> str:
    """The S256 code challenge of *verifier* (RFC 7636 section 4.2)."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


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
        except ValueError:
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

        body = self._json(
            self._call("GET", PULL_PATH, params={"since": str(since)}, auth=self._auth())
        )
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


def _link() -> MetaLink:
    link = auth_state().identity
    if link is None:
        raise RuntimeError("this service has no [meta] in its config")
    return link


def _unavailable() -> Response:
    from srcore.errors import error_response

    return error_response(
        503,
        "The network's account service cannot be reached right now, so you cannot log in. "
        "If you were already logged in, nothing changes. Try again in a minute.",
        title="Account service unavailable",
        headers=[("Retry-After", "30")],
    )


class OAuthLogin:
    """The login backend that logs users in through meta (the default with a [meta])."""

    def begin_login(self, next_url: str) -> Response:
        from srcore.auth.web import is_safe_next

        link = _link()
        try:
            endpoint = link.meta.authorization_endpoint()
        except (MetaUnavailable, MetaRefused) as exc:
            log.warning("cannot start a login at meta: %s", exc)
            return _unavailable()
        state = secrets.token_urlsafe(32)
        verifier = secrets.token_urlsafe(64)
        now = int(time.time())
        pending = _pending_logins(now)
        pending[state] = [verifier, next_url if is_safe_next(next_url) else "/", now]
        while len(pending) > _PENDING_MAX:
            del pending[min(pending, key=lambda k: pending[k][2])]
        session[_PENDING] = pending
        params = {
            "response_type": "code",
            "client_id": link.meta.client_id or "",
            "redirect_uri": link.redirect_uri,
            "scope": LOGIN_SCOPE,
            "state": state,
            "code_challenge": pkce_challenge(verifier),
            "code_challenge_method": "S256",
        }
        separator = "&" if "?" in endpoint else "?"
        response = Response(status=302)
        response.headers["Location"] = endpoint + separator + urlencode(params)
        response.headers["Cache-Control"] = "no-store"
        return response

    def logout_url(self) -> str | None:
        # meta logs out with a CSRF-checked POST, which another origin cannot make for the
        # user; its front page has the "Log out" button that ends every session.
        return _link().meta.origin + "/"


def _pending_logins(now: int) -> dict[str, list[Any]]:
    """The logins this browser started and has not finished, the stale ones dropped."""
    raw = session.get(_PENDING)
    pending: dict[str, list[Any]] = {}
    if isinstance(raw, dict):
        for key, value in raw.items():
            if (
                isinstance(key, str)
                and isinstance(value, list)
                and len(value) == 3
                and isinstance(value[2], int)
                and now - value[2] < _PENDING_LIFETIME
            ):
                pending[key] = value
    return pending


def _bad_callback(reason: str, status: int = 400) -> Response:
    from srcore.errors import error_response

    return error_response(status, reason, title="Login failed")


def callback() -> BaseResponse:
    """``GET /oauth/callback``: finish a login that :class:`OAuthLogin` started."""
    from srcore.auth.web import is_safe_next, log_in

    link = _link()
    now = int(time.time())
    pending = _pending_logins(now)
    given = request.args.get("state", "")
    found: list[Any] | None = None
    for state, entry in pending.items():
        if hmac.compare_digest(state.encode(), given.encode()):
            found = entry
            del pending[state]
            break
    session[_PENDING] = pending
    if found is None:
        return _bad_callback(
            "This login was not started here, or it took too long. Go back and log in again."
        )
    verifier, next_url = str(found[0]), str(found[1])
    error = request.args.get("error")
    if error:
        if error == "access_denied":
            return _bad_callback("You did not allow the login.", 403)
        return _bad_callback(f"The account service refused the login ({error[:64]}).")
    code = request.args.get("code", "")
    if not code:
        return _bad_callback("The account service sent no authorization code. Log in again.")
    try:
        tokens = link.meta.exchange_code(code, verifier=verifier, redirect_uri=link.redirect_uri)
        profile = link.meta.profile(str(tokens["access_token"]))
        values = profile_values(profile)
    except MetaUnavailable as exc:
        log.warning("login callback: meta unavailable: %s", exc)
        return _unavailable()
    except MetaRefused as exc:
        log.warning("login callback: meta refused: %s", exc)
        return _bad_callback("The account service did not accept this login. Log in again.")
    except ValueError as exc:
        log.error("login callback: meta sent an unusable profile: %s", exc)
        return _unavailable()
    user = upsert_user(values)
    log_in(user)
    # log_in starts a fresh session, so the message goes in after it.
    flash(f"Logged in as {values['username']}.", "success")
    return redirect(next_url if is_safe_next(next_url) else "/")


_PROFILE_FIELDS = ("url", "location", "bio", "suspension_notice")


def profile_values(profile: Mapping[str, Any]) -> dict[str, Any]:
    """The user row's values from a profile meta sent; ValueError if it is not one."""
    from srcore.db import UserType

    user_id, username, email = profile.get("id"), profile.get("username"), profile.get("email")
    if not isinstance(user_id, int) or isinstance(user_id, bool) or user_id <= 0:
        raise ValueError("the profile has no valid id")
    if not isinstance(username, str) or not username or len(username) > 256:
        raise ValueError("the profile has no valid username")
    if not isinstance(email, str) or len(email) > 256:
        raise ValueError("the profile has no valid email")
    try:
        user_type = UserType(str(profile.get("user_type") or "active"))
    except ValueError:
        raise ValueError(f"unknown user_type {profile.get('user_type')!r}") from None
    values: dict[str, Any] = {
        "id": user_id,
        "username": username,
        "email": email,
        "user_type": user_type,
    }
    for name in _PROFILE_FIELDS:
        value = profile.get(name)
        values[name] = value if isinstance(value, str) else None
    return values


def upsert_user(values: Mapping[str, Any], *, create: bool = True) -> int:
    """Write meta's view of a user into this service's user table; return the id.

    Runs in its own transaction, so the request's session is left alone. A local row
    holding the username of someone else (renamed at meta since) is moved aside.
    With ``create=False`` only an existing row is updated.
    """
    from sqlalchemy import select
    from sqlalchemy.exc import IntegrityError

    st = current_app.extensions["srcore"]
    model = st.user_model
    user_id = int(values["id"])
    if model is None:
        return user_id
    for attempt in range(2):
        try:
            with st.db.transaction() as db:
                row = db.get(model, user_id)
                if row is None and not create:
                    return user_id
                clash = db.scalars(
                    select(model).where(model.username == values["username"], model.id != user_id)
                ).first()
                if clash is not None:
                    clash.username = f"~{clash.id}"
                    db.flush()
                if row is None:
                    row = model(**values)
                    db.add(row)
                else:
                    for name, value in values.items():
                        if name != "id" and getattr(row, name) != value:
                            setattr(row, name, value)
            return user_id
        except IntegrityError:
            if attempt:
                raise
            # Another request inserted the same user at the same time: update it instead.
    return user_id  # pragma: no cover


def fetch_unknown_user(user_id: int) -> bool:
    """Copy a user that a valid token names but this service has never seen from meta.

    Returns False if meta has no such user; raises MetaUnavailable if meta is down.
    """
    link = _link()
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


def init_app(app: Any) -> None:
    """Add ``/oauth/callback`` to an app whose login goes through meta."""
    app.add_url_rule(CALLBACK_PATH, endpoint="srcore_oauth_callback", view_func=callback)
