"""The authorization server: Authlib's grants and endpoints bound to meta's tables.

Authlib does the protocol (parameter checks, client authentication, PKCE, error
responses); this module says where clients, codes and tokens live, how access tokens are
made (RFC 9068 JWTs signed with meta's Ed25519 key) and what revoking means.
"""

from __future__ import annotations

import secrets
import time
import uuid
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from authlib.integrations.flask_oauth2 import AuthorizationServer as _FlaskServer
from authlib.integrations.flask_oauth2.requests import FlaskOAuth2Payload, FlaskOAuth2Request
from authlib.oauth2.rfc6749 import OAuth2Request, grants
from authlib.oauth2.rfc6749.errors import (
    InvalidClientError,
    InvalidGrantError,
    InvalidRequestError,
    InvalidScopeError,
)
from authlib.oauth2.rfc7009 import RevocationEndpoint as _RevocationEndpoint
from authlib.oauth2.rfc7636 import CodeChallenge
from authlib.oauth2.rfc7662 import IntrospectionEndpoint as _IntrospectionEndpoint
from authlib.oidc.core.errors import RequestNotSupportedError, RequestURINotSupportedError
from sqlalchemy import select, update

from meta.models import User
from meta.oauth import checks, events
from meta.oauth.clients import Client, FirstPartyClient, ThirdPartyClient
from meta.oauth.models import (
    AuthorizationCode,
    Grant,
    OAuthClient,
    PersonalAccessToken,
    RefreshToken,
    digest,
)
from meta.oauth.oidc import (
    OIDC_SCOPE_CLAIM,
    MetaOpenIDCode,
    client_algorithm,
    current_login,
    is_openid,
    normalize_scope,
    service_scope,
    split_scope,
)
from srcore.auth.scopes import ScopeError, format_scopes, parse_scopes
from srcore.db import session as db_session
from srcore.db import utcnow
from srcore.sqlrows import lock_row

if TYPE_CHECKING:
    from meta.oauth.catalog import Catalog
    from meta.oauth.keys import KeyRing
    from meta.oauth.network import Network
    from srcore.db import Database

__all__ = ["OAuthState", "build_server", "error_text", "oauth_state", "with_issuer"]

ACCESS_TOKEN_TYPE = "at+jwt"  # noqa: S105 - a media type, not a secret


@dataclass
class OAuthState:
    """Everything the authorization server of one app needs; ``app.extensions["meta.oauth"]``."""

    issuer: str
    db: Database
    ring: KeyRing
    catalog: Catalog
    network: Network
    first_party: dict[str, FirstPartyClient]
    access_lifetime: timedelta
    refresh_lifetime: timedelta
    code_lifetime: timedelta
    server: Any = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def access_seconds(self) -> int:
        return int(self.access_lifetime.total_seconds())

    def query_client(self, client_id: str | None) -> Client | None:
        if not client_id:
            return None
        first = self.first_party.get(client_id)
        if first is not None:
            return first
        row = db_session.scalar(
            select(OAuthClient).where(
                OAuthClient.client_id == client_id, OAuthClient.revoked_at.is_(None)
            )
        )
        return ThirdPartyClient(row) if row is not None else None

    # -- access tokens -----------------------------------------------------------------

    def audience(self, client: Client | None, scope: str) -> str | list[str]:
        services = sorted({s.service for s in parse_scopes(service_scope(scope))})
        if isinstance(client, FirstPartyClient):
            # A login token is for the service that asked and for meta's profile API.
            services = sorted({*services, client.service_id, "meta"})
        elif is_openid(scope):
            services = sorted({*services, "meta"})  # meta's /userinfo reads it
        if not services:
            services = ["meta"]
        return services[0] if len(services) == 1 else services

    def sign_access_token(
        self,
        *,
        subject: str,
        client_id: str,
        scope: str,
        audience: str | list[str],
        lifetime: int,
        grant: str | None = None,
        jti: str | None = None,
        now: int | None = None,
    ) -> tuple[str, dict[str, Any]]:
        """Sign an RFC 9068 access token; returns the token and its claims."""
        from srcore.auth import jose

        issued = int(time.time()) if now is None else now
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "sub": subject,
            "aud": audience,
            "client_id": client_id,
            # The OpenID scopes stay in the grant: every service parses this claim.
            "scope": service_scope(scope),
            "iat": issued,
            "exp": issued + lifetime,
            "jti": jti or uuid.uuid4().hex,
        }
        if grant is not None:
            claims["grant"] = grant
        oidc = split_scope(scope)[0]
        if oidc:
            # What /userinfo may release for this token (a refresh may narrow it).
            claims[OIDC_SCOPE_CLAIM] = " ".join(oidc)
        return jose.sign(claims, self.ring.signing_key(), typ=ACCESS_TOKEN_TYPE), claims

    def token_response(
        self, client: Client, *, user: User | None, scope: str, grant: Grant | None
    ) -> dict[str, Any]:
        """The token endpoint's success body; writes a refresh token when there is a grant."""
        lifetime = self.access_seconds
        access, _claims = self.sign_access_token(
            subject=str(user.id) if user is not None else client.client_id,
            client_id=client.client_id,
            scope=scope,
            audience=self.audience(client, scope),
            lifetime=lifetime,
            grant=grant.id if grant is not None else None,
        )
        body: dict[str, Any] = {
            "access_token": access,
            "token_type": "Bearer",
            "expires_in": lifetime,
            "scope": scope,
        }
        if grant is not None and client.check_grant_type("refresh_token"):
            refresh = secrets.token_urlsafe(32)
            db_session.add(
                RefreshToken(
                    token_hash=digest(refresh),
                    grant_id=grant.id,
                    expires_at=utcnow() + self.refresh_lifetime,
                )
            )
            body["refresh_token"] = refresh
        return body

    def decode_access_token(self, token: str) -> dict[str, Any] | None:
        """The claims of an access token meta signed (expired or not), or None."""
        from joserfc import jws
        from joserfc.errors import JoseError

        from srcore.auth import jose

        try:
            header = jws.extract_compact(token.encode("ascii")).protected
            if header.get("typ") != ACCESS_TOKEN_TYPE:
                return None
            claims = dict(jose.decode(token, self.ring.key_set()).claims)
        except (JoseError, ValueError, UnicodeError, KeyError, TypeError):
            return None
        if claims.get("iss") != self.issuer:
            return None
        return claims

    def revoke_grant(self, grant: Grant) -> None:
        events.revoke_grant(db_session, grant, lifetime=self.access_seconds)


def oauth_state(app: Any = None) -> OAuthState:
    from flask import current_app

    result: OAuthState = (app or current_app).extensions["meta.oauth"]
    return result


def _state() -> OAuthState:
    return oauth_state()


def _login_columns(request: Any) -> dict[str, Any]:
    """What an OpenID Connect code remembers: the nonce, and the login it was given under."""
    if not is_openid(request.scope):
        return {}
    columns: dict[str, Any] = {"nonce": request.payload.data.get("nonce") or None}
    login = current_login()
    if login is not None and login.user_id == request.user.id:
        columns.update(auth_time=login.auth_time, amr=" ".join(login.amr), sid=login.sid)
    return columns


def _active_user(user_id: int) -> User | None:
    user = db_session.get(User, user_id)
    if user is None or not user.is_active:
        return None
    return user


def _hold_parties(client: Client, user_id: int) -> User:
    """Hold the rows of a token's user and (third-party) client until the tokens commit,
    and read them again: an account suspended or deleted, an application deleted, since
    they were read refuses the tokens. One that comes later waits, then ends them with
    the rest; a deleted account's tokens were otherwise written after it (a 500), and an
    application's in the second of its deletion outlived it.
    """
    if isinstance(client, ThirdPartyClient) and (
        not lock_row(db_session, client.row) or client.row.revoked_at is not None
    ):
        raise InvalidGrantError(description="The application was deleted.")
    user = db_session.get(User, user_id)
    if user is None or not lock_row(db_session, user) or not user.is_active:
        raise InvalidGrantError(description="The account cannot be given tokens.")
    return user


# -- grants ------------------------------------------------------------------------------


class S256Only(CodeChallenge):  # type: ignore[misc]
    """PKCE with S256 on every authorization request; ``plain`` is refused (RFC 9700)."""

    SUPPORTED_CODE_CHALLENGE_METHOD = ["S256"]
    DEFAULT_CODE_CHALLENGE_METHOD = "S256"

    def validate_code_challenge(self, grant: Any, redirect_uri: str) -> None:
        data = grant.request.payload.data
        if self.required and not data.get("code_challenge"):
            raise InvalidRequestError("Missing 'code_challenge': PKCE with S256 is required.")
        if data.get("code_challenge") and data.get("code_challenge_method") != "S256":
            raise InvalidRequestError("Unsupported 'code_challenge_method': use S256.")
        super().validate_code_challenge(grant, redirect_uri)


class AuthorizationCodeGrant(grants.AuthorizationCodeGrant):  # type: ignore[misc]
    TOKEN_ENDPOINT_AUTH_METHODS = ["client_secret_basic", "client_secret_post", "none"]

    @staticmethod
    def validate_authorization_redirect_uri(request: Any, client: Client) -> str:
        # Authlib names the refused URI in the error's description, which may hold only
        # printable ASCII but the quote and backslash: a URI with either was a 500.
        uri = request.payload.redirect_uri
        if uri and not client.check_redirect_uri(uri):
            raise InvalidRequestError(
                _ascii(f"Redirect URI {uri} is not registered for this client.")
            )
        result: str = grants.AuthorizationCodeGrant.validate_authorization_redirect_uri(
            request, client
        )
        return result

    def validate_authorization_request(self) -> str:
        redirect_uri: str = super().validate_authorization_request()
        data = self.request.payload.data
        # What meta does not do must not pass for done: a client asking for the response
        # in a fragment or a POST (to keep the code out of its server's logs), or putting
        # its parameters in a signed request object, would have them silently ignored.
        mode = data.get("response_mode")
        if mode and mode != "query":
            raise InvalidRequestError(
                _ascii(f"response_mode {mode} is not supported: meta answers in the query."),
                redirect_uri=redirect_uri,
            )
        if data.get("request"):
            raise RequestNotSupportedError(
                "Request objects are not supported: send the parameters themselves.",
                redirect_uri=redirect_uri,
            )
        if data.get("request_uri"):
            raise RequestURINotSupportedError(
                "request_uri is not supported: send the parameters themselves.",
                redirect_uri=redirect_uri,
            )
        return redirect_uri

    def save_authorization_code(self, code: str, request: Any) -> None:
        st = _state()
        data = request.payload.data
        db_session.add(
            AuthorizationCode(
                code_hash=digest(code),
                client_id=request.client.client_id,
                user_id=request.user.id,
                redirect_uri=request.payload.redirect_uri,
                scope=request.scope,
                code_challenge=data.get("code_challenge"),
                code_challenge_method=data.get("code_challenge_method"),
                expires_at=utcnow() + st.code_lifetime,
                **_login_columns(request),
            )
        )
        db_session.commit()

    def query_authorization_code(self, code: str, client: Client) -> AuthorizationCode | None:
        st = _state()
        hashed = digest(code)
        found = db_session.scalar(
            select(AuthorizationCode).where(
                AuthorizationCode.code_hash == hashed,
                AuthorizationCode.client_id == client.client_id,
            )
        )
        if found is None:
            return None
        # The keys this exchange signs with, loaded (or made, in a transaction of their
        # own) before this one writes: SQLite has one writer.
        st.ring.signing_key()
        if is_openid(found.scope):
            st.ring.signing_key_for(client_algorithm(client))
        # The account and the application first, in the order their deletion takes them
        # (account, application, then codes and grants): the other way round, each would
        # wait for the other.
        _hold_parties(client, found.user_id)
        # Spend the code atomically, and keep it held until the exchange commits its
        # grant: a replay meanwhile waits, then finds the grant to revoke. Committed
        # between the two, a replay found no grant yet and the tokens issued lived on.
        spent = db_session.execute(
            update(AuthorizationCode)
            .where(AuthorizationCode.id == found.id, AuthorizationCode.used_at.is_(None))
            .values(used_at=utcnow())
            .execution_options(synchronize_session=False)
        )
        row = db_session.scalar(
            select(AuthorizationCode)
            .where(AuthorizationCode.id == found.id)
            .execution_options(populate_existing=True)
        )
        if row is None:
            return None
        if spent.rowcount != 1:  # type: ignore[attr-defined]
            # A replayed code: whoever holds it may be an attacker; kill what it gave.
            if row.grant_id is not None:
                grant = db_session.get(Grant, row.grant_id)
                if grant is not None:
                    st.revoke_grant(grant)
            db_session.commit()
            return None
        if row.expires_at <= utcnow():
            return None
        return row

    def delete_authorization_code(self, authorization_code: AuthorizationCode) -> None:
        db_session.commit()

    def authenticate_user(self, authorization_code: AuthorizationCode) -> User | None:
        return _active_user(authorization_code.user_id)

    def generate_token(
        self,
        user: Any = None,
        scope: Any = None,
        grant_type: Any = None,
        expires_in: Any = None,
        include_refresh_token: bool = True,
    ) -> dict[str, Any]:
        st = _state()
        code: AuthorizationCode = self.request.authorization_code
        grant = Grant(
            id=uuid.uuid4().hex, user_id=user.id, client_id=self.client.client_id, scope=scope
        )
        db_session.add(grant)
        db_session.flush()
        code.grant_id = grant.id
        db_session.add(code)
        return st.token_response(self.client, user=user, scope=scope, grant=grant)

    def save_token(self, token: dict[str, Any]) -> None:
        db_session.flush()


class RefreshTokenGrant(grants.RefreshTokenGrant):  # type: ignore[misc]
    TOKEN_ENDPOINT_AUTH_METHODS = ["client_secret_basic", "client_secret_post", "none"]
    INCLUDE_NEW_REFRESH_TOKEN = True

    def authenticate_refresh_token(self, refresh_token: str) -> _RefreshCredential | None:
        # Only looked at here: the token is spent in revoke_old_credential, once every
        # check has passed, so a refused request (wrong client, scope) changes nothing
        # (RFC 6749 5.2) and the client's retry still works.
        st = _state()
        row = db_session.scalar(
            select(RefreshToken).where(RefreshToken.token_hash == digest(refresh_token))
        )
        if row is None:
            return None
        if row.used_at is not None:
            # Rotation reuse (RFC 9700 4.14.2): a spent refresh token came back.
            st.revoke_grant(row.grant)
            db_session.commit()
            return None
        if row.expires_at <= utcnow() or row.grant.revoked_at is not None:
            return None
        return _RefreshCredential(row)

    def _validate_token_scope(self, refresh_token: _RefreshCredential) -> None:
        """A refresh may ask for the granted scope or less, in the scope grammar's terms
        (``todo/tickets:RO`` is less than ``todo/tickets:RW``); never more."""
        requested = self.request.payload.scope
        if not requested:
            return
        problem = checks.scope_syntax_problem(requested)
        if problem is not None:
            raise InvalidScopeError(description=_ascii(problem))
        wanted_oidc, wanted_other = split_scope(requested)
        granted_oidc, granted_other = split_scope(refresh_token.get_scope())
        try:
            wanted = parse_scopes(wanted_other)
            granted = parse_scopes(granted_other)
        except ScopeError as exc:
            raise InvalidScopeError(description=_ascii(str(exc))) from None
        if (
            not (wanted or wanted_oidc)
            or not set(wanted_oidc) <= set(granted_oidc)
            or not all(any(g.satisfies(w) for g in granted) for w in wanted)
        ):
            raise InvalidScopeError(description="The scope asked for is wider than granted.")
        self._narrowed = normalize_scope(" ".join([*wanted_oidc, format_scopes(wanted)]))

    def issue_token(self, user: Any, refresh_token: _RefreshCredential) -> dict[str, Any]:
        scope = getattr(self, "_narrowed", None) or refresh_token.get_scope()
        return self.generate_token(user=user, scope=scope, include_refresh_token=True)

    def authenticate_user(self, refresh_token: _RefreshCredential) -> User | None:
        return _active_user(refresh_token.row.grant.user_id)

    def revoke_old_credential(self, refresh_token: _RefreshCredential) -> None:
        # Spent in generate_token, before anything is written.
        return None

    def generate_token(
        self,
        user: Any = None,
        scope: Any = None,
        grant_type: Any = None,
        expires_in: Any = None,
        include_refresh_token: bool = True,
    ) -> dict[str, Any]:
        st = _state()
        st.ring.signing_key()  # before this transaction writes: SQLite has one writer
        row: RefreshToken = self.request.refresh_token.row
        user = _hold_parties(self.client, user.id)
        grant = row.grant
        # The grant as it is now, held until the new pair commits: a revocation that
        # landed since the token was read refuses the refresh, and one that comes later
        # waits and then revokes the new pair with the rest.
        if not lock_row(db_session, grant) or grant.revoked_at is not None:
            raise InvalidGrantError(description="The grant was revoked.")
        # Spend it atomically: of two concurrent refreshes with one token, one succeeds,
        # and the other is a reuse like any later one (RFC 9700 4.14.2).
        spent = db_session.execute(
            update(RefreshToken)
            .where(RefreshToken.id == row.id, RefreshToken.used_at.is_(None))
            .values(used_at=utcnow())
            .execution_options(synchronize_session=False)
        )
        if spent.rowcount != 1:  # type: ignore[attr-defined]
            st.revoke_grant(grant)
            db_session.commit()
            raise InvalidGrantError(description="The refresh token was used already.")
        grant.last_used = utcnow()
        return st.token_response(self.client, user=user, scope=scope, grant=grant)

    def save_token(self, token: dict[str, Any]) -> None:
        db_session.flush()


class _RefreshCredential:
    """The refresh-token row as Authlib's TokenMixin."""

    def __init__(self, row: RefreshToken) -> None:
        self.row = row

    def check_client(self, client: Client) -> bool:
        return bool(self.row.grant.client_id == client.client_id)

    def get_scope(self) -> str:
        return self.row.grant.scope


class ClientCredentialsGrant(grants.ClientCredentialsGrant):  # type: ignore[misc]
    """Service-to-service tokens for first-party clients: ``sub`` is the client id."""

    TOKEN_ENDPOINT_AUTH_METHODS = ["client_secret_basic", "client_secret_post"]

    def validate_requested_scope(self) -> None:
        super().validate_requested_scope()
        # No user is there to say yes: a service's own token holds its own service's
        # scopes and meta's profile only (FirstPartyClient.beyond_its_own).
        beyond = self.request.client.beyond_its_own(self.request.payload.scope)
        if beyond:
            names = _ascii(" ".join(beyond[:5]))
            raise InvalidScopeError(
                description=f"A service's own token holds only meta/profile:RO and its own "
                f"service's scopes, not {names}."
            )

    def generate_token(
        self,
        user: Any = None,
        scope: Any = None,
        grant_type: Any = None,
        expires_in: Any = None,
        include_refresh_token: bool = True,
    ) -> dict[str, Any]:
        st = _state()
        return st.token_response(
            self.client, user=None, scope=scope or "meta/profile:RO", grant=None
        )

    def save_token(self, token: dict[str, Any]) -> None:
        return None


# -- revocation and introspection ----------------------------------------------------------


class _Token:
    """A token presented to /oauth/revoke or /oauth/introspect, access or refresh."""

    def __init__(
        self,
        kind: str,
        *,
        claims: dict[str, Any] | None = None,
        refresh: RefreshToken | None = None,
    ) -> None:
        self.kind = kind
        self.claims = claims or {}
        self.refresh = refresh

    @property
    def client_id(self) -> str:
        if self.refresh is not None:
            return self.refresh.grant.client_id
        return str(self.claims.get("client_id"))

    def check_client(self, client: Client) -> bool:
        return self.client_id == client.client_id

    def is_expired(self) -> bool:
        if self.refresh is not None:
            return bool(self.refresh.expires_at <= utcnow())
        return int(self.claims.get("exp", 0)) <= time.time()

    def is_revoked(self) -> bool:
        if self.refresh is not None:
            grant = self.refresh.grant
            return (
                self.refresh.used_at is not None
                or grant.revoked_at is not None
                or _active_user(grant.user_id) is None
            )
        if events.is_revoked(db_session, self.claims):
            return True
        sub = self.claims.get("sub")
        return (
            isinstance(sub, str)
            and sub.isascii()
            and sub.isdigit()
            and _active_user(int(sub)) is None
        )


def _query_token(token_string: str, hint: str | None) -> _Token | None:
    """The token, whatever the hint says: a hint only orders the search (RFC 7009 2.1,
    RFC 7662 2.1), and the two kinds cannot be confused (a JWT has two dots)."""
    st = _state()
    if token_string.count(".") == 2:
        claims = st.decode_access_token(token_string)
        return _Token("access_token", claims=claims) if claims is not None else None
    row = db_session.scalar(
        select(RefreshToken).where(RefreshToken.token_hash == digest(token_string))
    )
    return _Token("refresh_token", refresh=row) if row is not None else None


class RevocationEndpoint(_RevocationEndpoint):  # type: ignore[misc]
    """RFC 7009. An access token is revoked by its jti, a refresh token with its grant."""

    CLIENT_AUTH_METHODS = ["client_secret_basic", "client_secret_post", "none"]

    def query_token(self, token_string: str, token_type_hint: str | None) -> _Token | None:
        return _query_token(token_string, token_type_hint)

    def revoke_token(self, token: _Token, request: Any) -> None:
        st = _state()
        if token.refresh is not None:
            grant = token.refresh.grant
            if grant.revoked_at is None:
                _audit_revocation(grant.user_id, "refresh token", grant.client_id)
            st.revoke_grant(grant)
        else:
            sub = token.claims.get("sub")
            if isinstance(sub, str) and sub.isascii() and sub.isdigit() and not token.is_revoked():
                _audit_revocation(int(sub), "access token", token.client_id)
            revoke_access_token(token.claims)
        db_session.commit()


def _audit_revocation(user_id: int, what: str, client_id: str) -> None:
    """A token revoked at ``/oauth/revoke`` goes in its user's audit log, naming the app."""
    from meta import audit

    if client_id == "pat":
        detail = f"{what} (personal), at the revocation endpoint"
    else:
        client = _state().query_client(client_id)
        name = client.name if client is not None else client_id
        detail = f"{what} of {name}, at the revocation endpoint"
    audit.record(db_session, audit.Kind.token_revoked, user_id, detail=detail[:256])


def revoke_access_token(claims: dict[str, Any]) -> None:
    """Emit a ``token`` event for one access token (and retire it if it is a PAT)."""
    jti = str(claims.get("jti"))
    if claims.get("client_id") == "pat":
        pat = db_session.scalar(select(PersonalAccessToken).where(PersonalAccessToken.jti == jti))
        if pat is not None and pat.revoked_at is None:
            pat.revoked_at = utcnow()
    events.emit(db_session, "token", jti, expires_at=int(claims.get("exp", 0)) or None)


class IntrospectionEndpoint(_IntrospectionEndpoint):  # type: ignore[misc]
    """RFC 7662, for confidential clients: first-party ones may inspect any token."""

    CLIENT_AUTH_METHODS = ["client_secret_basic", "client_secret_post"]

    def query_token(self, token_string: str, token_type_hint: str | None) -> _Token | None:
        return _query_token(token_string, token_type_hint)

    def check_permission(self, token: _Token, client: Client, request: Any) -> bool:
        return isinstance(client, FirstPartyClient) or token.check_client(client)

    def introspect_token(self, token: _Token) -> dict[str, Any]:
        st = _state()
        if token.refresh is not None:
            grant = token.refresh.grant
            user = db_session.get(User, grant.user_id)
            # RFC 7662 2.2: token_type is an RFC 6749 7.1 type, which only access tokens
            # have; a refresh token is told apart by what the client sent.
            return {
                "active": True,
                "client_id": grant.client_id,
                "scope": grant.scope,
                "sub": str(grant.user_id),
                "username": user.username if user is not None else None,
                "iss": st.issuer,
                "exp": int(token.refresh.expires_at.timestamp()),
                "iat": int(token.refresh.created.timestamp()),
            }
        claims = token.claims
        body = {
            "active": True,
            "token_type": "Bearer",  # as the token response said (RFC 7662 2.2)
            **{
                k: claims[k]
                for k in ("scope", "client_id", "sub", "aud", "iss", "exp", "iat", "jti")
                if k in claims
            },
        }
        sub = claims.get("sub")
        if isinstance(sub, str) and sub.isascii() and sub.isdigit():
            user = db_session.get(User, int(sub))
            if user is not None:
                body["username"] = user.username
        return body


# -- the server ----------------------------------------------------------------------------


class _ConfiguredRequest(FlaskOAuth2Request):  # type: ignore[misc]
    """Authlib's request, with the URL meta is configured at instead of the one it saw.

    Authlib refuses a request whose URL is not https (or loopback). Behind a TLS proxy, or
    when a service calls in through an ``internal-origin``, meta sees plain http and
    another Host; whether transport is secure is the operator's call, made by the
    configured origin, not something the request can say.
    """

    def __init__(self, request: Any, uri: str) -> None:
        OAuth2Request.__init__(self, method=request.method, uri=uri, headers=request.headers)
        self._request = request
        self.payload = FlaskOAuth2Payload(request)


class AuthorizationServer(_FlaskServer):  # type: ignore[misc]
    def handle_response(self, status: int, body: Any, headers: Any) -> Any:
        return super().handle_response(status, body, with_issuer(headers, _state().issuer))

    def authenticate_client(self, request: Any, methods: list[str], endpoint: str = "token") -> Any:
        """Authlib's client authentication, saying what failed: a known client with a wrong
        secret was told it "cannot authenticate with methods: [...]", as if the method
        were at fault. An unknown client keeps Authlib's "does not exist", which operators
        know to mean a meta not restarted since the client was configured."""
        try:
            return super().authenticate_client(request, methods, endpoint)
        except InvalidClientError as error:
            try:
                basic = checks.basic_credentials(request.headers.get("Authorization"))
            except checks.BadRequest:  # refused before Authlib runs; never here
                basic = None
            client_id = basic[0] if basic is not None else request.payload.data.get("client_id")
            if not client_id:
                error.description = (
                    "No client credentials: send the client id and secret as HTTP Basic "
                    "(client_secret_basic) or in the form (client_secret_post)."
                )
            elif self.query_client(client_id) is not None:
                error.description = _ascii(
                    "The client secret is wrong, or this client may not authenticate this "
                    f"way here (it may use: {', '.join(methods)})."
                )
            raise

    def create_oauth2_request(self, request: Any) -> Any:
        from flask import request as flask_request

        query = flask_request.query_string.decode("latin-1")
        uri = _state().issuer.rstrip("/") + flask_request.path + ("?" + query if query else "")
        return _ConfiguredRequest(flask_request, uri)

    def get_authorization_grant(self, request: Any) -> Any:
        # Authlib names an unsupported response_type in the error's description, which
        # may hold only printable ASCII but the quote and backslash (else a 500).
        response_type = request.payload.response_type
        if response_type and _ascii(response_type) != response_type:
            raise InvalidRequestError(f"Unsupported response_type {_ascii(response_type)}.")
        return super().get_authorization_grant(request)

    def validate_requested_scope(self, scope: str | None) -> None:
        from flask import request as flask_request

        if not scope:
            return
        problem = checks.scope_syntax_problem(scope)
        if problem is not None:
            raise InvalidScopeError(description=_ascii(problem))
        # A token request comes from a service, perhaps the one whose manifest is not read
        # yet: fetching it would wait on that service's worker, busy waiting for meta.
        fetch = flask_request.endpoint != "oauth.token"
        problem = _state().catalog.check(split_scope(scope)[1], fetch=fetch)
        if problem is not None:
            raise InvalidScopeError(description=_ascii(problem))


def with_issuer(headers: Any, issuer: str) -> list[tuple[str, str]]:
    """*headers* with ``iss`` added to a redirect's ``Location`` (RFC 9207).

    Every response of the authorization server that redirects is an authorization
    response, a code or an error, and goes to the client's redirect URI: naming the issuer
    there lets a client that talks to several servers see which one answered, so a
    server it was tricked into using cannot have it send another server's code to it
    (the mix-up attack). The other endpoints answer with JSON and no ``Location``.
    """
    from authlib.common.urls import add_params_to_uri

    result = []
    for name, value in headers or ():
        if name.lower() == "location":
            value = add_params_to_uri(value, [("iss", issuer)])
        result.append((name, value))
    return result


#: The longest error_description sent: one that quotes a client's 60 KB scope back made
#: a redirect's Location longer than proxies pass (nginx answers such a response 502).
MAX_DESCRIPTION = 200


def _ascii(text: str) -> str:
    """*text* as an error_description may hold it: printable ASCII but the quote and
    backslash (RFC 6749 5.2), and at most :data:`MAX_DESCRIPTION` characters."""
    shown = "".join(c if 0x20 <= ord(c) <= 0x7E and c not in '"\\' else "?" for c in text)
    if len(shown) > MAX_DESCRIPTION:
        shown = shown[: MAX_DESCRIPTION - 3] + "..."
    return shown


def error_text(text: str) -> str:
    """*text* as an ``error_description`` (and a challenge's quoted string) may hold it."""
    return _ascii(text)


def build_server(app: Any, st: OAuthState) -> AuthorizationServer:
    server = AuthorizationServer()
    server.init_app(app, query_client=st.query_client, save_token=lambda token, request: None)
    server.register_grant(AuthorizationCodeGrant, [S256Only(required=True), MetaOpenIDCode()])
    server.register_grant(RefreshTokenGrant)
    server.register_grant(ClientCredentialsGrant)
    server.register_endpoint(RevocationEndpoint)
    server.register_endpoint(IntrospectionEndpoint)
    return server
