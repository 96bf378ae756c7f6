"""The mails meta sends: plain text rendered from ``templates/meta/mail/<kind>.txt``.

Links in them are built on ``[meta] origin``, never on the Host header of the request
that caused the mail (which a client chooses).
"""

from __future__ import annotations

import logging
from typing import Any

from flask import render_template, url_for

import srcore
from srcore.mail import MailError, mailer

__all__ = ["SUBJECTS", "absolute_url", "send_mail"]

log = logging.getLogger("meta")

SUBJECTS = {
    "confirm": "Confirm your email address",
    "change-email": "Confirm your new email address",
    "change-email-notice": "Your email address is being changed",
    "reset": "Reset your password",
    "password-changed": "Your password was changed",
}


def absolute_url(endpoint: str, **values: Any) -> str:
    """The address of *endpoint* on meta's configured origin."""
    origin = str(srcore.state().section["origin"]).rstrip("/")
    return origin + url_for(endpoint, **values)


def send_mail(kind: str, to: str, **context: Any) -> bool:
    """Render and send mail *kind* to *to*; return False (and log) if it could not be sent."""
    st = srcore.state()
    site = str(st.config.global_["site-name"])
    text = render_template(
        f"meta/mail/{kind}.txt", site_name=site, absolute_url=absolute_url, **context
    )
    try:
        mailer().send(to, f"{SUBJECTS[kind]} · {site}", text)
    except MailError as exc:
        log.error("cannot send the %s mail to %s: %s", kind, to, exc)
        return False
    return True
