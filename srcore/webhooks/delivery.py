"""``deliver_one``: the one delivery function both dispatchers call.

It sends one delivery's event to its subscription's URL, signed per Standard Webhooks,
through the SSRF-guarded HTTP session it is given, writes what happened to the delivery
log and decides what comes next: delivered on 2xx; the subscription disabled at once on
410 Gone; otherwise a retry per :mod:`.schedule`, until the subscription has been failing
for ``webhook-disable-after``, when it is disabled and its owner told by mail.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol

import requests
from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from srcore.webhooks.models import Attempt, Delivery, DeliveryStatus, OutboxRow, Subscription
from srcore.webhooks.schedule import next_attempt_at
from srcore.webhooks.signing import signature_header
from srcore.webhooks.ssrf import AddressPolicy, RefusedAddress

if TYPE_CHECKING:
    from flask import Flask

__all__ = [
    "BODY_CAP",
    "DeliveryResult",
    "DisabledNotifier",
    "WebhookSettings",
    "build_body",
    "deliver_one",
    "format_delay",
    "prune_log",
    "redeliver",
    "settings_for",
]

log = logging.getLogger("srcore.webhooks")

#: Request and response bodies are kept in the delivery log up to this many bytes.
BODY_CAP = 16 * 1024
_ERROR_LENGTH = 500


class DisabledNotifier(Protocol):
    """Tells a subscription's owner that it was disabled (called after the commit)."""

    def __call__(self, session: Session, subscription: Subscription, reason: str) -> None: ...


@dataclass(frozen=True)
class WebhookSettings:
    """The ``[global]`` webhook settings and what deliveries need from the service."""

    timeout: timedelta = timedelta(seconds=15)
    connect_timeout: timedelta = timedelta(seconds=5)
    log_retention: timedelta = timedelta(days=14)
    disable_after: timedelta = timedelta(days=3)
    body_cap: int = BODY_CAP
    user_agent: str = "srcore-webhooks"
    notifier: DisabledNotifier | None = None


@dataclass(frozen=True)
class DeliveryResult:
    """What one call of :func:`deliver_one` did."""

    delivered: bool
    status: int | None
    error: str | None
    retry_at: datetime | None
    disabled: bool
    #: False when there was nothing to send (already done, cancelled, unknown id).
    attempted: bool = True
    message_id: str | None = None
    duration_ms: int = 0


def build_body(outbox: OutboxRow) -> bytes:
    """The JSON body of an event: ``{"type", "timestamp", "data"}``, the same every retry."""
    document = {
        "type": outbox.event,
        "timestamp": outbox.created.isoformat(),
        "data": json.loads(outbox.payload),
    }
    return json.dumps(document, separators=(",", ":")).encode("utf-8")


def format_delay(delay: timedelta) -> str:
    """A short human form of a delay: ``5 s``, ``5 min``, ``2 h``."""
    seconds = round(delay.total_seconds())
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{round(seconds / 60)} min"
    return f"{round(seconds / 3600)} h"


def _text(data: bytes, cap: int) -> str:
    return data[:cap].decode("utf-8", errors="replace")


@dataclass
class _Exchange:
    status: int | None = None
    headers: Mapping[str, str] | None = None
    body: bytes = b""
    error: str | None = None


def _post(
    http: requests.Session,
    url: str,
    headers: Mapping[str, str],
    body: bytes,
    settings: WebhookSettings,
) -> _Exchange:
    deadline = time.monotonic() + settings.timeout.total_seconds()
    timeout = (settings.connect_timeout.total_seconds(), settings.timeout.total_seconds())
    try:
        response = http.post(
            url,
            data=body,
            headers=dict(headers),
            timeout=timeout,
            allow_redirects=False,
            stream=True,
        )
    except RefusedAddress as exc:
        return _Exchange(error=str(exc))
    except requests.exceptions.ConnectTimeout:
        return _Exchange(error="connect timeout")
    except requests.exceptions.ReadTimeout:
        return _Exchange(error="timeout waiting for the response")
    except requests.exceptions.ConnectionError as exc:
        return _Exchange(error=f"connection failed: {_root_cause(exc)}")
    except requests.exceptions.RequestException as exc:
        return _Exchange(error=f"request failed: {exc}")
    exchange = _Exchange(status=response.status_code, headers=dict(response.headers))
    try:
        chunks: list[bytes] = []
        size = 0
        for chunk in response.iter_content(chunk_size=4096):
            chunks.append(chunk)
            size += len(chunk)
            if size >= settings.body_cap or time.monotonic() > deadline:
                break
        exchange.body = b"".join(chunks)
    except requests.exceptions.RequestException as exc:
        exchange.error = f"reading the response failed: {_root_cause(exc)}"
    finally:
        response.close()
    if 300 <= response.status_code < 400:
        target = response.headers.get("location", "")
        exchange.error = f"redirect to {target!r} not followed"
    return exchange


def _root_cause(exc: BaseException) -> str:
    while exc.__cause__ is not None or exc.__context__ is not None:
        nxt = exc.__cause__ or exc.__context__
        assert nxt is not None
        exc = nxt
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    return str(exc) or type(exc).__name__


def _disable(session: Session, subscription: Subscription, reason: str, now: datetime) -> None:
    subscription.enabled = False
    subscription.disabled_reason = reason[:512]
    subscription.updated = now
    session.execute(
        update(Delivery)
        .where(
            Delivery.subscription_id == subscription.id,
            Delivery.status == DeliveryStatus.pending.value,
        )
        .values(status=DeliveryStatus.cancelled.value, claimed_until=None)
    )


def deliver_one(
    session: Session,
    delivery_id: int,
    *,
    http: requests.Session,
    clock: Callable[[], datetime],
    policy: AddressPolicy,
    config: WebhookSettings,
    rng: random.Random | None = None,
    trusted_http: requests.Session | None = None,
) -> DeliveryResult:
    """Make one attempt at delivery *delivery_id* and record it; commits *session*.

    *http* must be a session built by :func:`srcore.webhooks.ssrf.guarded_session` with
    *policy* (the adapter checks the peer address; *policy* is kept for the log). *clock*
    gives the current aware UTC time; *rng* the jitter of retries. *trusted_http* (from
    :func:`srcore.webhooks.ssrf.trusted_session`) sends the deliveries of trusted
    subscriptions only, the first-party ones the operator's config made, whose internal
    targets the guard would refuse; without it they go through *http* like any other.
    """
    del policy  # enforced by http's adapter on the address actually connected to
    rng = rng or random.Random()
    delivery = session.get(Delivery, delivery_id)
    if delivery is None or delivery.status != DeliveryStatus.pending.value:
        done = delivery is not None and delivery.status == DeliveryStatus.delivered.value
        session.rollback()
        return DeliveryResult(done, None, None, None, False, attempted=False)
    subscription = delivery.subscription
    outbox = delivery.outbox
    now = clock()
    if not subscription.enabled:
        delivery.status = DeliveryStatus.cancelled.value
        delivery.claimed_until = None
        session.commit()
        return DeliveryResult(False, None, "subscription disabled", None, True, attempted=False)

    body = build_body(outbox)
    timestamp = int(now.timestamp())
    headers = {
        "content-type": "application/json",
        "user-agent": config.user_agent,
        "webhook-id": delivery.message_id,
        "webhook-timestamp": str(timestamp),
    }
    signature = signature_header(
        subscription.signing_secrets(now), delivery.message_id, timestamp, body
    )
    started = time.perf_counter()
    sender = trusted_http if subscription.trusted and trusted_http is not None else http
    exchange = _post(
        sender, subscription.url, {**headers, "webhook-signature": signature}, body, config
    )
    duration_ms = round((time.perf_counter() - started) * 1000)

    session.add(
        Attempt(
            delivery_id=delivery.id,
            created=now,
            request_headers=json.dumps(headers),  # the signature is not logged
            request_body=_text(body, config.body_cap),
            response_status=exchange.status,
            response_headers=json.dumps(dict(exchange.headers or {})),
            response_body=_text(exchange.body, config.body_cap),
            duration_ms=duration_ms,
            error=exchange.error[:_ERROR_LENGTH] if exchange.error else None,
        )
    )
    delivery.attempts += 1
    delivery.claimed_until = None
    delivery.last_status_code = exchange.status
    status = exchange.status
    where = f"{outbox.event} {delivery.message_id} to {subscription.url}"

    if status is not None and 200 <= status < 300 and exchange.error is None:
        delivery.status = DeliveryStatus.delivered.value
        delivery.delivered_at = now
        if subscription.failing_since is not None:
            subscription.failing_since = None
        session.commit()
        log.info("delivered %s in %d ms", where, duration_ms)
        return DeliveryResult(
            True, status, None, None, False, message_id=delivery.message_id, duration_ms=duration_ms
        )

    error = exchange.error or f"HTTP {status}"
    reason: str | None = None
    retry_at: datetime | None = None
    if status == 410:
        reason = f"{subscription.url} answered 410 Gone"
    else:
        failing_since = subscription.failing_since or now
        subscription.failing_since = failing_since
        if now - failing_since >= config.disable_after:
            reason = f"every delivery to {subscription.url} failed since {failing_since:%Y-%m-%d %H:%M} UTC (last: {error})"  # noqa: E501
    if reason is not None:
        delivery.status = DeliveryStatus.failed.value
        _disable(session, subscription, reason, now)
        log.warning("disabled subscription %d: %s", subscription.id, reason)
    else:
        retry_at = next_attempt_at(delivery.attempts, now, rng)
        if retry_at is None:
            delivery.status = DeliveryStatus.failed.value
            log.warning("gave up on %s after %d attempts: %s", where, delivery.attempts, error)
        else:
            delivery.next_attempt_at = retry_at
            log.info(
                "retrying %s in %s: %s",
                delivery.message_id,
                format_delay(retry_at - now),
                status if status is not None else error,
            )
    message_id = delivery.message_id
    session.commit()
    if reason is not None and config.notifier is not None:
        try:
            config.notifier(session, subscription, reason)
        except Exception:  # the subscription is disabled either way
            log.exception("could not tell the owner of subscription %d", subscription.id)
    return DeliveryResult(
        False,
        status,
        error,
        retry_at,
        reason is not None,
        message_id=message_id,
        duration_ms=duration_ms,
    )


def redeliver(session: Session, delivery_id: int, *, now: datetime) -> bool:
    """Queue a delivery again (manual redelivery): same message id, due at *now*.

    Returns False when the delivery does not exist or its subscription is disabled. Does
    not commit.
    """
    delivery = session.get(Delivery, delivery_id)
    if delivery is None or not delivery.subscription.enabled:
        return False
    delivery.status = DeliveryStatus.pending.value
    delivery.next_attempt_at = now
    delivery.claimed_until = None
    return True


def prune_log(session: Session, *, now: datetime, retention: timedelta) -> int:
    """Delete delivery-log attempts older than *retention*; returns how many. Commits."""
    result = session.execute(delete(Attempt).where(Attempt.created < now - retention))
    session.commit()
    return int(getattr(result, "rowcount", 0) or 0)


class MailNotifier:
    """Mails a user subscriber that their subscription was disabled; services are skipped."""

    def __init__(self, app: Flask) -> None:
        self.app = app

    def __call__(self, session: Session, subscription: Subscription, reason: str) -> None:
        st = self.app.extensions["srcore"]
        model = st.user_model
        if subscription.owner_id is None or model is None:
            return
        email = session.scalar(select(model.email).where(model.id == subscription.owner_id))
        session.rollback()
        if not email:
            log.warning("subscription %d: its owner has no email here", subscription.id)
            return
        from srcore.mail import mailer

        site = str(st.config.global_["site-name"])
        origin = str(st.section["origin"]).rstrip("/")
        mailer(self.app).send(
            str(email),
            f"[{site}] webhook disabled: {subscription.url}"[:200],
            f"Your webhook subscription to {st.manifest.name} was disabled.\n\n"
            f"URL: {subscription.url}\nEvents: {subscription.events}\nReason: {reason}\n\n"
            f"Fix the endpoint, then enable the subscription again at {origin}/webhooks\n",
        )


def _duration(section: Mapping[str, Any], key: str, default: timedelta) -> timedelta:
    try:
        value = section[key]
    except KeyError:
        return default
    return value if isinstance(value, timedelta) else default


def settings_for(app: Flask) -> WebhookSettings:
    """The webhook settings of *app*, from ``[global]``, mailing owners through srcore.mail."""
    from importlib import metadata

    g = app.extensions["srcore"].config.global_
    defaults = WebhookSettings()
    try:
        version = metadata.version("srcore")
    except metadata.PackageNotFoundError:
        version = "0"
    return WebhookSettings(
        timeout=_duration(g, "webhook-timeout", defaults.timeout),
        connect_timeout=_duration(g, "webhook-connect-timeout", defaults.connect_timeout),
        log_retention=_duration(g, "webhook-log-retention", defaults.log_retention),
        disable_after=_duration(g, "webhook-disable-after", defaults.disable_after),
        user_agent=f"srcore-webhooks/{version}",
        notifier=MailNotifier(app),
    )


def policy_for(app: Flask) -> AddressPolicy:
    """The address policy of *app*, from ``[global] allow-private-webhook-targets``."""
    g = app.extensions["srcore"].config.global_
    try:
        networks = g["allow-private-webhook-targets"] or ()
    except KeyError:
        networks = ()
    return AddressPolicy.from_networks(str(n) for n in networks)


# ``OutboxRow`` is re-exported for the dispatchers' type hints.
_ = OutboxRow
