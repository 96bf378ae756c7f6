"""The authorization server's HTTP endpoints and meta's profile API.

``/.well-known/oauth-authorization-server`` (RFC 8414), ``/oauth/authorize`` (with the
consent page), ``/oauth/token`` (RFC 6749), ``/oauth/revoke`` (RFC 7009),
``/oauth/introspect`` (RFC 7662), ``/oauth/jwks.json``, ``/oauth/revocations`` (the
services' pull) and ``/api/profile``, ``/api/users/<id>``.
"""

from __future__ import annotations

from typing import Annotated, Any, TypedDict
from urllib.parse import urlencode

from authlib.oauth2 import OAuth2Error
from authlib.oidc.core.errors import ConsentRequiredError
from flask import Blueprint, Response, current_app, jsonify, redirect, render_template, request
from markupsafe import Markup
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from meta import audit
from meta.models import User
from meta.oauth import checks, oidc_flow
from meta.oauth.catalog import scope_groups
from meta.oauth.clients import FirstPartyClient
from meta.oauth.keys import JWKS_MAX_AGE
from meta.oauth.models import Consent, RevocationEvent
from meta.oauth.oidc import is_openid, normalize_scope, split_scope
from meta.oauth.server import error_text, oauth_state
from srcore.auth import current_token, current_user, oauth
from srcore.auth.scopes import ScopeError, parse_scopes
from srcore.db import UserType, writes_on_safe_method
from srcore.db import session as db_session
from srcore.errors import error_response
from srcore.highlighting import reveal_hidden
from srcore.identity.protocol import MAX_SEQ
from srcore.ratelimit import client_address
from srcore.routing import ID_MAX
from srcore.validation import Invalid, coerce_string

__all__ = [
    "MACHINE_ENDPOINTS",
    "ProfileJSON",
    "endpoints",
    "error_code",
    "oauth_error",
    "profile_of",
    "protocol_error",
]

endpoints = Blueprint("oauth", __name__)

PULL_BATCH = 1000
#: The endpoints that clients call with their own credentials (no cookie, no CSRF token).
CLIENT_ENDPOINTS = ("oauth.token", "oauth.revoke", "oauth.introspect")
#: The consent page's own form fields, beside the authorization request's parameters.
CONSENT_FIELDS = frozenset({"csrf_token", "decision"})
#: The token_type_hint values of revocation and introspection (RFC 7009 2.1, RFC 7662 2.1).
TOKEN_TYPE_HINTS = ("access_token", "refresh_token")
#: The endpoints a browser app (a public client on another origin) calls: CORS, no cookies.
CORS_ENDPOINTS = ("oauth.token", "oauth.revoke", "oauth.metadata", "oauth.jwks")
#: What the consent page says each OpenID scope gives the application.
IDENTITY_SCOPES = {
    "openid": "who you are: your account id here",
    "profile": "your username and your web site",
    "email": "your email address and whether it is confirmed",
}


class ProfileJSON(TypedDict):
    """An account's profile (``suspension_notice`` is set while it is suspended)."""

    id: int
    username: str
    email: str
    user_type: Annotated[str, UserType]
    url: str | None
    location: str | None
    bio: str | None
    suspension_notice: str | None


def profile_of(user: User) -> ProfileJSON:
    """The profile shape of ``/api/profile``, ``/api/users/<id>`` and profile pushes."""
    return {
        "id": user.id,
        "username": user.username,
        "email": user.email,
        "user_type": user.user_type.value,
        "url": user.url,
        "location": user.location,
        "bio": user.bio,
        "suspension_notice": user.suspension_notice,
    }


# -- metadata and keys ----------------------------------------------------------------------


@endpoints.route("/.well-known/oauth-authorization-server")
def metadata() -> Response:
    st = oauth_state()
    base = st.issuer.rstrip("/")
    body = {
        "issuer": st.issuer,
        "authorization_endpoint": base + "/oauth/authorize",
        "token_endpoint": base + "/oauth/token",
        "revocation_endpoint": base + "/oauth/revoke",
        "introspection_endpoint": base + "/oauth/introspect",
        "jwks_uri": base + "/oauth/jwks.json",
        "scopes_supported": st.catalog.all_scopes(fetch=False),  # see all_scopes
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": ["authorization_code", "refresh_token", "client_credentials"],
        "code_challenge_methods_supported": ["S256"],
        "token_endpoint_auth_methods_supported": [
            "client_secret_basic",
            "client_secret_post",
            "none",
        ],
        "revocation_endpoint_auth_methods_supported": [
            "client_secret_basic",
            "client_secret_post",
            "none",
        ],
        "introspection_endpoint_auth_methods_supported": [
            "client_secret_basic",
            "client_secret_post",
        ],
        "authorization_response_iss_parameter_supported": True,
    }
    response = jsonify(body)
    response.cache_control.public = True
    response.cache_control.max_age = 3600
    return response


@endpoints.route("/oauth/jwks.json")
def jwks() -> Response:
    # A new key is published PUBLISHED_BEFORE_SIGNING (this and a margin) before it signs.
    response = jsonify(oauth_state().ring.jwks())
    response.cache_control.public = True
    response.cache_control.max_age = JWKS_MAX_AGE
    return response


# -- authorization ------------------------------------------------------------------------


def _authorize_error(error: OAuth2Error) -> Response:
    """A redirect with the error only to a redirect URI checked against the client."""
    server = oauth_state().server
    if error.redirect_uri:
        if error.state is None:
            # RFC 6749 4.1.2.1: the client's state comes back with every error, also those
            # found after Authlib's checks (max_age, prompt=none): without it the client
            # cannot tell which of its requests failed, nor that the answer is meant for it.
            error.state = request.values.get("state") or None
        result: Response = server.handle_error_response(None, error)
        return result
    reason = error.description or error.error or "The authorization request is not valid."
    return error_response(400, f"{reason}", title="Invalid authorization request")


@endpoints.route("/oauth/authorize", methods=["GET", "POST"])
@writes_on_safe_method("a logged-in user's GET is answered with a code (RFC 6749 4.1.2)")
def authorize() -> Any:
    st = oauth_state()
    server = st.server
    # The request is the query (or a POSTed form); the consent form adds its own fields.
    items = [*request.args.items(multi=True)] + [
        (name, value)
        for name, value in request.form.items(multi=True)
        if name not in CONSENT_FIELDS
    ]
    try:
        checks.check_parameters(items, required=("response_type",))
    except checks.BadRequest as problem:
        return error_response(400, str(problem), title="Invalid authorization request")
    user = current_user._get_current_object()
    try:
        grant = server.get_consent_grant(end_user=user)
    except OAuth2Error as error:
        if user is None and error.redirect_uri and not _silent():
            # Any registered application can make a request it knows is wrong (a made-up
            # scope), and its error goes to a redirect URI of its choosing: sent to a
            # stranger, meta's address would bounce them to its site. The user logs in
            # first (RFC 9700 4.11.2); only prompt=none is answered without.
            return _log_in_first()
        return _authorize_error(error)
    if user is None:
        return _log_in_first()
    if not user.is_active:
        if user.is_suspended:
            notice = user.suspension_notice or "This account is suspended."
            return error_response(403, notice, title="Account suspended")
        return error_response(
            403,
            "Confirm your email address before using it to log in elsewhere.",
            title="Address not confirmed",
        )
    client = grant.client
    try:
        scope = normalize_scope(grant.request.scope)
    except ScopeError as exc:  # the server checked the grammar; a clear 400 if not
        return error_response(400, str(exc), title="Invalid authorization request")
    grant.request.scope = scope
    prompts: set[str] = set()
    if is_openid(scope):
        prompts = set(str(grant.request.payload.data.get("prompt") or "").split())
        try:
            reauth = oidc_flow.reauthentication(grant, prompts)
        except OAuth2Error as error:
            return _authorize_error(error)
        if reauth is not None:
            return reauth
    if request.method == "POST" and request.form.get("decision", "approve") != "approve":
        # The person's answer on this consent page stands, even when another tab approved
        # the same access meanwhile (remembered from then on): "Deny" never sends a code.
        return server.create_authorization_response(grant_user=None, grant=grant)
    ask = "consent" in prompts or not _identified_by_redirect(client, grant.redirect_uri)
    # A service of the network logs its users in without asking; another service's scopes
    # it gets only with their yes, on the consent page, as any application does.
    unasked = isinstance(client, FirstPartyClient) and not client.beyond_its_own(scope)
    if unasked or (not ask and _remembered(user.id, client.client_id, scope)):
        return server.create_authorization_response(grant_user=user, grant=grant)
    if "none" in prompts and request.method == "GET":
        return _authorize_error(ConsentRequiredError(redirect_uri=grant.redirect_uri))
    if request.method == "POST":
        if request.form.get("decision") == "approve":
            if not _remembered(user.id, client.client_id, scope):
                db_session.add(Consent(user_id=user.id, client_id=client.client_id, scope=scope))
                try:
                    db_session.flush()
                except IntegrityError:
                    # The same approval sent twice at once (a double click, two tabs):
                    # the other request recorded the consent, and this one goes on.
                    db_session.rollback()
            audit.record(db_session, audit.Kind.app_authorized, user.id, detail=client.name)
            db_session.commit()
            return server.create_authorization_response(grant_user=user, grant=grant)
        return server.create_authorization_response(grant_user=None, grant=grant)
    oidc_scopes, other = split_scope(scope)
    groups = scope_groups(st.catalog, parse_scopes(other))
    return render_template(
        "meta/oauth/authorize.html",
        client=client,
        client_name=_shown_name(client.name),
        groups=groups,
        identity=[(name, IDENTITY_SCOPES[name]) for name in oidc_scopes],
        redirect_host=_host(grant.redirect_uri),
        action=request.full_path,
    )


def _silent() -> bool:
    """Whether the authorization request asks for no page at all (``prompt=none``)."""
    return "none" in str(request.values.get("prompt") or "").split()


def _log_in_first() -> Response:
    """The login page, with the authorization request (a GET) to come back to."""
    if request.method != "GET":
        return error_response(401, "Log in first.", title="Not logged in")
    return redirect("/login?" + urlencode({"next": request.full_path}))


def _identified_by_redirect(client: Any, redirect_uri: str | None) -> bool:
    """Whether a request naming *client* can only have come from it, as far as its code
    goes: a confidential client proves itself at the token endpoint, and a public one's
    code reaches only its https redirect URI. Any program on the user's machine may listen
    on a loopback port or claim a private-use scheme with a public client's id (which is
    no secret) and a verifier of its own, so such a request is asked about every time,
    however often the user approved the real app (RFC 8252 8.6)."""
    if client.confidential:
        return True
    from urllib.parse import urlsplit

    return urlsplit(redirect_uri or "").scheme == "https"


def _shown_name(name: str) -> str | Markup:
    """The client's name as the consent page shows it: as it is, unless it holds what a
    name may not (registered before the rule, say): then with those characters shown as
    ``<U+…>``, since a bidirectional override in it, or a Cyrillic letter among Latin
    ones, could make it read as another name."""
    from meta.oauth.client_pages import mixed_script_problem, reveal_mixed_scripts

    try:
        shown = coerce_string(name, strip=False, text="name")
    except Invalid:
        return reveal_hidden(name)
    if mixed_script_problem(shown) is not None:
        # Registered before such names were refused: "Todo" with a Cyrillic o.
        return reveal_mixed_scripts(shown)
    return shown


def _host(uri: str | None) -> str:
    """Where the consent page says the browser goes. A host in another script (a
    registration from before redirect URIs had to be ASCII) is shown with each character
    that is not printable ASCII as ``<U+…>``: its look-alike (a Cyrillic a, U+0430, in
    "apple.com") would name a site the browser, going to the xn-- form, never visits."""
    from urllib.parse import urlsplit

    parts = urlsplit(uri or "")
    # A native app's private-use scheme (com.example.app:/cb) has no host: show the scheme.
    host = parts.netloc or parts.scheme
    return "".join(c if " " < c < "\x7f" else f"<U+{ord(c):04X}>" for c in host)


def _remembered(user_id: int, client_id: str, scope: str) -> bool:
    found = db_session.scalar(
        select(Consent.id).where(
            Consent.user_id == user_id, Consent.client_id == client_id, Consent.scope == scope
        )
    )
    return found is not None


# -- token, revocation, introspection -----------------------------------------------------


#: The endpoints programs call, and the error form each answers in: ``client`` where a
#: client authenticates with its secret (RFC 6749 5.2, RFC 7009 2.2.1, RFC 7662 2.3, and
#: the services' pull of revocations), ``bearer`` where it presents an access token (RFC
#: 6750 3.1), ``document`` for what is only read (metadata, keys). A program reads the
#: ``error`` of a JSON body; an HTML page made it report a parse error, or nothing at all.
MACHINE_ENDPOINTS = {
    "oauth.token": "client",
    "oauth.revoke": "client",
    "oauth.introspect": "client",
    "oauth.revocations": "client",
    "oidc.userinfo": "bearer",
    "oauth.metadata": "document",
    "oauth.jwks": "document",
    "oidc.configuration": "document",
}


def error_code(kind: str, status: int) -> str:
    """The error code of a *status* that says nothing more, at a *kind* of endpoint."""
    if status == 503:
        return "temporarily_unavailable"
    if status >= 500:
        return "server_error"
    if status == 401:
        return "invalid_token" if kind == "bearer" else "invalid_client"
    if status == 403 and kind == "bearer":
        return "insufficient_scope"
    return "invalid_request"


def protocol_error(
    kind: str,
    status: int,
    description: str,
    *,
    error: str | None = None,
    response: Response | None = None,
) -> Response:
    """The error of a machine endpoint of *kind* (see :data:`MACHINE_ENDPOINTS`): JSON
    ``error`` and ``error_description`` with *status*, never stored, and the challenge
    the spec asks for: ``Basic`` on a client's 401, ``Bearer`` with the error named on
    a resource's 400, 401 and 403 (RFC 6750 3), bare when the request carried no token.
    With *response*, that response (its other headers kept) is made the error."""
    error = error or error_code(kind, status)
    description = error_text(description)
    body = current_app.json.dumps({"error": error, "error_description": description})
    if response is None:
        response = current_app.response_class()
    response.set_data(body + "\n")
    response.content_type = "application/json"
    response.status_code = status
    response.headers.remove("WWW-Authenticate")
    if kind == "client" and status == 401:
        response.headers["WWW-Authenticate"] = f'Basic realm="{_realm()}"'
    elif kind == "bearer" and status in (400, 401, 403):
        challenge = f'Bearer realm="{_realm()}"'
        if not (status == 401 and error == "invalid_request"):
            challenge += f', error="{error}", error_description="{description}"'
        response.headers["WWW-Authenticate"] = challenge
    return _no_store(response)


def oauth_error(error: str, description: str) -> Response:
    """An RFC 6749 5.2 error body; a failed client authentication is a 401 challenge."""
    return protocol_error(
        "client", 401 if error == "invalid_client" else 400, description, error=error
    )


def _realm() -> str:
    return str(current_app.extensions["srcore"].service_id)


def _with_realm(response: Response) -> Response:
    """Authlib's 401s challenge without a realm, which RFC 7235 requires: add it."""
    if response.status_code == 401:
        challenge = response.headers.get("WWW-Authenticate", "")
        if "realm=" not in challenge:
            scheme, _, params = challenge.partition(" ")
            parts = [f'realm="{_realm()}"', *([params] if params else [])]
            response.headers["WWW-Authenticate"] = f"{scheme or 'Basic'} " + ", ".join(parts)
    return response


def _client_request(*required: str) -> tuple[tuple[str, str] | None, Response | None]:
    """The Basic credentials of a client's request, or the error response to send instead."""
    try:
        length = request.content_length
        if length is None:  # chunked: what the form holds, read already
            length = sum(len(k) + len(v) for k, v in request.form.items(multi=True))
        checks.check_body(request.mimetype, length)
        checks.check_query(request.args.keys())
        basic = checks.basic_credentials(request.headers.get("Authorization"))
        items = [*request.args.items(multi=True), *request.form.items(multi=True)]
        checks.check_parameters(items, required=required, basic=basic)
    except checks.BadRequest as problem:
        refused = oauth_error(problem.error, problem.description)
        refused.status_code = problem.status or refused.status_code
        return None, refused
    hint = request.form.get("token_type_hint")
    if "token" in required and hint and hint not in TOKEN_TYPE_HINTS:
        # RFC 7009 2.2.1: a 400 (Authlib answers 401, as if the client had failed).
        return None, oauth_error(
            "unsupported_token_type", "token_type_hint is access_token or refresh_token."
        )
    return basic, None


def _call_server(method: Any, *args: Any) -> Response:
    """Run an Authlib endpoint; a plain-http origin is a clear 400, not a 500."""
    from authlib.oauth2.rfc6749.errors import InsecureTransportError

    try:
        response: Response = method(*args)
    except InsecureTransportError:
        return oauth_error(
            "invalid_request",
            "OAuth needs https: meta's configured origin is plain http on a public host.",
        )
    return response


@endpoints.route("/oauth/token", methods=["POST"])
def token() -> Response:
    st = oauth_state()
    basic, refused = _client_request("grant_type")
    if refused is not None:
        return refused
    keys, throttled = _client_throttle(basic)
    if throttled is not None:
        return throttled
    response = _call_server(st.server.create_token_response)
    if response.status_code == 200:
        db_session.commit()
    else:
        db_session.rollback()
    _count_client_attempt(keys, response, ("invalid_client", "invalid_grant"))
    return _no_store(_with_realm(response))


def _client_throttle(
    basic: tuple[str, str] | None, *, per_address: bool = True
) -> tuple[Any, Response | None]:
    """The throttle keys of a client's request, and the 429 to send if it is locked out.

    Every endpoint where a client authenticates (token, revocation, introspection, the
    services' pull) counts failures against the same per-address and per-(client,
    address) limits, so a secret cannot be guessed at one endpoint the token endpoint
    guards; client ids are public, so a stranger's failures from another address never
    lock the real client out. Without *per_address* only the (client, address) limit
    applies: the services' pull runs unattended every few seconds, and one service with
    a wrong secret must not lock out the others on its host.
    """
    guard = oauth_state().extra.get("token_throttle")
    if guard is None:
        return None, None
    client_id = basic[0] if basic is not None else request.form.get("client_id", "")
    keys = guard.keys(client_id[:128], client_address())
    if not per_address:
        keys = (keys[0], [])
    decision = guard.check(keys)
    if decision.allowed:
        return keys, None
    response = oauth_error(
        "invalid_request", "Too many failed attempts from your address; retry later."
    )
    response.status_code = 429
    response.headers["Retry-After"] = str(decision.retry_after_seconds)
    return keys, _no_store(response)


def _count_client_attempt(keys: Any, response: Response, failures: tuple[str, ...]) -> None:
    """Count *response* against the limits of :func:`_client_throttle`: a 401 or one of
    the OAuth errors *failures* is a failure, a 200 clears the client's own counter."""
    guard = oauth_state().extra.get("token_throttle")
    if guard is None or keys is None:
        return
    if response.status_code == 401 or _error_code(response) in failures:
        guard.failure(keys)
    elif response.status_code == 200:
        guard.success(keys)


def _error_code(response: Response) -> str | None:
    if response.mimetype != "application/json":
        return None
    data = response.get_json(silent=True)
    return data.get("error") if isinstance(data, dict) else None


def _no_store(response: Response) -> Response:
    response.headers["Cache-Control"] = "no-store"
    response.headers["Pragma"] = "no-cache"
    return response


def _client_endpoint(name: str, *, commit_on_success: bool) -> Response:
    """Run Authlib's *name* endpoint behind the client checks and throttles that revocation
    and introspection share; only a successful revocation keeps what it changed."""
    basic, refused = _client_request("token")
    if refused is not None:
        return refused
    keys, throttled = _client_throttle(basic)
    if throttled is not None:
        return throttled
    response = _call_server(oauth_state().server.create_endpoint_response, name)
    if commit_on_success and response.status_code == 200:
        db_session.commit()
    else:
        db_session.rollback()
    _count_client_attempt(keys, response, ("invalid_client",))
    return _no_store(_with_realm(response))


@endpoints.route("/oauth/revoke", methods=["POST"])
def revoke() -> Response:
    return _client_endpoint("revocation", commit_on_success=True)


@endpoints.route("/oauth/introspect", methods=["POST"])
def introspect() -> Response:
    return _client_endpoint("introspection", commit_on_success=False)


# -- the services' pull of revocations -----------------------------------------------------


def _basic_or_none() -> tuple[str, str] | None:
    try:
        return checks.basic_credentials(request.headers.get("Authorization"))
    except checks.BadRequest:
        return None


def _first_party_from_basic() -> FirstPartyClient | None:
    basic = _basic_or_none()
    if basic is None or not basic[1]:
        return None
    client = oauth_state().first_party.get(basic[0])
    if client is None or not client.check_client_secret(basic[1]):
        return None
    return client


@endpoints.route("/oauth/revocations")
def revocations() -> Response:
    keys, throttled = _client_throttle(_basic_or_none(), per_address=False)
    if throttled is not None:
        return throttled
    if _first_party_from_basic() is None:
        refused = oauth_error(
            "invalid_client",
            "Authenticate with a network service's client id and secret (HTTP Basic).",
        )
        _count_client_attempt(keys, refused, ())
        return refused
    raw = request.args.get("since", "0")
    # Any seq a service may hold (the protocol's range), so no service's pull is stuck.
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 19 or int(raw) > MAX_SEQ:
        return oauth_error("invalid_request", f"since must be an integer from 0 to {MAX_SEQ}.")
    since = int(raw)
    # seq is an ``integer`` column: no event comes after its last value, and PostgreSQL
    # refuses to compare it with a larger number at all.
    rows = (
        []
        if since >= ID_MAX
        else db_session.scalars(
            select(RevocationEvent)
            .where(RevocationEvent.seq > since)
            .order_by(RevocationEvent.seq)
            .limit(PULL_BATCH)
        ).all()
    )
    events = [row.as_dict() for row in rows]
    answer = _no_store(jsonify(events=events, last=rows[-1].seq if rows else since))
    _count_client_attempt(keys, answer, ())
    return answer


# -- the profile API -------------------------------------------------------------------------


@endpoints.route("/api/profile")
@oauth("meta/profile:RO")
def api_profile() -> ProfileJSON | Response:
    """The profile of the token's user."""
    token = current_token()
    if token is None or token.subject is None:
        return error_response(403, "This token belongs to no user; use /api/users/<id>.")
    user = current_user._get_current_object()
    if user is None:
        return error_response(404, "No such user.")
    return profile_of(user)


@endpoints.route("/api/users/<id:user_id>")
@oauth("meta/profile:RO")
def api_user(user_id: int) -> ProfileJSON | Response:
    """Any user's profile, for the network's services (client credentials tokens)."""
    token = current_token()
    if (
        token is None
        or token.subject is not None
        or token.client_id not in oauth_state().first_party
    ):
        return error_response(
            403, "Only the network's services may look users up (client credentials)."
        )
    user = db_session.get(User, user_id)
    if user is None:
        return error_response(404, "No such user.")
    return profile_of(user)
