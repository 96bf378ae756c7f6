"""The grammar of a port list setting (``80, 443, 1024-65535, !6379``).

It lives with the config that reads it, so the config can refuse a bad list when it is
loaded; :class:`srcore.outbound.policy.PortRule` builds its rule from the same ranges.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["allows_any", "parse_ports", "port_range"]

PortRanges = tuple[tuple[int, int], ...]


def port_range(text: str) -> tuple[int, int]:
    """Read ``443`` or ``1024-65535`` as an inclusive range; ValueError if it is not one."""
    low, sep, high = (part.strip() for part in text.partition("-"))
    problem = f"{text!r} is not a port or range of ports within 1-65535"
    # ASCII digits only: int() would also read full-width digits, '+80' and '4_43'.
    if not all(n.isascii() and n.isdigit() and len(n) <= 5 for n in (low, high if sep else low)):
        raise ValueError(problem)
    first = int(low)
    last = int(high) if sep else first
    if not 1 <= first <= last <= 65535:
        raise ValueError(problem)
    return first, last


def parse_ports(items: Iterable[str]) -> tuple[PortRanges, PortRanges]:
    """The allowed and the denied (``!``) ranges of a port list; ValueError if bad."""
    allowed: list[tuple[int, int]] = []
    denied: list[tuple[int, int]] = []
    for raw in items:
        item = raw.strip()
        if not item:
            continue
        if item.startswith("!"):
            denied.append(port_range(item[1:]))
        else:
            allowed.append(port_range(item))
    return tuple(allowed), tuple(denied)


def allows_any(allowed: PortRanges, denied: PortRanges) -> bool:
    """Whether some port is in *allowed* and not in *denied*: a list that allows none
    would refuse every webhook, which is never what an operator meant."""
    for low, high in allowed:
        port = low
        for deny_low, deny_high in sorted(denied):
            if deny_low > port:
                break
            port = max(port, deny_high + 1)
        if port <= high:
            return True
    return False
