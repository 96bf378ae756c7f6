"""An early, friendly check of a URL someone gives (a webhook, a logout endpoint): would
requests to it be refused? Said when the URL is submitted, rather than at every request."""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Callable
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit

import idna

from srcore.outbound.policy import AddressPolicy, policy_for
from srcore.outbound.sender import resolve

if TYPE_CHECKING:
    from flask import Flask

__all__ = ["RESOLVE_TIMEOUT", "Resolver", "lookup", "problem_for", "set_resolver", "target_problem"]

_Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int, float], "list[_Address] | None"]

#: Hosts that are this machine or its private network whatever the resolver says.
_LOCAL_SUFFIXES = (".localhost", ".local", ".internal", ".localdomain")
#: How long a lookup may take before the check is left to the requests.
RESOLVE_TIMEOUT = 2.0
_RESOLVER = "srcore.outbound.resolver"


def lookup(host: str, port: int, timeout: float) -> list[_Address] | None:
    """The addresses of *host*, or None when the lookup fails or takes too long."""
    try:
        infos = resolve(host, port, time.monotonic() + timeout)
    except (OSError, UnicodeError):
        return None
    found: list[_Address] = []
    for info in infos:
        try:
            found.append(ipaddress.ip_address(str(info[4][0]).split("%")[0]))
        except ValueError:
            continue
    return found


def target_problem(
    url: str,
    policy: AddressPolicy,
    *,
    resolve: Resolver | None = lookup,
    timeout: float = RESOLVE_TIMEOUT,
) -> str | None:
    """Why requests to *url* would be refused under *policy* (credentials, a port not
    allowed, a loopback, private, link-local or metadata address), or None.

    An early, friendly check: a name that cannot be resolved now passes, since every
    request checks the address it connects to. *resolve* is injectable (tests); None
    checks address literals only.
    """
    refused = policy.url_refusal(url)
    if refused is not None:
        return refused
    parts = urlsplit(url)
    # Decoded as the sender's urllib3 decodes it: ``%31%32%37.0.0.1`` is 127.0.0.1.
    host = unquote(parts.hostname or "").rstrip(".").lower()
    if not host:
        return "the URL has no host"
    if not host.isascii():
        # Looked up as the sender's urllib3 writes it (IDNA 2008): given the name as typed,
        # getaddrinfo would look up its IDNA 2003 form (straße: strasse), another name.
        try:
            host = idna.encode(host, strict=True, std3_rules=True).decode("ascii")
        except idna.IDNAError as error:
            return f"the URL's host is not a valid name ({error})"
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


def set_resolver(app: Flask, resolve: Resolver) -> None:
    """Look up the hosts of the URLs submitted to *app* with *resolve*: tests ask no DNS."""
    app.extensions[_RESOLVER] = resolve


def problem_for(app: Flask, url: str) -> str | None:
    """:func:`target_problem` of *url* under *app*'s policy, looked up with its resolver."""
    return target_problem(url, policy_for(app), resolve=app.extensions.get(_RESOLVER, lookup))
