"""URL converters every service's routes use.

A plain ``<int:...>`` accepts any number of digits: an id past the database column's
range reaches the query and the driver raises (PostgreSQL ``integer`` stops at 2**31-1,
SQLite at 2**63-1), which is a 500 for what is only an address that does not exist.
``<id:...>`` matches row ids only, so anything else is a 404 before a view runs.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from typing import Any, NamedTuple

from werkzeug.exceptions import HTTPException, NotFound
from werkzeug.routing import BaseConverter, Map, RequestRedirect, Rule
from werkzeug.routing.rules import RuleFactory

__all__ = ["API_PREFIX", "BIGINT_MAX", "ID_MAX", "IdConverter", "SrcoreMap", "init_app"]

logger = logging.getLogger("srcore.routing")

#: Every route under this prefix is a JSON API: errors are JSON, CSRF does not apply
#: (API calls authenticate with bearer tokens, never with the session cookie). It lives
#: here, in a base module, so features can read it without importing the app module.
API_PREFIX = "/api/"

#: The largest id of a PostgreSQL ``integer`` primary key (the services' default).
ID_MAX = 2**31 - 1
#: The largest id of a ``bigint`` column: the ceiling of ``<id(max=...):...>``.
BIGINT_MAX = 2**63 - 1


class IdConverter(BaseConverter):
    """``<id:name>``: a row id, 1..:data:`ID_MAX` (or ``<id(max=N):name>``), as an int.

    Leading zeros and signs do not match, so every id has exactly one URL.
    """

    regex = r"[1-9][0-9]{0,18}"
    weight = 50
    part_isolating = True

    def __init__(self, map: Map, *, max: int = ID_MAX) -> None:
        super().__init__(map)
        if not 1 <= max <= BIGINT_MAX:
            raise ValueError(f"an id converter's max must be within 1..{BIGINT_MAX}")
        self.max = max

    def to_python(self, value: str) -> int:
        number = int(value)
        if number > self.max:
            # No row has this id: 404 now. A ValidationError would let the router go on
            # and answer 405 when a rule for another method matched the path (offering
            # a GET that would itself answer 404).
            raise NotFound()
        return number

    def to_url(self, value: Any) -> str:
        return str(int(value))


#: ``<int:name>`` or ``<int(...):name>`` in a rule, with its arguments.
_INT_PART = re.compile(r"<int(?:\((?P<args>[^)]*)\))?:(?P<name>\w+)>")


def unbounded_int_parts(rule: str) -> list[str]:
    """The names of *rule*'s ``<int:...>`` parts that take any number (no ``max``)."""
    return [m["name"] for m in _INT_PART.finditer(rule) if "max" not in (m["args"] or "")]


class _Claim(NamedTuple):
    path: str
    endpoint: str
    refuse: Callable[[Rule], Exception]


class SrcoreMap(Map):
    """The URL map of a srcore app: says which rule would answer an impossible id with a
    500, when the rule is added (the service's author reads it at start, in the log), and
    refuses a rule that would answer a path another endpoint claimed (:meth:`claim`)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: Said once per path, not once per method's rule.
        self._warned: set[str] = set()
        self._claims: list[_Claim] = []

    def claim(self, path: str, endpoint: str, refuse: Callable[[Rule], Exception]) -> None:
        """Keep *path* for *endpoint* alone: a rule of another endpoint that would match it
        (the same path, a placeholder taking it, or a redirect to its slash), in the map
        now or added later, raises ``refuse(rule)``.

        For a path the operator chose, such as ``metrics-path``: the service adds its own
        routes after srcore's, and whichever of two matching rules the router prefers
        would silently answer, one page hiding the other.
        """
        claim = _Claim(path, endpoint, refuse)
        for rule in self.iter_rules():
            self._check_claim(claim, rule)
        self._claims.append(claim)

    def _check_claim(self, claim: _Claim, rule: Rule) -> None:
        if rule.endpoint != claim.endpoint and self._would_match(rule, claim.path):
            raise claim.refuse(rule)

    def _would_match(self, rule: Rule, path: str) -> bool:
        """Whether *rule*, alone in a map like this one, answers *path* for one of its
        methods (or redirects it)."""
        probe = Map(
            [rule.empty()],
            converters=self.converters,
            strict_slashes=self.strict_slashes,
            merge_slashes=self.merge_slashes,
        )
        method = min(rule.methods) if rule.methods else "GET"
        try:
            probe.bind("localhost").match(path, method=method)
        except RequestRedirect:
            return True
        except HTTPException:
            return False
        return True

    def add(self, rulefactory: RuleFactory) -> None:
        if self._claims:  # checked before the rule is in the map: a refusal leaves none
            for rule in rulefactory.get_rules(self):
                for claim in self._claims:
                    self._check_claim(claim, rule)
        super().add(rulefactory)
        for rule in rulefactory.get_rules(self):
            if rule.rule in self._warned:
                continue
            for name in unbounded_int_parts(rule.rule):
                self._warned.add(rule.rule)
                logger.warning(
                    "route %s: <int:%s> hands any number to the view, and an id past the"
                    " column's range to the database, which fails (a 500): use <id:%s>"
                    " for a row id, or <int(max=N):%s>",
                    rule.rule,
                    name,
                    name,
                    name,
                )


def init_app(url_map: Map) -> None:
    """Register ``<id:...>`` on *url_map*; the app factory calls it before any route."""
    url_map.converters["id"] = IdConverter
