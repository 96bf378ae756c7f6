"""``/.well-known/security.txt`` (RFC 9116): where to report a security hole.

Served by every service when ``[global] security-contact`` is set, so whoever finds a hole
in any of the network's hosts finds the operator's address the standard way. The file's
``Expires`` is always a year ahead: it is written from the live config, so it is as
current as the config is.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from flask import Flask, Response

__all__ = ["PATH", "contact_uri", "init_app", "render"]

PATH = "/.well-known/security.txt"


def contact_uri(contact: str) -> str:
    """*contact* as RFC 9116 wants it: a URI (a bare mail address gets ``mailto:``)."""
    return contact if ":" in contact else f"mailto:{contact}"


def render(contact: str, now: datetime) -> str:
    """The file for *contact*, expiring a year after *now*."""
    expires = (now + timedelta(days=365)).replace(microsecond=0)
    return f"Contact: {contact_uri(contact)}\nExpires: {expires.isoformat()}\n"


def init_app(app: Flask) -> None:
    """Serve the file on *app* when the config names a contact."""
    contact = str(app.extensions["srcore"].config.global_.get("security-contact") or "")
    if not contact:
        return

    def security_txt() -> Response:
        body = render(contact, datetime.now(UTC))
        return Response(body, mimetype="text/plain")

    app.add_url_rule(PATH, endpoint="srcore_security_txt", view_func=security_txt)
