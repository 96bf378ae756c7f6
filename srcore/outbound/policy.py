"""The SSRF guard: which addresses and ports an outbound request may reach.

:class:`AddressPolicy` is a pure function of an IP address: loopback, private, link-local,
multicast, unspecified, reserved, anycast service and other non-global addresses are
refused (an IPv6 address carrying an IPv4 one, mapped, translated, compatible, NAT64 or
6to4, is judged as the IPv4 address it reaches), unless inside a network the operator
allowed. Which blocks are refused is written out here (:data:`SPECIAL_PURPOSE`, from IANA's
special-purpose address registries), not left to :mod:`ipaddress`, whose ``is_global`` and
``is_private`` change between Python patch releases. It also holds the allowed ports
(:class:`PortRule`) and judges a whole URL (scheme, credentials, port).
:class:`~srcore.outbound.sender.PooledSender` enforces it on the address it connects to.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from srcore.config.declarations import DEFAULT_WEBHOOK_PORTS as DEFAULT_PORTS
from srcore.config.ports import parse_ports

if TYPE_CHECKING:
    from flask import Flask

__all__ = [
    "DEFAULT_PORTS",
    "METADATA_ADDRESSES",
    "SPECIAL_PURPOSE",
    "AddressPolicy",
    "PortRule",
    "RefusedAddress",
    "policy_for",
]

log = logging.getLogger("srcore.outbound")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

#: Cloud instance-metadata endpoints (AWS, GCP, Azure, ...; AWS's IPv6 one).
METADATA_ADDRESSES: frozenset[IPAddress] = frozenset(
    {ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254")}
)


class RefusedAddress(Exception):
    """A target whose address the policy refuses; the message says why."""

    def __init__(self, address: str, reason: str) -> None:
        super().__init__(f"refused: {address} is {reason}")
        self.address = address
        self.reason = reason


#: IANA's IPv4 and IPv6 Special-Purpose Address Registries: each block with why an address
#: in it is refused, or ``None`` where the registry says "Globally Reachable: True" (a block
#: inside a refused one, like the AS112 and ORCHIDv2 blocks in 2001::/23). The most
#: specific block holding an address decides. "Private" means what the registries and
#: :mod:`ipaddress` mean by it: not reachable beyond one administrative domain.
#: Anycast service addresses are refused although the registries call some of them
#: globally reachable: the 6to4 and 6a44 relays, PCP, TURN, DNS-SD service registration and
#: AMT. What is sent there reaches whichever such server is nearest the sender (the
#: operator's own gear or its provider's), which is no receiver a subscriber may address.
#: ``ipaddress`` judged 192.0.0.8 and 3fff::/20 global on Python 3.11.7, and the AS112-v6
#: and ORCHIDv2 blocks private; this table gives every Python the same verdict. The
#: IPv4-mapped, NAT64 (64:ff9b::/96) and 6to4 (2002::/16) blocks are listed for
#: completeness: an address in them is judged as the IPv4 address it carries before this
#: table is looked at.
SPECIAL_PURPOSE: tuple[tuple[IPNetwork, str | None], ...] = tuple(
    (ipaddress.ip_network(block), reason)
    for block, reason in [
        ("0.0.0.0/8", 'a private address ("this network", 0.0.0.0/8, RFC 791)'),
        ("0.0.0.0/32", "the unspecified address"),
        ("10.0.0.0/8", "a private address (private-use, 10.0.0.0/8, RFC 1918)"),
        ("100.64.0.0/10", "not a public address (shared address space, 100.64.0.0/10, RFC 6598)"),
        ("127.0.0.0/8", "a loopback address"),
        ("169.254.0.0/16", "a link-local address"),
        ("172.16.0.0/12", "a private address (private-use, 172.16.0.0/12, RFC 1918)"),
        ("192.0.0.0/24", "a private address (IETF protocol assignments, 192.0.0.0/24, RFC 6890)"),
        ("192.0.0.0/29", "a private address (IPv4 service continuity, 192.0.0.0/29, RFC 7335)"),
        ("192.0.0.8/32", "a private address (IPv4 dummy address, 192.0.0.8/32, RFC 7600)"),
        ("192.0.0.9/32", "an anycast service address (PCP, 192.0.0.9, RFC 7723)"),
        ("192.0.0.10/32", "an anycast service address (TURN, 192.0.0.10, RFC 8155)"),
        ("192.0.0.170/32", "a private address (NAT64/DNS64 discovery, 192.0.0.170, RFC 8880)"),
        ("192.0.0.171/32", "a private address (NAT64/DNS64 discovery, 192.0.0.171, RFC 8880)"),
        ("192.0.2.0/24", "a private address (documentation, 192.0.2.0/24, RFC 5737)"),
        ("192.31.196.0/24", None),  # AS112-v4 (RFC 7535)
        ("192.52.193.0/24", "an anycast service address (AMT relays, 192.52.193.0/24, RFC 7450)"),
        # "Globally Reachable: N/A", deprecated by RFC 7526; 192.88.99.2 is 6a44's (RFC 6751).
        ("192.88.99.0/24", "an anycast service address (6to4 relays, 192.88.99.0/24, RFC 3068)"),
        ("192.88.99.2/32", "an anycast service address (6a44 relay, 192.88.99.2, RFC 6751)"),
        ("192.168.0.0/16", "a private address (private-use, 192.168.0.0/16, RFC 1918)"),
        ("192.175.48.0/24", None),  # AS112 direct delegation (RFC 7534)
        ("198.18.0.0/15", "a private address (benchmarking, 198.18.0.0/15, RFC 2544)"),
        ("198.51.100.0/24", "a private address (documentation, 198.51.100.0/24, RFC 5737)"),
        ("203.0.113.0/24", "a private address (documentation, 203.0.113.0/24, RFC 5737)"),
        ("240.0.0.0/4", "a private address (reserved, 240.0.0.0/4, RFC 1112)"),
        ("255.255.255.255/32", "the limited broadcast address"),
        ("::1/128", "a loopback address"),
        ("::/128", "the unspecified address"),
        ("::ffff:0:0/96", "a private address (IPv4-mapped, ::ffff:0:0/96, RFC 4291)"),
        ("64:ff9b::/96", None),  # NAT64 well-known prefix (RFC 6052)
        ("64:ff9b:1::/48", "a private address (local-use NAT64, 64:ff9b:1::/48, RFC 8215)"),
        ("100::/64", "a private address (discard-only, 100::/64, RFC 6666)"),
        ("100:0:0:1::/64", "a private address (dummy prefix, 100:0:0:1::/64, RFC 9780)"),
        ("2001::/23", "a private address (IETF protocol assignments, 2001::/23, RFC 2928)"),
        # "Globally Reachable: N/A": it reaches an IPv4 host through whichever relay.
        ("2001::/32", "not a public address (Teredo, 2001::/32, RFC 4380)"),
        ("2001:1::1/128", "an anycast service address (PCP, 2001:1::1, RFC 7723)"),
        ("2001:1::2/128", "an anycast service address (TURN, 2001:1::2, RFC 8155)"),
        ("2001:1::3/128", "an anycast service address (DNS-SD SRP, 2001:1::3, RFC 9665)"),
        ("2001:2::/48", "a private address (benchmarking, 2001:2::/48, RFC 5180)"),
        ("2001:3::/32", "an anycast service address (AMT relays, 2001:3::/32, RFC 7450)"),
        ("2001:4:112::/48", None),  # AS112-v6 (RFC 7535)
        ("2001:10::/28", "a private address (deprecated ORCHID, 2001:10::/28, RFC 4843)"),
        ("2001:20::/28", None),  # ORCHIDv2 (RFC 7343)
        ("2001:30::/28", None),  # drone remote ID entity tags (RFC 9374)
        ("2001:db8::/32", "a private address (documentation, 2001:db8::/32, RFC 3849)"),
        ("2002::/16", None),  # 6to4 (RFC 3056)
        ("2620:4f:8000::/48", None),  # AS112 direct delegation (RFC 7534)
        ("3fff::/20", "a private address (documentation, 3fff::/20, RFC 9637)"),
        ("5f00::/16", "a private address (SRv6 segment identifiers, 5f00::/16, RFC 9602)"),
        ("fc00::/7", "a private address (unique-local, fc00::/7, RFC 4193)"),
        ("fe80::/10", "a link-local address"),
    ]
)

#: The blocks above, most specific first, by IP version.
_BY_VERSION: dict[int, list[tuple[IPNetwork, str | None]]] = {
    version: sorted(
        (entry for entry in SPECIAL_PURPOSE if entry[0].version == version),
        key=lambda entry: -entry[0].prefixlen,
    )
    for version in (4, 6)
}


def _special(ip: IPAddress) -> tuple[bool, str | None]:
    """Whether *ip* is in a block of :data:`SPECIAL_PURPOSE`, and the reason given there."""
    for network, reason in _BY_VERSION[ip.version]:
        if ip in network:
            return True, reason
    return False, None


def _classify(ip: IPAddress) -> str | None:
    """Why *ip* is not a public address (``None`` if it is one)."""
    if ip in METADATA_ADDRESSES:
        return "a cloud metadata address"
    listed, reason = _special(ip)
    if listed:
        return reason
    # Outside the registries: multicast, site-local and what ipaddress knows that they
    # do not say (unassigned space it calls reserved).
    if ip.is_loopback:
        return "a loopback address"
    if ip.is_unspecified:
        return "the unspecified address"
    if ip.is_link_local:
        return "a link-local address"
    if ip.is_multicast:
        return "a multicast address"
    if ip.is_private:
        return "a private address"
    if ip.is_reserved:
        return "a reserved address"
    if isinstance(ip, ipaddress.IPv6Address) and ip.is_site_local:
        return "a site-local address"
    if not ip.is_global:
        return "not a public address"
    return None


#: NAT64's well-known prefix (RFC 6052): the last 32 bits are the IPv4 address reached.
NAT64_PREFIX = ipaddress.IPv6Network("64:ff9b::/96")
#: IPv4-translated addresses (RFC 2765, ``::ffff:0:a.b.c.d``).
_TRANSLATED = ipaddress.IPv6Network("::ffff:0:0:0/96")
#: IPv4-compatible addresses (``::a.b.c.d``, deprecated), apart from ``::`` and ``::1``.
_COMPATIBLE = ipaddress.IPv6Network("::/96")


def _embedded(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries towards an IPv4 host, if it carries one.

    IPv4-mapped (``::ffff:a.b.c.d``), IPv4-translated, IPv4-compatible, NAT64
    (``64:ff9b::/96``) and 6to4 (``2002::/16``) addresses all end up at an IPv4 host: a
    gateway in the path translates, so ``64:ff9b::7f00:1`` can reach 127.0.0.1.
    """
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    low = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip in NAT64_PREFIX or ip in _TRANSLATED:
        return low
    if ip in _COMPATIBLE and int(ip) > 1:
        return low
    return None


def _unwrap(ip: IPAddress) -> IPAddress:
    """The IPv4 address an IPv6 address carries (see :func:`_embedded`), else *ip*."""
    if isinstance(ip, ipaddress.IPv6Address):
        inner = _embedded(ip)
        if inner is not None:
            return inner
    return ip


@dataclass(frozen=True)
class PortRule:
    """The ports requests may use: ranges allowed, minus ranges denied."""

    allowed: tuple[tuple[int, int], ...]
    denied: tuple[tuple[int, int], ...] = ()

    @classmethod
    def parse(cls, items: Iterable[str]) -> PortRule:
        """Read ``80``, ``1024-65535`` and ``!6379`` (denied) items; ValueError if bad."""
        return cls(*parse_ports(items))

    def allows(self, port: int) -> bool:
        """Whether *port* is allowed (0 and out-of-range ports never are)."""
        if not 1 <= port <= 65535:
            return False
        inside = any(a <= port <= b for a, b in self.allowed)
        return inside and not any(a <= port <= b for a, b in self.denied)


def _default_ports() -> PortRule:
    return PortRule.parse(DEFAULT_PORTS)


@dataclass(frozen=True)
class AddressPolicy:
    """Which addresses and ports outbound requests may connect to."""

    #: Networks allowed although they are not public (the operator's choice).
    allowed: tuple[IPNetwork, ...] = ()
    ports: PortRule = field(default_factory=_default_ports)
    #: How refusals name the ports setting, so an operator knows what to change.
    ports_setting: str = "the allowed ports"

    @classmethod
    def from_networks(
        cls,
        networks: Iterable[str],
        *,
        ports: Iterable[str] | None = None,
        ports_setting: str = "the allowed ports",
    ) -> AddressPolicy:
        """A policy from CIDR strings and port items (None: the default ports)."""
        nets = tuple(ipaddress.ip_network(n.strip(), strict=False) for n in networks)
        rule = PortRule.parse(DEFAULT_PORTS if ports is None else ports)
        return cls(nets, rule, ports_setting)

    def url_refusal(self, url: str) -> str | None:
        """Why a request to *url* is refused before any lookup, or ``None``: only http(s),
        no ``user:password@`` (it would be sent to, and logged for, whatever the URL
        names), an allowed port, no backslash before the path.

        A backslash ends the host part for urllib3 (and browsers) but not for
        :func:`~urllib.parse.urlsplit`: ``http://h:6379\\[::1]:8080/`` is port 8080 here
        and port 6379 to the sender, so such a URL cannot be judged here at all.
        """
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError:
            return "the URL is not valid"
        if parts.scheme not in ("http", "https"):
            return "the URL is not http or https"
        if "\\" in parts.netloc:
            return "the URL has a backslash in its host part, which clients read differently"
        if parts.username is not None or parts.password is not None or "@" in parts.netloc:
            return "the URL carries credentials (user:password@), which are never sent"
        if not parts.hostname:
            return "the URL has no host"
        if port is None:
            port = 443 if parts.scheme == "https" else 80
        if not self.ports.allows(port):
            return f"port {port} is not one of {self.ports_setting}"
        return None

    def refusal(self, address: str | IPAddress) -> str | None:
        """Why a connection to *address* is refused, or ``None`` if it may go ahead."""
        try:
            ip = ipaddress.ip_address(address) if isinstance(address, str) else address
        except ValueError:
            return "not an IP address"
        if isinstance(ip, ipaddress.IPv6Address) and ip.scope_id:
            ip = ipaddress.IPv6Address(str(ip).split("%", 1)[0])
        candidates = {ip, _unwrap(ip)}
        if any(c in net for c in candidates for net in self.allowed if c.version == net.version):
            return None
        return _classify(_unwrap(ip))

    def check(self, address: str) -> None:
        """Raise :class:`RefusedAddress` (and log it) when *address* is refused."""
        reason = self.refusal(address)
        if reason is not None:
            error = RefusedAddress(address, reason)
            log.warning("target refused: %s", error)
            raise error


def policy_for(app: Flask) -> AddressPolicy:
    """The address policy of *app*, from ``[global] allow-private-webhook-targets`` and
    ``webhook-allowed-ports`` (webhooks and meta's back-channel calls share it)."""
    g = app.extensions["srcore"].config.global_
    return AddressPolicy.from_networks(
        (str(n) for n in g["allow-private-webhook-targets"]),
        ports=[str(p) for p in g["webhook-allowed-ports"]],
        ports_setting="webhook-allowed-ports",
    )
