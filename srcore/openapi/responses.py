"""Typed answers of API views, so a view's return annotation says what it answers.

A view that returns a JSON object annotates it with the TypedDict its serializer returns
(200). :class:`Created` (201), :class:`Accepted` (202) and :class:`NoContent` (204) are
plain tuples Flask already understands, typed so the API description can read the status
and the body's shape from the annotation instead of from a schema kept beside the view::

    @api.post("/trackers")
    @oauth("todo/trackers:RW")
    def create_tracker() -> Created[TrackerJSON] | Response:
        ...
        return created(tracker_json(tracker, user), location=url_for(...))
"""

from __future__ import annotations

from typing import Generic, NamedTuple, TypeVar

__all__ = ["Accepted", "Created", "NoContent", "accepted", "created", "no_content"]

T = TypeVar("T")


class Created(NamedTuple, Generic[T]):
    """A 201 answer with a JSON body of type ``T`` (and a ``Location`` when known)."""

    body: T
    status: int
    headers: dict[str, str]


class Accepted(NamedTuple, Generic[T]):
    """A 202 answer with a JSON body of type ``T``: taken, to be done later."""

    body: T
    status: int


class NoContent(NamedTuple):
    """A 204 answer: done, nothing to say."""

    body: str
    status: int


def created(body: T, *, location: str | None = None) -> Created[T]:
    """A 201 answer carrying *body*, and ``Location: location`` if given."""
    return Created(body, 201, {"Location": location} if location is not None else {})


def accepted(body: T) -> Accepted[T]:
    """A 202 answer carrying *body*."""
    return Accepted(body, 202)


def no_content() -> NoContent:
    """A 204 answer."""
    return NoContent("", 204)
