"""Passwords inside URLs, masked wherever srcore prints config.

Database, Redis and broker URLs carry their credentials in the URL itself
(``postgresql://user:password@host/db``), so marking a key secret is not enough: a value
shown by ``srcore config show``, or quoted back in a problem's message, keeps its user and
host (which the operator needs to see) and loses its password.
"""

from __future__ import annotations

import re

__all__ = ["MASK", "mask_url", "mask_urls"]

#: What a password is replaced with; SQLAlchemy's URL rendering uses the same.
MASK = "***"

# scheme://user:password@ anywhere in a text; the password runs to the last "@" before
# whitespace, so a password with a raw "@" in it is masked whole.
_CREDENTIALS = re.compile(r"(\b[A-Za-z][A-Za-z0-9+.-]*://[^\s/@:]*:)[^\s]*@")


def mask_urls(text: str) -> str:
    """*text* with the password of every ``scheme://user:password@`` in it masked."""
    return _CREDENTIALS.sub(lambda m: f"{m.group(1)}{MASK}@", text)


def mask_url(url: str) -> str:
    """*url* with its password masked, rendered by SQLAlchemy when it parses it.

    SQLAlchemy reads database URLs and the Redis and broker URLs alike
    (``scheme://user:password@host:port/path``); anything it cannot parse is masked as
    text, so a malformed URL is never shown with its password. So is a URL with more than
    one ``@``: SQLAlchemy ends the password at the first, and would show the rest of a
    password with a raw ``@`` as host and path.
    """
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        return mask_urls(url)
    if parsed.password is None or url.count("@") > 1:
        return mask_urls(url)
    return parsed.render_as_string(hide_password=True)
