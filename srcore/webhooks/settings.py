"""What deliveries need from the operator's ``[global]`` config (timings, the retry
schedule, who is told when a subscription is disabled), read once per worker."""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from importlib import metadata
from typing import TYPE_CHECKING
from urllib.parse import quote

from sqlalchemy import select
from sqlalchemy.orm import Session

from srcore.config.keys import parse_duration
from srcore.outbound import BODY_CAP
from srcore.webhooks.models import Subscription

if TYPE_CHECKING:
    from flask import Flask

__all__ = ["MailNotifier", "WebhookSettings", "next_attempt_at", "settings_for"]

log = logging.getLogger("srcore.webhooks")

#: The delay before each attempt, the first's first: ``webhook-retry-schedule``'s default.
SCHEDULE = tuple(
    parse_duration(d) for d in ("0s", "5s", "5m", "30m", "2h", "5h", "10h", "14h", "20h", "24h")
)
#: Each delay is spread by up to this fraction either way, so retries do not arrive in herds.
JITTER = 0.1


def next_attempt_at(
    attempts: int,
    now: datetime,
    rng: random.Random,
    *,
    jitter: float = JITTER,
    schedule: Sequence[timedelta] = SCHEDULE,
) -> datetime | None:
    """When to try again after *attempts* attempts, counting from *now*; None: give up
    (the *schedule*'s length is the number of attempts made at most)."""
    if attempts < 0:
        raise ValueError("attempts must be >= 0")
    if attempts >= len(schedule):
        return None
    seconds = schedule[attempts].total_seconds() * (1.0 + rng.uniform(-jitter, jitter))
    return now + timedelta(seconds=round(seconds, 3))


@dataclass(frozen=True)
class WebhookSettings:
    """The ``[global]`` webhook settings and what deliveries need from the service."""

    timeout: timedelta = timedelta(seconds=15)
    connect_timeout: timedelta = timedelta(seconds=5)
    log_retention: timedelta = timedelta(days=14)
    disable_after: timedelta = timedelta(days=3)
    body_cap: int = BODY_CAP
    user_agent: str = "srcore-webhooks"
    #: Tells a subscription's owner that it was disabled, and why (after the commit).
    notifier: Callable[[Session, Subscription, str], None] | None = None
    schedule: tuple[timedelta, ...] = SCHEDULE
    #: Requests a worker has in flight at once.
    concurrency: int = 16
    #: Of those, how many may go to one ``host:port``: a slow receiver holds up only its own.
    per_host: int = 4
    #: How long an idle worker waits for a wake-up before it looks at the database again.
    poll_interval: timedelta = timedelta(seconds=1)


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
        # Read before the rollback, which expires them: loaded again, they would hold a
        # connection for as long as the mail server takes.
        sid, url, events = subscription.id, subscription.url, subscription.events
        session.rollback()
        if not email:
            log.warning("subscription %d: its owner has no email here", sid)
            return
        from srcore.mail import mailer

        site = str(st.config.global_["site-name"])
        origin = str(st.section["origin"]).rstrip("/")
        # The URL is its owner's text: one saved before URLs had to be printable could hold
        # a line break, which no mail header may (the mailer would refuse the whole notice).
        shown = "".join(c if c.isprintable() else quote(c) for c in url)
        mailer(self.app).send(
            str(email),
            f"[{site}] webhook disabled: {shown}"[:200],
            f"Your webhook subscription to {st.manifest.name} was disabled.\n\n"
            f"URL: {url}\nEvents: {events}\nReason: {reason}\n\n"
            f"Fix the endpoint, then enable the subscription again at {origin}/webhooks\n",
        )


def settings_for(app: Flask) -> WebhookSettings:
    """The webhook settings of *app*, from ``[global]``, mailing owners through srcore.mail."""
    g = app.extensions["srcore"].config.global_
    try:
        version = metadata.version("srcore")
    except metadata.PackageNotFoundError:
        version = "0"
    return WebhookSettings(
        timeout=g["webhook-timeout"],
        connect_timeout=g["webhook-connect-timeout"],
        log_retention=g["webhook-log-retention"],
        disable_after=g["webhook-disable-after"],
        schedule=tuple(parse_duration(str(d)) for d in g["webhook-retry-schedule"]),
        concurrency=int(g["webhook-concurrency"]),
        poll_interval=g["webhook-poll-interval"],
        user_agent=f"srcore-webhooks/{version}",
        notifier=MailNotifier(app),
    )
