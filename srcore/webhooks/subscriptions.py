"""Who may subscribe to what, and reading a subscription from a form or a JSON body.

A subscriber may only subscribe to events whose declared scope it holds (read-only is
enough); the scopes it held are stored on the subscription, so it never receives an event
it could not have read through the API. Plain functions over the manifest, scopes and
submitted values, shared by the API and the pages.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta

from srcore.auth.scopes import Access, Scope, format_scopes
from srcore.manifest import Manifest
from srcore.validation import Invalid, Validation

__all__ = [
    "MAX_OVERLAP",
    "RESOURCE_MAX",
    "ROTATION_OVERLAP",
    "Subscriber",
    "SubscriptionInput",
    "event_scope",
    "events_scopes",
    "missing_scopes",
    "read_events",
    "read_overlap",
    "read_resource",
    "read_subscription",
    "secret_hint",
]

#: How long the previous secret keeps signing after a rotation, unless asked otherwise.
ROTATION_OVERLAP = timedelta(hours=24)
#: The longest overlap a rotation may ask for.
MAX_OVERLAP = timedelta(days=7)
RESOURCE_MAX = 256
#: ``kind:id``, e.g. ``tracker:12``; the kind is a word, the id a URL-safe token.
_RESOURCE = re.compile(r"[a-z][a-z0-9_]{0,62}:[A-Za-z0-9._~-]{1,190}")
_EVENT_SPLIT = re.compile(r"[\s,]+")


@dataclass(frozen=True)
class Subscriber:
    """Who owns subscriptions: a user (``user_id``) or a service (``client_id`` alone)."""

    user_id: int | None
    client_id: str | None
    #: The scopes of this service the subscriber holds right now.
    scopes: frozenset[Scope]


@dataclass
class SubscriptionInput:
    """What a create or update submitted; ``None`` means "not given" (PATCH)."""

    url: str | None = None
    events: tuple[str, ...] | None = None
    resource: str | None = None
    enabled: bool | None = None


def event_scope(manifest: Manifest, name: str, access: Access = "RO") -> Scope:
    """The scope of event *name* (which must be declared) with *access*: ``RO`` receives
    it, ``RW`` also manages (creates, changes, deletes) subscriptions to it."""
    event = manifest.event(name)
    if event is None:
        raise KeyError(name)
    return Scope(manifest.id, event.scope, access)


def events_scopes(manifest: Manifest) -> frozenset[Scope]:
    """The scopes receiving every event users may subscribe to (what a web user holds)."""
    return frozenset(Scope(manifest.id, event.scope, "RO") for event in manifest.user_events)


def missing_scopes(
    manifest: Manifest, events: Iterable[str], held: Iterable[Scope], *, access: Access = "RO"
) -> list[Scope]:
    """The scopes *events* need with *access* that *held* does not satisfy, sorted."""
    granted = frozenset(held)
    needed = {event_scope(manifest, name, access) for name in events}
    return sorted(s for s in needed if not any(g.satisfies(s) for g in granted))


def secret_hint(secret: str) -> str:
    """The end of a secret, for recognising it without revealing it."""
    return "whsec_…" + secret[-4:]


def read_events(raw: object, manifest: Manifest, *, from_form: bool) -> tuple[str, ...]:
    """Check a list of event names: every one declared by *manifest* and open to
    subscribers (not ``internal``), at least one.

    JSON sends a list of strings; a form sends the checked boxes (several values) or one
    string with names separated by spaces or commas. Returns them sorted, without repeats.
    """
    items: list[object]
    if isinstance(raw, str):
        if not from_form:
            raise Invalid("Must be a list of event names.")
        items = [part for part in _EVENT_SPLIT.split(raw) if part]
    elif isinstance(raw, list | tuple):
        items = list(raw)
        if from_form:
            items = [p for item in items if isinstance(item, str) for p in _EVENT_SPLIT.split(item)]
            items = [p for p in items if p]
    else:
        raise Invalid("Must be a list of event names.")
    if not items:
        raise Invalid("Choose at least one event.")
    if len(items) > max(4 * len(manifest.events), 16):
        raise Invalid("Too many event names.")
    names: set[str] = set()
    unknown: list[str] = []
    internal: list[str] = []
    for item in items:
        if not isinstance(item, str):
            raise Invalid("Must be a list of event names.")
        event = manifest.event(item)
        if event is None:
            unknown.append(item)
        elif event.audience == "internal":
            internal.append(item)
        names.add(item)
    if internal and not unknown:
        shown = ", ".join(repr(name) for name in sorted(set(internal)))
        raise Invalid(
            f"{shown} {'are' if len(set(internal)) > 1 else 'is'} internal to the network: "
            "nobody can subscribe to it."
        )
    if unknown or internal:
        shown = ", ".join(repr(name[:64]) for name in unknown[:5])
        declared = ", ".join(event.name for event in manifest.user_events) or "none"
        plural = "s" if len(unknown) > 1 else ""
        raise Invalid(f"Unknown event{plural} {shown}; {manifest.name} sends: {declared}.")
    return tuple(sorted(names))


def read_resource(raw: object) -> str:
    """Check a resource name such as ``tracker:12``."""
    if not isinstance(raw, str):
        raise Invalid("Must be a string.")
    value = raw.strip()
    if len(value) > RESOURCE_MAX or not _RESOURCE.fullmatch(value):
        raise Invalid("Must name one resource, like tracker:12.")
    return value


def read_subscription(
    valid: Validation, manifest: Manifest, *, partial: bool = False
) -> SubscriptionInput:
    """Read url, events, resource and enabled into a :class:`SubscriptionInput`; with
    *partial* (PATCH) only the fields sent, and never ``resource`` (fixed at creation)."""
    found = SubscriptionInput()
    if not partial or "url" in valid:
        found.url = valid.require("url", "url", label="The URL")
    if not partial or "events" in valid:
        from_form = valid.source == "form"
        # A JSON array of names, or a form's checked boxes (each may hold several names).
        raw_events = valid.optional("events", list[str], max_length=256)
        if valid.error_for("events"):
            pass  # not a list of names: already said
        elif not raw_events:
            valid.error("Choose at least one event.", "events")
        else:
            try:
                found.events = read_events(raw_events, manifest, from_form=from_form)
            except Invalid as exc:
                valid.error(exc.reason, "events")
    if not partial and "resource" in valid:
        raw = valid.optional("resource", max_length=RESOURCE_MAX)
        if raw is not None:
            try:
                found.resource = read_resource(raw)
            except Invalid as exc:
                valid.error(exc.reason, "resource")
    if partial and "enabled" in valid:
        found.enabled = valid.require("enabled", bool)
    return found


def read_overlap(valid: Validation) -> timedelta | None:
    """Read the ``overlap`` of a secret rotation, in seconds (default: a day)."""
    seconds = valid.optional(
        "overlap",
        int,
        min=0,
        max=int(MAX_OVERLAP.total_seconds()),
        default=int(ROTATION_OVERLAP.total_seconds()),
        label="The overlap",
    )
    return timedelta(seconds=seconds) if seconds is not None else None


def subscription_scopes(subscriber: Subscriber, manifest: Manifest) -> str:
    """The scopes to store on a subscription: the subscriber's scopes of this service."""
    return format_scopes(s for s in subscriber.scopes if s.service == manifest.id)
