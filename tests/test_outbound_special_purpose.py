"""The SSRF guard judges special-purpose addresses by IANA's registries, on every Python.

:mod:`ipaddress` changes its ``is_global``/``is_private`` verdicts between patch releases:
Python 3.11.7 judged 192.0.0.8 (and most of 192.0.0.0/24) and the 3fff::/20 documentation
block global, so a webhook could target them, and the globally reachable AS112-v6 and
ORCHIDv2 blocks inside 2001::/23 private. The blocks below are the registries' facts,
written out here rather than read from the module under test.

Anycast service addresses (PCP, TURN, DNS-SD SRP, AMT, the 6to4 and 6a44 relays) are
refused although the registries call most of them globally reachable: a request sent there
reaches whichever such server is nearest the sender, the operator's own network gear or its
provider's, which is no receiver a subscriber may address.
"""

from __future__ import annotations

import ipaddress

import pytest

from srcore.outbound.policy import SPECIAL_PURPOSE, AddressPolicy, RefusedAddress
from srcore.outbound.targets import target_problem

#: IANA IPv4 and IPv6 Special-Purpose Address Registries, "Globally Reachable: False",
#: with a word of what the refusal should name. (::ffff:0:0/96 is left out: a mapped
#: address is judged as the IPv4 address it carries, and ::ffff:8.8.8.8 is public.)
NOT_GLOBAL = [
    ("0.0.0.0/8", "this network"),
    ("0.0.0.0/32", "unspecified"),
    ("10.0.0.0/8", "private-use"),
    ("100.64.0.0/10", "shared address space"),
    ("127.0.0.0/8", "loopback"),
    ("169.254.0.0/16", "link-local"),
    ("172.16.0.0/12", "private-use"),
    ("192.0.0.0/24", "IETF protocol assignments"),
    ("192.0.0.0/29", "IPv4 service continuity"),
    ("192.0.0.8/32", "dummy"),
    ("192.0.0.170/32", "NAT64/DNS64 discovery"),
    ("192.0.0.171/32", "NAT64/DNS64 discovery"),
    ("192.0.2.0/24", "documentation"),
    ("192.88.99.2/32", "6a44 relay"),  # inside the deprecated 6to4 relay /24
    ("192.168.0.0/16", "private-use"),
    ("198.18.0.0/15", "benchmarking"),
    ("198.51.100.0/24", "documentation"),
    ("203.0.113.0/24", "documentation"),
    ("240.0.0.0/4", "reserved"),
    ("255.255.255.255/32", "broadcast"),
    ("::1/128", "loopback"),
    ("::/128", "unspecified"),
    ("64:ff9b:1::/48", "local-use NAT64"),
    ("100::/64", "discard-only"),
    ("100:0:0:1::/64", "dummy prefix"),
    ("2001::/23", "IETF protocol assignments"),
    ("2001::/32", "Teredo"),  # "N/A" in the registry: refused as the /23 around it
    ("2001:2::/48", "benchmarking"),
    ("2001:10::/28", "ORCHID"),
    ("2001:db8::/32", "documentation"),
    ("3fff::/20", "documentation"),
    ("5f00::/16", "SRv6"),
    ("fc00::/7", "unique-local"),
    ("fe80::/10", "link-local"),
]

#: Anycast service blocks, refused whatever the registries say of their reachability.
ANYCAST = [
    ("192.0.0.9/32", "PCP"),  # Port Control Protocol anycast (RFC 7723)
    ("192.0.0.10/32", "TURN"),  # TURN anycast (RFC 8155)
    ("192.52.193.0/24", "AMT"),  # AMT relays (RFC 7450)
    ("192.88.99.0/24", "6to4 relay"),  # deprecated 6to4 relays (RFC 3068, RFC 7526)
    ("2001:1::1/128", "PCP"),
    ("2001:1::2/128", "TURN"),
    ("2001:1::3/128", "DNS-SD SRP"),  # DNS-SD service registration protocol (RFC 9665)
    ("2001:3::/32", "AMT"),
]

#: Blocks inside (or beside) refused ones that the registries say are globally reachable.
GLOBAL = [
    "192.31.196.0/24",  # AS112-v4
    "192.175.48.0/24",  # AS112 direct delegation
    "2001:4:112::/48",  # AS112-v6
    "2001:20::/28",  # ORCHIDv2
    "2001:30::/28",  # drone remote ID entity tags
    "2620:4f:8000::/48",  # AS112 direct delegation
]

#: The more specific blocks of NOT_GLOBAL, ANYCAST and GLOBAL decide for addresses in them.
_BLOCKS = [ipaddress.ip_network(b) for b, _ in NOT_GLOBAL + ANYCAST] + [
    ipaddress.ip_network(b) for b in GLOBAL
]


def spread(block: str) -> list[str]:
    """The first, an inner and the last address of *block*."""
    net = ipaddress.ip_network(block)
    first, last = int(net.network_address), int(net.broadcast_address)
    inner = first + (last - first + 1) // 2
    kind = type(net.network_address)
    return [str(kind(n)) for n in sorted({first, inner, last})]


def most_specific(address: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    ip = ipaddress.ip_address(address)
    return max((n for n in _BLOCKS if ip in n), key=lambda n: n.prefixlen)


@pytest.mark.parametrize(("block", "kind"), NOT_GLOBAL, ids=[b for b, _ in NOT_GLOBAL])
def test_every_address_of_a_block_not_globally_reachable_is_refused(block: str, kind: str) -> None:
    for address in spread(block):
        refusal = AddressPolicy().refusal(address)
        assert refusal is not None, address
        if most_specific(address) == ipaddress.ip_network(block):
            assert kind in refusal, (address, refusal)


@pytest.mark.parametrize(("block", "kind"), ANYCAST, ids=[b for b, _ in ANYCAST])
def test_every_address_of_an_anycast_service_block_is_refused(block: str, kind: str) -> None:
    for address in spread(block):
        refusal = AddressPolicy().refusal(address)
        assert refusal is not None, address
        if most_specific(address) == ipaddress.ip_network(block):
            assert refusal.startswith("an anycast service address"), (address, refusal)
            assert kind in refusal, (address, refusal)


@pytest.mark.parametrize("block", GLOBAL)
def test_the_globally_reachable_exceptions_pass(block: str) -> None:
    for address in spread(block):
        assert AddressPolicy().refusal(address) is None, address


#: Refused IPv4 blocks, which an IPv6 address can carry.
CARRIED = [b for b, _ in NOT_GLOBAL + ANYCAST if ipaddress.ip_network(b).version == 4]


def carriers(v4: str) -> list[str]:
    """IPv6 forms of the IPv4 address *v4*: mapped, NAT64, 6to4, compatible, translated."""
    n = int(ipaddress.IPv4Address(v4))
    forms = [
        (0xFFFF << 32) | n,
        (0x64FF9B << 96) | n,
        (0x2002 << 112) | (n << 80) | 1,
        (0xFFFF << 48) | n,
    ]
    if n > 1:
        forms.append(n)  # ::a.b.c.d; ::1 and :: are themselves
    return [str(ipaddress.IPv6Address(f)) for f in forms]


@pytest.mark.parametrize("block", CARRIED)
def test_an_ipv6_form_of_a_refused_ipv4_address_is_refused_as_it(block: str) -> None:
    policy = AddressPolicy()
    for v4 in spread(block):
        reason = policy.refusal(v4)
        assert reason is not None
        for v6 in carriers(v4):
            assert policy.refusal(v6) == reason, (v4, v6)


def test_the_ipv6_forms_of_the_newly_refused_addresses() -> None:
    """The addresses ipaddress called global on Python 3.11.7, in each IPv6 form."""
    policy = AddressPolicy()
    for v6 in ["::ffff:192.0.0.8", "64:ff9b::c000:8", "2002:c000:8::1", "64:ff9b::c000:64"]:
        refusal = policy.refusal(v6)
        assert refusal is not None and "192.0.0." in refusal, v6


@pytest.mark.parametrize(
    ("v4", "kind"),
    [
        ("192.0.0.9", "PCP, 192.0.0.9, RFC 7723"),
        ("192.0.0.10", "TURN, 192.0.0.10, RFC 8155"),
        ("192.52.193.1", "AMT relays, 192.52.193.0/24, RFC 7450"),
        ("192.88.99.1", "6to4 relays, 192.88.99.0/24"),
        ("192.88.99.2", "6a44 relay, 192.88.99.2, RFC 6751"),
    ],
)
def test_the_ipv6_forms_of_an_anycast_service_address_are_refused_as_it(v4: str, kind: str) -> None:
    """Mapped, NAT64, 6to4 (with and without an interface id), translated, compatible."""
    policy = AddressPolicy()
    n = int(ipaddress.IPv4Address(v4))
    forms = [
        f"::ffff:{v4}",
        str(ipaddress.IPv6Address((0x64FF9B << 96) | n)),
        str(ipaddress.IPv6Address((0x2002 << 112) | (n << 80))),
        str(ipaddress.IPv6Address((0x2002 << 112) | (n << 80) | 1)),
        f"::ffff:0:{v4}",
        f"::{v4}",
    ]
    expected = f"an anycast service address ({kind}"
    assert (policy.refusal(v4) or "").startswith(expected), policy.refusal(v4)
    for v6 in forms:
        assert policy.refusal(v6) == policy.refusal(v4), v6


def test_the_ipv6_forms_named_in_the_review() -> None:
    policy = AddressPolicy()
    for v6 in ["::ffff:192.0.0.9", "64:ff9b::c000:9", "2002:c000:0009::"]:
        assert policy.refusal(v6) == "an anycast service address (PCP, 192.0.0.9, RFC 7723)"
    for v6 in ["::ffff:192.0.0.10", "64:ff9b::c000:a", "2002:c000:000a::"]:
        assert policy.refusal(v6) == "an anycast service address (TURN, 192.0.0.10, RFC 8155)"


def test_what_a_caller_sees_for_the_6a44_relay_and_its_6to4_neighbours() -> None:
    """192.88.99.2 sits inside the deprecated 6to4 relay /24; its own entry decides."""
    policy = AddressPolicy()
    with pytest.raises(RefusedAddress) as refused:
        policy.check("192.88.99.2")
    assert str(refused.value) == (
        "refused: 192.88.99.2 is an anycast service address (6a44 relay, 192.88.99.2, RFC 6751)"
    )
    for neighbour in ["192.88.99.1", "192.88.99.3"]:
        with pytest.raises(RefusedAddress) as refused:
            policy.check(neighbour)
        assert refused.value.reason == (
            "an anycast service address (6to4 relays, 192.88.99.0/24, RFC 3068)"
        )


#: The blocks of SPECIAL_PURPOSE that are only looked at once unwrapped to IPv4.
_UNWRAPPED = {"::ffff:0:0/96", "64:ff9b::/96", "2002::/16"}


@pytest.mark.parametrize(
    ("network", "reason"),
    [e for e in SPECIAL_PURPOSE if str(e[0]) not in _UNWRAPPED],
    ids=[str(n) for n, _ in SPECIAL_PURPOSE if str(n) not in _UNWRAPPED],
)
def test_every_entry_of_the_table_decides_for_some_address(
    network: ipaddress.IPv4Network | ipaddress.IPv6Network, reason: str | None
) -> None:
    """No entry is shadowed by a check made before the table or by a more specific entry."""
    verdicts = [AddressPolicy().refusal(a) for a in spread(str(network))]
    assert reason in verdicts, (network, verdicts)


@pytest.mark.parametrize(
    "address",
    [
        "192.0.0.9",
        "192.0.0.10",
        "192.52.193.200",
        "192.88.99.2",
        "2001:1::1",
        "2001:1::3",
        "2001:3:ab::1",
        "::ffff:192.0.0.9",
        "64:ff9b::c000:a",
        "2002:c034:c101::",
    ],
)
def test_the_operator_can_still_allow_an_anycast_service_address(address: str) -> None:
    policy = AddressPolicy.from_networks(
        ["192.0.0.8/29", "192.52.193.0/24", "192.88.99.0/24", "2001:1::/126", "2001:3::/32"]
    )
    assert policy.refusal(address) is None, address
    assert AddressPolicy().refusal(address) is not None, address


def test_the_operators_allowed_networks_still_allow() -> None:
    policy = AddressPolicy.from_networks(["192.0.0.0/24", "3fff::/20", "198.18.0.0/15"])
    for address in [
        "192.0.0.8",
        "192.0.0.100",
        "192.0.0.170",
        "::ffff:192.0.0.8",
        "64:ff9b::c000:8",
        "2002:c000:8::1",
        "3fff::1",
        "3fff:fff:ffff:ffff:ffff:ffff:ffff:ffff",
        "198.19.255.255",
    ]:
        assert policy.refusal(address) is None, address
    for address in ["192.0.2.1", "2001:db8::1", "4000::1", "127.0.0.1"]:
        assert policy.refusal(address) is not None, address


def test_the_edges_of_the_new_documentation_block() -> None:
    """3fff::/20 ends at 3fff:fff:ffff:...; the addresses around it are public."""
    policy = AddressPolicy()
    assert policy.refusal("3fff:fff:ffff::1") is not None
    for address in ["3ffe:ffff::1", "3fff:1000::1", "3fff:ffff::1"]:
        assert policy.refusal(address) is None, address


@pytest.mark.parametrize(
    ("url", "kind"),
    [
        ("http://192.0.0.8/hook", "IPv4 dummy address"),
        ("http://192.0.0.200:8080/hook", "IETF protocol assignments"),
        ("https://[3fff::1]/hook", "documentation, 3fff::/20"),
        ("https://[::ffff:192.0.0.8]/hook", "IPv4 dummy address"),
        ("http://192.0.0.9/hook", "anycast service address (PCP"),
        ("https://[2001:1::2]/hook", "anycast service address (TURN"),
        ("https://[64:ff9b::c034:c101]:8443/hook", "anycast service address (AMT"),
        ("http://192.88.99.2/hook", "anycast service address (6a44 relay"),
    ],
)
def test_a_webhook_url_at_such_an_address_is_refused_when_submitted(url: str, kind: str) -> None:
    problem = target_problem(url, AddressPolicy(), resolve=None)
    assert problem is not None and kind in problem
