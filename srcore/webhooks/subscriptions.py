"""Who may subscribe to what, and reading a subscription from a form or a JSON body.

A service declares its events in ``service.yaml``, each with the scope a subscriber needs
to receive it. A subscriber may only subscribe to events whose scope it holds (read-only
access is enough); the scopes it held are stored on the subscription, so it never
receives an event it could not have read through the API. Plain functions over the
manifest, scopes and submitted values; the Flask glue is in :mod:`.views`.
"""

from __future__ import annotations

import ipaddress
import re
import socket
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from srcore.auth.scopes import Access, Scope, format_scopes
from srcore.manifest import Manifest
from srcore.validation import Invalid, Validation

if TYPE_CHECKING:
    from srcore.outbound.policy import AddressPolicy

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
    "target_problem",
]

#: How long the previous secret keeps signing after a rotation, unless asked otherwise.
ROTATION_OVERLAP = timedelta(hours=24)
#: The longest overlap a rotation may ask for.
MAX_OVERLAP = timedelta(days=7)
RESOURCE_MAX = 256
#: ``kind:id``, e.g. ``tracker:12``; the kind is a word, the id a URL-safe token.
_RESOURCE = re.compile(r"[a-z][a-z0-9_]{0,62}:[A-Za-z0-9._~-]{1,190}")
_EVENT_SPLIT = re.compile(r"[\s,]+")
#: Hosts that are this machine or its private network whatever the resolver says.
_LOCAL_SUFFIXES = (".localhost", ".local", ".internal", ".localdomain")
#: How long a subscribe-time name lookup may take before the check is left to delivery.
RESOLVE_TIMEOUT = 2.0


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
    """The scopes that receive every event of *manifest* users may subscribe to (what a
    web user holds)."""
    return frozenset(Scope(manifest.id, event.scope, "RO") for event in manifest.user_events)


def missing_scopes(
    manifest: Manifest, events: Iterable[str], held: Iterable[Scope], *, access: Access = "RO"
) -> list[Scope]:
    """The scopes *events* need with *access* that *held* does not satisfy, sorted, without
    repeats."""
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
    valid: Validation,
    raw_events: object,
    manifest: Manifest,
    *,
    partial: bool = False,
    events_given: bool = True,
) -> SubscriptionInput:
    """Read url, events, resource and enabled into a :class:`SubscriptionInput`.

    With *partial* (PATCH) only the fields present are read, and ``resource`` is not
    (a subscription's resource is fixed at creation). *raw_events* is the submitted value
    of ``events`` (a list, or a form's list of values); *events_given* says whether the
    field was sent at all.
    """
    found = SubscriptionInput()
    if not partial or "url" in valid:
        found.url = valid.require("url", "url", label="The URL")
    if not partial or events_given:
        from_form = valid.source == "form"
        if valid.error_for("events"):
            pass  # not a list of names: already said
        elif raw_events is None or raw_events == [] or raw_events == "":
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


# -- the address a subscription points at --------------------------------------------------

_Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def _resolve(host: str, port: int, timeout: float) -> list[_Address] | None:
    """The addresses of *host*, or None when the lookup fails or takes too long."""
    found: list[list[_Address]] = []

    def lookup() -> None:
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError):
            return
        addresses: list[_Address] = []
        for info in infos:
            try:
                addresses.append(ipaddress.ip_address(str(info[4][0]).split("%")[0]))
            except ValueError:
                continue
        found.append(addresses)

    thread = threading.Thread(target=lookup, name="srcore-webhook-resolve", daemon=True)
    thread.start()
    thread.join(timeout)
    return found[0] if found else None


Resolver = Callable[[str, int, float], "list[_Address] | None"]


def target_problem(
    url: str,
    policy: AddressPolicy,
    *,
    resolve: Resolver | None = _resolve,
    timeout: float = RESOLVE_TIMEOUT,
) -> str | None:
    """Why *url* may not be subscribed (credentials in it, a port the policy does not
    allow, or it reaches a loopback, private, link-local or metadata address) under
    *policy*, or None.

    An early, friendly check: a name that cannot be resolved now is accepted, since every
    delivery checks the address it actually connects to. *resolve* is injectable (tests);
    None skips name lookups and checks address literals only.
    """
    refused = policy.url_refusal(url)
    if refused is not None:
        return refused
    parts = urlsplit(url)
    host = (parts.hostname or "").rstrip(".").lower()
    if not host:
        return "the URL has no host"
    try:
        literal: _Address | None = ipaddress.ip_address(host.split("%")[0])
    except ValueError:
        literal = None
    if literal is not None:
        reason = policy.refusal(literal)
        return f"{literal} is {reason}" if reason else None
    if host == "localhost" or host.endswith(_LOCAL_SUFFIXES):
        if host.endswith("localhost") and policy.refusal("127.0.0.1") is None:
            return None
        return f"{host} is a local host name"
    if resolve is None:
        return None
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return "the URL's port is not valid"
    addresses = resolve(host, port, timeout)
    for address in addresses or ():
        reason = policy.refusal(address)
        if reason is not None:
            return f"{host} resolves to {address}, which is {reason}"
    return None


def subscription_scopes(subscriber: Subscriber, manifest: Manifest) -> str:
    """The scopes to store on a subscription: the subscriber's scopes of this service."""
    return format_scopes(s for s in subscriber.scopes if s.service == manifest.id)
