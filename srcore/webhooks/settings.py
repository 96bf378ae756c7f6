"""What deliveries need from the operator's config: timings, the retry schedule, the
address policy, and who to tell when a subscription is disabled; read once per worker
from ``[global]`` and passed down as frozen values.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Protocol

from sqlalchemy import select
from sqlalchemy.orm import Session

from srcore.config.keys import parse_duration
from srcore.outbound import BODY_CAP, AddressPolicy
from srcore.webhooks.models import Subscription

if TYPE_CHECKING:
    from flask import Flask

__all__ = [
    "JITTER",
    "MAX_ATTEMPTS",
    "SCHEDULE",
    "DisabledNotifier",
    "MailNotifier",
    "WebhookSettings",
    "format_delay",
    "next_attempt_at",
    "policy_for",
    "retry_delay",
    "settings_for",
]

log = logging.getLogger("srcore.webhooks")

#: Delay before attempt n+1 (index n); the first attempt is immediate. The sum is ~3 days.
SCHEDULE: tuple[timedelta, ...] = (
    timedelta(0),
    timedelta(seconds=5),
    timedelta(minutes=5),
    timedelta(minutes=30),
    timedelta(hours=2),
    timedelta(hours=5),
    timedelta(hours=10),
    timedelta(hours=14),
    timedelta(hours=20),
    timedelta(hours=24),
)
MAX_ATTEMPTS = len(SCHEDULE)
#: Each delay is spread by up to this fraction either way, so retries do not arrive in herds.
JITTER = 0.1


def retry_delay(
    attempts: int,
    rng: random.Random,
    *,
    jitter: float = JITTER,
    schedule: Sequence[timedelta] = SCHEDULE,
) -> timedelta | None:
    """The wait before the next attempt after *attempts* attempts; None: give up (the
    *schedule*'s length is the number of attempts made at most)."""
    if attempts < 0:
        raise ValueError("attempts must be >= 0")
    if attempts >= len(schedule):
        return None
    base = schedule[attempts]
    if not base:
        return base
    factor = 1.0 + rng.uniform(-jitter, jitter)
    return timedelta(seconds=round(base.total_seconds() * factor, 3))


def next_attempt_at(
    attempts: int,
    now: datetime,
    rng: random.Random,
    *,
    jitter: float = JITTER,
    schedule: Sequence[timedelta] = SCHEDULE,
) -> datetime | None:
    """When to try again after *attempts* attempts, counting from *now*; None: give up."""
    delay = retry_delay(attempts, rng, jitter=jitter, schedule=schedule)
    return None if delay is None else now + delay


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
    #: Delay before attempt n+1 at index n; its length is the attempts made at most.
    schedule: tuple[timedelta, ...] = SCHEDULE
    #: Requests a worker has in flight at once (its sending threads).
    concurrency: int = 16
    #: Of those, how many may go to one receiver (``host:port``) at once, so that a slow
    #: or dead receiver holds up only its own deliveries.
    per_host: int = 4


def format_delay(delay: timedelta) -> str:
    """A short human form of a delay: ``5 s``, ``5 min``, ``2 h``."""
    seconds = round(delay.total_seconds())
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{round(seconds / 60)} min"
    return f"{round(seconds / 3600)} h"


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


def settings_for(app: Flask) -> WebhookSettings:
    """The webhook settings of *app*, from ``[global]``, mailing owners through srcore.mail."""
    from importlib import metadata

    g = app.extensions["srcore"].config.global_
    defaults = WebhookSettings()

    def duration(key: str, default: timedelta) -> timedelta:
        value = g.get(key)
        return value if isinstance(value, timedelta) else default

    try:
        version = metadata.version("srcore")
    except metadata.PackageNotFoundError:
        version = "0"
    schedule = g.get("webhook-retry-schedule")
    return WebhookSettings(
        timeout=duration("webhook-timeout", defaults.timeout),
        connect_timeout=duration("webhook-connect-timeout", defaults.connect_timeout),
        log_retention=duration("webhook-log-retention", defaults.log_retention),
        disable_after=duration("webhook-disable-after", defaults.disable_after),
        schedule=tuple(parse_duration(str(d)) for d in schedule) if schedule else defaults.schedule,
        concurrency=int(g.get("webhook-concurrency") or defaults.concurrency),
        user_agent=f"srcore-webhooks/{version}",
        notifier=MailNotifier(app),
    )


def policy_for(app: Flask) -> AddressPolicy:
    """The address policy of *app*, from ``[global] allow-private-webhook-targets`` and
    ``webhook-allowed-ports``."""
    g = app.extensions["srcore"].config.global_
    networks = g.get("allow-private-webhook-targets") or ()
    ports = g.get("webhook-allowed-ports")
    return AddressPolicy.from_networks(
        (str(n) for n in networks),
        ports=None if ports is None else [str(p) for p in ports],
        ports_setting="webhook-allowed-ports",
    )
