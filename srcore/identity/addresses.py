"""The one form an email address is stored and compared in, so one mailbox is one address.

The same mailbox reaches a server spelled many ways: ``Alice@Example.com``, a domain in
its Unicode form (``bücher.example``) or its ASCII one (``xn--bcher-kva.example``, what
Chromium's email field sends), a letter composed or decomposed (``é`` or ``e`` and a
combining accent, as macOS and Windows type it), full-width letters and dots from an East
Asian input method. :func:`canonical_email` gives each one spelling:

- the local part in NFKC form, lower-cased (as every address was stored before);
- the domain in NFKC form, lower-cased, in its ASCII (IDNA) form, which is where mail to
  it goes (:mod:`srcore.mail` writes a domain beyond ASCII that way too), without the
  trailing dot of a fully qualified name.

A look-alike in another script (a Cyrillic ``\u0430``) is another address: it is another
mailbox, and its owner receives only its own mail. Plain functions, no Flask.
"""

from __future__ import annotations

import unicodedata

import idna

from srcore.validation import Invalid, coerce_email

__all__ = ["ascii_domain", "canonical_email"]


def ascii_domain(domain: str) -> str:
    """*domain* in the ASCII form mail to it goes to; ValueError if it has none.

    IDNA 2008 with UTS #46 mapping, non-transitional: what browsers and mail software
    write. Python's own ``idna`` codec is IDNA 2003, which turns ``straße.example`` into
    ``strasse.example``: another domain, perhaps someone else's, where ``xn--strae-oqa``
    is the one meant. A domain all ASCII is only lower-cased."""
    # UTS #46 also maps the ideographic and half-width full stops to dots.
    domain = domain.removesuffix(".").removesuffix("\u3002").removesuffix("\uff61")
    if domain.isascii():
        return domain.lower()
    try:
        return idna.encode(domain, uts46=True, transitional=False).decode("ascii")
    except idna.IDNAError:
        raise ValueError("the domain has no ASCII form") from None


def _folded(text: str) -> str:
    """*text* in NFKC form, lower-cased (and normalized again: lower-casing may decompose)."""
    return unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", text).lower())


def canonical_email(address: str) -> str:
    """The canonical spelling of *address* (see the module); ValueError if it has none
    that is an address (its NFKC form holds a second ``@``, a space, a bracket...).

    A full-width at sign (``\uff20``) is the at sign: NFKC applies to the whole address first."""
    local, at, domain = _folded(address.strip()).rpartition("@")
    if not at or not local or not domain:
        raise ValueError("Not a valid email address.")
    try:
        domain = ascii_domain(domain)
    except ValueError:  # what IDNA cannot write is no host name (a line break, a space)
        raise ValueError("Not a valid email address.") from None
    try:
        return coerce_email(f"{local}@{domain}")
    except Invalid as error:
        raise ValueError(error.reason) from None
