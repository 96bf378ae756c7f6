"""meta's OAuth 2.0 authorization server: clients, grants, tokens, keys and revocation.

:func:`init_app` adds the protocol endpoints, the ``/security`` and ``/clients`` pages and
the token API to meta's app, and makes meta verify the tokens of its own API against its
own keys (no HTTP call to itself). Its ``on_*`` functions receive the account signals
(:mod:`meta.signals`), sent inside the transaction that changes an account; the revocation
events and profile changes they write commit with it, together with their webhooks
(``revocation:issued``, ``profile:updated``), which meta's webhook worker delivers to
every service (:mod:`meta.oauth.network`).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from flask import Flask
    from sqlalchemy.orm import Session

    from meta.models import User
    from meta.oauth.server import OAuthState
    from srcore.auth.tokens import TokenVerifier

__all__ = [
    "init_app",
    "make_verifier",
    "on_delete",
    "on_logout",
    "on_password_change",
    "on_profile_change",
    "on_suspend",
    "on_unsuspend",
]


class TokenGuard:
    """Brute-force protection of the token endpoint: per address and per (client, address).

    Client ids are public, so failures are never counted per client alone: a stranger's
    wrong secrets would lock the real client out. They are counted per source address
    (many clients may share one, so that limit is looser) and per client from that
    address; a success clears the latter, so a client's own typos do not pile up.
    """

    def __init__(self, store: Any, *, lockout: timedelta) -> None:
        from srcore.throttle import Throttle

        self.pair = Throttle(
            store, max_failures=10, free_failures=5, lockout=lockout, prefix="meta:token"
        )
        self.address = Throttle(
            store, max_failures=40, free_failures=12, lockout=lockout, prefix="meta:token"
        )

    def keys(self, client_id: str, address: str) -> tuple[list[Any], list[Any]]:
        address = address or "-"
        return [("client-ip", f"{client_id or '-'} {address}")], [("ip", address)]

    def check(self, keys: tuple[list[Any], list[Any]]) -> Any:
        from srcore.throttle import Decision

        first, second = self.pair.check(keys[0]), self.address.check(keys[1])
        if first.allowed and second.allowed:
            return first
        return Decision(False, max(first.retry_after, second.retry_after))

    def failure(self, keys: tuple[list[Any], list[Any]]) -> None:
        self.pair.failure(keys[0])
        self.address.failure(keys[1])

    def success(self, keys: tuple[list[Any], list[Any]]) -> None:
        # Only this client's counter: others' failures from the same address stand.
        self.pair.success(keys[0])


def make_verifier(st: OAuthState) -> TokenVerifier:
    """srcore's token verifier over meta's own keys, with revocations read from its DB."""
    from meta.models import User
    from meta.oauth import events
    from meta.oauth.keys import DatabaseKeySource
    from srcore.auth.tokens import AccessToken, TokenVerifier
    from srcore.db import session as db_session

    def is_revoked(token: AccessToken) -> bool:
        if events.is_revoked(db_session, token.claims):
            return True
        # A token of an account that is not (or no longer) confirmed is not usable: an
        # unconfirmed account may be someone else's address, registered in advance.
        if token.subject is None:
            return False
        user = db_session.get(User, token.subject)
        return user is None or not user.is_active

    return TokenVerifier(
        keys=DatabaseKeySource(st.ring), issuer=st.issuer, audience="meta", is_revoked=is_revoked
    )


def _check_audit_subscribers(section: Any, names: Sequence[str], targets: Sequence[Any]) -> None:
    """Every service ``audit-subscribers`` names is one meta sends events to: any other
    name (a typo, meta itself, a service without a client secret) would receive nothing,
    silently, while the operator believes the audit log goes there."""
    from srcore.config import ConfigError

    wrong = [name for name in names if name not in {t.service_id for t in targets}]
    if wrong:
        message = (
            f"{', '.join(wrong)}: no service of this file besides meta that meta sends events "
            "to (with an oauth-client-secret); none would receive the audit log"
        )
        raise ConfigError([section.problem("audit-subscribers", message)])


def init_app(app: Flask) -> OAuthState:
    """Add the authorization server's routes and state to meta's *app*."""
    from meta.oauth import events
    from meta.oauth.catalog import Catalog, http_fetcher
    from meta.oauth.client_pages import client_pages
    from meta.oauth.clients import first_party_clients
    from meta.oauth.endpoints import CLIENT_ENDPOINTS, CORS_ENDPOINTS, endpoints
    from meta.oauth.keys import KeyRing
    from meta.oauth.network import INFO_KEY, Network, targets_from_config
    from meta.oauth.pats import pats
    from meta.oauth.pruning import prune
    from meta.oauth.server import OAuthState, build_server
    from meta.settings import meta_settings
    from srcore.app import state
    from srcore.webhooks import webhooks_state

    st = state(app)
    config = st.config
    issuer = str(st.section["origin"]).rstrip("/")
    settings = meta_settings(app)
    access = settings.access_token_lifetime
    ring = KeyRing(st.db, token_lifetime=access)

    def base_url(service_id: str) -> str:
        section = config.section(service_id)
        return str(section.get("internal-origin") or section["origin"])

    def installed() -> dict[str, Any]:
        from srcore.manifest import discover

        return dict(discover())

    waited = config.global_.get("http-timeout")
    catalog = Catalog(
        services={sid: base_url(sid) for sid in config.services},
        local=installed,
        fetch=http_fetcher(waited.total_seconds() if isinstance(waited, timedelta) else 10.0),
    )
    targets = targets_from_config(config, audit_subscribers=settings.audit_subscribers)
    _check_audit_subscribers(st.section, settings.audit_subscribers, targets)
    network = Network(targets, app=app)
    # Every session of meta's database knows the network, so a hook finds it without a
    # request (meta.admin, scripts).
    factory = st.db.sessionmaker
    factory.configure(info={**factory.kw.get("info", {}), INFO_KEY: network})
    oauth = OAuthState(
        issuer=issuer,
        db=st.db,
        ring=ring,
        catalog=catalog,
        network=network,
        first_party=first_party_clients(config),
        access_lifetime=access,
        refresh_lifetime=settings.refresh_token_lifetime,
        code_lifetime=settings.authorization_code_lifetime,
    )
    app.extensions["meta.oauth"] = oauth
    oauth.server = build_server(app, oauth)
    events.install(st.db.sessionmaker, network)
    # meta's webhook worker makes the services' subscriptions match the config first.
    webhooks_state(app).prepare.append(network.prepare)
    # ... and, every hour, deletes the codes, tokens, links and web sessions that outlived
    # their use, and the audit entries older than audit-retention.
    hourly = functools.partial(
        prune,
        access_lifetime=access,
        audit_retention=settings.audit_retention,
        session_lifetime=app.permanent_session_lifetime,
    )
    webhooks_state(app).prune.append(hourly)

    try:
        from srcore.throttle import make_store
    except ImportError:  # pragma: no cover - older srcore without brute-force protection
        make_store = None
    if make_store is not None:
        redis_url = str(config.global_.get("redis-url") or "")
        oauth.extra["token_throttle"] = TokenGuard(
            make_store(redis_url), lockout=settings.login_lockout
        )

    from meta.oauth.backchannel import Backchannel
    from meta.oauth.oidc_endpoints import OIDC_CORS_ENDPOINTS, oidc_endpoints

    oauth.extra["backchannel"] = Backchannel(app)
    app.register_blueprint(endpoints)
    app.register_blueprint(oidc_endpoints)
    app.register_blueprint(pats)
    app.register_blueprint(client_pages)
    # /oauth/logout checks its own confirmation form (an application may POST to it too).
    _exempt_from_csrf(app, (*CLIENT_ENDPOINTS, "oidc.userinfo", "oidc.end_session"))
    _errors_in_protocol_form(app)
    from srcore import cors

    # Browser apps (public clients) call these from their own origin, without cookies.
    cors.allow(app, *CORS_ENDPOINTS, *OIDC_CORS_ENDPOINTS)
    # meta checks the tokens of its own API itself: its keys, its revocation table.
    st.token_verifier = make_verifier(oauth)
    from meta.oauth import receivers

    receivers.connect()
    return oauth


def _exempt_from_csrf(app: Flask, endpoint_names: tuple[str, ...]) -> None:
    """Client-authenticated POSTs (token, revoke, introspect) carry no CSRF token.

    srcore's request hook calls ``csrf.protect()`` for every POST outside ``/api/`` and
    ``/_srcore/``; here it is made to honour Flask-WTF's exemptions, for this app only.
    """
    import functools

    csrf = app.extensions["csrf"]
    for name in endpoint_names:
        csrf.exempt(app.view_functions[name])
    csrf.protect = functools.partial(type(csrf).protect, csrf, apply_exemptions=True)


def _errors_in_protocol_form(app: Flask) -> None:
    """Every error of a machine endpoint (:data:`~meta.oauth.endpoints.MACHINE_ENDPOINTS`)
    is its protocol's JSON error, whatever raised it: a method the endpoint does not take
    (405, found before any view runs), what srcore refuses before the view (control
    characters, a body, URL or header past its limits), a failure after it (500, a 503
    of the database). The client reading it parses the ``error``; srcore's HTML page made
    an RFC-conforming client fail with a parse error instead of ``invalid_client``. Every
    other endpoint keeps srcore's error page.

    An HTTP error raised is answered with its own description; any other error response
    of these endpoints (a handler of srcore's, of another module) is turned into the
    protocol's form on its way out, keeping its status and headers (``Allow``,
    ``Retry-After``).
    """
    import functools

    from flask import request
    from werkzeug.exceptions import HTTPException, MethodNotAllowed
    from werkzeug.http import HTTP_STATUS_CODES

    from meta.oauth.endpoints import MACHINE_ENDPOINTS, protocol_error
    from srcore import errors

    # A method the endpoint does not take fails in routing: no endpoint, only its path.
    paths = {
        rule.rule: MACHINE_ENDPOINTS[rule.endpoint]
        for rule in app.url_map.iter_rules()
        if rule.endpoint in MACHINE_ENDPOINTS
    }
    fallback = app.error_handler_spec[None][None].get(HTTPException)

    def kind() -> str | None:
        if request.endpoint is not None:
            return MACHINE_ENDPOINTS.get(request.endpoint)
        return paths.get(request.path)

    def described(status: int, text: str | None = None) -> str:
        return text or f"{status} {HTTP_STATUS_CODES.get(status, 'Error')}."

    def handler(exc: HTTPException) -> Any:
        found = kind()
        if found is None or exc.code is None or exc.code < 400:
            return fallback(exc) if fallback is not None else exc
        text = exc.description if exc.description != type(exc).description else None
        if isinstance(exc, MethodNotAllowed) and exc.valid_methods:
            text = f"This endpoint takes {', '.join(exc.valid_methods)}, not {request.method}."
        response = protocol_error(found, exc.code, described(exc.code, text))
        for name, value in exc.get_headers():
            if name.lower() not in ("content-type", "www-authenticate"):
                response.headers[name] = value
        return response

    def reformed(response: Any) -> Any:
        found = kind()
        if found is None or response.status_code < 400 or _in_protocol_form(response):
            return response
        return protocol_error(
            found,
            response.status_code,
            described(response.status_code, _srcore_reason(response)),
            response=response,
        )

    app.register_error_handler(HTTPException, handler)
    app.after_request(reformed)
    # A request the HTTP server refuses itself (a request line or headers past its
    # limits, bytes it cannot parse) never reaches these handlers: declared, its answer
    # is the same JSON.
    for path, found in paths.items():
        errors.declare_error_form(app, [path], functools.partial(protocol_error, found))


def _in_protocol_form(response: Any) -> bool:
    if response.mimetype != "application/json" or response.is_streamed:
        return False
    body = response.get_json(silent=True)
    return isinstance(body, dict) and isinstance(body.get("error"), str)


def _srcore_reason(response: Any) -> str | None:
    """The reason of srcore's JSON error body (``{"errors": [{"reason": ...}]}``), if it is one."""
    if response.mimetype != "application/json" or response.is_streamed:
        return None
    body = response.get_json(silent=True)
    errors = body.get("errors") if isinstance(body, dict) else None
    first = errors[0] if isinstance(errors, list) and errors else None
    reason = first.get("reason") if isinstance(first, dict) else None
    return reason if isinstance(reason, str) else None


# -- receivers of the account signals, run inside the change's transaction --------------------


def _session_of(user: User) -> Session:
    from sqlalchemy.orm import object_session

    from srcore.db import session as db_session

    found = object_session(user)
    return found if found is not None else db_session


def _user_event(user: User, *kinds: str) -> None:
    from sqlalchemy import func, select

    from meta.oauth import events
    from meta.oauth.models import RevocationEvent

    session = _session_of(user)
    now = int(time.time())
    cut_offs = ("user", "session")
    if any(kind in cut_offs for kind in kinds):
        # Each cut-off of an account is later than the one before, even within a second: a
        # service moves a login past the cut-off it knows of (to its next second), so a
        # second logout in the same second must reach past that login too, or it survives.
        mine = RevocationEvent.subject == str(user.id), RevocationEvent.kind.in_(cut_offs)
        last = session.scalar(select(func.max(RevocationEvent.not_before)).where(*mine))
        now = max(now, last + 1) if last is not None else now
    for kind in kinds:
        not_before = now if kind in cut_offs else None
        events.emit(session, kind, str(user.id), not_before=not_before)


def _end_grants(user: User) -> None:
    """Revoke every grant and personal access token of *user*, each with its own event,
    and spend the codes not exchanged yet (each would make a grant).

    The ``user`` or ``session`` event that goes with this cuts off on whole seconds; these
    events end exactly the tokens issued so far, also those of the cut-off's own second.
    """
    from sqlalchemy import select

    from meta.oauth import events
    from meta.oauth.models import Grant, PersonalAccessToken

    session = _session_of(user)
    events.spend_codes(session, user.id)  # first: see spend_codes
    lifetime = _access_lifetime()
    for grant in session.scalars(
        select(Grant).where(Grant.user_id == user.id, Grant.revoked_at.is_(None))
    ).all():
        events.revoke_grant(session, grant, lifetime=lifetime)
    for pat in session.scalars(
        select(PersonalAccessToken).where(
            PersonalAccessToken.user_id == user.id, PersonalAccessToken.revoked_at.is_(None)
        )
    ).all():
        if pat.revoked_at is None:  # not already revoked with the token that made it
            events.revoke_pat(session, pat)


def _end_clients(user: User) -> None:
    """Revoke the applications *user* registered, for every user they act for: their
    codes not exchanged yet are spent, each grant ends with its own event (exactly, also
    the tokens of this second), and each application with a ``client`` cut-off."""
    from sqlalchemy import select, update

    from meta.oauth import events
    from meta.oauth.models import AuthorizationCode, Grant, OAuthClient
    from srcore.db import utcnow

    session = _session_of(user)
    lifetime = _access_lifetime()
    mine = OAuthClient.owner_id == user.id, OAuthClient.revoked_at.is_(None)
    for client in session.scalars(select(OAuthClient).where(*mine)).all():
        spent = update(AuthorizationCode).where(
            AuthorizationCode.client_id == client.client_id, AuthorizationCode.used_at.is_(None)
        )
        session.execute(spent.values(used_at=utcnow()).execution_options(synchronize_session=False))
        live = Grant.client_id == client.client_id, Grant.revoked_at.is_(None)
        for grant in session.scalars(select(Grant).where(*live)).all():
            events.revoke_grant(session, grant, lifetime=lifetime)
            events.revoke_descendants(session, grant.id)
        client.revoked_at = utcnow()
        events.emit(session, "client", client.client_id, not_before=int(time.time()))


def _access_lifetime() -> int:
    """How long the access tokens of this meta live, for the grant events that end them."""
    from flask import current_app, has_app_context

    if has_app_context() and "meta.oauth" in current_app.extensions:
        return int(current_app.extensions["meta.oauth"].access_seconds)
    return _MAX_ACCESS_SECONDS


#: How long a grant event is kept when no app says how long its access tokens live.
_MAX_ACCESS_SECONDS = 24 * 3600


def _backchannel_logout(user: User, *, this_browser: bool) -> None:
    """Send the OpenID clients that logged *user* in a logout token (back-channel logout):
    for this browser's login only, or (*this_browser* False) for every login, once the
    transaction that ends them commits."""
    from flask import current_app, has_app_context, has_request_context

    if not has_app_context() or "meta.oauth" not in current_app.extensions:
        return
    from meta.oauth.backchannel import notices_for
    from meta.oauth.oidc import browser_sid

    st: OAuthState = current_app.extensions["meta.oauth"]
    sid = None
    if this_browser:
        sid = browser_sid() if has_request_context() else None
        if sid is None:
            return
    session = _session_of(user)
    # Found now (a deletion is about to drop the logins), sent once the change commits.
    st.extra["backchannel"].send_on_commit(session, notices_for(session, st, user.id, sid=sid))


def on_logout(user: User) -> None:
    """Logging out at meta ends the user's web sessions everywhere; API tokens live on.

    The OpenID clients this browser's login signed in to get a back-channel logout; "log
    out everywhere" sends one for every login of the account.
    """
    from flask import has_request_context, request

    _user_event(user, "session")
    everywhere = has_request_context() and request.endpoint == "accounts.logout_everywhere"
    _backchannel_logout(user, this_browser=not everywhere)


def on_password_change(user: User) -> None:
    """A new password ends every session, token and refresh token issued before it."""
    _end_grants(user)
    _user_event(user, "user")
    _backchannel_logout(user, this_browser=False)


def on_suspend(user: User) -> None:
    """Suspension: everything issued dies, and services refuse the user until unsuspended.

    The grants and tokens end exactly, each with its own event, and the web sessions with
    a ``session`` cut-off. Not a ``user`` one: services take that for a password change,
    and disable the account's webhook subscriptions for good (telling the owner their
    password was changed), where a suspended account's only pause until unsuspended.
    """
    _end_grants(user)
    _user_event(user, "session", "suspend")
    _backchannel_logout(user, this_browser=False)


def on_unsuspend(user: User) -> None:
    _user_event(user, "unsuspend")


def on_delete(user: User) -> None:
    """A deleted account's tokens and sessions die everywhere, and it cannot come back.

    The applications it registered go with it (the database drops their rows): every
    other user's access to them ends too, with a ``client`` event each and a ``grant``
    event for each of their grants, and their codes not exchanged yet are spent. The
    ``session`` and ``suspend`` events end and refuse it as before; the ``delete`` event
    after them tells the services it is gone for good, so they drop what they keep of it.
    """
    _backchannel_logout(user, this_browser=False)
    _end_grants(user)
    _end_clients(user)
    _user_event(user, "session", "suspend", "delete")


def on_profile_change(user: User) -> None:
    """Send the new profile to every service: a ``profile:updated`` webhook in this
    transaction, delivered by meta's worker once it has committed."""
    from meta.oauth.endpoints import profile_of
    from meta.oauth.network import PROFILE_EVENT, Network

    session = _session_of(user)
    Network.of(session).emit(session, PROFILE_EVENT, profile_of(user), owner_id=user.id)
