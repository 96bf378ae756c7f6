"""OpenID Connect's endpoints: discovery, UserInfo and RP-initiated logout.

``/.well-known/openid-configuration`` (OpenID Connect Discovery 1.0), ``/userinfo`` (Core
5.3: the claims the grant's OpenID scopes release, for an access token of a grant with
``openid``) and ``/oauth/logout`` (RP-Initiated Logout 1.0: ``id_token_hint``,
``client_id``, ``post_logout_redirect_uri`` checked against the client's registered
ones, ``state``). Every refusal is a 4xx that says what is wrong.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from flask import (
    Blueprint,
    Response,
    current_app,
    jsonify,
    redirect,
    render_template,
    request,
    session,
)

from meta import audit, logic, signals
from meta.models import User
from meta.oauth import checks
from meta.oauth.endpoints import protocol_error
from meta.oauth.models import Grant
from meta.oauth.oidc import (
    ACR_MULTI_FACTOR,
    ACR_SINGLE_FACTOR,
    ID_TOKEN_ALGORITHMS,
    OIDC_SCOPE_CLAIM,
    OIDC_SCOPES,
    SCOPE_CLAIMS,
    split_scope,
    user_claims,
    verify_jwt,
)
from meta.oauth.server import oauth_state
from srcore.auth import current_user
from srcore.auth.web import log_out
from srcore.db import session as db_session
from srcore.db import writes_on_safe_method
from srcore.errors import error_response

__all__ = ["OIDC_CORS_ENDPOINTS", "discovery", "oidc_endpoints"]

oidc_endpoints = Blueprint("oidc", __name__)

#: Called from browser apps on other origins (no cookies): CORS, as the OAuth endpoints.
OIDC_CORS_ENDPOINTS = ("oidc.configuration", "oidc.userinfo")
#: The logout page's own form fields, beside the logout request's parameters.
LOGOUT_FORM_FIELDS = frozenset({"csrf_token", "decision"})


def discovery() -> dict[str, Any]:
    """The OpenID Provider Metadata of this meta."""
    st = oauth_state()
    base = st.issuer.rstrip("/")
    claims = ["sub", "iss", "aud", "exp", "iat", "auth_time", "nonce", "acr", "amr", "sid"]
    for names in SCOPE_CLAIMS.values():
        claims += names
    return {
        "issuer": st.issuer,
        "authorization_endpoint": base + "/oauth/authorize",
        "token_endpoint": base + "/oauth/token",
        "userinfo_endpoint": base + "/userinfo",
        "jwks_uri": base + "/oauth/jwks.json",
        "end_session_endpoint": base + "/oauth/logout",
        "revocation_endpoint": base + "/oauth/revoke",
        "introspection_endpoint": base + "/oauth/introspect",
        "scopes_supported": [*OIDC_SCOPES, *st.catalog.all_scopes(fetch=False)],
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": ["authorization_code", "refresh_token"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": list(ID_TOKEN_ALGORITHMS),
        "token_endpoint_auth_methods_supported": [
            "client_secret_basic",
            "client_secret_post",
            "none",
        ],
        "code_challenge_methods_supported": ["S256"],
        "authorization_response_iss_parameter_supported": True,
        "claims_supported": claims,
        "acr_values_supported": [ACR_SINGLE_FACTOR, ACR_MULTI_FACTOR],
        "prompt_values_supported": ["none", "login", "consent", "select_account"],
        "claims_parameter_supported": False,
        "request_parameter_supported": False,
        "request_uri_parameter_supported": False,
        "frontchannel_logout_supported": False,
        "backchannel_logout_supported": True,
        "backchannel_logout_session_supported": True,
    }


@oidc_endpoints.route("/.well-known/openid-configuration")
def configuration() -> Response:
    response = jsonify(discovery())
    response.cache_control.public = True
    response.cache_control.max_age = 3600
    return response


# -- UserInfo -----------------------------------------------------------------------------


def _bearer_error(status: int, error: str, description: str) -> Response:
    """RFC 6750 3: the challenge names the error; the body says it too."""
    return protocol_error("bearer", status, description, error=error)


def _presented_token() -> tuple[str | None, Response | None]:
    header = request.headers.get("Authorization")
    form_token = request.form.get("access_token") if request.method == "POST" else None
    if form_token and request.mimetype != checks.FORM_TYPE:
        # RFC 6750 2.2: a token in the body comes in a single-part form-encoded body.
        return None, _bearer_error(
            400, "invalid_request", f"Send access_token as {checks.FORM_TYPE}."
        )
    if header and form_token:
        return None, _bearer_error(400, "invalid_request", "Send the token once.")
    if header:
        scheme, _, value = header.strip().partition(" ")
        if scheme.lower() != "bearer":
            # Another scheme carries no token: a challenge without an error (RFC 6750 3.1).
            return None, _bearer_error(401, "invalid_request", "Use a Bearer access token.")
        if not value.strip():
            return None, _bearer_error(400, "invalid_request", "The Bearer token is empty.")
        return value.strip(), None
    if form_token:
        return form_token, None
    return None, _bearer_error(401, "invalid_request", "An access token is needed.")


@oidc_endpoints.route("/userinfo", methods=["GET", "POST"])
def userinfo() -> Response:
    """The claims about the token's user that its grant's OpenID scopes release."""
    from srcore.app import state
    from srcore.auth.tokens import TokenError, VerificationUnavailable

    token, refused = _presented_token()
    if refused is not None or token is None:
        assert refused is not None
        return refused
    try:
        verified = state().token_verifier.verify(token)
    except TokenError as exc:
        return _bearer_error(401, "invalid_token", _quoted(str(exc)))
    except VerificationUnavailable:
        return _bearer_error(503, "temporarily_unavailable", "Try again shortly.")
    grant_id = verified.claims.get("grant")
    grant = db_session.get(Grant, grant_id) if isinstance(grant_id, str) else None
    granted = split_scope(grant.scope)[0] if grant is not None else []
    # The token's own OpenID scopes, within the grant's (a refresh may have narrowed them).
    carried = str(verified.claims.get(OIDC_SCOPE_CLAIM) or "").split()
    scopes = [name for name in granted if name in carried]
    if grant is None or grant.revoked_at is not None or "openid" not in scopes:
        return _bearer_error(
            403, "insufficient_scope", "The token's grant does not have the openid scope."
        )
    user = db_session.get(User, grant.user_id)
    if user is None or not user.is_active:
        return _bearer_error(401, "invalid_token", "The token's account is not active.")
    response = jsonify(user_claims(user, scopes, issuer=oauth_state().issuer))
    response.headers["Cache-Control"] = "no-store"
    return response


def _quoted(text: str) -> str:
    return "".join(c if 0x20 <= ord(c) <= 0x7E and c not in '"\\' else "?" for c in text)


# -- RP-initiated logout ------------------------------------------------------------------


class _Refused(Exception):
    pass


def _logout_request() -> dict[str, str]:
    items = [*request.args.items(multi=True)] + [
        (name, value)
        for name, value in request.form.items(multi=True)
        if name not in LOGOUT_FORM_FIELDS
    ]
    try:
        checks.check_parameters(items)
    except checks.BadRequest as problem:
        raise _Refused(str(problem)) from None
    return dict(items)


def _check_logout(params: dict[str, str]) -> tuple[Any, dict[str, Any] | None]:
    """The client and the hint's claims of a logout request; _Refused if they do not hold."""
    st = oauth_state()
    claims = None
    client_id = params.get("client_id") or None
    hint = params.get("id_token_hint")
    if hint:
        try:
            claims = verify_jwt(hint)
        except ValueError:
            raise _Refused("id_token_hint is not an ID token this server issued.") from None
        audience = claims.get("aud")
        audiences = [audience] if isinstance(audience, str) else list(audience or [])
        if client_id is not None and client_id not in audiences:
            raise _Refused("client_id is not the audience of id_token_hint.")
        if client_id is None and audiences:
            client_id = str(audiences[0])
    client = st.query_client(client_id) if client_id else None
    if client_id and client is None:
        raise _Refused("No such client.")
    target = params.get("post_logout_redirect_uri")
    if target:
        if client is None:
            raise _Refused("post_logout_redirect_uri needs id_token_hint or client_id.")
        if target not in client.post_logout_redirect_uris:
            raise _Refused("post_logout_redirect_uri is not registered for this client.")
    return client, claims


@oidc_endpoints.route("/oauth/logout", methods=["GET", "POST"])
@writes_on_safe_method("RP-initiated logout with the logged-in user's id_token_hint")
def end_session() -> Any:
    try:
        params = _logout_request()
        client, claims = _check_logout(params)
    except _Refused as problem:
        return error_response(400, str(problem), title="Invalid logout request")
    if request.method == "POST":
        if "decision" not in request.form:
            # An application's POST (the spec allows it) comes from its own site, without
            # meta's SameSite cookie: the same request as a top-level GET brings it.
            return redirect(request.path + "?" + urlencode(params), code=303)
        # meta's own confirmation form: exempt from the blanket check, so checked here.
        csrf = current_app.extensions["csrf"]
        type(csrf).protect(csrf)
    user = current_user._get_current_object()
    if user is not None:
        hinted = claims is not None and claims.get("sub") == str(user.id)
        if request.method == "GET" and not hinted:
            # Without proof that the application is the one this user uses, ask: a link
            # on any page must not be able to log people out.
            return render_template(
                "meta/oauth/logout.html",
                client=client,
                action=request.path,
                params=params,
                logged_in=True,
            )
        if request.method == "POST" and request.form.get("decision") != "logout":
            # Staying logged in here still goes back to the application (which has ended
            # its own session), else to the profile.
            return redirect(_after_logout(params) or "/profile")
        _log_out(user, client)
    target = _after_logout(params)
    if target:
        return redirect(target)
    return render_template("meta/oauth/logout.html", client=client, logged_in=False)


def _after_logout(params: dict[str, str]) -> str | None:
    """Where a checked logout request goes back to: its registered post-logout redirect
    URI with its ``state``, or None."""
    target = params.get("post_logout_redirect_uri")
    if target:
        state = params.get("state")
        if state:
            target += ("&" if "?" in target else "?") + urlencode({"state": state})
    return target or None


def _log_out(user: User, client: Any) -> None:
    """What meta's own logout does (this browser's session, and the services' sessions,
    back-channel logouts), named after the application that asked."""
    from meta.views import SESSION_ID

    logic.end_web_session(db_session, session.get(SESSION_ID))
    signals.logged_out.send(user)
    detail = f"at {client.name}'s request" if client is not None else "by a logout link"
    audit.record(db_session, audit.Kind.logout, user.id, detail=detail[:256])
    db_session.commit()
    log_out()
