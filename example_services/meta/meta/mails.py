"""The mails meta sends: plain text rendered from ``templates/meta/mail/<kind>.txt``.

Links in them are built on ``[meta] origin``, never on the Host header of the request
that caused the mail (which a client chooses).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from flask import render_template, url_for

import srcore
from srcore.mail import Mailer, MailError, mailer

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

__all__ = ["SUBJECTS", "Prepared", "absolute_url", "mail_on_commit", "prepare_mail", "send_mail"]

log = logging.getLogger("meta")

SUBJECTS = {
    "confirm": "Confirm your email address",
    "change-email": "Confirm your new email address",
    "change-email-notice": "Your email address is being changed",
    "change-email-taken": "Your email address was asked for by another account",
    "reset": "Reset your password",
    "password-changed": "Your password was changed",
    "factor-added": "Two-factor sign-in is on",
    "factor-removed": "Two-factor sign-in is off",
    "factors-reset": "An administrator turned two-factor sign-in off",
    "passkey-added": "A passkey was added to your account",
    "passkey-removed": "A passkey was removed from your account",
}


def absolute_url(endpoint: str, **values: Any) -> str:
    """The address of *endpoint* on meta's configured origin."""
    origin = str(srcore.state().section["origin"]).rstrip("/")
    # A path, also outside a request (where url_for would make it absolute already). It
    # begins with the request's SCRIPT_NAME, which a proxy sets: one not starting with "/"
    # ("@elsewhere") would move the link's host, and the secret in it, off meta.
    path = url_for(endpoint, _external=False, **values)
    return f"{origin}/{path.lstrip('/')}"


@dataclass(frozen=True)
class Prepared:
    """A rendered mail that can be sent later, outside the request (no app context)."""

    kind: str
    to: str
    subject: str
    text: str
    mailer: Mailer

    def send(self) -> bool:
        """Send it; return False (and log) if it could not be sent."""
        try:
            self.mailer.send(self.to, self.subject, self.text)
        except MailError as exc:
            log.error("cannot send the %s mail to %s: %s", self.kind, self.to, exc)
            return False
        return True


def prepare_mail(kind: str, to: str, **context: Any) -> Prepared:
    """Render mail *kind* to *to* now, to send it with :meth:`Prepared.send`.

    ``/forgot`` sends its mail once the response has gone (``call_on_close``): how long
    the answer takes then says nothing about whether an account uses the address.
    """
    st = srcore.state()
    site = str(st.config.global_["site-name"])
    text = render_template(
        f"meta/mail/{kind}.txt", site_name=site, absolute_url=absolute_url, **context
    )
    return Prepared(kind, to, f"{SUBJECTS[kind]} · {site}", text, mailer())


def send_mail(kind: str, to: str, **context: Any) -> bool:
    """Render and send mail *kind* to *to*; return False (and log) if it could not be sent."""
    return prepare_mail(kind, to, **context).send()


def mail_on_commit(session: Session, kind: str, to: str, **context: Any) -> None:
    """Render mail *kind* to *to* now and send it once *session*'s transaction commits:
    the change it tells of is that transaction's. Whatever the request does after the
    commit cannot lose it, and a rollback sends nothing."""
    from srcore.oncommit import after_commit

    after_commit(session, _send_all, prepare_mail(kind, to, **context))


def _send_all(mails: list[Prepared]) -> None:
    for mail in mails:
        mail.send()
