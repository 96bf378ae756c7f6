"""The SSRF guard: webhook requests never reach internal addresses unless allowed.

:class:`AddressPolicy` decides, as a pure function of an IP address, whether a delivery may
talk to it: loopback, private, link-local, multicast, unspecified, reserved and other
non-global addresses are refused (IPv6 addresses that carry an IPv4 address to an IPv4
host, IPv4-mapped, -translated and -compatible, NAT64 and 6to4, are judged as the IPv4
address they carry), unless the address is inside a network the operator allowed with
``[global] allow-private-webhook-targets``.

:func:`guarded_session` builds a :class:`requests.Session` whose connections check the
address they actually connected to (``getpeername()``) right after the TCP connect and
before sending a single byte (or starting TLS), so a hostname that resolves to a public
address for a check and to an internal one for the request (DNS rebinding) gains nothing.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

__all__ = [
    "METADATA_ADDRESSES",
    "AddressPolicy",
    "GuardedAdapter",
    "RefusedAddress",
    "guarded_session",
    "trusted_session",
]

log = logging.getLogger("srcore.webhooks.ssrf")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

#: Cloud instance-metadata endpoints (AWS, GCP, Azure, ...; AWS's IPv6 one).
METADATA_ADDRESSES: frozenset[IPAddress] = frozenset(
    {ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254")}
)


class RefusedAddress(Exception):
    """A webhook target whose address the policy refuses; the message says why."""

    def __init__(self, address: str, reason: str) -> None:
        super().__init__(f"refused: {address} is {reason}")
        self.address = address
        self.reason = reason


def _classify(ip: IPAddress) -> str | None:
    """Why *ip* is not a public address (``None`` if it is one)."""
    if ip in METADATA_ADDRESSES:
        return "a cloud metadata address"
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
class AddressPolicy:
    """Which addresses webhook deliveries may connect to."""

    #: Networks allowed although they are not public (the operator's choice).
    allowed: tuple[IPNetwork, ...] = ()

    @classmethod
    def from_networks(cls, networks: Iterable[str]) -> AddressPolicy:
        """Build a policy from CIDR strings, as ``allow-private-webhook-targets`` holds."""
        return cls(tuple(ipaddress.ip_network(n.strip(), strict=False) for n in networks))

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
            log.warning("webhook target refused: %s", error)
            raise error


def _check_socket(sock: socket.socket, policy: AddressPolicy) -> None:
    peer: Any = sock.getpeername()
    try:
        policy.check(str(peer[0]))
    except RefusedAddress:
        sock.close()
        raise


class _GuardedHTTPConnection(HTTPConnection):
    policy: AddressPolicy = AddressPolicy()

    def _new_conn(self) -> socket.socket:
        sock = super()._new_conn()
        _check_socket(sock, self.policy)
        return sock


class _GuardedHTTPSConnection(HTTPSConnection):
    policy: AddressPolicy = AddressPolicy()

    def _new_conn(self) -> socket.socket:
        # Checked before the TLS handshake: not even a ClientHello reaches a refused peer.
        sock = super()._new_conn()
        _check_socket(sock, self.policy)
        return sock


class GuardedAdapter(HTTPAdapter):
    """A requests adapter whose connections refuse peers the policy refuses."""

    def __init__(self, policy: AddressPolicy, **kwargs: Any) -> None:
        self.policy = policy
        http_conn = type("GuardedHTTPConnection", (_GuardedHTTPConnection,), {"policy": policy})
        https_conn = type("GuardedHTTPSConnection", (_GuardedHTTPSConnection,), {"policy": policy})
        self._pool_classes = {
            "http": type("GuardedHTTPPool", (HTTPConnectionPool,), {"ConnectionCls": http_conn}),
            "https": type(
                "GuardedHTTPSPool", (HTTPSConnectionPool,), {"ConnectionCls": https_conn}
            ),
        }
        super().__init__(**kwargs)

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = self._pool_classes

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        raise RefusedAddress(proxy, "a proxy, and webhook deliveries do not use proxies")


def guarded_session(policy: AddressPolicy, *, pool_maxsize: int = 10) -> requests.Session:
    """A keep-alive session for webhook deliveries: guarded, no proxies from the env."""
    session = requests.Session()
    session.trust_env = False  # no proxies, .netrc or CA bundles from the environment
    adapter = GuardedAdapter(policy, pool_maxsize=pool_maxsize, max_retries=0)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


def trusted_session(*, pool_maxsize: int = 10) -> requests.Session:
    """A keep-alive session without the address check, for trusted subscriptions only.

    Trusted subscriptions are the ones the operator's config made (meta's first-party
    subscriptions to each service's internal origin); their URLs never come from a user.
    Still no proxies from the environment, no retries (and deliveries follow no redirects).
    """
    session = requests.Session()
    session.trust_env = False
    adapter = HTTPAdapter(pool_maxsize=pool_maxsize, max_retries=0)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session
