"""What an API view declares for its description, beyond its route, scope and annotation.

The route (path, methods), the scope (from :func:`srcore.auth.oauth`) and the answer
(from the return annotation) are read where they already are. Only the readers of the
query string and of the body, and the errors particular to the view, are named here,
once, beside the view::

    @api.patch("/trackers/<name>")
    @oauth("todo/trackers:RW")
    @operation(body=partial(logic.read_tracker, partial=True), errors={409: logic.NAME_TAKEN})
    def update_tracker(name: str) -> TrackerJSON | Response: ...
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from srcore.openapi.inputs import Reader

__all__ = ["SCOPE_ATTRIBUTE", "Operation", "declared_operation", "declared_scope", "operation"]

F = TypeVar("F", bound=Callable[..., object])

#: The attribute :func:`srcore.auth.oauth` leaves on a view: the scope it requires.
SCOPE_ATTRIBUTE = "srcore_scope"
_ATTRIBUTE = "srcore_operation"


@dataclass(frozen=True)
class Operation:
    """A view's declared input readers and its own error answers (status: reason)."""

    query: tuple[Reader, ...] = ()
    body: tuple[Reader, ...] = ()
    errors: Mapping[int, str] = field(default_factory=dict)
    #: A bearer token holding one of the service's scopes is needed, but which of them
    #: is enough depends on the input, so the view checks them itself instead of naming
    #: one with :func:`srcore.auth.oauth`.
    token: bool = False


def _readers(value: Reader | Sequence[Reader] | None) -> tuple[Reader, ...]:
    if value is None:
        return ()
    if callable(value):
        return (value,)
    return tuple(value)


def operation(
    *,
    query: Reader | Sequence[Reader] | None = None,
    body: Reader | Sequence[Reader] | None = None,
    errors: Mapping[int, str] | None = None,
    token: bool = False,
) -> Callable[[F], F]:
    """Declare the readers of a view's query string and body, its own error answers, and
    (*token*) that it needs a bearer token whose scopes it checks itself.

    The view itself is returned unchanged; the declaration is kept on it (and copied by
    ``functools.wraps`` onto any decorator's wrapper around it).
    """
    declared = Operation(_readers(query), _readers(body), dict(errors or {}), token)

    def decorator(view: F) -> F:
        setattr(view, _ATTRIBUTE, declared)
        return view

    return decorator


def declared_operation(view: Callable[..., object]) -> Operation:
    """What *view* declared with :func:`operation`; an empty declaration if nothing."""
    found = getattr(view, _ATTRIBUTE, None)
    return found if isinstance(found, Operation) else Operation()


def declared_scope(view: Callable[..., object]) -> str | None:
    """The scope :func:`srcore.auth.oauth` requires of *view*'s callers, if any."""
    found = getattr(view, SCOPE_ATTRIBUTE, None)
    return found if isinstance(found, str) else None
