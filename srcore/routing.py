"""URL converters every service's routes use.

A plain ``<int:...>`` accepts any number of digits: an id past the database column's
range reaches the query and the driver raises (PostgreSQL ``integer`` stops at 2**31-1,
SQLite at 2**63-1), which is a 500 for what is only an address that does not exist.
``<id:...>`` matches row ids only, so anything else is a 404 before a view runs.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from werkzeug.exceptions import NotFound
from werkzeug.routing import BaseConverter, Map
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


class SrcoreMap(Map):
    """The URL map of a srcore app: says which rule would answer an impossible id with a
    500, when the rule is added (the service's author reads it at start, in the log)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: Said once per path, not once per method's rule.
        self._warned: set[str] = set()

    def add(self, rulefactory: RuleFactory) -> None:
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
