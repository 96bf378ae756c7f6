"""What the API and the pages both do with a subscriber's subscriptions, each change
committed and shown as the API's JSON. Another's subscription is a 404, the operator's
trusted ones are never shown; what a subscription's state forbids now is a 409 or 429."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta
from functools import partial
from typing import TYPE_CHECKING, cast

from flask import abort, current_app, g
from sqlalchemy import ColumnElement, func, select, true, update
from sqlalchemy.orm import joinedload, lazyload
from werkzeug.exceptions import Conflict, TooManyRequests
from werkzeug.local import LocalProxy

from srcore import pagination
from srcore.auth import hold_account
from srcore.auth.api import insufficient_scope
from srcore.auth.scopes import Scope, format_scopes, satisfies
from srcore.conditional import form_version, if_match, opened_version_holds
from srcore.db import session as db_session
from srcore.db import utcnow
from srcore.outbound.targets import problem_for
from srcore.pagination import CursorList
from srcore.service import state
from srcore.signatures import generate_secret
from srcore.validation import Validation
from srcore.webhooks.catalog import PING, PingData
from srcore.webhooks.delivery import redeliver as make_due
from srcore.webhooks.fanout import event_scope
from srcore.webhooks.models import ANY_CLIENT, Attempt, Delivery, OutboxRow, Subscription
from srcore.webhooks.outbox import dump_payload, webhooks_state
from srcore.webhooks.shapes import DeliveryJSON, SubscriptionJSON, delivery_json, subscription_json

if TYPE_CHECKING:
    from srcore.auth.tokens import AccessToken

__all__ = [
    "DELIVERY",
    "SUBSCRIPTION",
    "Subscriber",
    "current",
    "events_scopes",
    "read_overlap",
    "read_page",
    "read_subscription",
]

log = logging.getLogger("srcore.webhooks")

#: The URL parts of a subscription and of one of its deliveries.
SUBSCRIPTION = "/<id:subscription_id>"
DELIVERY = "<id(max=9223372036854775807):delivery_id>"
read_page = partial(pagination.read_page, max_limit=50, default_limit=20)
_page = partial(pagination.cursor_page, db_session, max_limit=50, default_limit=20)
MAX_SUBSCRIPTIONS = 100
#: The newest attempts of a delivery its log shows: redeliveries by hand have no limit.
ATTEMPTS_SHOWN = 20
#: The least time between two test events to one subscription.
PING_INTERVAL = timedelta(seconds=30)
#: How long, in seconds, the old secret keeps signing after a rotation, and the most.
ROTATION_OVERLAP = 24 * 3600
MAX_OVERLAP = 7 * 24 * 3600
#: ``kind:id``, e.g. ``tracker:12``; the kind is a word, the id a URL-safe token.
_RESOURCE = re.compile(r"[a-z][a-z0-9_]{0,62}:[A-Za-z0-9._~-]{1,190}")
#: What a create or a change sent: url, events, resource, enabled; None is "not sent".
_Input = tuple[str | None, tuple[str, ...] | None, str | None, bool | None]


def events_scopes() -> frozenset[Scope]:
    """The scopes receiving every event open to users (what a web user holds)."""
    manifest = state().manifest
    return frozenset(event_scope(manifest, event) for event in manifest.user_events)


def _read_events(valid: Validation) -> tuple[str, ...] | None:
    """Declared event names open to subscribers, at least one: a JSON list, or a form's
    checked boxes, each of which may hold several names separated by spaces or commas."""
    manifest = state().manifest
    sent = valid.optional("events", list[str], max_length=256, split=valid.source == "form")
    if valid.error_for("events"):
        return None
    names = sorted({name for item in sent or () for name in item.split(",") if name})
    subscribable = [event.name for event in manifest.user_events]
    unknown = [repr(name[:64]) for name in names if manifest.event(name) is None]
    internal = [repr(name) for name in names if name not in subscribable]
    if not names:
        reason = "Choose at least one event."
    elif unknown:
        sends = ", ".join(subscribable) or "none"
        event = "events" if len(unknown) > 1 else "event"
        reason = f"Unknown {event} {', '.join(unknown[:5])}; {manifest.name} sends: {sends}."
    elif internal:
        shown = ", ".join(internal)
        verb = "are" if len(internal) > 1 else "is"
        reason = f"{shown} {verb} internal to the network: nobody can subscribe to it."
    else:
        return tuple(names)
    valid.error(reason, "events")
    return None


def read_subscription(valid: Validation, *, partial: bool = False, edit: bool = False) -> _Input:
    """url, events and maybe a ``resource`` such as ``tracker:12``; with *partial* (a
    PATCH), url, events and enabled, each only if sent; a PATCH and an *edit* (the pages'
    form: url and events) take no resource (it is fixed)."""
    if (partial or edit) and "resource" in valid:
        # The edit form has no field for one: its reason goes at the top of the form.
        fixed = "A webhook's resource cannot change; make a new webhook."
        valid.error(fixed, None if edit else "resource")
    url = valid.require("url", "url", label="The URL") if not partial or "url" in valid else None
    events = _read_events(valid) if not partial or "events" in valid else None
    resource = None if partial or edit else valid.optional("resource", max_length=256)
    if resource is not None and not _RESOURCE.fullmatch(resource):
        valid.error("Must name one resource, like tracker:12.", "resource")
        resource = None
    enabled = valid.require("enabled", bool) if partial and "enabled" in valid else None
    return url, events, resource, enabled


#: What an edit form sent from a page opened before another change to its webhook meets.
CHANGED_MEANWHILE = (
    "This webhook was changed (on another page, or through the API) since you opened this "
    "form. Your changes are below, unsaved: save them again to replace the other change."
)


def subscription_version(sub: SubscriptionJSON) -> str:
    """A short digest of what the edit form changes, carried by the form as ``was``."""
    return form_version(sub["url"], " ".join(sub["events"]))


def read_overlap(valid: Validation) -> timedelta:
    """How long the old secret keeps signing after a rotation: ``overlap`` seconds."""
    seconds = valid.optional("overlap", int, min=0, max=MAX_OVERLAP, default=ROTATION_OVERLAP)
    return timedelta(seconds=ROTATION_OVERLAP if seconds is None else seconds)


def _sent(delivery: Delivery) -> DeliveryJSON:
    """Wake the dispatcher for a delivery made due by hand (committed already)."""
    webhooks_state().dispatcher.nudge([delivery.id])
    return delivery_json(delivery)


@dataclass(frozen=True)
class Subscriber:
    """Who the request acts for, doing what it may with its subscriptions: the web pages
    with all of the user's, a *token* with those its own client set up, which it stamps
    with its client, grant and id (see :mod:`.accounts` for what revoking them does)."""

    user_id: int | None
    #: The scopes of this service it holds now: a *token*'s limit what it may receive or manage.
    scopes: frozenset[Scope]
    token: AccessToken | None = None

    def check(self, events: Iterable[str], *, write: bool = True) -> None:
        """403 unless a token may receive the declared ones of *events* or, to manage
        subscriptions to them (*write*), holds their scopes read-write."""
        manifest = state().manifest
        declared = filter(None, map(manifest.event, events))
        needed = {event_scope(manifest, e, "RW" if write else "RO") for e in declared}
        missing = format_scopes(s for s in needed if not satisfies(self.scopes, s))
        if self.token is None or not missing:
            return
        doing = "Managing webhooks of" if write else "Receiving"
        reason = f"{doing} these events needs the scope {missing}, which this token does not hold."
        abort(insufficient_scope(reason, missing, field="events"))

    def _owners(self) -> ColumnElement[bool]:
        """The WHERE clause of all its owner's subscriptions (never trusted ones)."""
        visible = Subscription.trusted.is_(False)
        if self.user_id is not None:
            return visible & (Subscription.owner_id == self.user_id)
        assert self.token is not None  # acting for no user: a client's own token
        client = Subscription.owner_client == self.token.client_id
        return visible & Subscription.owner_id.is_(None) & client

    def owned(self) -> ColumnElement[bool]:
        """The WHERE clause of its subscriptions: a token's are those of its client, so one
        application never sees, nor changes, another's webhooks (nor those of the pages)."""
        if self.token is None:
            return self._owners()
        return self._owners() & Subscription.client_id.in_([self.token.client_id, ANY_CLIENT])

    def _stamp(self, sub: Subscription) -> None:
        """Stamp *sub* with the token setting it up: a user's token and grant (revoking either
        disables it); a service subscriber's lasts as long as its client."""
        if self.token is not None:
            sub.client_id = self.token.client_id
        if self.token is not None and self.user_id is not None:
            grant = self.token.claims.get("grant")
            sub.token_id, sub.grant_id = self.token.jti, grant if isinstance(grant, str) else None

    def receivable(self) -> ColumnElement[bool]:
        """The WHERE clause of the deliveries it may read and send again: test events, and
        those of events its token may receive. A webhook's log keeps the deliveries of events
        it no longer receives, which a token lacking their scope must not see nor resend."""
        if self.token is None:
            return true()
        manifest = state().manifest
        held = [e.name for e in manifest.events if satisfies(self.scopes, event_scope(manifest, e))]
        return Delivery.outbox.has(OutboxRow.event.in_([PING, *held]))

    def find(self, sid: int, write: bool | None = True, hold: bool = True) -> Subscription:
        """Its subscription (or 404), if it may manage (*write*) or receive it (None: as is);
        to manage it, read again and held till the commit unless *hold* is False: racing
        changes wait, or find it gone. Its deliveries are only changed after (see
        :func:`.delivery.lock_subscriptions`)."""
        mine = Subscription.id == sid, self.owned()
        if write and hold:  # a no-op UPDATE: on SQLite, the write lock before anything is read
            hold_it = update(Subscription).where(*mine).values(updated=Subscription.updated)
            db_session.execute(hold_it.execution_options(synchronize_session=False))
        query = select(Subscription).where(*mine).execution_options(populate_existing=True)
        sub = db_session.scalar(query) or abort(404)
        if write is not None:
            self.check(sub.event_names, write=write)
        return sub

    def show(self, subscription_id: int) -> SubscriptionJSON:
        return subscription_json(self.find(subscription_id, None))

    def listing(self) -> CursorList[SubscriptionJSON]:
        """The page of its subscriptions (newest first) the request asks for."""
        page = _page(select(Subscription).where(self.owned()), key=[Subscription.id])
        return page.listing(subscription_json)

    def _screen(self, valid: Validation, url: str | None, events: Iterable[str] | None) -> None:
        """403 unless it may manage *events* (once the input reads well); record why webhooks
        cannot be sent to *url* (None: not a new one)."""
        if valid.ok:
            self.check(events or ())
        problem = url and problem_for(current_app, url)
        if problem:
            valid.error(f"Webhooks cannot be sent there: {problem}.", "url")

    def create(self, valid: Validation) -> SubscriptionJSON:
        url, events, resource, _ = read_subscription(valid)
        valid.finish()  # an unknown field is a 400 before a missing scope's 403
        sub = Subscription(
            owner_id=self.user_id,
            owner_client=self.token.client_id if self.user_id is None and self.token else None,
            url=url,
            events=" ".join(events or ()),
            resource=resource,
            scopes=format_scopes(self.scopes),
            secret=generate_secret(),
            confirmed_at=utcnow(),
        )
        # Checked even when other fields are wrong, so a form shows every problem at once.
        self._screen(valid, url, events)
        can_receive = webhooks_state().can_receive
        if valid.ok and events and resource and can_receive is not None:
            # Limited to one resource: one its owner can see (asked with a probe event).
            probe = OutboxRow(event=events[0], resource=resource, payload="{}")
            reason = f"There is no {resource} that you can see."
            valid.expect(can_receive(sub, probe), reason, field="resource")
        valid.raise_if_invalid()
        self._stamp(sub)
        model = state().user_model
        owner = (
            None if self.user_id is None or model is None else db_session.get(model, self.user_id)
        )
        if owner is not None:
            # Its owner's deletion, applied meanwhile, drops their subscriptions: it must
            # see this one, or this one must see it (srcore.auth.hold_account).
            hold_account(db_session, owner)
        db_session.add(sub)
        db_session.flush()  # on SQLite, the write lock: one create counts at a time
        if db_session.get_bind().dialect.name == "postgresql":  # one create of an owner at a time
            who = func.hashtext(f"{self.user_id} {sub.owner_client}")
            db_session.execute(select(func.pg_advisory_xact_lock(0x5EB400, who)))
        # The owner's, whichever application set them up.
        if (db_session.scalar(select(func.count()).where(self._owners())) or 0) > MAX_SUBSCRIPTIONS:
            db_session.rollback()
            valid.fail(f"You already have {MAX_SUBSCRIPTIONS} webhooks here; delete one first.")
        db_session.commit()
        owner = sub.owner_client if sub.owner_id is None else f"user {sub.owner_id}"
        log.info("webhook %s subscribed to %s by %s", sub.id, sub.events, owner)
        return subscription_json(sub, secret=True)

    def update(
        self, subscription_id: int, valid: Validation, *, partial: bool = False
    ) -> SubscriptionJSON:
        """Change the url, events and enabled (with *partial*, those sent)."""
        sub = self.find(subscription_id, hold=False)  # not held while the URL's host is looked up
        url, events, _, enabled = read_subscription(valid, partial=partial, edit=not partial)
        valid.finish()  # an unknown field is a 400 before a missing scope's 403
        self._screen(valid, url if url != sub.url else None, events)
        valid.raise_if_invalid()
        sub = self.find(subscription_id)
        # Judged as it is now, held: a change made meanwhile (on its page, through the
        # API) is not overwritten by a client or a form that never saw it.
        now = subscription_json(sub)
        if partial:
            if_match(now)
        elif not opened_version_holds(valid, subscription_version(now), CHANGED_MEANWHILE):
            valid.raise_if_invalid()
        sub.url = url or sub.url
        if events is not None:
            sub.events = " ".join(events)
            sub.scopes = format_scopes(self.scopes)  # it receives what is held today
        # Its owner has seen it as it is now: see srcore.webhooks.accounts.
        sub.confirmed_at = utcnow()
        self._stamp(sub)
        if enabled is not None and enabled != sub.enabled:
            sub.enabled = enabled
            sub.disabled_reason = None if enabled else "Disabled by its owner."
            if enabled:
                sub.failing_since = None
        db_session.commit()
        return subscription_json(sub)

    def delete(self, subscription_id: int, *, conditional: bool = False) -> None:
        """Delete it (*conditional*: unless the request's ``If-Match`` names another
        version, :func:`srcore.conditional.if_match`)."""
        sub = self.find(subscription_id)
        if conditional:
            if_match(subscription_json(sub))
        db_session.delete(sub)
        db_session.commit()

    def rotate(self, subscription_id: int, valid: Validation) -> SubscriptionJSON:
        sub = self.find(subscription_id)
        overlap = read_overlap(valid)
        valid.raise_if_invalid()
        sub.previous_secret = sub.secret if overlap else None
        sub.previous_secret_expires = utcnow() + overlap if overlap else None
        sub.secret = generate_secret()
        self._stamp(sub)
        db_session.commit()
        return subscription_json(sub, secret=True)

    def redeliver(self, subscription_id: int, delivery_id: int) -> DeliveryJSON:
        sub = self.find(subscription_id)
        if not sub.enabled:
            raise Conflict("This webhook is disabled; enable it before redelivering.")
        mine = Delivery.id == delivery_id, Delivery.subscription_id == sub.id, self.receivable()
        query = select(Delivery).where(*mine).with_for_update(of=Delivery)  # claims skip it
        delivery = db_session.scalar(query) or abort(404)
        if not make_due(delivery, now=utcnow()):
            why = "This delivery is being sent right now; ask again once its attempt is logged."
            raise Conflict(why)
        db_session.commit()
        return _sent(delivery)

    def ping(self, subscription_id: int) -> DeliveryJSON:
        """A ``ping`` event to this subscription alone (one per :data:`PING_INTERVAL`): its
        outbox row is written already fanned out; its delivery is logged like any other."""
        sub = self.find(subscription_id)
        if not sub.enabled:
            raise Conflict("This webhook is disabled; enable it before sending a test event.")
        now = utcnow()
        pinged = Delivery.subscription_id == sub.id, OutboxRow.event == PING
        query = select(func.max(Delivery.created)).join(Delivery.outbox).where(*pinged)
        last = db_session.scalar(query)
        if last is not None and now - last < PING_INTERVAL:
            wait = int((last + PING_INTERVAL - now).total_seconds()) + 1
            why = f"A test event was sent moments ago; wait {wait} seconds before sending another."
            raise TooManyRequests(why, retry_after=wait)
        message = f"A test event from {state().manifest.name}: this webhook receives events."
        data: PingData = {"subscription": sub.id, "message": message}
        payload = dump_payload(data)
        row = OutboxRow(event=PING, payload=payload, owner_id=sub.owner_id, fanned_out_at=now)
        delivery = Delivery(subscription=sub, outbox=row, next_attempt_at=now, created=now)
        db_session.add(delivery)
        db_session.commit()
        return _sent(delivery)

    def deliveries(self, subscription_id: int, *, first: bool = False) -> CursorList[DeliveryJSON]:
        """The page of its log that ``?cursor=`` and ``?limit=`` ask for, or the *first*."""
        sub = self.find(subscription_id, write=False)
        # Each delivery with the name of its event, not the whole event, nor its subscription.
        event_name = joinedload(Delivery.outbox).load_only(OutboxRow.event)
        stmt = select(Delivery).where(Delivery.subscription_id == sub.id, self.receivable())
        stmt = stmt.options(lazyload(Delivery.subscription), event_name)
        page = _page(stmt, key=[Delivery.id], valid=Validation(data={}) if first else None)
        attempts: dict[int, list[Attempt]] = {delivery.id: [] for delivery in page.items}
        logged = dict.fromkeys(attempts, 0)
        each = Attempt.delivery_id
        ranked = select(
            Attempt.id,
            func.row_number().over(partition_by=each, order_by=Attempt.id.desc()).label("rank"),
            func.count().over(partition_by=each).label("logged"),
        )
        newest = ranked.where(Attempt.delivery_id.in_(attempts)).subquery()
        found = select(Attempt, newest.c.logged).join(newest, newest.c.id == Attempt.id)
        found = found.where(newest.c.rank <= ATTEMPTS_SHOWN).order_by(Attempt.id.desc())
        for attempt, count in db_session.execute(found):
            attempts[attempt.delivery_id].append(attempt)
            logged[attempt.delivery_id] = count
        return page.listing(
            lambda delivery: delivery_json(delivery, attempts[delivery.id], logged[delivery.id])
        )


#: The subscriber the current request acts for, set by the API's and the pages' before_request.
current = cast(Subscriber, LocalProxy(lambda: g.srcore_webhook_subscriber))
