"""Each service's OpenAPI 3.1 description, generated from its code.

A view states its answer in its return annotation (a TypedDict its serializer returns,
``CursorList[...]``, :class:`Created`, :class:`Accepted`, :class:`NoContent`), its scope
with :func:`srcore.auth.oauth`, and the readers of its input with :func:`operation`;
srcore serves the description at ``/api/openapi.json`` and a docs page at ``/api/docs``.
Nothing is written twice: the same declarations run the requests.
"""

from __future__ import annotations

from srcore.openapi.declare import operation
from srcore.openapi.responses import Accepted, Created, NoContent, accepted, created, no_content
from srcore.openapi.schema import Format

__all__ = [
    "Accepted",
    "Created",
    "Format",
    "NoContent",
    "accepted",
    "created",
    "no_content",
    "operation",
]
