"""Personal access tokens and authorized applications: ``/security`` and ``/api/tokens``.

A personal access token is an ordinary access token (same JWT, same scope grammar) with
``client_id`` ``pat`` and ``grant`` ``pat:<id>``; meta keeps only its jti and shows the
token once. Revoking one writes a ``token`` event, so services drop it at once.

Only confirmed accounts get tokens. A token with ``meta/tokens:RW`` may make tokens through
the API, each with scopes it holds itself, expiring no later than itself, and tied to
where it came from (its grant, or the personal access token): revoking that revokes them
(:mod:`meta.oauth.events`).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any, TypedDict

from flask import Blueprint, flash, redirect, render_template, request, url_for
from sqlalchemy import func, select
from werkzeug.wrappers import Response

from meta import audit
from meta.models import User
from meta.oauth import events
from meta.oauth.models import Consent, Grant, OAuthClient, PersonalAccessToken
from meta.oauth.server import oauth_state, revoke_access_token
from meta.twofactor import security_context
from srcore.auth import current_token, current_user, login_required, oauth
from srcore.auth.scopes import Scope, ScopeError, format_scopes, parse_scopes, satisfies
from srcore.db import session as db_session
from srcore.db import utcnow
from srcore.errors import error_response
from srcore.openapi import Created, NoContent, created, no_content, operation
from srcore.sqlrows import lock_row
from srcore.validation import Validation

__all__ = [
    "ACCOUNT_GONE",
    "create_token",
    "grantable_scope",
    "pats",
    "token_name_problem",
    "token_refusal",
    "too_many_tokens",
]

pats = Blueprint("oauth_security", __name__)

PAT_CLIENT_ID = "pat"
DEFAULT_DAYS = 365
NEVER_DAYS = 3650
#: The most live personal access tokens one account may have: the page and the API list
#: them all, so thousands would make every view of them slow.
MAX_TOKENS = 100
#: The most authorized applications the Security page lists, the last used first.
MAX_APPLICATIONS = 100
EXPIRY_OPTIONS = [("30", "30 days"), ("90", "90 days"), ("365", "1 year"), ("never", "No expiry")]


#: Why an account whose address is not confirmed gets no token (page, API and CLI).
UNCONFIRMED = (
    "Confirm your email address before making tokens: follow the link we mailed you "
    "(your profile page can send it again)."
)


def token_refusal(user: User) -> str | None:
    """Why *user* may not have a new token, or None if they may."""
    if user.is_suspended:
        return user.suspension_notice or "This account is suspended."
    if not user.is_active:
        return UNCONFIRMED
    return None


def create_token(
    user: User,
    *,
    name: str,
    scope: str,
    days: int,
    parent: str | None = None,
    not_after: int | None = None,
) -> tuple[PersonalAccessToken, str]:
    """Make a personal access token for *user*; the caller commits. Returns (row, token).

    *parent* is where the token that asked for it came from (a grant id or ``pat:<id>``);
    revoking it revokes this one. *not_after* (a Unix time: the asking token's ``exp``)
    caps the new token's expiry, so a token never makes one that outlives it. Callers
    check :func:`token_refusal` first.
    """
    if token_refusal(user) is not None:
        raise ValueError(f"account {user.id} may not have tokens")
    st = oauth_state()
    key = st.ring.signing_key()
    lifetime = int(timedelta(days=days).total_seconds())
    # One clock reading for the cap and the token's iat: read twice, a second turning in
    # between made a capped token outlive the one that asked for it by that second.
    now = int(time.time())
    if not_after is not None:
        lifetime = max(1, min(lifetime, not_after - now))
    import uuid

    jti = uuid.uuid4().hex
    row = PersonalAccessToken(
        user_id=user.id,
        name=name,
        scope=scope,
        jti=jti,
        kid=str(key.kid),
        expires_at=datetime.fromtimestamp(now + lifetime, UTC),
        parent=parent,
    )
    db_session.add(row)
    db_session.flush()
    audit.record(db_session, audit.Kind.token_created, user.id, detail=name)
    token, _claims = st.sign_access_token(
        subject=str(user.id),
        client_id=PAT_CLIENT_ID,
        scope=scope,
        audience=st.audience(None, scope),
        lifetime=lifetime,
        grant=f"pat:{row.id}",
        jti=jti,
        now=now,
    )
    return row, token


def revoke_token_row(row: PersonalAccessToken) -> None:
    """Revoke a personal access token (a ``token`` event); the caller commits."""
    if row.revoked_at is not None:
        return
    audit.record(db_session, audit.Kind.token_revoked, row.user_id, detail=row.name)
    revoke_access_token(
        {"jti": row.jti, "client_id": PAT_CLIENT_ID, "exp": int(row.expires_at.timestamp())}
    )


class TokenJSON(TypedDict):
    """A personal access token, without its secret; ``expires`` null: it never does."""

    id: int
    name: str
    scopes: list[str]
    created: datetime
    expires: datetime | None


class TokenListJSON(TypedDict):
    """The caller's active personal access tokens."""

    results: list[TokenJSON]


class NewTokenJSON(TokenJSON):
    """A token just made, with the secret itself: shown this once, never again."""

    token: str


def _token_json(row: PersonalAccessToken) -> TokenJSON:
    return {
        "id": row.id,
        "name": row.name,
        "scopes": row.scope.split(),
        "created": row.created,
        "expires": row.expires_at,
    }


def _live(user_id: int) -> list[Any]:
    return [
        PersonalAccessToken.user_id == user_id,
        PersonalAccessToken.revoked_at.is_(None),
        PersonalAccessToken.expires_at > utcnow(),
    ]


def _active_tokens(user_id: int) -> list[PersonalAccessToken]:
    """The account's live tokens, newest first: at most :data:`MAX_TOKENS` (an account may
    hold more from before there was a limit; revoking some shows the rest)."""
    return list(
        db_session.scalars(
            select(PersonalAccessToken)
            .where(*_live(user_id))
            .order_by(PersonalAccessToken.created.desc(), PersonalAccessToken.id.desc())
            .limit(MAX_TOKENS)
        )
    )


#: Why no token is made for an account deleted since it was read.
ACCOUNT_GONE = "This account was deleted meanwhile; nothing was written."


def too_many_tokens(user: User) -> str | None:
    """Why *user* may not have one more token now (it has :data:`MAX_TOKENS`, or is gone or
    refused since it was read), or None.

    The account's row is held from here until the transaction ends, so creates racing each
    other count one after the other: counted unheld, a burst of creates each saw room for
    one more, and all were made.
    """
    # The signing key create_token needs, made now if there is none yet: it is made in a
    # transaction of its own, which on SQLite would wait for the one writer held below.
    oauth_state().ring.signing_key()
    if not lock_row(db_session, user):
        return ACCOUNT_GONE
    refusal = token_refusal(user)  # as it is now: suspended meanwhile, say
    if refusal is not None:
        return refusal
    query = select(func.count()).select_from(PersonalAccessToken).where(*_live(user.id))
    if int(db_session.scalar(query) or 0) < MAX_TOKENS:
        return None
    return f"An account has at most {MAX_TOKENS} live tokens: revoke one first."


def _check_token_input(
    valid: Validation, *, api: bool, within: frozenset[Scope] | None = None
) -> tuple[str, str, int] | None:
    """The name, scope and days of a new token, or None (*valid* then says why).

    With *within* (the scopes of the token asking), only scopes it holds are granted.
    """
    name = valid.require("name", max_length=128, text="name", label="Name")
    problem = token_name_problem(name) if name is not None else None
    if problem is not None:
        valid.error(problem, "name")
    # Every repeated form field, or a JSON array; a space-separated string is split too.
    raw_scopes = valid.optional("scopes", list[str], split=True, max_length=256) or []
    if api:
        days_raw: Any = valid._data.get("expires_in_days", DEFAULT_DAYS)
        if days_raw is None:
            days = NEVER_DAYS
        elif (
            isinstance(days_raw, int)
            and not isinstance(days_raw, bool)
            and 1 <= days_raw <= NEVER_DAYS
        ):
            days = days_raw
        else:
            valid.error(f"expires_in_days must be 1 to {NEVER_DAYS}, or null.", "expires_in_days")
            days = DEFAULT_DAYS
    else:
        choice = request.form.get("expires", str(DEFAULT_DAYS))
        days = (
            NEVER_DAYS if choice == "never" else int(choice) if choice in ("30", "90", "365") else 0
        )
        if not days:
            valid.error("Pick an expiry.", "expires")
    if not raw_scopes:
        if not valid.error_for("scopes"):
            valid.error("Pick at least one scope.", "scopes")
        return None
    scope, problem = grantable_scope(raw_scopes)
    if problem is not None:
        valid.error(problem, "scopes")
        return None
    assert scope is not None
    if within is not None:
        beyond = [str(s) for s in sorted(parse_scopes(scope)) if not satisfies(within, s)]
        if beyond:
            valid.error(
                f"This token cannot grant {' '.join(beyond)}: a token can only make tokens "
                "with scopes it has itself.",
                "scopes",
            )
            return None
    if valid.errors or name is None:
        return None
    return name, scope, days


def token_name_problem(name: str) -> str | None:
    """Why *name* may not name a token, or None: the rule of applications' names, a word
    that mixes scripts. A token's name is what tells it from the others on the Security
    page, in the audit log and in the notice that it is revoked: a token an application
    makes through the API, named "deploy" with a Cyrillic e (U+0435), reads there as the
    user's own "deploy" token, which they may then keep while revoking theirs."""
    # Imported here: meta.oauth.client_pages imports this module.
    from meta.oauth.client_pages import mixed_script_problem

    return mixed_script_problem(name)


def grantable_scope(raw_scopes: list[str]) -> tuple[str, None] | tuple[None, str]:
    """The scope string a personal access token for *raw_scopes* carries, or why none:
    each must name a scope some service of the network declares."""
    problem = oauth_state().catalog.check(raw_scopes)
    if problem is not None:
        return None, problem
    try:
        return format_scopes(parse_scopes(raw_scopes)), None
    except ScopeError as exc:
        return None, str(exc)


# -- pages ------------------------------------------------------------------------------------


def _applications(user_id: int) -> list[dict[str, Any]]:
    """The applications the account authorized, the last used first, each once with the
    scopes of all its live grants: at most :data:`MAX_APPLICATIONS`.

    Every login through an application makes a grant, so an account has thousands of
    them: the database sums them up, and only one row per application and scope string
    comes back."""
    st = oauth_state()
    live = (Grant.user_id == user_id, Grant.revoked_at.is_(None))
    last_used = func.max(Grant.last_used).label("last_used")
    latest = db_session.execute(
        select(Grant.client_id, last_used)
        .where(*live)
        .group_by(Grant.client_id)
        .order_by(last_used.desc(), Grant.client_id)
        .limit(MAX_APPLICATIONS)
    ).all()
    # The applications' names in one query: one per application grew with the account.
    third_party = [client_id for client_id, _used in latest if client_id not in st.first_party]
    names = dict(
        db_session.execute(
            select(OAuthClient.client_id, OAuthClient.name).where(
                OAuthClient.client_id.in_(third_party), OAuthClient.revoked_at.is_(None)
            )
        ).all()
        if third_party
        else []
    )
    apps: dict[str, dict[str, Any]] = {}
    for client_id, used in latest:
        first = st.first_party.get(client_id)
        apps[client_id] = {
            "client_id": client_id,
            "name": first.name if first is not None else names.get(client_id, client_id),
            "first_party": bool(first is not None and first.first_party),
            "scopes": set(),
            "last_used": used,
        }
    if apps:
        scopes = db_session.execute(
            select(Grant.client_id, Grant.scope)
            .where(*live, Grant.client_id.in_(list(apps)))
            .distinct()
        )
        for client_id, scope in scopes:
            apps[client_id]["scopes"].update(scope.split())
    for entry in apps.values():
        entry["scopes"] = sorted(entry["scopes"])
    return list(apps.values())


def _context(new_token: str | None = None) -> dict[str, Any]:
    """The security page's context, but ``valid``."""
    user = current_user._get_current_object()
    return {
        "applications": _applications(user.id),
        "tokens": _active_tokens(user.id),
        "all_scopes": oauth_state().catalog.all_scopes(),
        "expiry_options": EXPIRY_OPTIONS,
        "new_token": new_token,
        "refusal": token_refusal(user),
        **security_context(user.id),
    }


def _render(
    valid: Validation | None = None, new_token: str | None = None, status: int = 200
) -> Any:
    page = render_template("meta/oauth/security.html", valid=valid, **_context(new_token))
    return page, status


@pats.route("/security")
@login_required
def security() -> Any:
    return _render()


@pats.route("/security/tokens", methods=["POST"])
@login_required
def create_token_page() -> Any:
    user = current_user._get_current_object()
    # Bad input shows the page again with the errors (400).
    valid = Validation.form("meta/oauth/security.html", _context)
    refusal = token_refusal(user)
    if refusal is not None:
        # Not bad input: the user may not make tokens at all, hence 403.
        valid.error(refusal)
        return _render(valid, status=403)
    checked = _check_token_input(valid, api=False)
    too_many = too_many_tokens(user)
    if too_many is not None:
        valid.error(too_many)
    valid.raise_if_invalid()
    assert checked is not None  # _check_token_input recorded an error otherwise
    name, scope, days = checked
    _row, token = create_token(user, name=name, scope=scope, days=days)
    db_session.commit()
    return _render(new_token=token)


@pats.route("/security/tokens/<id:token_id>/revoke", methods=["POST"])
@login_required
def revoke_token_page(token_id: int) -> Response:
    user = current_user._get_current_object()
    row = db_session.get(PersonalAccessToken, token_id)
    if row is None or row.user_id != user.id:
        return error_response(404, "No such token.")
    revoke_token_row(row)
    db_session.commit()
    flash(f"The token {row.name!r} is revoked.", "success")
    return redirect(url_for("oauth_security.security"))


@pats.route("/security/applications/<client_id>/revoke", methods=["POST"])
@login_required
def revoke_application(client_id: str) -> Response:
    user = current_user._get_current_object()
    if not _has_access(user.id, client_id):
        # Nothing to revoke: an application never authorized (another user's client, a
        # made-up id) is answered as one that does not exist, and nothing is recorded.
        return error_response(404, "No such application.")
    revoke_user_client(user.id, client_id)
    db_session.commit()
    flash("The application's access is revoked.", "success")
    return redirect(url_for("oauth_security.security"))


def _has_access(user_id: int, client_id: str) -> bool:
    """Whether *user_id* gave *client_id* anything to revoke: a live grant, or a consent."""
    grant = select(Grant.id).where(
        Grant.user_id == user_id, Grant.client_id == client_id, Grant.revoked_at.is_(None)
    )
    consent = select(Consent.id).where(Consent.user_id == user_id, Consent.client_id == client_id)
    return (
        db_session.scalar(grant.limit(1)) is not None
        or db_session.scalar(consent.limit(1)) is not None
    )


def revoke_user_client(user_id: int, client_id: str) -> None:
    """End every grant *user_id* gave *client_id* (and the codes that would make one) and
    forget the consent; caller commits."""
    st = oauth_state()
    client = st.query_client(client_id)
    name = client.name if client is not None else client_id
    audit.record(db_session, audit.Kind.app_revoked, user_id, detail=name)
    # The codes not exchanged yet first: each would make a grant after this one.
    events.spend_codes(db_session, user_id, client_id)
    for grant in db_session.scalars(
        select(Grant).where(
            Grant.user_id == user_id, Grant.client_id == client_id, Grant.revoked_at.is_(None)
        )
    ):
        st.revoke_grant(grant)
    for consent in db_session.scalars(
        select(Consent).where(Consent.user_id == user_id, Consent.client_id == client_id)
    ):
        db_session.delete(consent)


def revoke_client(row: OAuthClient) -> None:
    """Delete a third-party client: a ``client`` event kills its tokens; caller commits."""
    import time

    row.revoked_at = utcnow()
    for grant in db_session.scalars(
        select(Grant).where(Grant.client_id == row.client_id, Grant.revoked_at.is_(None))
    ):
        grant.revoked_at = utcnow()
        events.revoke_descendants(db_session, grant.id)
    for consent in db_session.scalars(select(Consent).where(Consent.client_id == row.client_id)):
        db_session.delete(consent)
    events.emit(db_session, "client", row.client_id, not_before=int(time.time()))


# -- API --------------------------------------------------------------------------------------


@pats.route("/api/tokens", methods=["GET"])
@oauth("meta/tokens:RO")
def api_list_tokens() -> TokenListJSON | Response:
    """The caller's active personal access tokens."""
    token = current_token()
    if token is None or token.subject is None:
        return error_response(403, "This token belongs to no user.")
    return {"results": [_token_json(row) for row in _active_tokens(token.subject)]}


@pats.route("/api/tokens", methods=["POST"])
@oauth("meta/tokens:RW")
@operation(body=partial(_check_token_input, api=True))
def api_create_token() -> Created[NewTokenJSON] | Response:
    """Make a personal access token with scopes the calling token holds."""
    user = current_user._get_current_object()
    caller = current_token()
    if user is None or caller is None:
        return error_response(403, "This token belongs to no user.")
    refusal = token_refusal(user)
    if refusal is not None:
        return error_response(403, refusal)
    parent = caller.claims.get("grant")
    if not isinstance(parent, str) or not parent:
        return error_response(403, "This token cannot make tokens: it belongs to no grant.")
    valid = Validation(request)
    checked = _check_token_input(valid, api=True, within=caller.scopes)
    valid.finish()  # unknown fields are errors before the account's row is held
    too_many = too_many_tokens(user)
    if too_many is not None:
        valid.error(too_many)
    valid.raise_if_invalid()
    assert checked is not None  # _check_token_input recorded an error otherwise
    name, scope, days = checked
    expires = caller.claims.get("exp")
    row, token = create_token(
        user,
        name=name,
        scope=scope,
        days=days,
        parent=parent,
        not_after=expires if isinstance(expires, int) else None,
    )
    db_session.commit()
    return created(NewTokenJSON(**_token_json(row), token=token))


@pats.route("/api/tokens/<id:token_id>", methods=["DELETE"])
@oauth("meta/tokens:RW")
def api_revoke_token(token_id: int) -> NoContent | Response:
    """Revoke one of the caller's personal access tokens."""
    token = current_token()
    row = db_session.get(PersonalAccessToken, token_id)
    if token is None or row is None or row.user_id != token.subject:
        return error_response(404, "No such token.")
    revoke_token_row(row)
    db_session.commit()
    return no_content()
