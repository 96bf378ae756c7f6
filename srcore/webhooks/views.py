"""Webhook subscriptions for every service: the API under ``/api/webhooks`` and the pages
under ``/webhooks``.

A subscriber is the user of a bearer token (or, for a client-credentials token, the
client), or the logged-in web user. It sees only its own subscriptions: anyone else's is a
404. It may subscribe only to events whose declared scope it holds, and the scopes it held
are stored with the subscription, so the fan-out never sends it an event it could not
read. A logged-in web user holds every scope of this service's events (for what they can
see: the service's ``webhook_filter`` decides per event).

The secret is shown once, in the answer to the request that made it (create, rotate);
afterwards only its last four characters are.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
from collections.abc import Callable
from datetime import timedelta
from typing import Any, ParamSpec, TypeVar

from flask import Blueprint, Flask, Response, abort, flash, g, redirect, render_template, request
from flask import url_for as flask_url_for
from sqlalchemy import func, select
from sqlalchemy.orm import Session, lazyload

from srcore.app import SrcoreState, state
from srcore.auth.scopes import Access, Scope, format_scopes
from srcore.db import session as db_session
from srcore.db import utcnow
from srcore.errors import error_response
from srcore.pagination import InvalidCursor, paginate_cursor, paginate_pages
from srcore.validation import Invalid, Validation, parse_json_object
from srcore.webhooks.models import Attempt, Delivery, DeliveryStatus, OutboxRow, Subscription
from srcore.webhooks.signing import generate_secret
from srcore.webhooks.subscriptions import (
    MAX_OVERLAP,
    ROTATION_OVERLAP,
    Subscriber,
    SubscriptionInput,
    event_scope,
    events_scopes,
    missing_scopes,
    read_resource,
    read_subscription,
    secret_hint,
    target_problem,
)

__all__ = [
    "MAX_SUBSCRIPTIONS",
    "api",
    "attempt_json",
    "delivery_json",
    "init_app",
    "pages",
    "subscription_json",
]

log = logging.getLogger("srcore.webhooks")

P = ParamSpec("P")
R = TypeVar("R")

api = Blueprint("srcore_webhooks_api", __name__, url_prefix="/api/webhooks")
pages = Blueprint("srcore_webhooks", __name__, url_prefix="/webhooks")

#: Subscriptions one subscriber may have on one service.
MAX_SUBSCRIPTIONS = 100
SUBSCRIPTION = "<id:subscription_id>"
DELIVERY = "<id(max=9223372036854775807):delivery_id>"
DEFAULT_LIMIT = 20
MAX_LIMIT = 50
PER_PAGE = 25
#: The rotation overlaps the web form offers, in seconds.
OVERLAP_CHOICES = (
    ("0", "End the old secret now"),
    ("3600", "Keep signing with the old secret for 1 hour"),
    ("86400", "Keep signing with the old secret for 24 hours"),
    ("604800", "Keep signing with the old secret for 7 days"),
)


def init_app(app: Flask) -> None:
    """Add the subscription API and pages to *app* (when its service declares events that
    users may subscribe to: ``internal`` ones are for the operator's own subscriptions)."""
    if not state(app).manifest.user_events:
        return
    app.register_blueprint(api)
    app.register_blueprint(pages)


# -- JSON shapes ---------------------------------------------------------------------------


def _json_object(text: str | None) -> dict[str, Any]:
    try:
        value = json.loads(text or "{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def subscription_json(sub: Subscription, *, secret: str | None = None) -> dict[str, Any]:
    """The API's shape of a subscription; *secret* is included only when just made."""
    now = utcnow()
    overlap = sub.previous_secret is not None and (
        sub.previous_secret_expires is None or sub.previous_secret_expires > now
    )
    body: dict[str, Any] = {
        "id": sub.id,
        "url": sub.url,
        "events": sorted(sub.event_names),
        "resource": sub.resource,
        "scopes": sorted(sub.scopes.split()),
        "enabled": sub.enabled,
        "disabled_reason": sub.disabled_reason,
        "failing_since": sub.failing_since,
        "secret_hint": secret_hint(sub.secret),
        "previous_secret_expires": sub.previous_secret_expires if overlap else None,
        "created": sub.created,
        "updated": sub.updated,
    }
    if secret is not None:
        body["secret"] = secret
    return body


def attempt_json(attempt: Attempt) -> dict[str, Any]:
    """One HTTP request of a delivery, as the delivery log shows it."""
    return {
        "id": attempt.id,
        "created": attempt.created,
        "request": {
            "headers": _json_object(attempt.request_headers),
            "body": attempt.request_body,
        },
        "response": {
            "status": attempt.response_status,
            "headers": _json_object(attempt.response_headers),
            "body": attempt.response_body,
        },
        "duration_ms": attempt.duration_ms,
        "error": attempt.error,
    }


def delivery_json(delivery: Delivery, event: str, attempts: list[Attempt]) -> dict[str, Any]:
    """One event sent to one subscription, with its attempts (newest first)."""
    return {
        "id": delivery.id,
        "event": event,
        "message_id": delivery.message_id,
        "status": delivery.status,
        "attempt_count": delivery.attempts,
        "next_attempt_at": (
            delivery.next_attempt_at if delivery.status == DeliveryStatus.pending else None
        ),
        "last_status_code": delivery.last_status_code,
        "created": delivery.created,
        "delivered_at": delivery.delivered_at,
        "attempts": [attempt_json(a) for a in attempts],
    }


# -- shared logic --------------------------------------------------------------------------


def _owned(subscriber: Subscriber) -> Any:
    """The WHERE clause of the subscriptions *subscriber* owns.

    Trusted subscriptions (the operator's first-party ones, e.g. meta's to each service)
    are never shown, changed or deleted here: they are made from the config file, and
    their internal targets skip the SSRF guard, so no API or page may touch them.
    """
    visible = Subscription.trusted.is_(False)
    if subscriber.user_id is not None:
        return visible & (Subscription.owner_id == subscriber.user_id)
    return (
        visible
        & Subscription.owner_id.is_(None)
        & (Subscription.owner_client == subscriber.client_id)
    )


def _find(session: Session, subscriber: Subscriber, subscription_id: int) -> Subscription:
    sub = session.scalar(
        select(Subscription).where(Subscription.id == subscription_id, _owned(subscriber))
    )
    if sub is None:
        abort(404)
    return sub


def _policy() -> Any:
    from flask import current_app

    from srcore.webhooks.delivery import policy_for

    return policy_for(current_app)


def _can_receive(st: SrcoreState) -> Callable[[Subscription, OutboxRow], bool] | None:
    return st.webhook_filter


def _check_new_values(
    st: SrcoreState,
    subscriber: Subscriber,
    values: SubscriptionInput,
    valid: Validation,
    *,
    resource: str | None,
) -> list[Scope]:
    """Check the URL's target, the scopes and the resource; return the missing scopes."""
    missing: list[Scope] = []
    if values.url is not None:
        problem = target_problem(values.url, _policy())
        if problem is not None:
            valid.error(f"Webhooks cannot be sent there: {problem}.", "url")
    if values.events is not None:
        missing = missing_scopes(st.manifest, values.events, subscriber.scopes)
        if missing:
            valid.error(
                "Receiving these events needs the scope "
                f"{format_scopes(missing)}, which you do not hold.",
                "events",
            )
    hook = _can_receive(st)
    if valid.ok and resource is not None and hook is not None and values.events:
        probe = Subscription(
            owner_id=subscriber.user_id,
            owner_client=subscriber.client_id if subscriber.user_id is None else None,
            url=values.url or "",
            events=" ".join(values.events),
            resource=resource,
            scopes=format_scopes(subscriber.scopes),
            secret="",
            enabled=True,
        )
        event = OutboxRow(event=values.events[0], resource=resource, payload="{}")
        if not hook(probe, event):
            valid.error(f"There is no {resource} that you can see.", "resource")
    return missing


def create_subscription(
    session: Session,
    st: SrcoreState,
    subscriber: Subscriber,
    values: SubscriptionInput,
    valid: Validation,
) -> tuple[Subscription, str] | None:
    """Check and store a new subscription; return it and its secret, or None (errors on
    *valid*)."""
    # Checked even when other fields are wrong, so a form shows every problem at once.
    _check_new_values(st, subscriber, values, valid, resource=values.resource)
    if not valid.ok:
        return None
    count = session.scalar(select(func.count()).where(_owned(subscriber))) or 0
    if count >= MAX_SUBSCRIPTIONS:
        valid.error(f"You already have {MAX_SUBSCRIPTIONS} webhooks here; delete one first.")
        return None
    assert values.url is not None and values.events is not None
    secret = generate_secret()
    sub = Subscription(
        owner_id=subscriber.user_id,
        owner_client=subscriber.client_id if subscriber.user_id is None else None,
        url=values.url,
        events=" ".join(values.events),
        resource=values.resource,
        scopes=format_scopes(s for s in subscriber.scopes if s.service == st.service_id),
        secret=secret,
        enabled=True,
        confirmed_at=utcnow(),
    )
    session.add(sub)
    session.commit()
    log.info("webhook %s subscribed to %s by %s", sub.id, sub.events, _who(subscriber))
    return sub, secret


def update_subscription(
    session: Session,
    st: SrcoreState,
    subscriber: Subscriber,
    sub: Subscription,
    values: SubscriptionInput,
    valid: Validation,
) -> bool:
    """Apply an update (url, events, enabled); False with errors on *valid*."""
    if not valid.ok:
        return False
    events = values.events if values.events is not None else tuple(sorted(sub.event_names))
    check = SubscriptionInput(
        url=values.url if values.url != sub.url else None, events=events, resource=None
    )
    _check_new_values(st, subscriber, check, valid, resource=None)
    if not valid.ok:
        return False
    if values.url is not None:
        sub.url = values.url
    if values.events is not None:
        sub.events = " ".join(values.events)
        # The subscription now receives what the subscriber holds today.
        sub.scopes = format_scopes(s for s in subscriber.scopes if s.service == st.service_id)
    if values.enabled is not None:
        _set_enabled(sub, values.enabled)
    # Its owner has seen it as it is now: see srcore.webhooks.accounts.
    sub.confirmed_at = utcnow()
    session.commit()
    return True


def _set_enabled(sub: Subscription, enabled: bool) -> None:
    if enabled == sub.enabled:
        return
    sub.enabled = enabled
    sub.disabled_reason = None if enabled else "Disabled by its owner."
    if enabled:
        sub.failing_since = None
        sub.confirmed_at = utcnow()


def rotate_secret(session: Session, sub: Subscription, overlap: timedelta) -> str:
    """Give *sub* a new secret; the current one keeps signing for *overlap*. Returns it."""
    secret = generate_secret()
    if overlap > timedelta(0):
        sub.previous_secret = sub.secret
        sub.previous_secret_expires = utcnow() + overlap
    else:
        sub.previous_secret = None
        sub.previous_secret_expires = None
    sub.secret = secret
    session.commit()
    return secret


def redeliver(session: Session, st: SrcoreState, sub: Subscription, delivery_id: int) -> Delivery:
    """Send a delivery again, now, with the same ``webhook-id``; 404 if it is not *sub*'s."""
    from srcore.webhooks import delivery as delivery_module

    delivery = session.scalar(
        select(Delivery).where(Delivery.id == delivery_id, Delivery.subscription_id == sub.id)
    )
    if delivery is None or not delivery_module.redeliver(session, delivery.id, now=utcnow()):
        abort(404)
    session.commit()
    dispatcher = getattr(st, "webhook_dispatcher", None)
    nudge = getattr(dispatcher, "nudge_deliveries", None)
    if callable(nudge):
        try:
            nudge([delivery.id])
        except Exception:  # the row is due; the worker's poll finds it
            log.exception("could not nudge the webhook dispatcher for delivery %s", delivery.id)
    return delivery


def _deliveries(
    session: Session, sub: Subscription, cursor: str | None, limit: int
) -> tuple[list[tuple[Delivery, str, list[Attempt]]], str | None]:
    """One page of *sub*'s deliveries (newest first), each with its event and attempts."""
    stmt = (
        select(Delivery)
        .where(Delivery.subscription_id == sub.id)
        .options(lazyload(Delivery.subscription), lazyload(Delivery.outbox))
    )
    page = paginate_cursor(session, stmt, key=[Delivery.id], cursor=cursor, limit=limit)
    ids = [d.id for d in page.items]
    events: dict[int, str] = {}
    attempts: dict[int, list[Attempt]] = {i: [] for i in ids}
    if ids:
        outbox_ids = {d.outbox_id for d in page.items}
        for outbox_id, event in session.execute(
            select(OutboxRow.id, OutboxRow.event).where(OutboxRow.id.in_(outbox_ids))
        ):
            events[outbox_id] = event
        for attempt in session.scalars(
            select(Attempt).where(Attempt.delivery_id.in_(ids)).order_by(Attempt.id.desc())
        ):
            attempts[attempt.delivery_id].append(attempt)
    rows = [(d, events.get(d.outbox_id, "?"), attempts[d.id]) for d in page.items]
    return rows, page.next_cursor


def _who(subscriber: Subscriber) -> str:
    if subscriber.user_id is not None:
        return f"user {subscriber.user_id}"
    return f"client {subscriber.client_id}"


# -- the API -------------------------------------------------------------------------------


def _token_required(view: Callable[P, R]) -> Callable[P, R | Response]:
    """Require a bearer token holding at least one scope of this service.

    Which scopes are enough depends on the events asked for, so each view checks those;
    the subscriber (``g.srcore_webhook_subscriber``) is the token's user, or its client.
    """

    @functools.wraps(view)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R | Response:
        from srcore.auth.api import _challenge, bearer_token

        st = state()
        token = bearer_token()
        if isinstance(token, Response):
            return token
        own = frozenset(s for s in token.scopes if s.service == st.service_id)
        if not own:
            wanted = format_scopes(events_scopes(st.manifest))
            reason = f"Webhooks of {st.manifest.name} need a token with one of: {wanted}."
            return _challenge(403, reason, error="insufficient_scope", scope=wanted)
        g.srcore_token = token
        g.pop("srcore_user", None)
        if token.subject is not None:
            from srcore.auth.web import current_user

            # Loads (or copies from meta) the token's user; 401/403 if unknown or suspended.
            current_user._get_current_object()
        g.srcore_webhook_subscriber = Subscriber(
            user_id=token.subject,
            client_id=token.client_id if token.subject is None else None,
            scopes=own,
        )
        return view(*args, **kwargs)

    return wrapper


def _api_subscriber() -> Subscriber:
    subscriber: Subscriber = g.srcore_webhook_subscriber
    return subscriber


def _scope_refusal(missing: list[Scope]) -> Response:
    from srcore.auth.api import _challenge

    wanted = format_scopes(missing)
    doing = "Managing webhooks of" if any(s.access == "RW" for s in missing) else "Receiving"
    reason = f"{doing} these events needs the scope {wanted}, which this token does not hold."
    response = _challenge(403, reason, error="insufficient_scope", scope=wanted)
    body = {"errors": [{"field": "events", "reason": reason}]}
    response.set_data(json.dumps(body) + "\n")
    return response


def _require_scopes_for(sub: Subscription, *, manage: bool = False) -> Response | None:
    """403 unless the token may receive every event of *sub* (to read its log) or, to
    *manage* it (change, rotate, redeliver, delete), holds their scopes read-write: a
    read-only token must not re-point a subscription or be handed its new secret."""
    st = state()
    known = [name for name in sorted(sub.event_names) if st.manifest.event(name) is not None]
    access: Access = "RW" if manage else "RO"
    missing = missing_scopes(st.manifest, known, _api_subscriber().scopes, access=access)
    return _scope_refusal(missing) if missing else None


def _api_body() -> tuple[Validation, object, bool]:
    """The request's fields, the raw ``events`` value and whether it was sent."""
    valid = Validation(request)
    if not valid.ok:
        return valid, None, False
    if valid.source == "json":
        try:
            data = parse_json_object(request.get_data(cache=True))
        except Invalid:  # already recorded by Validation
            return valid, None, False
        return valid, data.get("events"), "events" in data
    return valid, request.form.getlist("events"), "events" in request.form


def _limit_and_cursor() -> tuple[str | None, int] | Response:
    query = Validation(data=request.args, source="form")
    cursor = query.optional("cursor", max_length=1024)
    limit = query.optional("limit", int, min=1, max=MAX_LIMIT, default=DEFAULT_LIMIT)
    if not query.ok or limit is None:
        return query.response()
    return cursor, limit


def _bad_cursor() -> Response:
    valid = Validation(data={})
    valid.error("This cursor was not made for this listing.", "cursor")
    return valid.response()


@api.get("")
@_token_required
def api_list() -> Any:
    paging = _limit_and_cursor()
    if isinstance(paging, Response):
        return paging
    cursor, limit = paging
    stmt = select(Subscription).where(_owned(_api_subscriber()))
    try:
        page = paginate_cursor(db_session, stmt, key=[Subscription.id], cursor=cursor, limit=limit)
    except InvalidCursor:
        return _bad_cursor()
    return {"results": [subscription_json(s) for s in page.items], "next": page.next_cursor}


@api.post("")
@_token_required
def api_create() -> Any:
    st = state()
    subscriber = _api_subscriber()
    valid, raw_events, _given = _api_body()
    values = read_subscription(valid, raw_events, st.manifest) if valid.ok else None
    if values is None or not valid.ok:
        return valid.response()
    missing = missing_scopes(st.manifest, values.events or (), subscriber.scopes, access="RW")
    if missing:
        return _scope_refusal(missing)
    made = create_subscription(db_session, st, subscriber, values, valid)
    if made is None:
        return valid.response()
    sub, secret = made
    location = flask_url_for("srcore_webhooks_api.api_get", subscription_id=sub.id)
    return subscription_json(sub, secret=secret), 201, {"Location": location}


@api.get(f"/{SUBSCRIPTION}")
@_token_required
def api_get(subscription_id: int) -> Any:
    return subscription_json(_find(db_session, _api_subscriber(), subscription_id))


@api.patch(f"/{SUBSCRIPTION}")
@_token_required
def api_update(subscription_id: int) -> Any:
    st = state()
    subscriber = _api_subscriber()
    sub = _find(db_session, subscriber, subscription_id)
    refused = _require_scopes_for(sub, manage=True)
    if refused is not None:
        return refused
    valid, raw_events, given = _api_body()
    if not valid.ok:
        return valid.response()
    if "resource" in valid:
        valid.error("A webhook's resource cannot change; make a new webhook.", "resource")
    values = read_subscription(valid, raw_events, st.manifest, partial=True, events_given=given)
    if not valid.ok:
        return valid.response()
    events = values.events if values.events is not None else sorted(sub.event_names)
    known = [name for name in events if st.manifest.event(name) is not None]
    missing = missing_scopes(st.manifest, known, subscriber.scopes, access="RW")
    if missing:
        return _scope_refusal(missing)
    if not update_subscription(db_session, st, subscriber, sub, values, valid):
        return valid.response()
    return subscription_json(sub)


@api.delete(f"/{SUBSCRIPTION}")
@_token_required
def api_delete(subscription_id: int) -> Any:
    sub = _find(db_session, _api_subscriber(), subscription_id)
    refused = _require_scopes_for(sub, manage=True)
    if refused is not None:
        return refused
    db_session.delete(sub)
    db_session.commit()
    return "", 204


def _read_overlap(valid: Validation) -> timedelta | None:
    seconds = valid.optional(
        "overlap",
        int,
        min=0,
        max=int(MAX_OVERLAP.total_seconds()),
        default=int(ROTATION_OVERLAP.total_seconds()),
        label="The overlap",
    )
    return timedelta(seconds=seconds) if seconds is not None else None


@api.post(f"/{SUBSCRIPTION}/rotate")
@_token_required
def api_rotate(subscription_id: int) -> Any:
    sub = _find(db_session, _api_subscriber(), subscription_id)
    refused = _require_scopes_for(sub, manage=True)
    if refused is not None:
        return refused
    valid = Validation(request)
    if request.content_length in (None, 0) and not request.form:
        valid = Validation(data={})
    overlap = _read_overlap(valid) if valid.ok else None
    if overlap is None or not valid.ok:
        return valid.response()
    secret = rotate_secret(db_session, sub, overlap)
    return subscription_json(sub, secret=secret)


@api.get(f"/{SUBSCRIPTION}/deliveries")
@_token_required
def api_deliveries(subscription_id: int) -> Any:
    sub = _find(db_session, _api_subscriber(), subscription_id)
    refused = _require_scopes_for(sub)
    if refused is not None:
        return refused
    paging = _limit_and_cursor()
    if isinstance(paging, Response):
        return paging
    cursor, limit = paging
    try:
        rows, next_cursor = _deliveries(db_session, sub, cursor, limit)
    except InvalidCursor:
        return _bad_cursor()
    return {"results": [delivery_json(*row) for row in rows], "next": next_cursor}


@api.post(f"/{SUBSCRIPTION}/deliveries/{DELIVERY}/redeliver")
@_token_required
def api_redeliver(subscription_id: int, delivery_id: int) -> Any:
    st = state()
    sub = _find(db_session, _api_subscriber(), subscription_id)
    refused = _require_scopes_for(sub, manage=True)
    if refused is not None:
        return refused
    if not sub.enabled:
        return error_response(409, "This webhook is disabled; enable it before redelivering.")
    delivery = redeliver(db_session, st, sub, delivery_id)
    event = db_session.scalar(select(OutboxRow.event).where(OutboxRow.id == delivery.outbox_id))
    return delivery_json(delivery, event or "?", []), 202


# -- the pages -----------------------------------------------------------------------------


def _web_subscriber() -> Subscriber:
    from srcore.auth.web import current_user

    user = current_user._get_current_object()
    if user is None:  # login_required guards every caller
        abort(401)
    return Subscriber(user_id=user.id, client_id=None, scopes=events_scopes(state().manifest))


def _login_required(view: Callable[P, R]) -> Callable[P, R | Response]:
    from srcore.auth.web import login_required

    return login_required(view)


def _event_choices(st: SrcoreState) -> list[dict[str, str]]:
    return [
        {
            "name": event.name,
            "description": event.description,
            "scope": str(event_scope(st.manifest, event.name)),
        }
        for event in st.manifest.user_events
    ]


def _form_page(
    valid: Validation | None,
    sub: Subscription | None,
    *,
    chosen: list[str],
    resource: str | None,
    status: int = 200,
) -> Any:
    st = state()
    page = render_template(
        "webhooks/form.html",
        valid=valid,
        subscription=sub,
        events=_event_choices(st),
        chosen=chosen,
        resource=resource,
    )
    return page, status


@pages.route("")
@_login_required
def index() -> Any:
    subscriber = _web_subscriber()
    query = Validation(data=request.args, source="form")
    page = query.optional("page", int, min=1, max=1_000_000, default=1) or 1
    if not query.ok:
        return error_response(400, "Invalid address: page must be a whole number.")
    stmt = select(Subscription).where(_owned(subscriber)).order_by(Subscription.id.desc())
    listing = paginate_pages(db_session, stmt, page=page, per_page=PER_PAGE)
    return render_template("webhooks/index.html", listing=listing, secret_hint=secret_hint)


@pages.route("/new", methods=["GET", "POST"])
@_login_required
def new() -> Any:
    st = state()
    subscriber = _web_subscriber()
    if request.method == "GET":
        resource = None
        with contextlib.suppress(Invalid):
            resource = read_resource(request.args.get("resource", "")) or None
        chosen = request.args.getlist("events")
        return _form_page(None, None, chosen=chosen, resource=resource)
    valid = Validation(request)
    raw_events: object = request.form.getlist("events") if valid.source == "form" else None
    if valid.source == "json":
        valid.error("Send the form.")
    values = read_subscription(valid, raw_events, st.manifest) if valid.ok else None
    made = create_subscription(db_session, st, subscriber, values, valid) if values else None
    if made is None:
        chosen = [e for e in request.form.getlist("events") if isinstance(e, str)]
        resource = values.resource if values else None
        return _form_page(valid, None, chosen=chosen, resource=resource, status=400)
    sub, secret = made
    return _detail_page(sub, secret=secret, status=201)


def _detail_page(sub: Subscription, *, secret: str | None = None, status: int = 200) -> Any:
    st = state()
    query = Validation(data=request.args, source="form") if request.method == "GET" else None
    cursor = query.optional("cursor", max_length=1024) if query is not None else None
    if query is not None and not query.ok:
        return error_response(400, "Invalid address: the cursor is not valid.")
    try:
        rows, next_cursor = _deliveries(db_session, sub, cursor, DEFAULT_LIMIT)
    except InvalidCursor:
        return error_response(400, "Invalid address: the cursor is not valid.")
    now = utcnow()
    page = render_template(
        "webhooks/detail.html",
        subscription=sub,
        secret=secret,
        secret_hint=secret_hint(sub.secret),
        overlap_until=(
            sub.previous_secret_expires
            if sub.previous_secret
            and (sub.previous_secret_expires is None or sub.previous_secret_expires > now)
            else None
        ),
        deliveries=rows,
        next_url=(
            flask_url_for("srcore_webhooks.detail", subscription_id=sub.id, cursor=next_cursor)
            if next_cursor
            else None
        ),
        first_url=(
            flask_url_for("srcore_webhooks.detail", subscription_id=sub.id) if cursor else None
        ),
        descriptions={e.name: e.description for e in st.manifest.events},
        overlap_choices=OVERLAP_CHOICES,
        pretty=_pretty,
    )
    return page, status


def _pretty(text: str | None) -> str:
    """A JSON body indented for reading; anything else as it is."""
    if not text:
        return ""
    try:
        return json.dumps(json.loads(text), indent=2, ensure_ascii=False)
    except ValueError:
        return text


@pages.route(f"/{SUBSCRIPTION}")
@_login_required
def detail(subscription_id: int) -> Any:
    sub = _find(db_session, _web_subscriber(), subscription_id)
    return _detail_page(sub)


@pages.route(f"/{SUBSCRIPTION}/edit", methods=["GET", "POST"])
@_login_required
def edit(subscription_id: int) -> Any:
    st = state()
    subscriber = _web_subscriber()
    sub = _find(db_session, subscriber, subscription_id)
    if request.method == "GET":
        return _form_page(None, sub, chosen=sorted(sub.event_names), resource=sub.resource)
    valid = Validation(request)
    if valid.source == "json":
        valid.error("Send the form.")
    raw_events = request.form.getlist("events")
    values = SubscriptionInput()
    if valid.ok:
        values = read_subscription(valid, raw_events, st.manifest, partial=False)
        values.resource = None
    if not update_subscription(db_session, st, subscriber, sub, values, valid):
        db_session.rollback()
        return _form_page(valid, sub, chosen=raw_events, resource=sub.resource, status=400)
    flash("Webhook saved.", "success")
    return redirect(flask_url_for("srcore_webhooks.detail", subscription_id=sub.id))


@pages.route(f"/{SUBSCRIPTION}/rotate", methods=["POST"])
@_login_required
def rotate(subscription_id: int) -> Any:
    sub = _find(db_session, _web_subscriber(), subscription_id)
    valid = Validation(request)
    if valid.source == "json":
        valid.error("Send the form.")
    overlap = _read_overlap(valid) if valid.ok else None
    if overlap is None or not valid.ok:
        reasons = "; ".join(err.reason for err in valid.errors)
        flash(f"The secret was not rotated: {reasons}", "error")
        return redirect(flask_url_for("srcore_webhooks.detail", subscription_id=sub.id))
    secret = rotate_secret(db_session, sub, overlap)
    return _detail_page(sub, secret=secret)


@pages.route(f"/{SUBSCRIPTION}/enable", methods=["POST"])
@_login_required
def enable(subscription_id: int) -> Any:
    sub = _find(db_session, _web_subscriber(), subscription_id)
    _set_enabled(sub, True)
    db_session.commit()
    flash("Webhook enabled.", "success")
    return redirect(flask_url_for("srcore_webhooks.detail", subscription_id=sub.id))


@pages.route(f"/{SUBSCRIPTION}/disable", methods=["POST"])
@_login_required
def disable(subscription_id: int) -> Any:
    sub = _find(db_session, _web_subscriber(), subscription_id)
    _set_enabled(sub, False)
    db_session.commit()
    flash("Webhook disabled: no events are sent to it until you enable it.", "success")
    return redirect(flask_url_for("srcore_webhooks.detail", subscription_id=sub.id))


@pages.route(f"/{SUBSCRIPTION}/delete", methods=["POST"])
@_login_required
def delete(subscription_id: int) -> Any:
    sub = _find(db_session, _web_subscriber(), subscription_id)
    db_session.delete(sub)
    db_session.commit()
    flash("Webhook deleted.", "success")
    return redirect(flask_url_for("srcore_webhooks.index"))


@pages.route(f"/{SUBSCRIPTION}/deliveries/{DELIVERY}/redeliver", methods=["POST"])
@_login_required
def redeliver_page(subscription_id: int, delivery_id: int) -> Any:
    st = state()
    sub = _find(db_session, _web_subscriber(), subscription_id)
    target = flask_url_for("srcore_webhooks.detail", subscription_id=sub.id)
    if not sub.enabled:
        flash("This webhook is disabled; enable it before redelivering.", "error")
        return redirect(target)
    delivery = redeliver(db_session, st, sub, delivery_id)
    flash(f"Delivery {delivery.message_id} will be sent again shortly.", "success")
    return redirect(target)
